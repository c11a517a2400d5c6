"""`interpgpt study` end to end on a tiny budget: every stage runs, the report renders,
a second run skips every stage, and settings are validated before any work starts."""

from __future__ import annotations

import dataclasses
import json
import sys
from html import escape as html_escape
from pathlib import Path

import pytest
import torch
from rich.console import Console

from interpgpt.errors import UserError
from interpgpt.study.config import StudyConfig, load_study_config
from interpgpt.study.pipeline import REPORT, release_memory, run_stages, run_study, stage_hash
from interpgpt.study.stages import STAGES
from interpgpt.study.workspace import Workspace

pytestmark = pytest.mark.slow(seconds=80)

TINY_STUDY = [
    # The pipeline's own test: one pair, no twins (test_seed_controls turns them on), and
    # nothing from a release in the working directory.
    "twins=false",
    "release=off",
    "corpus.n_tasks=120",
    "corpus.examples_per_task=4",
    "train.steps=40",
    "behaviour.limit=8",
    "headswap.limit=12",
    "logit_lens.limit=12",
    "ablation.limit=8",
    "ablation.seeds=2",
    "patching.n_pairs=2",
    "sae.std_layers=0,1",
    "sae.adhd_layers=1",
    "sae.d_sae=64",
    "sae.k=4",
    "sae.tokens=8192",
    "feature_diff.layer=1",
    "feature_diff.limit=12",
    "crosscoder.layer=1",
    "crosscoder.d_latent=64",
    "crosscoder.k=4",
    "crosscoder.tokens=4096",
    "crosscoder.batch_size=512",
    "crosscoder.eval_tokens=500",
    "crosscoder.buffer_tokens=2048",
    "crosscoder.limit=12",
    "kl.limit=12",
    "diff_lens.limit=12",
    "weights.limit=12",
    "steering.n_null=3",
    "probes.limit=12",
    "known_answers.limit=12",
    "known_answers.n_pairs=16",
    "known_answers.n_random=1",
]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    config = load_study_config(None, TINY_STUDY, "tiny")
    result = run_study(config, out, console=Console(quiet=True))
    return config, out, result


def test_study_runs_every_stage_and_writes_the_report(tiny_study):
    _, out, result = tiny_study
    assert set(result.records) == {stage.name for stage in STAGES} | {REPORT}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    for title in (
        "Head-swap inventory",
        "Regulation logit lens",
        "Causal head ablation",
        "TopK sparse autoencoders",
        "Steering with null baselines",
        "Three probes",
        "Known answers: the break rule's variables",
    ):
        assert html_escape(title) in html
    assert "could not be read" not in html, "a report section failed to build"
    assert (out / "report.md").is_file()
    assert (out / "analysis" / "ablation" / "causal_nulls_per_seed.json").is_file()
    # The crosscoder (layer 1) maps the feature diff's features (layer 1) to its latents.
    mapped = result.records["crosscoder"]["summary"]["pair"]["sae_features"]
    assert mapped["n_features"] == result.records["feature-diff"]["summary"]["n_selected"]
    assert 0 <= mapped["n_to_exclusive"] <= mapped["n_matched"] <= mapped["n_features"]
    assert '<a href="analysis/crosscoder/pair/dashboard.html">' in html


