"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from interpgpt.constants import Split
from interpgpt.settings import SettingError, at_least, check_choices, inputs


@dataclass(frozen=True)
class ProbesConfig:
    """Which model and sequences to probe, and how to fit and check the probes
    (`interpgpt probes`, study `[probes]`)."""

    model: Path = inputs.argument()
    """The model (run or export dir)."""
    corpus: Path = inputs.option()
    """Corpus directory; its held-out split supplies the sequences."""
    out: Path = inputs.option()
    """Directory for three_probes.json and probes.png."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    variant: Literal["auto", "standard", "adhd"] = "auto"
    """Whose sequences to read; auto: the model's own variant (ADHD if unknown). The study
    probes both models on `STUDY_SEQUENCES`."""
    split: Split = "test"
    """Corpus split of the held-out tasks."""
    limit: int | None = 300
    """Held-out tasks (one phrasing each); None for all."""
    train_fraction: float = 0.7
    """Fraction of the tasks whose positions train the probes; the rest test them."""
    max_step_index: int = 8
    """Classes of the step-index probe; the last one means "this step or later"."""
    weight_decay: float = 1e-3
    """L2 penalty on the probe weights (in the rescaled space)."""
    max_iter: int = 100
    """L-BFGS iterations per probe."""
    n_random: int = 10
    """Random subspaces (same rank) in each causal check's null."""
    causal_layers: Literal["best", "all"] = "best"
    """Run the causal check at each probe's best layer, or at every layer."""
    seed: int = 0
    """Seed of the task split and the random subspaces."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(
            self, limit=1, max_step_index=2, weight_decay=0, max_iter=1, n_random=2, batch_size=1
        )
        if not 0 < self.train_fraction < 1:
            raise SettingError(
                "train_fraction", f"must be strictly between 0 and 1 (got {self.train_fraction})"
            )
