"""`interpgpt export RUN_DIR --out DIR`: Hugging Face, TransformerLens and raw PyTorch forms."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        run_dir: Path = typer.Argument(
            ..., help="Run dir written by `interpgpt train` (an export dir also works)."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Export directory to create (built beside it, then renamed)."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace --out if it already holds an earlier export."
        ),
        verify: bool = typer.Option(
            True,
            "--verify/--no-verify",
            help="Reload every written form and check its logits against the source model.",
        ),
    ) -> None:
        """Write one directory loadable by transformers, TransformerLens and TaskGPT."""
        from interpgpt.export import ExportConfig, export

        result = export(
            ExportConfig(run_dir=run_dir, out_dir=out, overwrite=overwrite, verify=verify)
        )
        console = Console()
        table = Table(title=f"export of {result.variant or run_dir.name} → {result.out_dir}")
        table.add_column("file")
        table.add_column("bytes", justify="right")
        for name, path in result.files.items():
            table.add_row(name, f"{path.stat().st_size:,}")
        console.print(table)
        console.print(f"parameters: {result.n_parameters:,}")
        for form, diff in result.max_abs_logit_diff.items():
            console.print(f"{form}: max |Δlogit| vs TaskGPT = {diff:.2e}")
