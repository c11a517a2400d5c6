"""`interpgpt export MODEL --out DIR`: Hugging Face, TransformerLens and raw PyTorch forms.

The options are `ExportConfig`'s fields (`interpgpt.settings`), the study's `[export]`
section.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.artifacts.config import ExportConfig


def export_command(config: ExportConfig) -> None:
    """Write one directory loadable by transformers, TransformerLens and TaskGPT."""
    from interpgpt.artifacts.export import export

    result = export(config)
    console = Console()
    table = Table(title=f"export of {result.variant or config.model.name} → {result.out_dir}")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for name, path in result.files.items():
        table.add_row(name, f"{path.stat().st_size:,}")
    console.print(table)
    console.print(f"parameters: {result.n_parameters:,}")
    for form, diff in result.max_abs_logit_diff.items():
        console.print(f"{form}: max |Δlogit| vs TaskGPT = {diff:.2e}")


def register(app: typer.Typer) -> None:
    settings.command(app, "export", ExportConfig)(export_command)
