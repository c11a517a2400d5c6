"""`interpgpt diff`: the pair analyses on any two models sharing a tokenizer, with controls."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.commands.tables import fitted_table
from interpgpt.diff.config import DiffConfig

if TYPE_CHECKING:
    from interpgpt.diff.run import DiffRun


def diff(config: DiffConfig) -> None:
    """KL, the difference lens, the logit lens of a token set, head profiles and weight
    distance of model b against model a, each judged against the controls (twins of a)."""
    from interpgpt.diff.run import run_diff

    console = Console()
    with console.status("diffing the pair"):
        run = run_diff(config)
    console.print(statistics_table(run))
    console.print(f"wrote {', '.join(str(p) for p in run.files.values())}")


def statistics_table(run: DiffRun) -> Table:
    from interpgpt.analysis.protocol import fmt

    a, b = run.diff.pair.labels
    value = f"{a} vs {b}"
    table = fitted_table(f"{b} against {a}", ("statistic", value, "controls", "verdict"), (value,))
    for s in run.diff.statistics.values():
        span = f"{fmt(min(s.controls))}–{fmt(max(s.controls))}" if s.controls else "—"
        table.add_row(s.name, fmt(s.value), span, s.verdict)
    return table


def register(app: typer.Typer) -> None:
    settings.command(app, "diff", DiffConfig)(diff)
