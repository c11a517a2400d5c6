"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.constants import Split
from interpgpt.settings import at_least, check_choices, inputs


@dataclass(frozen=True)
class WeightsConfig:
    """The pair in weight space: change from the shared init, head matching, linear mode
    connectivity (`interpgpt weights`, study `[weights]`)."""

    standard: Path = inputs.argument()
    """Run dir of the standard model (an export dir does not record the init's hash)."""
    adhd: Path = inputs.argument()
    """Run dir of the ADHD model."""
    out: Path = inputs.option()
    """Output dir for weights.json and the figures."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    corpus: Path | None = None
    """Corpus dir for the loss along the line between the models (None: not measured); the
    study passes its corpus."""
    headswap: Path | None = None
    """headswap.json of `interpgpt headswap`, to compare its within-layer matching with the
    weight matching (None: no comparison); the study passes its inventory's."""
    limit: int = 64
    """Held-out tasks of each variant the interpolation losses average over."""
    split: Split = "test"
    """Corpus split the interpolation losses are measured on."""
    points: int = 11
    """Points α on the line between the models, both ends included."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, limit=1, points=2, batch_size=1)
