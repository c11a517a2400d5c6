"""The settings of `interpgpt ioi` and `ioi-demo` (and of the IOI model's training): data
only, no torch, so the command line reads them without loading the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from interpgpt.settings import SettingError, at_least, check_choices, in_range, inputs

Corruption = Literal["flip_s2", "abc"]


@dataclass(frozen=True)
class IOITrainConfig:
    """How the IOI model is shaped and trained."""

    n_layer: int = 3
    """Transformer blocks (IOI needs duplicate detection before the name move: at least 2)."""
    n_head: int = 4
    """Attention heads per block."""
    d_model: int = 64
    """Residual stream width."""
    d_head: int = 16
    """Width of one head."""
    d_mlp: int = 128
    """SwiGLU hidden width."""
    n_ctx: int = 40
    """Context length: the longest IOI sentence plus its answer fits."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 64
    """Sequences per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warmup, cosine decay)."""
    warmup: int = 100
    """Warmup steps."""
    weight_decay: float = 0.05
    """AdamW weight decay on matrices."""
    repeat_fraction: float = 0.2
    """Share of sequences that are a random word sequence repeated (grows induction heads)."""
    pair_fraction: float = 0.2
    """Share of unordered name pairs held out of training."""
    seed: int = 0
    """Seed of the init, the data stream and the held-out split."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    precision: Literal["bf16", "fp32"] = "fp32"
    """Autocast dtype of the matmuls. fp32 by default: at this width the casts cost more
    than bf16 saves on CPU (bf16 pays off at the matched pair's widths)."""
    threads: int = 1
    """CPU threads for training (0: torch's default). At this width one thread is as fast
    as two and avoids OpenMP spinning when the cores are shared."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(
            self, n_layer=1, n_head=1, d_model=1, d_head=1, d_mlp=1, n_ctx=1, steps=1,
            batch_size=1, warmup=0, weight_decay=0, threads=0,
        )  # fmt: skip
        if not self.lr > 0:
            raise SettingError("lr", f"must be positive (got {self.lr})")
        in_range(self, "repeat_fraction", 0.0, 1.0)
        if not 0.0 <= self.pair_fraction < 1.0:
            raise SettingError("pair_fraction", f"must be in [0, 1) (got {self.pair_fraction})")


@dataclass(frozen=True)
class IOIConfig:
    """One run of the IOI pipeline (`interpgpt ioi`)."""

    model: str
    """gpt2 (GPT-2 small from the local Hugging Face cache) or an IOI model directory."""
    out: Path = inputs.option()
    """Where ioi.json, ioi_report.md and the figures are written."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    n_prompts: int = 96
    """Prompts patched and attributed (the baseline scores the whole evaluation set)."""
    n_eval: int = 2000
    """Cap on the evaluation set of the baseline (a local model's held-out set is smaller)."""
    corruption: Corruption = "flip_s2"
    """Corrupted run of the patching: flip_s2 (S2 -> IO, answer flips) or abc (fresh names)."""
    seed: int = 0
    """Seed of prompt sampling and corruption."""
    device: str = "auto"
    """auto, cpu or cuda."""
    top_k: int = 3
    """Heads listed per family in the findings."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, n_prompts=2, n_eval=2, top_k=1)


MODEL_SUBDIR = "model"


@dataclass(frozen=True)
class IOIDemoConfig:
    """Train-then-analyse in one directory (`interpgpt ioi-demo`)."""

    out: Path = inputs.option()
    """Receives model/ (the IOI model) and the pipeline's outputs."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    steps: int = IOITrainConfig.steps
    """Optimizer steps of the IOI model."""
    seed: int = IOITrainConfig.seed
    """Seed of the init, the data stream and the held-out split, and of the analysis."""
    threads: int = IOITrainConfig.threads
    """CPU threads for training (0: torch's default)."""
    device: str = IOITrainConfig.device
    """auto (CUDA when available), cpu or cuda, for training and analysis."""
    n_prompts: int = IOIConfig.n_prompts
    """Prompts patched and attributed."""

    def __post_init__(self) -> None:
        self.train_config()  # its checks name the same fields
        at_least(self, n_prompts=2)

    def train_config(self) -> IOITrainConfig:
        """How the IOI model is trained: these settings, the rest `IOITrainConfig`'s defaults."""
        return IOITrainConfig(
            steps=self.steps, seed=self.seed, threads=self.threads, device=self.device
        )

    def analysis_config(self) -> IOIConfig:
        """The IOI pipeline on the trained model, writing next to it."""
        out = Path(self.out)
        return IOIConfig(
            model=str(out / MODEL_SUBDIR),
            out=out,
            n_prompts=self.n_prompts,
            seed=self.seed,
            device=self.device,
        )
