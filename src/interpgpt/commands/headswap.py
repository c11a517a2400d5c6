"""`interpgpt headswap`: the head-swap inventory of a matched pair."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.headswap.config import HeadswapConfig

if TYPE_CHECKING:
    from interpgpt.analysis.headswap.inventory import HeadswapResult


def headswap(config: HeadswapConfig) -> None:
    """Attention profiles of every head of both models and the head-swap inventory."""
    from interpgpt.analysis.headswap.inventory import run_headswap

    console = Console()
    with console.status("profiling heads"):
        result = run_headswap(config)
    console.print(*headswap_tables(result))
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}")


def headswap_tables(result: HeadswapResult) -> list[Table]:
    """Per-layer statistics, then the moved heads."""
    layers = Table(title=f"head-swap inventory ({result.n_tasks} tasks)")
    for column in ("layer", "matched", "same-index", "gap", "gap 95% CI", "p(same-index)", "moved"):
        layers.add_column(column, justify="right")
    for s in result.inventory.layers:
        ci = "—" if s.gap_ci is None else f"[{s.gap_ci[0]:.3f}, {s.gap_ci[1]:.3f}]"
        p = "—" if s.p_same_index is None else f"{s.p_same_index:.3g}"
        layers.add_row(
            str(s.layer),
            f"{s.matched_mean:.3f}",
            f"{s.same_index_mean:.3f}",
            f"{s.gap:.3f}",
            ci,
            p,
            str(s.n_moved),
        )
    moved = Table(title="moved heads")
    for column in ("pair", "cosine", "same-index", "stability"):
        moved.add_column(column)
    for m in result.inventory.moved:
        stability = "—" if m.stability is None else f"{m.stability:.0%}"
        moved.add_row(m.label, f"{m.cosine:.3f}", f"{m.same_index:.3f}", stability)
    return [layers, moved]


def register(app: typer.Typer) -> None:
    settings.command(app, "headswap", HeadswapConfig)(headswap)
