"""`interpgpt ablate`: causal head ablation during generation, against null heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.ablation.config import AUTO_HEADS, AblationConfig
from interpgpt.errors import UserError

if TYPE_CHECKING:
    from interpgpt.analysis.ablation.run import AblationResult, RunScore


def ablate(config: AblationConfig) -> None:
    """Ablate heads during generation; Spearman(complexity, step count) vs head nulls."""
    from interpgpt.analysis.ablation.run import run_ablation

    if config.heads == AUTO_HEADS:
        raise UserError(
            "--heads auto: only a study can resolve auto (the ADHD partner of the strongest "
            "moved head of its head-swap stage); name the heads, e.g. --heads L3H5"
        )
    console = Console()
    with console.status("sampling decompositions under ablation"):
        result = run_ablation(config)
    console.print(ablation_table(result))
    console.print(f"wrote {result.json_path}, {result.figure_path}")


def ablation_table(result: AblationResult) -> Table:
    """One row per condition: Spearman ablated per seed and the median delta."""
    parsed = " ".join(str(r.n_parsed) for r in result.baseline)
    table = Table(
        title=f"head ablation: baseline Spearman per seed {_scores(result.baseline)} "
        f"(parsed outputs {parsed})"
    )
    for column in ("condition", "heads", "ablated (per seed)", "parsed", "median Δ"):
        table.add_column(column)
    for label, runs in result.ablated.items():
        kind = "target" if label == result.target.label else "null"
        counts = " ".join(str(r.n_parsed) for r in runs)
        table.add_row(kind, label, _scores(runs), counts, f"{result.median_delta[label]:+.3f}")
    for kind, comparison in result.comparisons.items():
        table.caption = (table.caption or "") + (
            f"{kind} nulls: rank {comparison.rank}/{comparison.n_null + 1}, "
            f"p = {comparison.p_empirical:.3f}.  "
        )
    return table


def _scores(runs: list[RunScore]) -> str:
    return " ".join(f"{r.spearman:.3f}" for r in runs)


def register(app: typer.Typer) -> None:
    settings.command(app, "ablate", AblationConfig)(ablate)
