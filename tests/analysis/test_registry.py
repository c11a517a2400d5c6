"""The one registry of analyses: every analysis package is registered, the import-linter
contracts cover every one, and the study's stage list is the registered analyses, in
order, among its own stages (each after the stages it reads)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from interpgpt.analysis import registry
from interpgpt.analysis.protocol import Analysis, StageOutput
from interpgpt.errors import UserError
from interpgpt.study.config import load_study_config
from interpgpt.study.stages import PIPELINE, STAGES, interleave

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS_DIR = ROOT / "src" / "interpgpt" / "analysis"


def contract(name_starts: str) -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(name_starts))


def test_every_analysis_package_is_registered():
    packages = {p.parent.name for p in ANALYSIS_DIR.glob("*/__init__.py")}
    registered = [p.rsplit(".", 1)[1] for p in registry.packages()]
    assert len(registered) == len(set(registered)), "an analysis is registered twice"
    assert packages == set(registered)


def test_the_independence_contract_covers_every_analysis():
    """Every child of `interpgpt.analysis` is in the contract (by wildcard); the imports it
    ignores are only those of the common modules, never of an analysis package."""
    independent = contract("Analysis methods are independent")
    assert independent["modules"] == ["interpgpt.analysis.*"]
    targets = {line.split(" -> ")[1] for line in independent["ignore_imports"]}
    common = {f"interpgpt.analysis.{p.stem}" for p in ANALYSIS_DIR.glob("*.py")}
    assert targets <= common
    assert not targets & set(registry.packages())


def test_analyses_are_forbidden_the_study():
    forbidden = contract("Analyses know nothing of the study")
    assert forbidden["source_modules"] == ["interpgpt.analysis"]
    assert "interpgpt.study" in forbidden["forbidden_modules"]


def test_each_entry_declares_an_analysis():
    analyses = registry.analyses()
    assert all(isinstance(a, Analysis) for a in analyses)
    assert len({a.name for a in analyses}) == len(analyses)


def test_the_stages_are_the_pipeline_and_the_registered_analyses_in_order():
    names = [s.name for s in STAGES]
    assert sorted(names) == sorted(s.name for s in [*PIPELINE, *registry.analyses()])
    analyses = {a.name for a in registry.analyses()}
    assert [n for n in names if n in analyses] == [a.name for a in registry.analyses()]
    assert [n for n in names if n not in analyses] == [s.name for s in PIPELINE]
    for i, stage in enumerate(STAGES):
        assert set(stage.after) <= set(names[:i]), f"{stage.name} runs before what it reads"


def test_interleave_places_an_analysis_after_the_pipeline_stages_it_reads():
    def stage(name: str, *after: str) -> Analysis[None]:
        return Analysis(name, "", type(None), lambda ws, c: StageOutput([]), None, after)

    pipeline = [stage("data"), stage("model", "data"), stage("extra", "model")]
    analyses = [stage("x", "model"), stage("y", "x"), stage("z", "extra")]
    order = [s.name for s in interleave(pipeline, analyses)]
    assert order == ["data", "model", "x", "y", "extra", "z"]
    assert [s.name for s in interleave(pipeline, analyses[:1])] == ["data", "model", "x", "extra"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sae.std_layers=0,7"], r"sae\.std_layers=\[7\]: the preset has layers 0\.\.1"),
        (["diff_lens.layer=2"], r"diff_lens\.layer=2: the preset has layers 0\.\.1"),
        (["crosscoder.layer=5"], r"crosscoder\.layer=5: the preset has layers 0\.\.1"),
        (["feature_diff.layer=0"], r"feature_diff\.layer=0 must be one of sae\.adhd_layers"),
    ],
)
def test_each_stage_checks_its_section_against_the_preset(overrides, message):
    """The study's config check runs each stage's own `check` (`check_sections`)."""
    with pytest.raises(UserError, match=message):
        load_study_config(None, overrides, "tiny")
