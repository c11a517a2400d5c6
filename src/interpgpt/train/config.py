"""The training recipe as data: per-preset budgets, the run config, init, schedule, optimizer."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from interpgpt.io import (
    UserError,
)
from interpgpt.model import PRESETS, GPTConfig, TaskGPT, preset


@dataclass(frozen=True)
class PresetBudget:
    """Default training budget of one model preset."""

    steps: int
    """Optimizer steps."""
    batch_size: int
    """Sequences per optimizer step (global, across all ranks)."""
    lr: float
    """Peak learning rate."""


# Budgets are data. `small` is sized to train one variant in a few minutes on a 2-core
# CPU and still produce decompositions that parse; `full` follows the seed cards' ~25k
# steps; `tiny` exists for tests.
TRAIN_DEFAULTS: dict[str, PresetBudget] = {
    "full": PresetBudget(steps=25_000, batch_size=64, lr=6e-4),
    "small": PresetBudget(steps=800, batch_size=32, lr=2e-3),
    "tiny": PresetBudget(steps=200, batch_size=16, lr=3e-3),
}


@dataclass
class TrainConfig:
    """One model's training run. Unset budget fields take the preset's TRAIN_DEFAULTS."""

    corpus: Path
    """Corpus directory written by `interpgpt corpus`."""
    tokenizer: Path
    """tokenizer.json written by `interpgpt tokenizer`."""
    out: Path
    """Run directory to write (model, config, metrics, checkpoint, loss plot)."""
    variant: Literal["standard", "adhd"] = "standard"
    """Which corpus variant to train on; the only thing that differs within a pair."""
    preset: str = "small"
    """Model preset (model.PRESETS)."""
    steps: int | None = None
    """Optimizer steps."""
    batch_size: int | None = None
    """Sequences per optimizer step, summed over DDP ranks."""
    lr: float | None = None
    """Peak learning rate."""
    seed: int = 0
    """Seed of the initial weights and of the data order."""
    warmup_fraction: float = 0.05
    """Fraction of steps of linear learning-rate warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (cosine decay)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, applied to matrices only."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    autocast: bool = True
    """bf16 autocast for matmuls where the device supports it; False trains in fp32."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda; under torchrun, cuda means the local rank's GPU."""
    log_every: int = 10
    """Steps between metrics.jsonl records of the training loss."""
    eval_every: int | None = None
    """Steps between validation losses and sample decompositions (None: steps // 5)."""
    eval_batches: int = 4
    """Validation batches per evaluation (a fixed subset of the val split)."""
    n_samples: int = 3
    """Val tasks greedily decomposed at each evaluation (0 disables)."""
    checkpoint_every: int | None = None
    """Steps between checkpoints (None: eval_every)."""
    resume: bool = False
    """Continue from the run dir's checkpoint (a fresh start if it has none)."""
    stop_after_steps: int | None = None
    """Stop after this step as if killed (no final files); for tests and time-boxing."""
    progress: bool = True
    """Show a rich progress bar."""

    def __post_init__(self) -> None:
        self.corpus, self.tokenizer, self.out = (
            Path(self.corpus),
            Path(self.tokenizer),
            Path(self.out),
        )
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.variant not in ("standard", "adhd"):
            raise UserError(f"--variant must be standard or adhd, got {self.variant!r}")
        if self.preset not in PRESETS:
            raise UserError(f"--preset {self.preset!r}: choose one of {sorted(PRESETS)}")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "stop_after_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.log_every < 1 or self.eval_batches < 1 or self.n_samples < 0:
            raise UserError("log_every and eval_batches must be >= 1, n_samples >= 0")

    def resolved(self) -> TrainConfig:
        """This config with every None budget field filled from the preset's defaults."""
        budget = TRAIN_DEFAULTS[self.preset]
        steps = self.steps or budget.steps
        eval_every = self.eval_every or max(1, steps // 5)
        return dataclasses.replace(
            self,
            steps=steps,
            batch_size=self.batch_size or budget.batch_size,
            lr=self.lr or budget.lr,
            eval_every=eval_every,
            checkpoint_every=self.checkpoint_every or eval_every,
        )


@dataclass(frozen=True)
class TrainResult:
    """What a training run wrote and how it went."""

    run_dir: Path
    """The run directory (load it with `artifacts.load_model`)."""
    finished: bool
    """False when `stop_after_steps` ended the run early (no final model written)."""
    steps: int
    """Optimizer steps completed."""
    val_loss: float
    """Validation loss of the final model (NaN if not finished)."""
    tokens_seen: int
    """Real (non-pad) training tokens processed, this invocation and earlier ones."""
    tokens_per_second: float
    """Training throughput of this invocation (all ranks, evaluation time excluded)."""
    seconds: float
    """Wall time of this invocation."""
    resumed_from: int
    """Step the run resumed from (0 for a fresh start)."""
    samples: list[dict] = field(default_factory=list)
    """The last evaluation's sample decompositions ({task, steps, parsed})."""


def model_config(config: TrainConfig) -> GPTConfig:
    """The model shape: the preset alone, so both variants of a pair share it."""
    return preset(config.preset)


def initial_model(config: TrainConfig) -> TaskGPT:
    """The initial weights: a function of (preset, seed) only, identical for both variants."""
    torch.manual_seed(config.seed)
    return TaskGPT(model_config(config))


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr_ratio * lr` at the last step."""
    assert config.steps is not None and config.lr is not None, "call on config.resolved()"
    warmup = max(1, round(config.warmup_fraction * config.steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def make_optimizer(model: TaskGPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (embedding, projections), none on norm gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr or 0.0, betas=config.betas)


def autocast_enabled(config: TrainConfig, device: torch.device) -> bool:
    if not config.autocast:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"
