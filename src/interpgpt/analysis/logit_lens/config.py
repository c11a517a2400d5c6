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
class LogitLensConfig:
    """The regulation logit lens and DLA of a matched pair (`interpgpt logit-lens`, study
    `[logit_lens]`)."""

    standard: Path = inputs.argument()
    """Run or export dir of the standard model."""
    adhd: Path = inputs.argument()
    """Run or export dir of the ADHD model."""
    corpus: Path = inputs.option()
    """Corpus dir written by `interpgpt corpus`."""
    out: Path = inputs.option()
    """Output dir for logit_lens.json, dla.json and the figures."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    sequences: Variant = "adhd"
    """Which variant's held-out sequences are teacher-forced (ADHD: the regulation-bearing
    context)."""
    split: Split = "test"
    """Corpus split to evaluate on."""
    limit: int | None = None
    """Use only the first N tasks of the split (None: all)."""
    include_embed: bool = True
    """Also read the embedding (layer -1, = blocks.0.hook_resid_pre) through the lens."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Matmul precision; under bfloat16 the DLA sums match the logit only to ~1e-2."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, limit=1, batch_size=1)
