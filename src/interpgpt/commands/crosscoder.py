"""CLI for crosscoders: the `crosscoder` command group with `train` and `diff`.

`train` trains a BatchTopK crosscoder on two models (`interpgpt.crosscoder.training`),
its options generated from `CrosscoderTrainConfig`; `diff` diffs the pair through it
with Latent Scaling (`interpgpt.analysis.crosscoder_diff`), from `CrosscoderDiffConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.crosscoder_diff.config import CrosscoderDiffConfig
from interpgpt.crosscoder.config import CrosscoderTrainConfig

if TYPE_CHECKING:
    from interpgpt.analysis.crosscoder_diff.run import CrosscoderDiffResult
    from interpgpt.crosscoder.training import CrosscoderTrainResult

crosscoder_app = typer.Typer(
    name="crosscoder",
    help="BatchTopK crosscoders on a pair of models: train, and diff with Latent Scaling.",
    no_args_is_help=True,
)


def train(config: CrosscoderTrainConfig) -> None:
    """Train a BatchTopK crosscoder on one layer of two models, and judge it per model."""
    from interpgpt.crosscoder.training import train_crosscoder

    console = Console()
    with console.status(f"training a crosscoder on {config.std} and {config.adhd}"):
        result = train_crosscoder(config)
    console.print(quality_table(result))
    console.print(f"wrote {result.path}")


def quality_table(result: CrosscoderTrainResult) -> Table:
    q = result.quality
    table = Table(
        title=f"crosscoder quality (held-out val tokens): L0 {q.l0:.1f}, "
        f"dead {q.dead_fraction:.1%}, {result.seconds:.0f} s"
    )
    for column in ("model", "FVE", "MSE", "ΔCE", "CE rec."):
        table.add_column(column, justify="left" if column == "model" else "right")
    for m in q.models:
        table.add_row(
            m.name, f"{m.fve:.3f}", f"{m.mse:.3g}", f"{m.ce_increase:+.4f}",
            f"{m.ce_loss_recovered:.3f}",
        )  # fmt: skip
    return table


def diff(config: CrosscoderDiffConfig) -> None:
    """Latents one model of the pair uses and the other does not, confirmed by Latent Scaling."""
    from interpgpt.analysis.crosscoder_diff.run import crosscoder_diff

    console = Console()
    with console.status("encoding both models' activations"):
        result = crosscoder_diff(config)
    console.print(counts_table(result))
    console.print(f"wrote {result.json_path}")


def counts_table(result: CrosscoderDiffResult) -> Table:
    c = result.counts
    table = Table(title=f"{c.n_live} live latents of {c.n_latents}")
    for column in ("class", "latents", "confirmed by Latent Scaling"):
        table.add_column(column, justify="left" if column == "class" else "right")
    table.add_row("shared", str(c.n_shared), "")
    table.add_row("standard-only", str(c.n_std_only), str(c.n_std_only_confirmed))
    table.add_row("ADHD-only", str(c.n_adhd_only), str(c.n_adhd_only_confirmed))
    return table


settings.command(crosscoder_app, "train", CrosscoderTrainConfig)(train)
settings.command(crosscoder_app, "diff", CrosscoderDiffConfig)(diff)


def register(app: typer.Typer) -> None:
    app.add_typer(crosscoder_app, name="crosscoder")
