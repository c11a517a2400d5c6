"""The one protocol every analysis follows: config -> run -> result with provenance -> section.

Like the diffing-toolkit's `methods/<method>/method.py`, an analysis package declares
one `Analysis`: its config dataclass (which is also its CLI options and its study
section, see `interpgpt.settings`), a `stage` function that runs its core on the files a
`Layout` names and returns a `StageOutput` (the files it wrote and a small summary of
headline numbers), and a `section` function that turns that summary into a report
`Section`. The study lists analyses as data (`interpgpt.analysis.registry`); adding one
is a package and one line there (docs/adding-an-analysis.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from interpgpt.analysis.controls import Statistic
from interpgpt.artifacts.release import ReleasedStage
from interpgpt.constants import Variant
from interpgpt.errors import UserError

C = TypeVar("C")
Summary = dict[str, Any]


class Layout(Protocol):
    """The files a stage reads and the folder it writes, named by what they are.

    A stage asks for "the corpus", "the model playing the ADHD role", "my output folder";
    the study decides where those live (`interpgpt.study.workspace.Workspace`) and, for a
    control pair, which model plays which role, so the analysis layer never learns the
    study's folders."""

    @property
    def corpus(self) -> Path: ...

    @property
    def pair(self) -> str:
        """The control pair the stage runs on; "" for the matched pair."""
        ...

    @property
    def saes(self) -> Path:
        """The folder of this pair's SAEs."""
        ...

    def model(self, variant: Variant) -> str:
        """The name of the model playing `variant` (`interpgpt.constants.model_name`)."""
        ...

    def run(self, variant: Variant, twin: bool = False) -> Path:
        """The run dir of the model playing `variant` (`twin`: the variant's twin)."""
        ...

    def export(self, variant: Variant, twin: bool = False) -> Path:
        """The export dir of the model playing `variant` (`twin`: the variant's twin)."""
        ...

    def analysis(self, name: str) -> Path:
        """The output folder of analysis `name`."""
        ...

    def sae(self, variant: Variant, layer: int) -> Path:
        """The SAE of `variant`'s model at `layer`."""
        ...

    def summary(self, stage: str) -> Summary:
        """The summary an earlier stage recorded ({} if it has not run)."""
        ...


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
    stage: Callable[[Any, C], StageOutput]
    """Run on the study's files (the config's inputs are filled from them). An analysis's
    stage takes a `Layout`; the study's own stages (training, export) its `Workspace`."""
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

    check: Callable[[C, Mapping[str, Any], int], None] | None = None
    """Checks of its settings against the other study sections and the number of layers of
    the study's preset, before any stage runs (raise `UserError`); None: nothing to check."""

    from_release: Callable[[Any, C, ReleasedStage], StageOutput] | None = None
    """Put the outputs in place from a release whose run of this stage had the same
    settings and inputs (`interpgpt.artifacts.release`), instead of running it; None: the
    stage always runs."""

    @property
    def settings_key(self) -> str:
        return self.study_section or self.name.replace("-", "_")


def layer_in_preset(key: str) -> Callable[[Any, Mapping[str, Any], int], None]:
    """An `Analysis.check` that section `key`'s `layer`, when set, is a layer of the preset."""

    def check(config: Any, sections: Mapping[str, Any], n_layer: int) -> None:
        layer = getattr(config, "layer", None)
        if layer is not None and not 0 <= layer < n_layer:
            raise UserError(f"{key}.layer={layer}: the preset has layers 0..{n_layer - 1}")

    return check


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
