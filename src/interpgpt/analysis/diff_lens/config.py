"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.constants import Split, Variant
from interpgpt.settings import at_least, check_choices, inputs


@dataclass(frozen=True)
class DiffLensConfig:
    """The activation difference lens of a pair and its steering check (`interpgpt
    diff-lens`, study `[diff_lens]`)."""

    standard: Path = inputs.argument()
    """Run or export dir of the standard model (model a, the one steered)."""
    adhd: Path = inputs.argument()
    """Run or export dir of the ADHD model (model b)."""
    corpus: Path = inputs.option()
    """Corpus dir written by `interpgpt corpus`."""
    out: Path = inputs.option()
    """Output dir for diff_lens.json, diff_lens.safetensors and diff_lens.png."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    sequences: Variant = "standard"
    """Which variant's held-out sequences are averaged over (standard: text both models
    have seen the like of, so δ holds what the ADHD model carries into it, not its
    reading of regulation steps the standard model never saw)."""
    split: Split = "test"
    """Corpus split of the sequences and of the tasks decoded."""
    limit: int | None = 300
    """Sequences averaged over (the first of the split; None: all)."""
    top_k: int = 10
    """Promoted and suppressed tokens listed per layer and reading model."""
    layer: int | None = None
    """Layer whose resid_post is steered (None: the layer where the onset-predictor
    difference has the largest norm)."""
    scale: float = 1.0
    """Multiplier on the difference added when steering."""
    steer_tasks: int = 40
    """Held-out tasks decoded per steering condition (0 skips the check)."""
    n_random: int = 4
    """Random directions of the same norm in the steering null."""
    max_new_tokens: int = 48
    """Tokens generated per task at most."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy)."""
    seed: int = 0
    """Seed of the random directions and of sampling."""
    batch_size: int = 32
    """Sequences per forward pass, teacher-forced or decoded."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(
            self,
            limit=1,
            top_k=1,
            layer=0,
            steer_tasks=0,
            n_random=1,
            max_new_tokens=1,
            temperature=0,
            batch_size=1,
        )
