"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from interpgpt.constants import Split
from interpgpt.settings import SettingError, at_least, check_choices, inputs

AUTO_HEADS = "auto"
"""`heads` value the study resolves to the ADHD partner of the strongest moved head."""


@dataclass(frozen=True)
class AblationConfig:
    """Ablate heads while the model decomposes held-out tasks; compare with null heads
    (`interpgpt ablate`, study `[ablation]`)."""

    model: Path = inputs.argument()
    """Run dir or export dir of the model to ablate."""
    corpus: Path = inputs.option()
    """Corpus dir (written by `interpgpt corpus`): its tasks and their complexity."""
    out: Path = inputs.option()
    """Where `causal_nulls_per_seed.json` and the figure are written."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    heads: str = "L3H5"
    """Target heads, comma separated: L3H5 or L3H5,L3H1 (ablated together). In a study,
    auto: the ADHD partner of the strongest moved head of the head-swap stage."""
    seeds: int = 5
    """Sampling seeds; every condition is sampled once per seed."""
    mode: Literal["zero", "mean"] = "zero"
    """zero: z_head := 0; mean: z_head := its mean over the split's real positions."""
    split: Split = "test"
    """Corpus split whose tasks are decomposed."""
    limit: int | None = None
    """Use only the first N tasks of the split (None: all)."""
    null_random: int = 5
    """Random head sets of the target's size used as nulls."""
    layer_null: bool = True
    """Also ablate every other head of the target's layer(s), one at a time."""
    null_seed: int = 0
    """Seed of the random null head sets."""
    max_new_tokens: int = 256
    """Generation budget per task (capped by the context); unfinished outputs don't count."""
    temperature: float = 1.0
    """Sampling temperature (the metric is over samples, so not greedy)."""
    top_k: int | None = None
    """Sample among the k most likely tokens (None: all)."""
    batch_size: int = 256
    """Most rows per generation batch, a row being one task under one condition (the
    baseline or a head set); a batch holds every condition of its tasks. Each row holds
    a KV cache of the whole context: this bounds the memory."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """float32, or bfloat16 autocast (faster, not bit-exact)."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(
            self,
            seeds=1,
            limit=1,
            null_random=0,
            max_new_tokens=1,
            temperature=0,
            top_k=1,
            batch_size=1,
        )
        if self.heads != AUTO_HEADS:
            tokens = [t.strip() for t in self.heads.split(",") if t.strip()]
            bad = [t for t in tokens if not re.fullmatch(r"[Ll]\d+[Hh]\d+", t)]
            if bad or not tokens:
                raise SettingError(
                    "heads", f"{self.heads!r}: write heads as L3H5 or L3H5,L3H1 (or auto)"
                )
