"""`interpgpt study`: corpus → tokenizer → both models → exports → analyses → SAEs → report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from interpgpt.errors import Interrupted


def study(
    preset: str = typer.Option(
        None, help="Model preset of both models: small (default, CPU), full (GPU) or tiny."
    ),
    out: Path = typer.Option(Path("runs/study"), help="Study directory (resumed if present)."),
    config: Path = typer.Option(
        None,
        help="TOML file of study settings: preset, seed, device, twins, and one table per "
        "stage (corpus, train, headswap, sae, ...) whose keys are that stage's command options.",
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override one setting, e.g. --set sae.k=32 (repeatable)."
    ),
    force: list[str] = typer.Option(
        [], help="Rerun this stage even if its outputs are current (repeatable)."
    ),
    no_release: bool = typer.Option(
        False, "--no-release", help="Train every model and SAE here (the setting release=off)."
    ),
) -> None:
    """Run the whole matched-pair study and write report.html; a killed study resumes."""
    from interpgpt.study.config import load_study_config
    from interpgpt.study.pipeline import run_study

    console = Console()
    overrides = [*set_, "release=off"] if no_release else set_
    study_config = load_study_config(config, overrides, preset)
    try:
        result = run_study(study_config, out, set(force), console)
    except KeyboardInterrupt:
        raise Interrupted(
            f"the finished stages are kept in {out}; run the same command again to resume"
        ) from None
    console.print(
        f"[bold green]study finished[/] in {result.seconds / 60:.1f} min: "
        f"{result.out / 'report.html'}"
    )


def register(app: typer.Typer) -> None:
    app.command()(study)
