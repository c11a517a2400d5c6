"""CLI for the Phase 1 pair analyses: `headswap` and `logit-lens`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interpgpt.analysis.headswap import HeadswapConfig, HeadswapResult, run_headswap
from interpgpt.analysis.logit_lens import LogitLensConfig, LogitLensResult, run_logit_lens

_HS = HeadswapConfig(Path(), Path(), Path(), Path())
_LL = LogitLensConfig(Path(), Path(), Path(), Path())

STANDARD = typer.Argument(..., help="Run or export dir of the standard model.")
ADHD = typer.Argument(..., help="Run or export dir of the ADHD model.")
CORPUS = typer.Option(..., "--corpus", help="Corpus dir written by `interpgpt corpus`.")
SPLIT = typer.Option("test", help="Corpus split to evaluate on: train, val or test.")
LIMIT = typer.Option(None, help="Use only the first N tasks of the split (default: all).")
BATCH = typer.Option(32, help="Sequences per forward pass.")
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")
DTYPE = typer.Option("float32", help="float32, or bfloat16 autocast (faster, less exact).")


def headswap(
    standard: Path = STANDARD,
    adhd: Path = ADHD,
    corpus: Path = CORPUS,
    out: Path = typer.Option(..., "--out", help="Output dir for headswap.json and figures."),
    bins: int = typer.Option(_HS.bins, help="Bins of the normalised query-position axis."),
    sequences: str = typer.Option(
        _HS.sequences, help="Held-out sequences to teacher-force: standard or adhd."
    ),
    split: str = SPLIT,
    limit: int | None = LIMIT,
    null_samples: int = typer.Option(
        _HS.null_samples, help="Random within-layer assignments in the permutation null."
    ),
    bootstrap_samples: int = typer.Option(
        _HS.bootstrap_samples, help="Task-bootstrap resamples for confidence intervals."
    ),
    move_margin: float = typer.Option(
        _HS.move_margin, help="A head moved when matched - same-index cosine >= this."
    ),
    seed: int = typer.Option(_HS.seed, help="Seed of the null and bootstrap draws."),
    batch_size: int = BATCH,
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """Attention profiles of every head of both models and the head-swap inventory."""
    config = HeadswapConfig(
        standard, adhd, corpus, out, bins=bins, sequences=sequences, split=split, limit=limit,
        null_samples=null_samples, bootstrap_samples=bootstrap_samples,
        move_margin=move_margin, seed=seed, batch_size=batch_size, device=device,
        dtype=dtype,
    )  # fmt: skip
    console = Console()
    with console.status("profiling heads"):
        result = run_headswap(config)
    console.print(*headswap_tables(result))
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}")


def headswap_tables(result: HeadswapResult) -> list[Table]:
    """Per-layer statistics, then the moved heads."""
    layers = Table(title=f"head-swap inventory ({result.n_tasks} tasks)")
    for column in ("layer", "matched", "same-index", "gap", "gap 95% CI", "p(same-index)", "moved"):
        layers.add_column(column, justify="right")
    for s in result.inventory.layers:
        ci = "—" if s.gap_ci is None else f"[{s.gap_ci[0]:.3f}, {s.gap_ci[1]:.3f}]"
        p = "—" if s.p_same_index is None else f"{s.p_same_index:.3g}"
        layers.add_row(
            str(s.layer),
            f"{s.matched_mean:.3f}",
            f"{s.same_index_mean:.3f}",
            f"{s.gap:.3f}",
            ci,
            p,
            str(s.n_moved),
        )
    moved = Table(title="moved heads")
    for column in ("pair", "cosine", "same-index", "stability"):
        moved.add_column(column)
    for m in result.inventory.moved:
        stability = "—" if m.stability is None else f"{m.stability:.0%}"
        moved.add_row(m.label, f"{m.cosine:.3f}", f"{m.same_index:.3f}", stability)
    return [layers, moved]


def logit_lens(
    standard: Path = STANDARD,
    adhd: Path = ADHD,
    corpus: Path = CORPUS,
    out: Path = typer.Option(..., "--out", help="Output dir for logit_lens.json, dla.json, plots."),
    sequences: str = typer.Option(
        _LL.sequences, help="Held-out sequences to teacher-force: adhd or standard."
    ),
    split: str = SPLIT,
    limit: int | None = LIMIT,
    embed: bool = typer.Option(
        _LL.include_embed, help="Also read the embedding (layer -1) through the lens."
    ),
    batch_size: int = BATCH,
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """Regulation logit lens and direct logit attribution at step-onset predictors."""
    config = LogitLensConfig(
        standard, adhd, corpus, out, sequences=sequences, split=split, limit=limit,
        include_embed=embed, batch_size=batch_size, device=device, dtype=dtype,
    )  # fmt: skip
    console = Console()
    with console.status("reading the residual stream"):
        result = run_logit_lens(config)
    console.print(*logit_lens_tables(result))
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}")


def logit_lens_tables(result: LogitLensResult) -> list[Table]:
    """P(regulation) per layer for both models, then the headline numbers."""
    curves = result.curves
    lens = Table(title=f"P(regulation) at {result.n_positions} step-onset predictors")
    lens.add_column("layer", justify="right")
    for name in curves:
        lens.add_column(name, justify="right")
    for i, layer in enumerate(curves["standard"].layers):
        label = "embed" if layer == -1 else f"L{layer}"
        lens.add_row(label, *(f"{c.p_regulation[i]:.4f}" for c in curves.values()))
    head = Table(title="headline", show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    for name, curve in curves.items():
        jump = curve.largest_jump
        if jump is not None:
            head.add_row(
                f"{name}: largest jump",
                f"L{jump.from_layer}→L{jump.to_layer}: {jump.p_from:.3f} → {jump.p_to:.3f} "
                f"({jump.ratio:.1f}×)",
            )
    head.add_row("ADHD final-layer P(regulation)", f"{curves['adhd'].final:.3f}")
    head.add_row("regulation share of ADHD steps", f"{result.regulation_step_share:.3f}")
    head.add_row("relative difference", f"{result.final_vs_share:.1%}")
    for name, dla in result.dla.items():
        layer, h = divmod(int(abs(dla.heads).argmax()), dla.heads.shape[1])
        head.add_row(f"{name}: top DLA head", f"L{layer}H{h}: {dla.heads[layer, h]:+.3f}")
    return [lens, head]


def register(app: typer.Typer) -> None:
    app.command("headswap")(headswap)
    app.command("logit-lens")(logit_lens)
