"""`interpgpt known-answers`: probes for the break rule's variables and interchange
interventions on `remaining`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.known_answers.config import KnownAnswersConfig
from interpgpt.commands.tables import fitted_table

if TYPE_CHECKING:
    from interpgpt.analysis.known_answers.run import KnownAnswers


def known_answers(config: KnownAnswersConfig) -> None:
    """Probe each model for the break rule's variables; intervene on `remaining`."""
    from interpgpt.analysis.known_answers.run import run_known_answers

    console = Console()
    with console.status("probing for the break rule's variables"):
        result = run_known_answers(config)
    console.print(*known_answers_tables(result.answers))
    console.print(f"wrote {result.json_path}, {result.probes_plot}, {result.interchange_plot}")


SHORT_METRIC = {"r2": "R²", "accuracy": "acc"}
"""A probe's metric as its table shows it (one column narrower)."""


def known_answers_tables(answers: KnownAnswers) -> list[Table]:
    """Probe score (selectivity) per model, variable and layer; then the interchanges."""
    probes = fitted_table(
        "probe-test score (selectivity below it) at the rule's decision points",
        ("model", "variable", "metric", *answers.layers),
        answers.layers,
        caption="metric: R² (r2) or acc (accuracy)",
    )
    numbers = ("IIA", "IIA flip", "random", "sign", "random", "Δ up", "Δ down")
    inter = fitted_table(
        "interchange on remaining along the probe direction (random: mean)",
        ("model", "layer", *numbers),
        numbers,
    )
    for m in answers.models:
        for v in m.probes.scores:
            cells = (
                ["skipped"] * len(answers.layers)
                if v.skipped
                else [f"{s:.2f}\n{d:+.2f}" for s, d in zip(v.score, v.selectivity, strict=True)]
            )
            probes.add_row(m.name, v.variable, SHORT_METRIC.get(v.metric, v.metric), *cells)
        for x in m.interchange:
            p = x.probe
            inter.add_row(
                m.name,
                x.layer,
                f"{p.iia:.2f}",
                f"{p.iia_flip:.2f}",
                f"{x.random_iia_flip:.2f}",
                f"{p.sign_agreement:.2f}",
                f"{x.random_sign_agreement:.2f}",
                f"{p.mean_delta_up:+.3f}",
                f"{p.mean_delta_down:+.3f}",
            )
    return [probes, inter]


def register(app: typer.Typer) -> None:
    settings.command(app, "known-answers", KnownAnswersConfig)(known_answers)
