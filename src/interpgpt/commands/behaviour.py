"""`interpgpt behaviour`: sampled decompositions of held-out tasks by both models."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.behaviour import BehaviourConfig, BehaviourResult, measure_behaviour


def behaviour(config: BehaviourConfig) -> None:
    """Sample a decomposition of every held-out task from both models: parse rate,
    regulation use and Spearman(complexity, step count) per model."""
    console = Console()
    with console.status("sampling decompositions"):
        result = measure_behaviour(config)
    console.print(*behaviour_tables(result))
    console.print(f"wrote {result.json_path}")


def behaviour_tables(result: BehaviourResult) -> list[Table]:
    """The behaviour of each model, then one sampled decomposition per model."""
    table = Table(title=f"behaviour on {result.n_tasks} held-out tasks")
    columns = (
        "model",
        "parse rate",
        "outputs with regulation",
        "regulation step share",
        "mean steps",
        "Spearman(complexity, steps)",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    examples = Table(title="sampled decompositions", show_header=False)
    examples.add_column("model")
    examples.add_column("task")
    examples.add_column("steps")
    for name, b in result.models.items():
        table.add_row(
            name,
            f"{b.parse_rate:.3f}",
            f"{b.regulating_outputs:.3f}",
            f"{b.regulation_step_share:.3f}",
            f"{b.mean_steps:.2f}",
            f"{b.spearman_complexity_steps:.3f}",
        )
        for example in b.examples[:1]:
            examples.add_row(name, example["task"], " | ".join(example["steps"]))
    return [table, examples]


def register(app: typer.Typer) -> None:
    settings.command(app, "behaviour", BehaviourConfig)(behaviour)
