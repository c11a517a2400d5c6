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
class KnownAnswersConfig:
    """Probes for the break rule's variables and interchange interventions on `remaining`
    (`interpgpt known-answers`, study `[known_answers]`)."""

    standard: Path = inputs.argument()
    """Run or export dir of the standard model."""
    adhd: Path = inputs.argument()
    """Run or export dir of the ADHD model."""
    corpus: Path = inputs.option()
    """Corpus dir (`interpgpt corpus`); its held-out ADHD records carry the rule's state."""
    out: Path = inputs.option()
    """Output dir for known_answers.json and the figures."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    twin: Path | None = None
    """The ADHD model's data-order twin (run or export dir), probed beside it; the study
    sets it when it trains twins."""
    split: Split = "test"
    """Held-out split (val or test: train records carry no rule state)."""
    limit: int | None = 300
    """Held-out tasks (one phrasing each); None for all."""
    train_fraction: float = 0.7
    """Fraction of the tasks whose decision points train the probes; the rest test them
    and supply the interchange pairs."""
    n_pairs: int = 256
    """(base, source) pairs per interchange, half of them with the rule's decision flipped."""
    n_random: int = 5
    """Random directions per site in the interchange null."""
    interchange_at: Literal["all", "best"] = "all"
    """Interchange at every residual site, or at each model's best `remaining` site only."""
    das_steps: int = 200
    """Adam steps of the direction learned by distributed alignment search (1-D, from the
    probe's direction, on probe-train pairs) at each model's best `remaining` site; 0: the
    probe's direction only."""
    das_at: Literal["all", "best"] = "best"
    """Learn a direction at the best `remaining` site only, or at every site the
    interchange runs at."""
    das_pairs: int = 512
    """(base, source) pairs of probe-train points the direction is learned on."""
    seed: int = 0
    """Seed of the task split, the shuffled labels, the pairs and the random directions."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, limit=1, n_pairs=2, n_random=1, batch_size=1, das_steps=0, das_pairs=2)
        if self.split == "train":
            raise SettingError("split", "train records carry no rule state; use val or test")
        if not 0 < self.train_fraction < 1:
            raise SettingError(
                "train_fraction", f"must be strictly between 0 and 1 (got {self.train_fraction})"
            )
