"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.constants import Variant
from interpgpt.settings import at_least, inputs


@dataclass(frozen=True)
class BehaviourConfig:
    """Sampled decompositions of held-out tasks by both models of a pair
    (`interpgpt behaviour`, study `[behaviour]`)."""

    standard: Path = inputs.argument()
    """Run or export dir of the standard model."""
    adhd: Path = inputs.argument()
    """Run or export dir of the ADHD model."""
    corpus: Path = inputs.option()
    """Corpus dir: its test split supplies the held-out tasks, tasks.jsonl which of their
    families were held out of training."""
    out: Path = inputs.option()
    """Output dir for behaviour.json."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    limit: int | None = 150
    """Held-out tasks to decompose per subset, seen and unseen families (None: all)."""
    auroc_tasks: int | None = 300
    """ADHD test tasks per subset whose records are teacher-forced for the P(regulation)
    AUROC (None: all)."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy, what the exports' generation_config and a plain
    Hugging Face `generate` do)."""
    top_k: int | None = None
    """Top-k sampling cut-off (None: full distribution)."""
    seed: int = 0
    """Sampling seed."""
    max_new_tokens: int = 240
    """Generated tokens per task at most (ADHD decompositions run to ~150 tokens)."""
    batch_size: int = 64
    """Sequences per batch, sampled or teacher-forced (sampling with another batch size
    draws other samples)."""
    examples_shown: int = 3
    """Sampled decompositions per model and subset kept in the JSON for reading."""
    device: str = "auto"
    """auto, cpu or cuda."""

    def __post_init__(self) -> None:
        at_least(
            self,
            limit=1,
            auroc_tasks=1,
            temperature=0,
            top_k=1,
            max_new_tokens=1,
            batch_size=1,
            examples_shown=0,
        )

    @property
    def models(self) -> dict[Variant, Path]:
        """Model label -> run or export dir."""
        return {"standard": self.standard, "adhd": self.adhd}
