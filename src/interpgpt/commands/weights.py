"""`interpgpt weights`: the matched pair in weight space."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.weights.config import WeightsConfig

if TYPE_CHECKING:
    from interpgpt.analysis.weights.run import WeightsResult


def weights(config: WeightsConfig) -> None:
    """Change from the shared init, head matching and linear mode connectivity of a pair."""
    from interpgpt.analysis.weights.run import run_weights

    console = Console()
    with console.status("comparing weights"):
        result = run_weights(config)
    console.print(*weights_tables(result))
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}")


def weights_tables(result: WeightsResult) -> list[Table]:
    """Change from init per model, the matching per layer, the loss line, the headline."""
    comparison = result.comparison
    tables = []
    change = Table(title=f"change from the shared init {result.init.sha256[:12]}… (‖W − W0‖/‖W0‖)")
    for column in ("model", "whole", "embedding", "mean head", "mean MLP"):
        change.add_column(column, justify="right")
    for name, d in (comparison.deltas or {}).items():
        change.add_row(
            name, f"{d.total:.4f}", f"{d.embed:.4f}", f"{d.mean_head:.4f}", f"{d.mlp.mean():.4f}"
        )
    tables.append(change)
    matching = comparison.matching
    layers = Table(title="weight matching: ADHD head matched to each standard head")
    for column in ("layer", "permutation", "matched cos", "same-index cos"):
        layers.add_column(column, justify="right")
    for layer, perm in enumerate(matching.perms):
        layers.add_row(
            str(layer),
            " ".join(map(str, perm)),
            f"{matching.matched_mean[layer]:.3f}",
            f"{matching.same_index_mean[layer]:.3f}",
        )
    tables.append(layers)
    if comparison.interpolation:
        tasks = ", ".join(f"{n} {name}" for name, n in result.n_tasks.items())
        line = Table(title=f"held-out loss along the line ({tasks} tasks)")
        line.add_column("α", justify="right")
        for when in comparison.interpolation:
            line.add_column(when, justify="right")
        before = comparison.interpolation["before"]
        for k, alpha in enumerate(before.alphas):
            losses = [f"{ln.loss[k]:.4f}" for ln in comparison.interpolation.values()]
            line.add_row(f"{alpha:.2f}", *losses)
        tables.append(line)
    head = Table(title="headline", show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    for key, value in result.headline.items():
        text = "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        head.add_row(key.replace("_", " "), text)
    tables.append(head)
    return tables


def register(app: typer.Typer) -> None:
    settings.command(app, "weights", WeightsConfig)(weights)
