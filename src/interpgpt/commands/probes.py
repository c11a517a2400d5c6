"""`interpgpt probes`: onset, regulation and step-index probes with causal checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.probes.config import ProbesConfig

if TYPE_CHECKING:
    from interpgpt.analysis.probes.run import ProbesResult


def probes(config: ProbesConfig) -> None:
    """Onset, regulation and step-index probes on every layer, with causal checks."""
    from interpgpt.analysis.probes.run import run_probes

    console = Console()
    with console.status("fitting probes"):
        result = run_probes(config)
    console.print(*probes_tables(result))
    console.print(f"wrote {result.json_path}, {result.plot_path}")


def probes_tables(result: ProbesResult) -> list[Table]:
    """Held-out accuracy per probe and layer, then each causal check against its null."""
    from interpgpt.analysis.probes.run import SHORT

    acc = Table(title="held-out probe accuracy")
    acc.add_column("probe")
    for label in [*result.layers, "baseline"]:
        acc.add_column(label, justify="right")
    causal = Table(title="causal checks (project the probe out)")
    for column in ("probe", "layer", "metric", "Δ", "random mean", "z", "acc after", "refit after"):
        causal.add_column(column, justify="right")
    for p in result.probes:
        if p.skipped:
            acc.add_row(p.name, *["—"] * len(result.layers), "skipped")
            continue
        acc.add_row(p.name, *[f"{a:.3f}" for a in p.accuracy], f"{p.baseline:.3f}")
        for c in p.causal:
            causal.add_row(
                p.name,
                c.layer,
                SHORT[p.name],
                f"{c.delta:+.4f}",
                f"{c.random_mean:+.4f}",
                f"{c.z:+.2f}",
                f"{c.accuracy_after_projection:.3f}",
                f"{c.refit_accuracy_after_projection:.3f}",
            )
    return [acc, causal]


def register(app: typer.Typer) -> None:
    settings.command(app, "probes", ProbesConfig)(probes)
