"""The training loop: one optimizer step, periodic validation and samples, NaN handling."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as torch_dist
from rich.console import Console

from interpgpt import artifacts
from interpgpt.data import (
    IGNORE_INDEX,
    Batch,
    TokenSet,
    count_targets,
    load_splits,
    make_batch,
    sample_indices,
)
from interpgpt.io import (
    UserError,
)
from interpgpt.model import GPTConfig, TaskGPT
from interpgpt.train.checkpoint import load_checkpoint, nan_message, save_checkpoint
from interpgpt.train.config import (
    TrainConfig,
    TrainResult,
    autocast_enabled,
    initial_model,
    lr_at,
    make_optimizer,
    model_config,
)
from interpgpt.train.distributed import DistInfo, finish_distributed, init_distributed
from interpgpt.train.outputs import training_progress, write_loss_plot, write_metrics, write_run
from interpgpt.train.unembed_loss import unembed_cross_entropy


def batch_loss(
    forward: torch.nn.Module, model: TaskGPT, batch: Batch, total_targets: int, world: int
) -> torch.Tensor:
    """This rank's share of the global-batch mean loss (see the module docstring).

    `forward` is the model or its DDP wrapper. Logits are computed only at positions whose
    target carries loss (right padding is often a third of a batch), a chunk of rows at a
    time and never all at once (`unembed_loss`): the vocabulary projection and softmax
    dominate a small model's step.
    """
    resid = forward(batch.input_ids, stop_at_layer=model.cfg.n_layer)
    keep = batch.targets != IGNORE_INDEX
    normed = model.ln_final(resid[keep])  # (target, d_model)
    loss_sum = unembed_cross_entropy(normed, model.embed.weight, batch.targets[keep])
    return loss_sum * (world / total_targets)


def load_tokenizer(config: TrainConfig, cfg: GPTConfig):
    """The shared tokenizer; its ids must fit the preset's embedding."""
    from interpgpt.tokenizer import TaskTokenizer

    tokenizer = TaskTokenizer.from_file(config.tokenizer)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(
            f"--tokenizer {config.tokenizer}: {tokenizer.vocab_size} tokens do not fit preset "
            f"{config.preset!r} ({cfg.vocab_size} embedding rows); retrain the tokenizer "
            f"with --vocab-size {cfg.vocab_size - 5} or less"
        )
    return tokenizer


def check_run_dir(config: TrainConfig) -> None:
    """Refuse to overwrite an existing run unless resuming it."""
    used = [n for n in (artifacts.CHECKPOINT, artifacts.MODEL_WEIGHTS) if (config.out / n).exists()]
    if used and not config.resume:
        raise UserError(
            f"--out {config.out}: already holds a run ({used[0]}); pass --resume to continue "
            "it or choose another directory"
        )


def train(config: TrainConfig) -> TrainResult:
    """Train one variant and write its run dir; see the module docstring for the recipe."""
    config = config.resolved()
    dist = init_distributed(config.device)
    try:
        return _train(config, dist)
    finally:
        finish_distributed(dist)


def _train(config: TrainConfig, dist: DistInfo) -> TrainResult:
    started = time.perf_counter()
    assert config.batch_size is not None
    if config.batch_size % dist.world:
        raise UserError(f"--batch-size {config.batch_size} is not divisible by {dist.world} ranks")
    check_run_dir(config)
    tokenizer = load_tokenizer(config, model_config(config))
    train_set, val_set = load_splits(config.corpus, config.variant, tokenizer)
    model = initial_model(config).to(dist.device)
    optimizer = make_optimizer(model, config)
    console = Console(quiet=dist.rank != 0)
    state = LoopState.start(model, optimizer, config, dist, tokenizer, train_set, val_set)
    if state.step:
        console.print(f"resuming {config.out} from step {state.step}")
    seconds_training = run_loop(state, console)
    finished = state.step >= (config.steps or 0)
    val_loss = float("nan")
    if finished and dist.rank == 0:
        last = [r for r in state.records if "val_loss" in r and r["step"] == state.step]
        val_loss = last[-1]["val_loss"] if last else state.evaluate()
        write_run(state, val_loss)
        write_loss_plot(
            state.records, config.out / artifacts.LOSS_PLOT, f"{config.variant} ({config.preset})"
        )
    dist.barrier()
    return TrainResult(
        run_dir=config.out,
        finished=finished,
        steps=state.step,
        val_loss=val_loss,
        tokens_seen=state.tokens_seen,
        tokens_per_second=state.tokens_this_run / max(seconds_training, 1e-9),
        seconds=time.perf_counter() - started,
        resumed_from=state.resumed_from,
        samples=state.last_samples,
    )


