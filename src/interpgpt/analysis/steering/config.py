"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from interpgpt.settings import SettingError, at_least, in_range, inputs

MAX_SCALE = 100.0
"""Largest |--scale|: far past where an injection saturates the residual stream."""


@dataclass(frozen=True)
class SteeringConfig:
    """Which feature to steer with, where, and how large a null to draw (`interpgpt steer`)."""

    sae_dir: Path = inputs.argument()
    """SAELens-format SAE directory whose decoder row is the steering direction."""
    standard: Path = inputs.option()
    """The standard model (run or export dir)."""
    adhd: Path = inputs.option()
    """The ADHD model (run or export dir)."""
    corpus: Path = inputs.option()
    """Corpus directory; its held-out split supplies the sequences."""
    out: Path = inputs.option()
    """Directory for deepdive_steering.json and steering.png."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    diff_file: Path | None = None
    """feature_diff.json of this SAE (`interpgpt sae diff`), whose top feature is steered;
    not read when `feature` names one (then it may be left out)."""
    feature: int | None = None
    """Feature index to steer with (None: the top feature of the diff file)."""
    n_null: int = 20
    """Random directions in each variant's null."""
    seed: int = 0
    """Seed of the random directions and of sampling."""
    scale: float = 1.0
    """Multiplier on the feature's typical ADHD magnitude for the injections."""
    limit: int | None = 200
    """Held-out tasks per variant for the teacher-forced metric; None for all."""
    sequences: Literal["own", "adhd", "standard"] = "own"
    """"own": each model reads its own variant's held-out sequences (the seed card's
    setup); otherwise both read that variant's."""
    upstream_layer: int | None = None
    """Layer whose resid_post inject-upstream writes to; None: one before the SAE's layer."""
    generate_tasks: int = 16
    """Held-out tasks whose decompositions are sampled for the generated regulation rate
    (0 skips generation)."""
    n_null_generate: int = 5
    """Random directions (the first of the null, at most n_null) also run through generation."""
    max_new_tokens: int = 96
    """Sampling budget per decomposition."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""

    def __post_init__(self) -> None:
        in_range(self, "scale", -MAX_SCALE, MAX_SCALE)
        if self.n_null < 2:
            raise SettingError(
                "n_null", f"must be at least 2 to estimate a spread (got {self.n_null})"
            )
        at_least(
            self,
            feature=0,
            limit=1,
            upstream_layer=0,
            generate_tasks=0,
            n_null_generate=0,
            max_new_tokens=1,
            batch_size=1,
        )
