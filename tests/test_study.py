"""`interpgpt study` end to end on a tiny budget: every stage runs, the report renders,
a second run skips every stage, and settings are validated before any work starts."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from interpgpt.io import UserError
from interpgpt.study import StudyConfig, load_study_config, run_study

TINY_STUDY = [
    "corpus.tasks=120",
    "corpus.examples_per_task=4",
    "train.steps=40",
    "analysis.eval_tasks=12",
    "analysis.ablation_tasks=8",
    "analysis.ablation_seeds=2",
    "analysis.patch_pairs=2",
    "sae.std_layers=0,1",
    "sae.adhd_layers=1",
    "sae.diff_layer=1",
    "sae.d_sae=64",
    "sae.k=4",
    "sae.tokens=8192",
    "sae.n_null=3",
]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    config = load_study_config(None, TINY_STUDY, "tiny")
    result = run_study(config, out, console=Console(quiet=True))
    return config, out, result


def test_study_runs_every_stage_and_writes_the_report(tiny_study):
    from interpgpt.stages import STAGES

    _, out, result = tiny_study
    assert set(result.records) == {stage.name for stage in STAGES}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    for title in (
        "Head-swap inventory",
        "Regulation logit lens",
        "Causal head ablation",
        "TopK sparse autoencoders",
        "Steering with null baselines",
        "Three probes",
    ):
        assert title in html
    assert "could not be read" not in html, "a report section failed to build"
    assert (out / "report.md").is_file()
    assert (out / "analysis" / "ablation" / "causal_nulls_per_seed.json").is_file()


def test_second_run_skips_every_stage_but_the_report(tiny_study):
    config, out, first = tiny_study
    records = {p.name: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    second = run_study(config, out, console=Console(quiet=True))
    for name, record in second.records.items():
        if name != "report":
            assert record["hash"] == records[f"{name}.json"]["hash"]
    assert second.seconds < first.seconds / 3


def test_settings_are_typed_and_validated(tmp_path):
    config = load_study_config(None, ["sae.k=32", "sae.std_layers=0,2", "train.lr=none"], None)
    assert config.sae.k == 32 and config.sae.std_layers == (0, 2) and config.train.lr is None
    with pytest.raises(UserError, match="unknown study setting"):
        load_study_config(None, ["sae.nope=1"], None)
    with pytest.raises(UserError, match="expected a value"):
        load_study_config(None, ["sae.k=many"], None)
    toml = tmp_path / "study.toml"
    toml.write_text('preset = "tiny"\n[sae]\nk = 16\nadhd_layers = [1]\ndiff_layer = 1\n')
    config = load_study_config(toml, [], None)
    assert (config.preset, config.sae.k, config.sae.adhd_layers) == ("tiny", 16, (1,))


def test_layers_beyond_the_preset_are_refused_before_any_work(tmp_path):
    config = StudyConfig(preset="tiny")  # default SAE layers go up to 3; tiny has 2 layers
    with pytest.raises(UserError, match=r"sae\.std_layers"):
        run_study(config, tmp_path / "never", console=Console(quiet=True))
    assert not (tmp_path / "never").exists()
