"""`interpgpt patch`: exact activation patching and attribution patching of one model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.patching.config import PatchingConfig

if TYPE_CHECKING:
    from interpgpt.analysis.patching.run import PatchingResult


def patch(config: PatchingConfig) -> None:
    """Activation patching (exact, batched) and attribution patching on corpus pairs."""
    from interpgpt.analysis.patching.run import run_patching

    console = Console()
    with console.status("patching"):
        result = run_patching(config)
    console.print(patching_table(result))
    console.print(f"wrote {result.json_path}, " + ", ".join(str(p) for p in result.figures))


def patching_table(result: PatchingResult) -> Table:
    """Per site: the strongest exact effect and the attribution correlation."""
    gap = result.clean_metric - result.corrupted_metric
    table = Table(
        title=f"activation patching (metric clean {result.clean_metric:.3f}, "
        f"corrupted {result.corrupted_metric:.3f})"
    )
    for column in ("site", "max |Δ|", "argmax", "normalized", "attribution r"):
        table.add_column(column)
    for site, exact in result.exact.items():
        effect = exact - result.corrupted_metric
        flat = int(effect.abs().argmax())
        index = tuple(int(i) for i in np.unravel_index(flat, tuple(effect.shape)))
        peak = float(effect.flatten()[flat])
        r = result.correlation.get(site)
        table.add_row(
            site,
            f"{peak:+.3f}",
            str(index),
            f"{peak / gap:+.2f}" if gap else "—",
            "—" if r is None else f"{r:.2f}",
        )
    return table


def register(app: typer.Typer) -> None:
    settings.command(app, "patch", PatchingConfig)(patch)
