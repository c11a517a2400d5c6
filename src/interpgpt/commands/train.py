"""CLI for training and sampling: `train` and `generate`.

Both commands take their options from a config dataclass (`interpgpt.settings`):
`train` from `TrainConfig`, the study's `[train]` section, and `generate` from
`SampleConfig`, the sampling settings of `GenerationConfig` plus a model and its tasks.
"""

from __future__ import annotations

import dataclasses
import os

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.model.config import SampleConfig
from interpgpt.train.config import TrainConfig


def train(config: TrainConfig) -> None:
    """Train one model of the matched pair (runs under torchrun for DDP)."""
    from interpgpt.train.loop import train as run_training

    result = run_training(config)
    table = Table(title=f"{config.variant} run", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("run dir", str(result.run_dir))
    table.add_row("finished", "yes" if result.finished else "no (stopped early)")
    table.add_row("steps", f"{result.steps:,} (resumed from {result.resumed_from:,})")
    table.add_row("val loss", f"{result.val_loss:.4f}")
    table.add_row("tokens seen", f"{result.tokens_seen:,}")
    table.add_row("tokens/s", f"{result.tokens_per_second:,.0f}")
    table.add_row("wall time", f"{result.seconds:,.1f} s")
    Console(quiet=_rank() != 0).print(table)


def generate(config: SampleConfig) -> None:
    """Sample task decompositions from a trained model and print the parsed steps."""
    from interpgpt.artifacts.load import load_model
    from interpgpt.model.generate import sample_decompositions

    # The model loads on the CPU; without --device it runs where `auto` puts it.
    config = dataclasses.replace(config, device=config.device or "auto")
    loaded = load_model(config.model)
    samples = sample_decompositions(
        loaded.model, loaded.tokenizer, config.task, config, n_samples=config.n
    )
    console = Console()
    for name in dict.fromkeys(config.task):
        table = Table(title=f"{loaded.name}: {name}")
        table.add_column("#", justify="right")
        table.add_column("parsed")
        table.add_column("steps")
        mine = [s for s in samples if s.task == name]
        for k, sample in enumerate(mine, start=1):
            steps = "\n".join(f"{i}. {step}" for i, step in enumerate(sample.steps, start=1))
            table.add_row(str(k), "yes" if sample.parsed else "no", steps or "(none)")
        console.print(table)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def register(app: typer.Typer) -> None:
    settings.command(app, "train", TrainConfig)(train)
    settings.command(app, "generate", SampleConfig)(generate)
