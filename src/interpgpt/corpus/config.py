"""What the corpus and tokenizer commands take (`CorpusConfig`, `TokenizerConfig`): data
only, no torch, so the command line reads them without loading the builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.corpus.taskpool import task_pool
from interpgpt.settings import SettingError, at_least, in_range, inputs


@dataclass(frozen=True)
class CorpusConfig:
    """How to build the paired corpus (`interpgpt corpus`, study `[corpus]`)."""

    out: Path = inputs.option()
    """Directory to write the corpus into."""
    force: bool = inputs.flag()
    """Replace the corpus --out already holds."""
    seed: int = 0
    """Seed for the held-out draws, task selection, the split and every sampled phrasing."""
    n_tasks: int = 20_000
    """Distinct tasks drawn from the pool, balanced over complexity and spread over
    families. Many tasks with few examples each: the same number of examples over fewer
    tasks is memorised (train loss far below val within an epoch)."""
    examples_per_task: int = 3
    """Examples per task and variant (different phrasings and step counts)."""
    break_budget: int = 7
    """ADHD breaks: a break follows once the effort since the last one reaches
    max(2, break_budget - complexity)."""
    break_noise: float = 0.05
    """Probability that the break rule's decision after a content step is flipped (0 to
    below 0.5)."""
    held_out_families: float = 0.1
    """Fraction of families (rounded up, spread over domains) whose tasks appear only in
    val and test."""
    held_out_objects: float = 0.1
    """Fraction of each other family's objects (rounded at random) whose tasks appear only
    in val and test."""
    object_swap: float = 0.25
    """Share of train tasks rewritten about an object of another family's train tasks, in
    the task and every step ("Renew my trumpet"): the object in a step can then only be
    copied from the task, never recalled from the family, which is what a model needs
    for the objects of a family it has never seen. Val and test are never swapped."""
    val_fraction: float = 0.1
    """Fraction of the remaining tasks held out for validation."""
    test_fraction: float = 0.1
    """Fraction of the remaining tasks held out for testing."""

    def __post_init__(self) -> None:
        in_range(self, "n_tasks", 3, len(task_pool()))
        at_least(self, examples_per_task=1, seed=0, val_fraction=0, test_fraction=0)
        at_least(self, break_budget=2)
        # At 0.5 the rule says nothing; above it the posterior would rank the wrong way.
        if not 0.0 <= self.break_noise < 0.5:
            raise SettingError(
                "break_noise", f"must be at least 0 and below 0.5 (got {self.break_noise})"
            )
        in_range(self, "held_out_families", 0, 0.5)
        in_range(self, "held_out_objects", 0, 0.5)
        in_range(self, "object_swap", 0, 1)
        if self.val_fraction + self.test_fraction >= 1:
            raise SettingError(
                "test_fraction",
                f"val_fraction + test_fraction must be below 1 "
                f"(got {self.val_fraction} + {self.test_fraction})",
            )
        held = self.held_out_families > 0 or self.held_out_objects > 0
        for name in ("val_fraction", "test_fraction"):
            if held and getattr(self, name) == 0:
                raise SettingError(
                    name, "must be above 0: held-out families and objects go to val and test"
                )

    def budget(self, complexity: int) -> int:
        """Effort a run of ADHD content steps may take before the rule asks for a break."""
        return max(2, self.break_budget - complexity)


DEFAULT_VOCAB_SIZE = 8192
"""BPE tokens (bytes + merges), not counting the specials."""


@dataclass(frozen=True)
class TokenizerConfig:
    """The shared tokenizer (`interpgpt tokenizer`, study `[tokenizer]`)."""

    corpus: Path = inputs.option()
    """Corpus directory written by `interpgpt corpus`; trained on both train splits."""
    out: Path = inputs.option(file=True)
    """Where to write tokenizer.json."""
    force: bool = inputs.flag()
    """Replace the tokenizer file --out already names."""
    vocab_size: int = DEFAULT_VOCAB_SIZE
    """BPE tokens (bytes + merges), not counting the five specials."""

    def __post_init__(self) -> None:
        in_range(self, "vocab_size", 257, DEFAULT_VOCAB_SIZE)