def test_second_run_skips_every_stage_but_the_report(tiny_study):
    config, out, first = tiny_study
    records = {p.name: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    second = run_study(config, out, console=Console(quiet=True))
    for name, record in second.records.items():
        if name != "report":
            assert record["hash"] == records[f"{name}.json"]["hash"]
    assert second.seconds < first.seconds / 3


def test_a_moved_study_keeps_every_stage(tiny_study, monkeypatch):
    config, out, _ = tiny_study
    records = {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    assert all(r["outputs_base"] == "study" for r in records.values())
    assert not any(Path(p).is_absolute() for r in records.values() for p in r["outputs"])
    moved = out.parent / (out.name + "-moved")
    out.rename(moved)
    try:
        # From the parent, by a relative path: the records were written by absolute ones.
        monkeypatch.chdir(moved.parent)
        ws = Workspace(Path(moved.name))
        before = {p.stem: p.stat().st_mtime_ns for p in (moved / "stages").glob("*.json")}
        kept = run_stages(STAGES, config, ws, set(), Console(quiet=True))
        after = {p.stem: p.stat().st_mtime_ns for p in (moved / "stages").glob("*.json")}
        assert after == before, "a stage reran after the study moved"
        assert all(Path(p).exists() for r in kept.values() for p in r["outputs"])
        assert kept["headswap"]["outputs"][0].startswith(moved.name + "/")
    finally:
        moved.rename(out)


def test_force_reruns_the_stage_and_everything_downstream(tiny_study):
    config, out, _ = tiny_study
    ws = Workspace(out)
    before = {p.stem: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    run_stages(STAGES, config, ws, {"headswap"}, Console(quiet=True))
    after = {p.stem: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    rerun = {name for name in before if after[name] != before[name]}
    assert rerun == {"headswap", "ablation", "weights"}  # both read the head-swap stage


def test_changing_one_setting_reruns_only_the_stages_that_read_it(tiny_study):
    config = tiny_study[0]
    changed = load_study_config(None, [*TINY_STUDY, "patching.n_pairs=3"], "tiny")
    hashes = {}
    for which, study in (("before", config), ("after", changed)):
        upstream: dict[str, str] = {}
        for stage in STAGES:
            upstream[stage.name] = stage_hash(stage, study.section(stage.settings_key), upstream)
        hashes[which] = upstream
    rerun = {name for name in hashes["before"] if hashes["before"][name] != hashes["after"][name]}
    assert rerun == {"patching"}


def test_settings_are_typed_and_validated(tmp_path):
    config = load_study_config(None, ["sae.k=32", "sae.std_layers=0,2", "train.lr=none"], None)
    sections = config.sections
    assert sections["sae"].k == 32 and sections["sae"].std_layers == (0, 2)
    assert sections["train"].lr is None
    with pytest.raises(UserError, match=r"--set: sae\.nope: no such setting"):
        load_study_config(None, ["sae.nope=1"], None)
    with pytest.raises(UserError, match=r"--set: sae\.k: expected int"):
        load_study_config(None, ["sae.k=many"], None)
    with pytest.raises(UserError, match=r"crosscoder\.layer=9: the preset has layers 0\.\.5"):
        load_study_config(None, ["crosscoder.layer=9"], None)
    with pytest.raises(UserError, match=r"--set: nosection: no such study section"):
        load_study_config(None, ["nosection.k=1"], None)
    with pytest.raises(UserError, match=r"headswap\.seed: set by the study"):
        load_study_config(None, ["headswap.seed=3"], None)
    toml = tmp_path / "study.toml"
    toml.write_text(
        'preset = "tiny"\n[sae]\nk = 16\nstd_layers = [0, 1]\nadhd_layers = [1]\n'
        "[feature_diff]\nlayer = 1\n[crosscoder]\nlayer = 1\n"
    )
    config = load_study_config(toml, [], None)
    sae = config.sections["sae"]
    assert (config.preset, sae.k, sae.adhd_layers) == ("tiny", 16, (1,))
    toml.write_text("[train]\nsteps = -5\n")
    with pytest.raises(UserError, match=rf"^{toml}: train\.steps: must be at least 1"):
        load_study_config(toml, [], None)


def test_a_bad_setting_stops_the_study_before_any_stage(tmp_path, capsys):
    from interpgpt.cli import main

    out = tmp_path / "never"
    with pytest.raises(SystemExit) as done:
        main(["study", "--out", str(out), "--set", "train.steps=-5"])
    assert done.value.code == 2
    message = "error: --set: train.steps: must be at least 1 (got -5)"
    assert capsys.readouterr().err.strip() == message
    assert not out.exists()


def test_layers_beyond_the_preset_are_refused_before_any_work(tmp_path):
    # the tiny preset's own study defaults fit its two layers; a layer the user sets is checked
    load_study_config(None, [], "tiny")
    with pytest.raises(UserError, match=r"sae\.std_layers"):
        load_study_config(None, ["sae.std_layers=0,3"], "tiny")
    sae = dataclasses.replace(StudyConfig(preset="tiny").sections["sae"], std_layers=(0, 3))
    config = StudyConfig(preset="tiny", sections={"sae": sae})
    with pytest.raises(UserError, match=r"sae\.std_layers"):
        run_study(config, tmp_path / "never", console=Console(quiet=True))
    assert not (tmp_path / "never").exists()


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_memory_freed_by_a_stage_goes_back_to_the_os():
    """Many small tensors freed stay in glibc's heap (what a training run leaves behind);
    `release_memory` between stages hands them back, so a stage's peak RSS starts low."""
    chunks = [torch.ones(8192) for _ in range(20_000)]  # 32 KiB each, ~640 MiB, heap-allocated
    chunks = [c for i, c in enumerate(chunks) if i % 2_000 == 0]  # free all but ten
    held = _rss_mib()
    release_memory()
    assert _rss_mib() < held - 300, (held, _rss_mib())
    assert len(chunks) == 10
