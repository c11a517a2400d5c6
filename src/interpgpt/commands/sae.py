"""CLI for the SAE stage: the `sae` command group with `train` and `train-all`.

`sae_app` is importable so other modules add their own `sae` subcommands to it:
`interpgpt.commands.sae_analysis.register_sae(sae_app)` adds `sae diff`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interpgpt.sae.training import (
    SAEHyperparams,
    SAETrainConfig,
    SAETrainResult,
    TrainAllConfig,
    train_all,
    train_sae,
)

sae_app = typer.Typer(
    name="sae",
    help="TopK sparse autoencoders on the residual stream (SAELens format).",
    no_args_is_help=True,
)

_H = SAEHyperparams()
CORPUS = typer.Option(..., "--corpus", help="Corpus dir: train split to fit, val split to judge.")
OUT = typer.Option(
    ..., "--out", help="Parent dir; each SAE goes to {model}_L{layer}_hook_resid_post/."
)
K = typer.Option(_H.k, "--k", help="Active latents per token (TopK).")
D_SAE = typer.Option(_H.d_sae, "--d-sae", help="Dictionary size (latents).")
TOKENS = typer.Option(_H.tokens, "--tokens", help="Training activations per SAE.")
BATCH = typer.Option(_H.batch_size, "--batch-size", help="Activations per optimiser step.")
LR = typer.Option(_H.lr, "--lr", help="Adam learning rate (linear decay over the last 20%).")
DATA = typer.Option(
    _H.data, "--data", help="Corpus variant feeding the model: own, standard, adhd or both."
)
BUFFER = typer.Option(
    _H.buffer_tokens, "--buffer-tokens", help="Shuffle-buffer size in activations (memory bound)."
)
EVAL_TOKENS = typer.Option(_H.eval_tokens, "--eval-tokens", help="Held-out val tokens to judge on.")
STRICT = typer.Option(False, "--strict", help="Exit non-zero when an SAE misses a quality gate.")
SEED = typer.Option(_H.seed, "--seed", help="Seed of the SAE init and the activation order.")
DEVICE = typer.Option(_H.device, "--device", help="auto (CUDA when available), cpu or cuda.")
AUTOCAST = typer.Option(
    _H.autocast, "--autocast/--no-autocast", help="bf16 autocast for the model and encoder."
)


@sae_app.command("train")
def train(
    model: Path = typer.Argument(..., help="Run or export dir of the model."),
    layer: int = typer.Option(..., "--layer", help="Block whose hook_resid_post the SAE reads."),
    corpus: Path = CORPUS,
    out: Path = OUT,
    k: int = K,
    d_sae: int = D_SAE,
    tokens: int = TOKENS,
    batch_size: int = BATCH,
    lr: float = LR,
    data: str = DATA,
    eval_tokens: int = EVAL_TOKENS,
    buffer_tokens: int = BUFFER,
    name: str | None = typer.Option(None, "--name", help="SAE model name (default: variant)."),
    strict: bool = STRICT,
    seed: int = SEED,
    device: str = DEVICE,
    autocast: bool = AUTOCAST,
) -> None:
    """Train one TopK SAE on one layer of one model, and judge it on held-out tokens."""
    config = SAETrainConfig(
        model=model, layer=layer, corpus=corpus, out=out, k=k, d_sae=d_sae, tokens=tokens,
        batch_size=batch_size, lr=lr, data=data, eval_tokens=eval_tokens, model_name=name,
        buffer_tokens=buffer_tokens,
        strict=strict, seed=seed, device=device, autocast=autocast,
    )  # fmt: skip
    console = Console()
    with console.status(f"training SAE on {model} layer {layer}"):
        result = train_sae(config)
    console.print(quality_table([result]))
    console.print(f"wrote {result.path}")


@sae_app.command("train-all")
def train_all_command(
    corpus: Path = CORPUS,
    out: Path = OUT,
    std: Path | None = typer.Option(None, "--std", help="Run or export dir of the standard model."),
    adhd: Path | None = typer.Option(None, "--adhd", help="Run or export dir of the ADHD model."),
    std_layers: str = typer.Option("0,1,2,3", help="Comma-separated standard-model layers."),
    adhd_layers: str = typer.Option("1,2,3", help="Comma-separated ADHD-model layers."),
    k: int = K,
    d_sae: int = D_SAE,
    tokens: int = TOKENS,
    batch_size: int = BATCH,
    lr: float = LR,
    data: str = DATA,
    eval_tokens: int = EVAL_TOKENS,
    buffer_tokens: int = BUFFER,
    strict: bool = STRICT,
    seed: int = SEED,
    device: str = DEVICE,
    autocast: bool = AUTOCAST,
) -> None:
    """Train the seed card's SAE set (standard L0-L3, ADHD L1-L3) or the given layers."""
    config = TrainAllConfig(
        corpus=corpus, out=out, std=std, adhd=adhd,
        std_layers=parse_layers(std_layers, "--std-layers"),
        adhd_layers=parse_layers(adhd_layers, "--adhd-layers"),
        k=k, d_sae=d_sae, tokens=tokens, batch_size=batch_size, lr=lr, data=data,
        eval_tokens=eval_tokens, strict=strict, seed=seed, device=device, autocast=autocast,
        buffer_tokens=buffer_tokens,
    )  # fmt: skip
    console = Console()
    with console.status("training SAEs"):
        result = train_all(config)
    console.print(quality_table(result.results))
    console.print(f"wrote {result.summary_path}")


def parse_layers(text: str, option: str) -> tuple[int, ...]:
    """Parse "0,1,2" as (0, 1, 2); an empty string means no layers."""
    from interpgpt.io import UserError

    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"{option} {text!r}: expected comma-separated layer numbers") from None


def quality_table(results: list[SAETrainResult]) -> Table:
    table = Table(title="SAE quality (held-out val tokens)")
    for column in ("model", "layer", "FVE", "dead", "L0", "MSE", "ΔCE", "CE rec.", "s", "gates"):
        table.add_column(column, justify="left" if column in ("model", "gates") else "right")
    for r in results:
        q = r.quality
        table.add_row(
            r.model_name, str(r.layer), f"{q.fve:.3f}", f"{q.dead_fraction:.1%}",
            f"{q.l0:.1f}", f"{q.mse:.3g}", f"{q.ce_increase:+.4f}",
            f"{q.ce_loss_recovered:.3f}", f"{r.seconds:.0f}",
            "[green]pass[/green]" if q.passed else f"[red]{'; '.join(q.failures)}[/red]",
        )  # fmt: skip
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(sae_app, name="sae")
    try:
        from interpgpt.commands.sae_analysis import register_sae
    except ModuleNotFoundError as err:
        if err.name != "interpgpt.commands.sae_analysis":
            raise
        return
    register_sae(sae_app)
