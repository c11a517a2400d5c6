"""CLI for the SAEs: the `sae` command group with `train`, `train-all` and `diff`.

Each command's options are generated from its config (`interpgpt.settings`):
`train` from `SAETrainConfig`, `train-all` from `TrainAllConfig` (also the study's
`[sae]` section). `diff` is the cross-model feature diff of one trained SAE
(`interpgpt.analysis.feature_diff`), its options generated from `FeatureDiffConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.feature_diff.config import FeatureDiffConfig
from interpgpt.commands.tables import fitted_table, number
from interpgpt.sae.config import SAETrainConfig, TrainAllConfig

if TYPE_CHECKING:
    from interpgpt.analysis.feature_diff.run import FeatureDiffResult
    from interpgpt.sae.training import SAETrainResult

sae_app = typer.Typer(
    name="sae",
    help="TopK sparse autoencoders on the residual stream (SAELens format).",
    no_args_is_help=True,
)


FORCE = {
    "force": "Replace the SAE directories this writes (and train-all's sae_summary.json) "
    "where --out already holds them; without it they are refused before any training."
}
"""`--force`: a switch of the command line only, so it is in no SAE's provenance."""


def train(config: SAETrainConfig, force: bool = False) -> None:
    """Train one TopK SAE on one layer of one model, and judge it on held-out tokens."""
    from interpgpt.sae.training import train_sae

    console = Console()
    with console.status(f"training SAE on {config.model} layer {config.layer}"):
        result = train_sae(config, force=force)
    console.print(quality_table([result]))
    console.print(f"wrote {result.path}")


def train_all_command(config: TrainAllConfig, force: bool = False) -> None:
    """Train the seed card's SAE set (standard L0-L3, ADHD L1-L3) or the given layers."""
    from interpgpt.sae.training import train_all

    console = Console()
    with console.status("training SAEs"):
        result = train_all(config, force=force)
    console.print(quality_table(result.results))
    console.print(f"wrote {result.summary_path}")


def quality_table(results: list[SAETrainResult]) -> Table:
    numbers = ("layer", "FVE", "dead", "L0", "MSE", "ΔCE", "CE rec.", "s")
    table = fitted_table("SAE quality (held-out val tokens)", ("model", *numbers, "gates"), numbers)
    for r in results:
        q = r.quality
        table.add_row(
            r.model_name, str(r.layer), number(q.fve), f"{q.dead_fraction:.1%}",
            number(q.l0), number(q.mse), number(q.ce_increase, signed=True),
            number(q.ce_loss_recovered), f"{r.seconds:.0f}",
            "[green]pass[/green]" if q.passed else "[red]fail[/red]",
        )  # fmt: skip
    failed = [f"{r.model_name} L{r.layer}: {'; '.join(r.quality.failures)}" for r in results]
    table.caption = "\n".join(
        f for r, f in zip(results, failed, strict=True) if not r.quality.passed
    )
    return table


def diff(config: FeatureDiffConfig) -> None:
    """Features of one SAE that fire at ADHD step onsets and (almost) never at standard ones."""
    from interpgpt.analysis.feature_diff.run import feature_diff

    console = Console()
    with console.status("encoding both models' activations"):
        result = feature_diff(config)
    console.print(diff_table(result, config))
    console.print(f"wrote {result.json_path}, {result.markdown_path}")


def diff_table(result: FeatureDiffResult, config: FeatureDiffConfig, rows: int = 10) -> Table:
    table = Table(title=f"{len(result.selected)} ADHD-specific features")
    for column in ("feature", "ADHD rate", "standard rate", "asymmetry"):
        table.add_column(column, justify="right")
    for f in result.selected[:rows]:
        a, s = float(result.adhd.onset_rate[f]), float(result.standard.onset_rate[f])
        ratio = (a + config.epsilon) / (s + config.epsilon)
        table.add_row(str(f), f"{a:.2%}", f"{s:.3%}", f"{ratio:.1f}×")
    return table


settings.command(sae_app, "train", SAETrainConfig, FORCE)(train)
settings.command(sae_app, "train-all", TrainAllConfig, FORCE)(train_all_command)
settings.command(sae_app, "diff", FeatureDiffConfig)(diff)


def register(app: typer.Typer) -> None:
    app.add_typer(sae_app, name="sae")
