"""`interpgpt steer`: steer with one SAE feature, each effect against a random-direction null."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.steering.config import SteeringConfig

if TYPE_CHECKING:
    from interpgpt.analysis.steering.run import SteeringResult


def steer_command(config: SteeringConfig) -> None:
    """Four steering interventions with one SAE feature, each against a random-direction null."""
    from interpgpt.analysis.steering.run import steer

    console = Console()
    with console.status("steering"):
        result = steer(config)
    console.print(steering_table(result))
    for variant in result.variants:
        console.print(f"{variant.name}: {variant.verdict}")
    console.print(f"wrote {result.json_path}, {result.plot_path}")


def steering_table(result: SteeringResult) -> Table:
    table = Table(title=f"feature {result.feature}, magnitude {result.magnitude:.3g}")
    for column in ("variant", "Δ P(reg)", "SEM", "null mean", "null std", "z", "outside", "Δ gen"):
        table.add_column(column, justify="right")
    for v in result.variants:
        c = v.p_regulation
        gen = "—" if v.generation is None else f"{v.generation.effect.delta:+.3f}"
        table.add_row(
            v.name,
            f"{c.effect.delta:+.4f}",
            f"{c.effect.sem:.4f}",
            f"{c.null_mean:+.4f}",
            f"{c.null_std:.4f}",
            f"{c.z:+.2f}",
            "yes" if c.outside_null else "no",
            gen,
        )
    return table


def register(app: typer.Typer) -> None:
    settings.command(app, "steer", SteeringConfig)(steer_command)
