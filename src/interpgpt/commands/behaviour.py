"""`interpgpt behaviour`: sampled decompositions of held-out tasks by both models, on seen
and unseen families."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.behaviour.config import BehaviourConfig

if TYPE_CHECKING:
    from interpgpt.analysis.behaviour.run import BehaviourResult


def behaviour(config: BehaviourConfig) -> None:
    """Sample a decomposition of every held-out task from both models and teacher-force the
    ADHD test records: parse, on-topic and object-mention rates, Spearman(complexity, step
    count), regulation use and the P(regulation) AUROC, per model on seen and unseen
    families."""
    from interpgpt.analysis.behaviour.run import measure_behaviour

    console = Console()
    with console.status("sampling decompositions"):
        result = measure_behaviour(config)
    console.print(*behaviour_tables(result))
    console.print(f"wrote {result.json_path}")


def behaviour_tables(result: BehaviourResult) -> list[Table]:
    """The report section's table (model x subset), then one sampled decomposition per
    model and subset."""
    from interpgpt.analysis.behaviour.run import TABLE_HEADER, table_rows

    n = result.n_tasks
    table = Table(title=f"behaviour on {n['seen']} seen- and {n['unseen']} unseen-family tasks")
    for column in TABLE_HEADER:
        table.add_column(column, justify="left" if column in ("model", "subset") else "right")
    for row in table_rows(result.summary["models"]):
        table.add_row(*row)
    examples = Table(title="sampled decompositions", show_header=False)
    for column in ("model", "subset", "task", "steps"):
        examples.add_column(column)
    for name, subsets in result.models.items():
        for subset, b in subsets.items():
            for example in b.examples[:1]:
                examples.add_row(name, subset, example["task"], " | ".join(example["steps"]))
    return [table, examples]


def register(app: typer.Typer) -> None:
    settings.command(app, "behaviour", BehaviourConfig)(behaviour)
