"""The matched-pair training loop: steps (`step.Stepper`) with periodic validation, samples
and checkpoints; the run dir at the end.

A long run shows life from its first steps, whatever its `eval_every`: metrics.jsonl is
written at the first training-loss record and then at least every `METRICS_SECONDS`,
each time with a progress line where no progress bar is shown, and a checkpoint is
saved at least every `CHECKPOINT_SECONDS`. None of this touches the weights, the
optimizer or an RNG (a checkpoint only reads them, and resuming from any step is
bit-identical), so the trained model is the same bytes; nor is it a setting.
"""

from __future__ import annotations

import time

from rich.console import Console

from interpgpt.artifacts.names import CHECKPOINT, LOSS_PLOT, MODEL_WEIGHTS
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.errors import UserError
from interpgpt.model.config import GPTConfig
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.train.batches import TokenSet, load_splits
from interpgpt.train.checkpoint import load_checkpoint, save_checkpoint
from interpgpt.train.config import TrainConfig, TrainResult
from interpgpt.train.distributed import DistInfo, finish_distributed, init_distributed
from interpgpt.train.outputs import training_progress, write_loss_plot, write_metrics, write_run
from interpgpt.train.recipe import (
    autocast_enabled,
    initial_model,
    lr_at,
    make_optimizer,
    model_config,
    state_sha256,
)
from interpgpt.train.state import LoopState
from interpgpt.train.step import Stepper


def load_tokenizer(config: TrainConfig, cfg: GPTConfig) -> TaskTokenizer:
    """The shared tokenizer; its ids must fit the preset's embedding."""
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
    used = [n for n in (CHECKPOINT, MODEL_WEIGHTS) if (config.out / n).exists()]
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
    console = Console(quiet=dist.rank != 0)
    state = start_state(model, config, dist, tokenizer, train_set, val_set)
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
            state.records, config.out / LOSS_PLOT, f"{config.variant} ({config.preset})"
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


def start_state(
    model: TaskGPT,
    config: TrainConfig,
    dist: DistInfo,
    tokenizer: TaskTokenizer,
    train_set: TokenSet,
    val_set: TokenSet,
) -> LoopState:
    """A fresh run's state, or the checkpoint's when resuming one that has a checkpoint;
    `model` holds the initial weights."""
    stepper = Stepper(
        model,
        make_optimizer(model, config),
        dist,
        schedule=lambda step: lr_at(step, config),
        grad_clip=config.grad_clip,
        autocast=autocast_enabled(config, dist.device),
    )
    # Hashed before a checkpoint can overwrite them: the weights every run of this
    # (preset, seed) starts from, resumed or not.
    init = state_sha256(model)
    state = LoopState(stepper, config, tokenizer, train_set, val_set, init_sha256=init)
    if config.resume and (config.out / CHECKPOINT).is_file():
        load_checkpoint(state)
    return state


METRICS_SECONDS = 60.0
"""Longest wall time between writes of metrics.jsonl (and progress lines) of a run."""
CHECKPOINT_SECONDS = 600.0
"""Longest wall time between checkpoints of a run, whatever its `checkpoint_every`."""


def run_loop(state: LoopState, console: Console) -> float:
    """Train until `config.steps` (or `stop_after_steps`); returns seconds spent stepping."""
    config = state.config
    assert config.steps is not None and config.eval_every and config.checkpoint_every
    seconds, window_tokens, window_seconds = 0.0, 0, 0.0
    shown = config.progress and console.is_terminal  # else progress lines say how it goes
    last_metrics: float | None = None  # none written yet by this invocation
    last_checkpoint = time.monotonic()
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
                now = time.monotonic()
                if last_metrics is None or now - last_metrics >= METRICS_SECONDS:
                    last_metrics = now
                    write_metrics(state)
                    if not shown:
                        console.print(
                            f"step {step:,}/{config.steps:,}: loss {loss:.4f}, {rate:,.0f} tok/s",
                            highlight=False,
                        )
            if step % config.eval_every == 0 or step == config.steps:
                evaluate_and_log(state, console)
            if (
                step % config.checkpoint_every == 0
                or step == config.steps
                or time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS
            ):
                save_checkpoint(state)
                last_checkpoint = time.monotonic()
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
