"""`interpgpt diff-lens`: the activation difference lens of a pair and its steering check."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.diff_lens.config import DiffLensConfig

if TYPE_CHECKING:
    from interpgpt.analysis.diff_lens.run import DiffLensRun


def diff_lens(config: DiffLensConfig) -> None:
    """Mean ADHD − standard residual per layer, read through both unembeddings, and the
    regulation rate of the standard model steered with it against random directions."""
    from interpgpt.analysis.diff_lens.run import run_diff_lens

    console = Console()
    with console.status("reading the residual difference"):
        run = run_diff_lens(config)
    console.print(*diff_lens_tables(run))
    console.print(f"wrote {', '.join(str(p) for p in run.files.values())}")


def diff_lens_tables(run: DiffLensRun) -> list[Table]:
    """Per layer: |δ| / |resid| and the top promoted tokens; then the steering check."""
    from interpgpt.analysis.diff_lens.run import POSITION_SETS

    a, b = run.lens.names
    layers = Table(title=f"mean {b} − {a} resid_post over {run.n_sequences} sequences")
    layers.add_column("layer", justify="right")
    for s in POSITION_SETS:
        layers.add_column(f"|δ|/|resid| {s}", justify="right")
    layers.add_column(f"onset δ promotes (read by {a})")
    for layer, row in enumerate(run.layers["onset_predictor"]):
        relative = [
            run.lens.norms[s][layer] / run.lens.resid_norms[s][layer] for s in POSITION_SETS
        ]
        tokens = ", ".join(repr(p["token"]) for p in row["read_by"][a]["promoted"][:5])
        layers.add_row(f"L{layer}", *(f"{r:.3f}" for r in relative), tokens)
    tables = [layers]
    check = run.steering
    if check is not None:
        steer = Table(title=f"steering {a} at L{check.layer} on {check.n_tasks} tasks")
        steer.add_column("condition")
        steer.add_column("regulation share of steps", justify="right")
        steer.add_row("baseline", f"{check.baseline_rate:.3f}")
        steer.add_row(f"+ mean difference (|v| = {check.norm:.2f})", f"{check.steered_rate:.3f}")
        for i, rate in enumerate(check.random_rates):
            steer.add_row(f"+ random direction {i}", f"{rate:.3f}")
        steer.add_row("empirical p", f"{check.p_value:.2f}")
        tables.append(steer)
    return tables


def register(app: typer.Typer) -> None:
    settings.command(app, "diff-lens", DiffLensConfig)(diff_lens)
