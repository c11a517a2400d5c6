"""CLI for training and sampling: `train` and `generate`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

_VARIANTS = ("standard", "adhd")


def train(
    corpus: Path = typer.Option(..., "--corpus", help="Corpus directory written by `corpus`."),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="tokenizer.json from `tokenizer`."),
    variant: str = typer.Option(..., "--variant", help="Corpus variant: standard or adhd."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    preset: str = typer.Option("small", "--preset", help="Model preset: full, small or tiny."),
    steps: int | None = typer.Option(None, help="Optimizer steps (default: the preset's)."),
    batch_size: int | None = typer.Option(
        None, help="Sequences per step across all ranks (default: the preset's)."
    ),
    lr: float | None = typer.Option(None, help="Peak learning rate (default: the preset's)."),
    seed: int = typer.Option(0, help="Seed of the initial weights and the data order."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoint."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    no_autocast: bool = typer.Option(False, "--no-autocast", help="Train in fp32, not bf16."),
    eval_every: int | None = typer.Option(None, help="Steps between evaluations."),
    checkpoint_every: int | None = typer.Option(None, help="Steps between checkpoints."),
    stop_after_steps: int | None = typer.Option(
        None, hidden=True, help="Stop after this step as if killed (tests, time-boxing)."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Train one model of the matched pair (runs under torchrun for DDP)."""
    from interpgpt.train import TrainConfig
    from interpgpt.train import train as run_training

    config = TrainConfig(
        corpus=corpus,
        tokenizer=tokenizer,
        out=out,
        variant=variant,  # type: ignore[arg-type]  (validated by TrainConfig)
        preset=preset,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        resume=resume,
        device=device,
        autocast=not no_autocast,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        stop_after_steps=stop_after_steps,
        progress=not no_progress,
    )
    result = run_training(config)
    table = Table(title=f"{variant} run", show_header=False)
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


def generate(
    model: Path = typer.Argument(..., help="Run dir (or export dir / bundle) of a model."),
    task: list[str] = typer.Option(..., "--task", help="Task to decompose (repeatable)."),
    n: int = typer.Option(5, "--n", help="Samples per task."),
    temperature: float = typer.Option(1.0, help="Sampling temperature; 0 is greedy."),
    top_k: int | None = typer.Option(None, help="Sample among the k most likely tokens."),
    seed: int = typer.Option(0, help="Sampling seed."),
    max_new_tokens: int = typer.Option(128, help="Generated tokens per sample at most."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Sample task decompositions from a trained model and print the parsed steps."""
    from interpgpt.artifacts import load_model
    from interpgpt.generate import GenerationConfig, sample_decompositions

    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        device=device,
    )
    loaded = load_model(model)
    samples = sample_decompositions(loaded.model, loaded.tokenizer, task, config, n_samples=n)
    console = Console()
    for name in dict.fromkeys(task):
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
    import os

    return int(os.environ.get("RANK", "0"))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("generate")(generate)
