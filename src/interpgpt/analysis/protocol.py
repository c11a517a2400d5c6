"""The one protocol every analysis follows: config -> run -> result with provenance -> section.

Like the diffing-toolkit's `methods/<method>/method.py`, an analysis module declares
one `Analysis`: its config dataclass (which is also its CLI options and its study
section, see `interpgpt.settings`), a `stage` function that runs it on a study's
files and returns a `StageOutput` (the files it wrote and a small summary of headline
numbers), and a `section` function that turns that summary into a report `Section`.
The study lists analyses as data; adding one is a module, its test and a line in
`interpgpt.study.stages`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from interpgpt.analysis.controls import Statistic
from interpgpt.artifacts.release import ReleasedStage
from interpgpt.constants import Variant
from interpgpt.sae.topk import sae_dir_name

C = TypeVar("C")
Summary = dict[str, Any]


def model_name(variant: Variant, twin: bool = False, replicate: int = 0) -> str:
    """A study model's name: its variant, `<variant>-twin` for its data-order twin (the
    same initial weights, another order of the same batches), `<variant>-r<N>` for the
    model of replicate pair N (another init seed), `<variant>-r<N>-twin` for that model's
    data-order twin. It names the model's run and export folders and its entries in stage
    summaries."""
    name = f"{variant}-r{replicate}" if replicate else variant
    return f"{name}-twin" if twin else name


@dataclass(frozen=True)
class Workspace:
    """Where a study keeps each artifact, and what its earlier stages recorded.

    An analysis reads "the standard model" and "the ADHD model" through `export`, `run`
    and `sae`. The workspace of a control pair (`for_pair`) gives those roles to other
    models (a model and its data-order twin) and keeps the pair's outputs apart, so the
    very same stage code computes the seed null."""

    root: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stage name -> its record (hash, outputs, summary), as far as the study has run."""
    roles: Mapping[str, str] | None = None
    """Variant role -> the model that plays it (None: each variant's own model)."""
    pair: str = ""
    """The control pair's name (its stages are `<stage>@<pair>`); "" for the matched pair."""

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def corpus(self) -> Path:
        return self.path("corpus")

    @property
    def tokenizer(self) -> Path:
        return self.path("tokenizer.json")

    def model(self, variant: Variant) -> str:
        """The name of the model playing `variant` here (`model_name`)."""
        return self.roles[variant] if self.roles else variant

    def run(self, variant: Variant, twin: bool = False) -> Path:
        """A model's run dir (`runs/<model_name>`); `twin` names the variant's twin."""
        return self.path("runs", model_name(variant, True) if twin else self.model(variant))

    def export(self, variant: Variant, twin: bool = False) -> Path:
        """A model's export dir (`export/<model_name>`); `twin` names the variant's twin."""
        return self.path("export", model_name(variant, True) if twin else self.model(variant))

    @property
    def outputs(self) -> Path:
        """Where this pair's analyses and SAEs go: the study root, or `controls/<pair>`."""
        return self.path("controls", self.pair) if self.pair else self.root

    def analysis(self, name: str) -> Path:
        return self.outputs / "analysis" / name

    @property
    def saes(self) -> Path:
        """The folder of this pair's SAEs."""
        return self.outputs / "sae"

    def sae(self, variant: Variant, layer: int) -> Path:
        return self.saes / sae_dir_name(variant, layer)

    def summary(self, stage: str) -> Summary:
        return self.records.get(stage, {}).get("summary", {})

    def for_pair(self, pair: str, roles: Mapping[str, str]) -> Workspace:
        """The workspace of control pair `pair`, whose roles the `roles` models play: a
        stage reads the pair's own records of earlier stages (`<stage>@<pair>`) where
        they exist, the study's otherwise (the corpus, the trained models)."""
        suffix = f"@{pair}"
        records = {k: v for k, v in self.records.items() if "@" not in k}
        records |= {
            k.removesuffix(suffix): v for k, v in self.records.items() if k.endswith(suffix)
        }
        return Workspace(self.root, records, dict(roles), pair)


@dataclass
class StageOutput:
    """What a stage wrote and the headline numbers it records for the report."""

    outputs: list[Path]
    summary: Summary = field(default_factory=dict)


@dataclass
class Section:
    """One report section: a sentence on what the result shows, its numbers, its figures."""

    title: str
    finding: str
    """One sentence on what the result shows, written from the numbers."""
    rows: list[tuple[str, str]] = field(default_factory=list)
    """(label, value) pairs: the headline numbers."""
    figures: list[Path] = field(default_factory=list)
    table: list[list[str]] | None = None
    """An optional wider table; the first row is the header."""
    pages: list[tuple[str, Path]] = field(default_factory=list)
    """(label, path) of pages the report links to (a dashboard), relative to the report."""
    status: str = "ok"
    """ok, warn (a gate failed or a result is null) or missing (the stage did not run)."""


@dataclass(frozen=True)
class Analysis(Generic[C]):
    """An analysis as the study runs it."""

    name: str
    """Stage name, study section and output folder (`analysis/<name>/`)."""
    description: str
    config: type[C]
    """The config dataclass: CLI options, study section and validation in one."""
    stage: Callable[[Workspace, C], StageOutput]
    """Run on the study's files (the config's inputs are filled from the workspace)."""
    section: Callable[[Summary, list[str]], Section] | None
    """The report section from the stage's summary and outputs (None: not reported)."""
    after: tuple[str, ...] = ()
    """Stages whose outputs this one reads."""
    study_section: str = ""
    """The study section holding its config, when not its own name (two stages can share
    one: both models train with `[train]`)."""
    statistics: Callable[[Summary, list[str]], dict[str, Statistic]] | None = None
    """The statistics of a run of this analysis that the seed controls compare
    (`interpgpt.analysis.controls`): from the matched pair's run, its cross-variant
    value; from each control pair's run (a model and its twin), the seed null. None: the
    analysis is not a cross-model finding (it is not repeated on the control pairs)."""

    from_release: Callable[[Workspace, C, ReleasedStage], StageOutput] | None = None
    """Put the outputs in place from a release whose run of this stage had the same
    settings and inputs (`interpgpt.artifacts.release`), instead of running it; None: the
    stage always runs."""

    @property
    def settings_key(self) -> str:
        return self.study_section or self.name.replace("-", "_")


def fmt(value: Any, digits: int = 3) -> str:
    """A number as the report prints it."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def figures(outputs: list[str]) -> list[Path]:
    """The PNG figures among a stage's outputs."""
    return [Path(p) for p in outputs if str(p).endswith(".png")]
