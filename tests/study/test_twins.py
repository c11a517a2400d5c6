"""The study's data-order twins: with `twins` on, each model gets a twin trained from the
same initial weights on another order of the same batches, exported beside it and checked
in the report; with it off, the study's stages and their hashes are what they were."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from interpgpt.artifacts.names import RUN_CONFIG, TL_BUNDLE
from interpgpt.constants import VARIANTS
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.errors import UserError
from interpgpt.model.config import PRESETS
from interpgpt.study.config import load_study_config
from interpgpt.study.controls import twin_pairs
from interpgpt.study.pipeline import build_report, run_stages, stage_hash, study_stages
from interpgpt.study.stages import STAGES, TWIN_DATA_SEED_OFFSET, TWIN_STAGES, TWINS_TITLE
from interpgpt.study.workspace import Workspace
from interpgpt.train.batches import SampledBatches, load_splits

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_TWINS = [
    "twins=true",
    "release=off",
    "corpus.n_tasks=120",
    "corpus.examples_per_task=4",
    "train.steps=40",
    "train.n_samples=0",
    "sae.std_layers=0,1",
    "sae.adhd_layers=1",
    "feature_diff.layer=1",
    "crosscoder.layer=1",
]
"""The pipeline test's tiny budget (the SAE layers fit the tiny preset), twins on."""


def hashes(stages, config) -> dict[str, str]:
    out: dict[str, str] = {}
    for stage in stages:
        out[stage.name] = stage_hash(stage, config.section(stage.settings_key), out)
    return out


@pytest.fixture(scope="module")
def twin_study(tmp_path_factory):
    """Corpus, tokenizer, both models, both twins and the export of all four, run by the
    pipeline (the analyses are left out: they read no twin yet)."""
    config = load_study_config(None, TINY_TWINS, "tiny")
    ws = Workspace(tmp_path_factory.mktemp("twins"))
    stages = study_stages(config)
    upto = [s.name for s in stages].index("export") + 1
    run = [s for s in stages[:upto] if s.name != "behaviour"]
    run_stages(run, config, ws, set(), Console(quiet=True))
    return config, ws, run


def test_twins_share_the_init_and_read_another_order(twin_study):
    config, ws, stages = twin_study
    train = config.section("train").resolved()
    tokenizer = TaskTokenizer.from_file(ws.tokenizer)
    for variant in VARIANTS:
        model, twin = (json.loads((ws.run(variant, t) / RUN_CONFIG).read_text()) for t in (0, 1))
        assert ws.run(variant, twin=True).name == f"{variant}-twin"
        assert twin["init_sha256"] == model["init_sha256"]
        assert (model["data_seed"], twin["data_seed"]) == (0, TWIN_DATA_SEED_OFFSET)
        summary = ws.summary(f"train-{variant}-twin")
        assert (summary["init_sha256"], summary["data_seed"]) == (
            model["init_sha256"],
            TWIN_DATA_SEED_OFFSET,
        )
        train_set, _ = load_splits(ws.corpus, variant, tokenizer)
        first = [
            SampledBatches(
                train_set,
                seed,
                train.batch_size,
                tokenizer.pad_id,
                PRESETS["tiny"].n_ctx,
                group=train.group_by_length,
            ).indices(0)
            for seed in (model["data_seed"], twin["data_seed"])
        ]
        assert first[0] != first[1], "the twin's first batch is its partner's"
        assert (ws.export(variant, twin=True) / TL_BUNDLE).is_file()
    assert set(ws.summary("export")) == {"standard", "adhd", "standard-twin", "adhd-twin"}

    report = build_report(stages, config, ws)
    (section,) = [s for s in report.sections if s.title == TWINS_TITLE]
    assert section.status == "ok", section.finding
    assert [row[0] for row in section.table or []] == [
        "model",
        "standard",
        "standard-twin",
        "adhd",
        "adhd-twin",
    ]
    assert report.config["study"]["twins"] is True


