"""CLI of the release: `interpgpt release build` and `interpgpt release verify`.

`build` takes the study's settings the way `interpgpt study` does (`--preset`, `--config`,
`--set`), since the release is the study's own training and SAE stages at those settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt.artifacts.names import RELEASE_DIR
from interpgpt.commands.tables import fitted_table
from interpgpt.release.config import CHECK_TASKS, WORK_DIR

if TYPE_CHECKING:
    from interpgpt.release.build import BuildResult
    from interpgpt.release.verify import VerifyResult

release_app = typer.Typer(
    name="release",
    help="The trained matched pair, its twins and their SAEs, with a manifest.",
    no_args_is_help=True,
)


@release_app.command()
def build(
    out: Path = typer.Option(RELEASE_DIR, help="Release directory to write (replaced)."),
    work: Path = typer.Option(
        WORK_DIR, help="Study-layout work dir the stages train in; a killed build resumes it."
    ),
    preset: str = typer.Option(None, help="Model preset (the study's default: small)."),
    config: Path = typer.Option(None, help="TOML file of study settings (as `study --config`)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override one study setting, e.g. --set train.steps=2000."
    ),
    check_tasks: int = typer.Option(
        CHECK_TASKS, min=1, help="Unseen-family tasks of the behaviour check `verify` repeats."
    ),
) -> None:
    """Train the four models and the study's SAEs (resumable) and write the release."""
    from interpgpt.release.build import build_release
    from interpgpt.study.config import load_study_config

    console = Console()
    study_config = load_study_config(config, set_, preset)
    result = build_release(study_config, out, work, console, check_tasks)
    console.print(build_table(result))
    console.print(f"{len(result.manifest['files'])} files; built in {result.seconds / 60:.1f} min")


@release_app.command()
def verify(
    root: Path = typer.Argument(RELEASE_DIR, help="The release directory."),
    behaviour: bool = typer.Option(
        True, help="Also repeat the fixed behaviour check against the manifest's values."
    ),
) -> None:
    """Check every file's sha256 and load every model and SAE; exit 2 on the first failure."""
    from interpgpt.release.verify import verify_release

    result = verify_release(root, behaviour)
    Console().print(verify_table(result))
    print(
        f"release verified: {result.files} files, {len(result.models)} models, "
        f"{len(result.saes)} SAEs"
    )


def build_table(result: BuildResult) -> Table:
    numbers = ("steps", "val loss", "targets met", "wall time")
    table = fitted_table(f"release → {result.out}", ("model", *numbers), numbers)
    for name, m in result.manifest["models"].items():
        met = f"{sum(m['targets'].values())} of {len(m['targets'])}"
        wall = f"{m['wall_seconds'] / 60:.1f} min"
        table.add_row(name, f"{m['steps']:,}", f"{m['val_loss']:.4f}", met, wall)
    return table


def verify_table(result: VerifyResult) -> Table:
    numbers = ("max |Δlogit| HF / TL / raw", "check parse / on-topic")
    table = fitted_table(f"release {result.root}", ("model", *numbers), numbers)
    for m in result.models:
        diffs = " / ".join(f"{m.logit_diff[k]:.1e}" for k in m.logit_diff)
        rates = [m.check.get(k) for k in ("parse_rate", "on_topic_rate")]
        check = " / ".join("n/a" if r is None else f"{r:.2f}" for r in rates) if m.check else "-"
        table.add_row(m.name, diffs, check)
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(release_app, name="release")
