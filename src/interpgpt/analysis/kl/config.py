"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.constants import Split
from interpgpt.settings import at_least, check_choices, inputs


@dataclass(frozen=True)
class KLConfig:
    """Per-token KL between the pair's next-token distributions (`interpgpt kl`, study
    `[kl]`)."""

    standard: Path = inputs.argument()
    """Run or export dir of the standard model."""
    adhd: Path = inputs.argument()
    """Run or export dir of the ADHD model."""
    corpus: Path = inputs.option()
    """Corpus dir written by `interpgpt corpus`; both variants' sequences are read."""
    out: Path = inputs.option()
    """Output dir for kl.json and kl_by_role.png."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    split: Split = "test"
    """Corpus split to evaluate on."""
    limit: int | None = 150
    """Tasks per variant (the first of the split; None: all)."""
    top_k: int = 20
    """Highest-KL positions listed in kl.json."""
    window: int = 12
    """Tokens of context shown before each listed position (the position included)."""
    next_tokens: int = 5
    """Most likely next tokens of each model shown at each listed position."""
    batch_size: int = 16
    """Sequences per forward pass."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, limit=1, top_k=0, window=1, next_tokens=1, batch_size=1)