def test_twins_are_on_by_default():
    """Every default study runs the seed controls and writes controls.json."""
    names = [s.name for s in study_stages(load_study_config(None, [], None))]
    assert {"train-standard-twin", "train-adhd-twin", "controls", "scorecard"} <= set(names)


def test_twins_off_leave_the_stages_and_their_hashes_alone():
    on = load_study_config(None, ["twins=true"], None)
    off = load_study_config(None, ["twins=false"], None)
    twin_names = {s.name for s in TWIN_STAGES}
    stages_off, stages_on = study_stages(off), study_stages(on)
    assert not twin_names & {s.name for s in stages_off}
    assert [s.name for s in stages_off] == [s.name for s in STAGES]
    # With twins on: the twins' training, then every pair analysis again on each control
    # pair (`<stage>@<pair>`), the controls and the scorecard stages, after the study's own stages.
    own = [s.name for s in stages_on if s.name not in twin_names and "@" not in s.name]
    assert own == [s.name for s in STAGES] + ["controls", "scorecard"]
    off_hashes, on_hashes = hashes(stages_off, off), hashes(stages_on, on)
    assert off_hashes == hashes(STAGES, off)
    # The export reads the twins, so it and whatever reads it (transitively) rerun when
    # twins are turned on; everything before it keeps its hash.
    downstream = {"export"}
    for stage in STAGES:
        if downstream & set(stage.after):
            downstream.add(stage.name)
    changed = {name for name, digest in off_hashes.items() if on_hashes[name] != digest}
    assert changed == downstream


def test_twins_setting_is_a_checked_boolean(tmp_path, capsys):
    from interpgpt.cli import main

    assert load_study_config(None, ["twins=true"], None).twins is True
    toml = tmp_path / "study.toml"
    toml.write_text("twins = true\n")
    assert load_study_config(toml, [], None).twins is True
    with pytest.raises(UserError, match=r"^--set: twins: expected true or false, got 'maybe'$"):
        load_study_config(None, ["twins=maybe"], None)
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as done:
        main(["study", "--out", str(out), "--set", "twins=maybe"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --set: twins: expected true or false, got 'maybe'"
    assert not out.exists()
    off = load_study_config(None, ["twins=false"], None)
    ws = Workspace(tmp_path / "study")
    with pytest.raises(UserError, match=r"^--force train-adhd-twin: no such stage"):
        run_stages(study_stages(off), off, ws, {"train-adhd-twin"}, Console(quiet=True))


def test_replicate_twins_add_each_replicate_pairs_twins_and_control_pairs():
    """By default only the first pair has twins; `replicate_twins` trains each replicate
    model's twin and repeats every pair analysis on that replicate's control pairs."""
    base = ["twins=true", "replicates=3"]
    plain = {s.name for s in study_stages(load_study_config(None, base, None))}
    every = {
        s.name for s in study_stages(load_study_config(None, [*base, "replicate_twins=true"], None))
    }
    added = every - plain
    trained = {n for n in added if n.startswith("train-")}
    assert trained == {f"train-{v}-r{n}-twin" for v in ("standard", "adhd") for n in (1, 2)}
    pairs = {n.split("@")[1] for n in added if "@" in n}
    assert pairs == {f"{v}-twin-r{n}" for v in ("standard", "adhd") for n in (1, 2)}
    assert {n.split("@")[0] for n in added if n.endswith("@adhd-twin-r2")} == {
        n.split("@")[0] for n in plain if n.endswith("@adhd-twin")
    }
    assert twin_pairs("r2")["adhd-twin-r2"] == {"standard": "adhd-r2", "adhd": "adhd-r2-twin"}
    # with or without their twins, replicate models are aligned head by head with the
    # matched pair's by the head-swap inventory alone
    aligned = {n for n in plain if "@align-" in n}
    assert aligned == {f"headswap@align-{v}-r{n}" for v in ("standard", "adhd") for n in (1, 2)}
    with pytest.raises(UserError, match=r"^replicate_twins=true needs replicate pairs"):
        load_study_config(None, ["twins=true", "replicate_twins=true"], None)
