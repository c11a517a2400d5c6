"""CLI for the IOI sandbox: `ioi` (the pipeline on GPT-2 or a local model) and `ioi-demo`.

Their options are generated from `IOIConfig` and `IOIDemoConfig` (`interpgpt.settings`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.ioi.config import IOIConfig, IOIDemoConfig

if TYPE_CHECKING:
    from interpgpt.ioi.analysis import IOIResult


def ioi(config: IOIConfig) -> None:
    """Run the IOI pipeline: baseline, patching, DLA, head scores, report."""
    from interpgpt.ioi.analysis import run_ioi

    console = Console()
    with console.status("running the IOI pipeline"):
        result = run_ioi(config)
    console.print(summary_table(result))
    console.print(f"wrote {result.report_path} and {len(result.figures)} figures")


def ioi_demo(config: IOIDemoConfig) -> None:
    """Train a small model on the synthetic IOI language, then run the IOI pipeline on it."""
    from interpgpt.ioi.demo import run_demo

    console = Console()
    with console.status("training the IOI model and running the pipeline"):
        result = run_demo(config)
    t = result.training
    console.print(
        f"trained in {t.seconds:.0f} s (final loss {t.final_loss:.3f}); held-out mean logit "
        f"diff {t.heldout_logit_diff:+.2f}, smallest role swap {t.min_role_swap:+.2f}"
    )
    console.print(summary_table(result.analysis))
    console.print(f"wrote {result.analysis.report_path}")


def summary_table(result: IOIResult) -> Table:
    b, f = result.baseline, result.findings
    table = Table(title=f"IOI on {result.subject}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("mean logit diff", f"{b.mean_logit_diff:+.2f} over {b.n_prompts} prompts")
    table.add_row("positive", f"{b.frac_positive:.1%}")
    table.add_row("role swaps all positive", str(b.all_swaps_positive))
    table.add_row("name movers", ", ".join(f.name_movers) or "—")
    table.add_row("subject suppressors", ", ".join(f.subject_suppressors) or "—")
    table.add_row("duplicate-token heads", ", ".join(f.duplicate_token))
    table.add_row("induction heads", ", ".join(f.induction))
    table.add_row("top patching heads", ", ".join(f.patching))
    return table


def register(app: typer.Typer) -> None:
    settings.command(app, "ioi", IOIConfig)(ioi)
    settings.command(app, "ioi-demo", IOIDemoConfig)(ioi_demo)
