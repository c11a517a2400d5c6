"""The training recipe as data: per-preset budgets, the run config, init, schedule, optimizer.

`TrainConfig` is the one statement of a run's settings: its fields (and their
docstrings) are the options of `interpgpt train` and the keys of the study's `[train]`
section, and it validates itself on construction, so a bad value is reported as the
user wrote it (`--steps`, `train.steps`) before any data is read. It is frozen;
`resolved()` returns the copy with the preset's budget (and the data-order seed) filled
in, which is what the loop, the checkpoint fingerprint and the run dir's config.json see.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from interpgpt.constants import Variant
from interpgpt.model.config import PRESETS
from interpgpt.settings import SettingError, at_least, at_most, check_choices, in_range, inputs


@dataclass(frozen=True)
class PresetBudget:
    """Default training budget of one model preset."""

    steps: int
    """Optimizer steps."""
    batch_size: int
    """Sequences per optimizer step (global, across all ranks)."""
    lr: float
    """Peak learning rate."""


# Budgets are data. `small` comes from the speedrun (bench/results.md): 1,600 steps are the
# ADHD model's 30 idle minutes on a 2-core CPU (its examples are twice as long, so its
# steps take twice the standard model's) and the standard model's 15. Both still improved
# on some targets beyond that, but at this budget the release's four models train in about
# 90 minutes. `full` follows the seed cards' ~25k steps; `tiny` exists for tests.
TRAIN_DEFAULTS: dict[str, PresetBudget] = {
    "full": PresetBudget(steps=25_000, batch_size=64, lr=6e-4),
    "small": PresetBudget(steps=1600, batch_size=32, lr=3e-3),
    "tiny": PresetBudget(steps=200, batch_size=16, lr=3e-3),
}


MAX_STEPS = 1_000_000
"""Bound on --steps, far past the full preset's budget: a typo's 1e23 would run forever."""


@dataclass(frozen=True)
class TrainConfig:
    """One model's training run (`interpgpt train`, study `[train]`). Unset budget fields
    take the preset's TRAIN_DEFAULTS."""

    corpus: Path = inputs.option()
    """Corpus directory written by `interpgpt corpus`."""
    tokenizer: Path = inputs.option()
    """tokenizer.json written by `interpgpt tokenizer`."""
    out: Path = inputs.option()
    """Run directory to write (model, config, metrics, checkpoint, loss plot)."""
    variant: Variant = "standard"
    """Which corpus variant to train on; the only thing that differs within a pair."""
    preset: str = "small"
    """Model preset: full, small or tiny."""
    steps: int | None = None
    """Optimizer steps (None: the preset's)."""
    batch_size: int | None = None
    """Sequences per optimizer step, summed over DDP ranks (None: the preset's)."""
    lr: float | None = None
    """Peak learning rate (None: the preset's)."""
    seed: int = 0
    """Seed of the initial weights (and of the data order unless data_seed is set)."""
    data_seed: int | None = None
    """Seed of the data order (None: seed). A seed twin keeps seed and changes only this:
    the same initial weights, another order of the same batches."""
    optimizer: Literal["adamw", "muon"] = "muon"
    """muon: Muon on the blocks' matrices and AdamW on the embedding and norm gains, with
    one learning rate and weight decay (`step.MuonAdamW`); adamw: AdamW on every weight.
    Muon is the default: at equal minutes it beat AdamW on every behaviour metric of the
    speedrun (bench/results.md)."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """Learning rate after warmup: cosine decay, or wsd (constant, then a linear decay over
    the last cooldown_fraction of the steps); both end at min_lr_ratio * lr."""
    cooldown_fraction: float = 0.2
    """Fraction of steps of the wsd schedule's final linear decay."""
    d_model: int | None = None
    """Residual width (None: the preset's); heads keep the preset's count, so d_head is
    d_model / n_head. Both models of a pair must share it."""
    d_mlp: int | None = None
    """SwiGLU hidden width (None: the preset's)."""
    group_by_length: int = 16
    """Length grouping: each window of this many batches is re-dealt by example length, so
    a batch pads to nearly its own length (1: no grouping). The window's examples are the
    same either way."""
    warmup_fraction: float = 0.05
    """Fraction of steps of linear learning-rate warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (cosine decay)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, applied to matrices only."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas, as beta1,beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    autocast: bool = True
    """bf16 autocast for matmuls where the device runs bf16 natively (a GPU with bf16
    units, a CPU with AVX512-BF16 or AMX); elsewhere, and when off, it trains in fp32."""
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
        check_choices(self)
        if self.preset not in PRESETS:
            choices = ", ".join(PRESETS)
            raise SettingError("preset", f"{self.preset!r} is not one of {choices}")
        at_least(
            self,
            steps=1,
            batch_size=1,
            group_by_length=1,
            seed=0,
            data_seed=0,
            weight_decay=0,
            grad_clip=0,
            log_every=1,
            eval_every=1,
            eval_batches=1,
            n_samples=0,
            checkpoint_every=1,
            stop_after_steps=1,
            d_model=1,
            d_mlp=1,
        )
        at_most(self, steps=MAX_STEPS)
        if self.preset in PRESETS and self.d_model is not None:
            heads = PRESETS[self.preset].n_head
            if self.d_model % (2 * heads):
                raise SettingError(
                    "d_model", f"must be a multiple of 2 x {heads} heads (got {self.d_model})"
                )
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise SettingError("lr", f"must be above 0 (got {self.lr})")
        in_range(self, "warmup_fraction", 0, 1)
        in_range(self, "min_lr_ratio", 0, 1)
        in_range(self, "cooldown_fraction", 0, 1)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise SettingError("betas", f"must be two numbers in [0, 1) (got {self.betas})")

    def interrupted(self) -> str:
        """What an interrupted run kept (`interpgpt.settings.interrupted_message`)."""
        return (
            f"the last checkpoint in {self.out} is kept; run the same command with --resume "
            "to continue from it"
        )

    def resolved(self) -> TrainConfig:
        """This config with every None budget field filled from the preset's defaults, and
        `data_seed` from `seed`."""
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
            data_seed=self.seed if self.data_seed is None else self.data_seed,
        )


@dataclass(frozen=True)
class TrainResult:
    """What a training run wrote and how it went."""

    run_dir: Path
    """The run directory (load it with `load_model`)."""
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
