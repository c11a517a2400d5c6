"""What a matched-pair training run carries from step to step (`LoopState`): the model
and its optimizer (a `step.Stepper`), the encoded splits, the counters and the records.

The loop (`loop`) drives it, `checkpoint` saves and restores it, `outputs` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interpgpt.artifacts.names import CHECKPOINT
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.errors import UserError
from interpgpt.model.config import GenerationConfig
from interpgpt.model.generate import sample_decompositions
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.train.batches import SampledBatches, TokenSet
from interpgpt.train.config import TrainConfig
from interpgpt.train.distributed import DistInfo
from interpgpt.train.step import NonFiniteLoss, Stepper


@dataclass
class LoopState:
    """Everything the loop mutates; `step` counts completed optimizer steps."""

    stepper: Stepper
    config: TrainConfig
    tokenizer: TaskTokenizer
    train_set: TokenSet
    val_set: TokenSet
    step: int = 0
    tokens_seen: int = 0
    tokens_this_run: int = 0
    resumed_from: int = 0
    init_sha256: str = ""
    """`train.config.state_sha256` of the initial weights (same for both variants and a twin)."""
    records: list[dict] = field(default_factory=list)
    last_samples: list[dict] = field(default_factory=list)

    @property
    def model(self) -> TaskGPT:
        return self.stepper.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.stepper.optimizer

    @property
    def dist(self) -> DistInfo:
        return self.stepper.dist

    def batches(self, data: TokenSet, seed: int) -> SampledBatches:
        """The (seed, step)-ordered batches of `data` at this run's batch size."""
        assert self.config.batch_size is not None, "call on config.resolved()"
        n_ctx = self.model.cfg.n_ctx
        return SampledBatches(
            data,
            seed,
            self.config.batch_size,
            self.tokenizer.pad_id,
            n_ctx,
            group=self.config.group_by_length,
        )

    def train_step(self) -> float:
        """One optimizer step on global batch `self.step` of the `data_seed` order; returns
        its mean loss."""
        assert self.config.data_seed is not None, "call on config.resolved()"
        batches = self.batches(self.train_set, self.config.data_seed)
        try:
            loss, total = self.stepper.step(self.step, batches)
        except NonFiniteLoss:
            raise UserError(nan_message(self)) from None
        self.step += 1
        self.tokens_seen += total
        self.tokens_this_run += total
        return loss

    def evaluate(self) -> float:
        """Token-weighted mean loss on a fixed subset of the val split (rank 0 only). The
        subset follows `seed`, not `data_seed`, so a model and its twin are scored on the
        same examples."""
        if self.dist.rank != 0:
            return float("nan")
        val = self.batches(self.val_set, self.config.seed)
        return self.stepper.evaluate(val.global_batch(k) for k in range(self.config.eval_batches))

    def sample(self) -> list[dict]:
        """Greedy decompositions of the first few distinct val tasks."""
        tasks = list(dict.fromkeys(self.val_set.tasks))[: self.config.n_samples]
        gen = GenerationConfig(max_new_tokens=self.model.cfg.n_ctx // 2, temperature=0.0)
        self.model.eval()
        decs = sample_decompositions(self.model, self.tokenizer, tasks, gen)
        return [{"task": d.task, "steps": list(d.steps), "parsed": d.parsed} for d in decs]


def nan_message(state: LoopState) -> str:
    path = state.config.out / CHECKPOINT
    kept = (
        f"the last good checkpoint is kept in {path}"
        if path.is_file()
        else "no checkpoint was written yet"
    )
    return (
        f"training loss became NaN/inf at step {state.step}; stopped, {kept}; "
        "lower --lr (or raise warmup) and train again"
    )
