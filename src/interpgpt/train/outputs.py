"""What a run writes besides checkpoints: the run dir's weights and config, metrics.jsonl,
the loss-curve PNG, and the live progress bar.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file

from interpgpt.artifacts.names import METRICS, MODEL_WEIGHTS, RUN_CONFIG, TOKENIZER_FILE
from interpgpt.io import atomic_path, file_sha256, provenance, write_bytes, write_json, write_text
from interpgpt.train.config import TrainConfig
from interpgpt.train.state import LoopState


def write_run(state: LoopState, val_loss: float) -> None:
    """The final run dir files: weights, config.json, a copy of the tokenizer."""
    config = state.config
    out = config.out
    weights = {
        k: v.detach().float().contiguous().cpu() for k, v in state.model.state_dict().items()
    }
    with atomic_path(out / MODEL_WEIGHTS) as tmp:
        save_file(weights, str(tmp))
    write_bytes(out / TOKENIZER_FILE, config.tokenizer.read_bytes())
    write_json(
        out / RUN_CONFIG,
        {
            "model": state.model.cfg.to_dict(),
            "train": config,
            "variant": config.variant,
            "init_sha256": state.init_sha256,
            "data_seed": config.data_seed,
            "tokenizer_sha256": file_sha256(config.tokenizer),
            "val_loss": val_loss,
            "steps": state.step,
            "tokens_seen": state.tokens_seen,
            # CPU kernels sum in an order that depends on the thread count, so the same
            # seed gives the same bytes only at the same count.
            "torch_threads": torch.get_num_threads(),
            # `autocast` asks for bf16; it is used only where bf16 is native (and so the
            # bytes differ between CPUs with and without it).
            "bf16_autocast": state.stepper.autocast,
            "provenance": provenance(config),
        },
    )


def write_metrics(state: LoopState) -> None:
    if state.dist.rank == 0:
        lines = "".join(json.dumps(r, allow_nan=True) + "\n" for r in state.records)
        write_text(state.config.out / METRICS, lines)


def write_loss_plot(records: list[dict], path: Path, title: str) -> Path:
    """Training loss per log step and validation loss per evaluation, log-scaled."""
    train_pts = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val_pts = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig = Figure(figsize=(6, 4))  # no pyplot: no GUI backend, nothing global to close
    ax = fig.subplots()
    if train_pts:
        ax.plot(*zip(*train_pts, strict=True), label="train", lw=1)
    if val_pts:
        ax.plot(*zip(*val_pts, strict=True), "o-", label="val", ms=4)
    ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


@contextlib.contextmanager
def training_progress(
    console: Console, config: TrainConfig, start: int
) -> Iterator[Callable[[float, float], None]]:
    """A rich progress bar (step, loss, tokens/s, ETA); yields `advance(loss, rate)`."""
    progress = Progress(
        TextColumn(f"[bold]{config.variant}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[rate]:,.0f} tok/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not config.progress,
    )
    with progress:
        task = progress.add_task(
            "train", total=config.steps, completed=start, loss=float("nan"), rate=0.0
        )

        def advance(loss: float, rate: float) -> None:
            progress.update(task, advance=1, loss=loss, rate=rate)

        yield advance
