"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from interpgpt.constants import Split, Variant
from interpgpt.settings import at_least, check_choices, inputs


@dataclass(frozen=True)
class HeadswapConfig:
    """The head-swap inventory of a matched pair (`interpgpt headswap`, study `[headswap]`)."""

    standard: Path = inputs.argument()
    """Run or export dir of the standard model."""
    adhd: Path = inputs.argument()
    """Run or export dir of the ADHD model."""
    corpus: Path = inputs.option()
    """Corpus dir written by `interpgpt corpus`."""
    out: Path = inputs.option()
    """Output dir for headswap.json, migration_map.md and the figures."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    bins: int = 20
    """Bins of the normalised query-position axis."""
    sequences: Variant = "standard"
    """Which variant's held-out sequences are teacher-forced through both models."""
    split: Split = "test"
    """Corpus split to evaluate on."""
    limit: int | None = None
    """Use only the first N tasks of the split (None: all)."""
    null_samples: int = 1000
    """Random within-layer assignments in the permutation null (0: skip)."""
    bootstrap_samples: int = 1000
    """Task-bootstrap resamples for the confidence intervals (0: skip)."""
    move_margin: float = 0.1
    """A head moved when matched cosine - same-index cosine is at least this."""
    seed: int = 0
    """Seed of the null and bootstrap random draws."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Matmul precision; bfloat16 autocast is faster but less exact."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, bins=1, limit=1, null_samples=0, bootstrap_samples=0, batch_size=1)