@dataclass
class LoopState:
    """Everything the loop mutates; `step` counts completed optimizer steps."""

    model: TaskGPT
    ddp: torch.nn.Module  # the model, DDP-wrapped under torchrun
    optimizer: torch.optim.AdamW
    config: TrainConfig
    dist: DistInfo
    tokenizer: object
    train_set: TokenSet
    val_set: TokenSet
    step: int = 0
    tokens_seen: int = 0
    tokens_this_run: int = 0
    resumed_from: int = 0
    records: list[dict] = field(default_factory=list)
    last_samples: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, model, optimizer, config, dist, tokenizer, train_set, val_set) -> LoopState:
        ddp = model
        if dist.world > 1:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        state = cls(model, ddp, optimizer, config, dist, tokenizer, train_set, val_set)
        if config.resume and (config.out / artifacts.CHECKPOINT).is_file():
            load_checkpoint(state)
        return state

    def precision(self):
        enabled = autocast_enabled(self.config, self.dist.device)
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self) -> float:
        """One optimizer step on global batch `self.step`; returns its mean loss."""
        config, dist, n_ctx = self.config, self.dist, self.model.cfg.n_ctx
        indices = sample_indices(config.seed, self.step, config.batch_size, len(self.train_set))
        total = count_targets(self.train_set, indices, n_ctx)
        per_rank = len(indices) // dist.world
        local = indices[dist.rank * per_rank : (dist.rank + 1) * per_rank]
        batch = make_batch(self.train_set, local, self.tokenizer.pad_id, n_ctx)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, config)
        self.ddp.train()
        with self.precision():
            loss = batch_loss(self.ddp, self.model, batch.to(dist.device), total, dist.world)
        value = loss.detach() / dist.world
        if dist.world > 1:
            torch_dist.all_reduce(value)
        if not math.isfinite(float(value)):
            raise UserError(nan_message(self))
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += total
        self.tokens_this_run += total
        return float(value)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Token-weighted mean loss on a fixed subset of the val split (rank 0 only)."""
        if self.dist.rank != 0:
            return float("nan")
        config, n_ctx = self.config, self.model.cfg.n_ctx
        assert config.batch_size is not None
        self.model.eval()
        loss_sum, targets = 0.0, 0
        for k in range(config.eval_batches):
            indices = sample_indices(config.seed, k, config.batch_size, len(self.val_set))
            batch = make_batch(self.val_set, indices, self.tokenizer.pad_id, n_ctx)
            with self.precision():
                batch = batch.to(self.dist.device)
                loss_sum += float(batch_loss(self.model, self.model, batch, 1, 1))
            targets += batch.n_tokens
        return loss_sum / targets

    def sample(self) -> list[dict]:
        """Greedy decompositions of the first few distinct val tasks."""
        from interpgpt.generate import GenerationConfig, sample_decompositions

        tasks = list(dict.fromkeys(self.val_set.tasks))[: self.config.n_samples]
        gen = GenerationConfig(max_new_tokens=self.model.cfg.n_ctx // 2, temperature=0.0)
        self.model.eval()
        decs = sample_decompositions(self.model, self.tokenizer, tasks, gen)
        return [{"task": d.task, "steps": list(d.steps), "parsed": d.parsed} for d in decs]


def run_loop(state: LoopState, console: Console) -> float:
    """Train until `config.steps` (or `stop_after_steps`); returns seconds spent stepping."""
    config = state.config
    assert config.steps is not None and config.eval_every and config.checkpoint_every
    seconds, window_tokens, window_seconds = 0.0, 0, 0.0
    with training_progress(console, config, state.step) as advance:
        while state.step < config.steps:
            before = state.tokens_this_run
            t0 = time.perf_counter()
            loss = state.train_step()
            dt = time.perf_counter() - t0
            seconds, window_seconds = seconds + dt, window_seconds + dt
            window_tokens += state.tokens_this_run - before
            rate = window_tokens / max(window_seconds, 1e-9)
            advance(loss, rate)
            step = state.step
            if step % config.log_every == 0 or step == config.steps:
                state.records.append(
                    {
                        "step": step,
                        "loss": loss,
                        "lr": lr_at(step - 1, config),
                        "tokens_seen": state.tokens_seen,
                        "tokens_per_second": rate,
                    }
                )
                window_tokens, window_seconds = 0, 0.0
            if step % config.eval_every == 0 or step == config.steps:
                evaluate_and_log(state, console)
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(state)
            if config.stop_after_steps is not None and step >= config.stop_after_steps:
                break
    return seconds


def evaluate_and_log(state: LoopState, console: Console) -> None:
    if state.dist.rank != 0:
        return
    record: dict = {"step": state.step, "val_loss": state.evaluate()}
    if state.config.n_samples:
        state.last_samples = record["samples"] = state.sample()
        for s in state.last_samples:
            mark = "" if s["parsed"] else " [unparsed]"
            steps = " | ".join(s["steps"][:12])[:160]
            console.print(f"  [dim]{s['task']}[/dim] -> {steps}{mark}", highlight=False)
    console.print(f"step {state.step}: val loss {record['val_loss']:.4f}")
    state.records.append(record)
    write_metrics(state)
