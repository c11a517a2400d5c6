"""`interpgpt logit-lens`: the regulation logit lens and direct logit attribution of a pair."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.logit_lens.config import LogitLensConfig

if TYPE_CHECKING:
    from interpgpt.analysis.logit_lens.run import LogitLensResult


def logit_lens(config: LogitLensConfig) -> None:
    """Regulation logit lens and direct logit attribution at step-onset predictors."""
    from interpgpt.analysis.logit_lens.run import run_logit_lens

    console = Console()
    with console.status("reading the residual stream"):
        result = run_logit_lens(config)
    console.print(*logit_lens_tables(result))
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}")


def logit_lens_tables(result: LogitLensResult) -> list[Table]:
    """P(regulation) per layer for both models, then the headline numbers."""
    from interpgpt.analysis.logit_lens.run import EMBED_LAYER

    curves = result.curves
    lens = Table(title=f"P(regulation) at {result.n_positions} step-onset predictors")
    lens.add_column("layer", justify="right")
    for name in curves:
        lens.add_column(name, justify="right")
    for i, layer in enumerate(curves["standard"].layers):
        label = "embed" if layer == EMBED_LAYER else f"L{layer}"
        lens.add_row(label, *(f"{c.p_regulation[i]:.4f}" for c in curves.values()))
    head = Table(title="headline", show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    for name, curve in curves.items():
        jump = curve.largest_jump
        if jump is not None:
            head.add_row(
                f"{name}: largest jump",
                f"L{jump.from_layer}→L{jump.to_layer}: {jump.p_from:.3f} → {jump.p_to:.3f} "
                f"({jump.ratio:.1f}×)",
            )
    head.add_row("ADHD final-layer P(regulation)", f"{curves['adhd'].final:.3f}")
    head.add_row("regulation share of ADHD steps", f"{result.regulation_step_share:.3f}")
    head.add_row("relative difference", f"{result.final_vs_share:.1%}")
    for name, dla in result.dla.items():
        layer, h = divmod(int(abs(dla.heads).argmax()), dla.heads.shape[1])
        head.add_row(f"{name}: top DLA head", f"L{layer}H{h}: {dla.heads[layer, h]:+.3f}")
    return [lens, head]


def register(app: typer.Typer) -> None:
    settings.command(app, "logit-lens", LogitLensConfig)(logit_lens)
