"""The model's shape (`GPTConfig`, the presets) and how to sample from it: data only, no
torch, so the command line and the study read them without loading the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interpgpt.settings import SettingError, at_least, inputs


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a TaskGPT. Field names are the keys of `pytorch_model.pt`'s "config"."""

    vocab_size: int = 8197
    """Rows of the tied embedding: 8,192 BPE tokens plus five specials."""
    n_layer: int = 6
    """Transformer blocks."""
    n_head: int = 8
    """Attention heads per block."""
    d_model: int = 512
    """Residual stream width."""
    d_head: int = 64
    """Width of one head's query/key/value."""
    d_mlp: int = 1408
    """Hidden width of the SwiGLU MLP."""
    n_ctx: int = 512
    """Longest sequence the rotary tables cover."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    rope_base: float = 10_000.0
    """Rotary frequency base."""
    init_std: float = 0.02
    """Standard deviation of the normal weight init (residual projections scaled down)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "d_head", "d_mlp", "n_ctx"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_head % 2:
            raise ValueError(f"GPTConfig.d_head must be even for rotary, got {self.d_head}")

    def to_dict(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)


# Presets are data: `full` is the seed cards' 23,471,104-parameter model; `small`
# keeps the same 6 x 8 head grid so head-level analyses read the same, narrower so
# it trains on a 2-core CPU in minutes; `tiny` exists for tests.
PRESETS: dict[str, GPTConfig] = {
    "full": GPTConfig(),
    "small": GPTConfig(d_model=128, d_head=16, d_mlp=352, n_ctx=256),
    "tiny": GPTConfig(n_layer=2, n_head=4, d_model=32, d_head=8, d_mlp=64, n_ctx=256),
}


def preset(name: str, **overrides: Any) -> GPTConfig:
    """A preset by name, with optional field overrides (e.g. the tokenizer's vocab size)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclass(frozen=True)
class GenerationConfig:
    """How to sample continuations."""

    max_new_tokens: int = 128
    """Tokens generated per prompt at most (also capped by the model's context)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy argmax."""
    top_k: int | None = None
    """Sample only among the k most likely tokens (None: the whole vocabulary)."""
    seed: int = 0
    """Seed of the sampling generator."""
    batch_size: int = 64
    """Prompts decoded together."""
    device: str | None = None
    """Where to run: auto, cpu or cuda; None keeps the model where it is (`interpgpt
    generate`: auto)."""
    autocast: bool = False
    """Run matmuls in bf16 autocast (faster on CPU/GPU, not bit-comparable to fp32)."""

    def __post_init__(self) -> None:
        at_least(self, max_new_tokens=0, temperature=0, top_k=1, batch_size=1)


@dataclass(frozen=True)
class SampleConfig(GenerationConfig):
    """Decompositions of given tasks sampled from one model (`interpgpt generate`)."""

    model: Path = inputs.argument()
    """Run dir (or export dir / bundle) of a model."""
    task: tuple[str, ...] = ()
    """Task to decompose (repeat the option for several)."""
    n: int = 5
    """Samples per task."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.task:
            raise SettingError("task", "give at least one task to decompose")
        at_least(self, n=1)
