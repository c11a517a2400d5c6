"""CLI for the Phase 5 analyses: `sae diff`, `steer` and `probes`.

`register_sae(sae_app)` adds `diff` to the `sae` group (called by `commands.sae`);
`register(app)` adds the top-level `steer` and `probes` commands.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interpgpt.analysis.probes import SHORT, ProbesConfig, ProbesResult, run_probes
from interpgpt.io import UserError
from interpgpt.sae.diff import FeatureDiffConfig, FeatureDiffResult, feature_diff
from interpgpt.sae.steering import SteeringConfig, SteeringResult, steer

_FD = FeatureDiffConfig(Path(), Path(), Path(), Path(), Path())
_ST = SteeringConfig(Path(), Path(), Path(), Path(), Path(), feature=0)
_PR = ProbesConfig(Path(), Path(), Path())

SAE_DIR = typer.Option(..., "--sae", help="SAELens-format SAE dir (cfg.json + weights).")
STD = typer.Option(..., "--std", help="Run or export dir of the standard model.")
ADHD = typer.Option(..., "--adhd", help="Run or export dir of the ADHD model.")
CORPUS = typer.Option(..., "--corpus", help="Corpus dir written by `interpgpt corpus`.")
BATCH = typer.Option(32, help="Sequences per forward pass.")
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")


def diff(
    sae_dir: Path = typer.Argument(..., help="SAELens-format SAE dir (cfg.json + weights)."),
    std: Path = STD,
    adhd: Path = ADHD,
    corpus: Path = CORPUS,
    out: Path = typer.Option(..., "--out", help="Output dir for feature_diff.json/.md."),
    sequences: str = typer.Option(
        _FD.sequences, help="own: each model reads its own variant; adhd/standard: both that one."
    ),
    limit: int | None = typer.Option(_FD.limit, help="Held-out tasks per variant (all if unset)."),
    adhd_min_rate: float = typer.Option(_FD.adhd_min_rate, help="Min ADHD onset firing rate."),
    std_max_rate: float = typer.Option(_FD.std_max_rate, help="Max standard onset firing rate."),
    epsilon: float = typer.Option(_FD.epsilon, help="Smoothing of the asymmetry ratio."),
    top_n: int = typer.Option(_FD.top_n, help="Features shown with contexts on the page."),
    batch_size: int = BATCH,
    device: str = DEVICE,
) -> None:
    """Features of one SAE that fire at ADHD step onsets and (almost) never at standard ones."""
    config = FeatureDiffConfig(
        sae_dir, std, adhd, corpus, out, sequences=sequences,  # type: ignore[arg-type]
        limit=limit,
        adhd_min_rate=adhd_min_rate, std_max_rate=std_max_rate, epsilon=epsilon,
        top_n=top_n, batch_size=batch_size, device=device,
    )  # fmt: skip
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


def steer_command(
    sae_dir: Path = SAE_DIR,
    feature: str = typer.Option(..., "--feature", help="Feature index, or auto (needs --diff)."),
    std: Path = STD,
    adhd: Path = ADHD,
    corpus: Path = CORPUS,
    out: Path = typer.Option(..., "--out", help="Output dir for deepdive_steering.json/.png."),
    diff_file: Path | None = typer.Option(None, "--diff", help="feature_diff.json for auto."),
    n_null: int = typer.Option(_ST.n_null, help="Random directions in each null."),
    seed: int = typer.Option(_ST.seed, help="Seed of the null directions and of sampling."),
    scale: float = typer.Option(_ST.scale, help="Multiplier on the typical ADHD magnitude."),
    limit: int | None = typer.Option(_ST.limit, help="Held-out tasks per variant."),
    generate_tasks: int = typer.Option(
        _ST.generate_tasks, help="Tasks sampled for the generated regulation rate (0: skip)."
    ),
    n_null_generate: int = typer.Option(
        _ST.n_null_generate, help="Null directions also run through generation."
    ),
    max_new_tokens: int = typer.Option(_ST.max_new_tokens, help="Sampling budget per task."),
    batch_size: int = BATCH,
    device: str = DEVICE,
) -> None:
    """Four steering interventions with one SAE feature, each against a random-direction null."""
    if feature != "auto" and not feature.isdigit():
        raise UserError(f"--feature {feature!r}: give a feature index or auto")
    if feature == "auto" and diff_file is None:
        raise UserError("--feature auto needs --diff feature_diff.json")
    config = SteeringConfig(
        sae_dir, std, adhd, corpus, out, feature="auto" if feature == "auto" else int(feature),
        diff_file=diff_file, n_null=n_null, seed=seed, scale=scale, limit=limit,
        generate_tasks=generate_tasks, n_null_generate=n_null_generate,
        max_new_tokens=max_new_tokens, batch_size=batch_size, device=device,
    )  # fmt: skip
    console = Console()
    with console.status("steering"):
        result = steer(config)
    console.print(steering_table(result))
    for variant in result.variants:
        console.print(f"{variant.name}: {variant.verdict}")
    console.print(f"wrote {result.json_path}, {result.plot_path}")


def steering_table(result: SteeringResult) -> Table:
    table = Table(title=f"feature {result.feature}, magnitude {result.magnitude:.3g}")
    for column in ("variant", "Δ P(reg)", "SEM", "null mean", "null std", "z", "outside", "Δ gen"):
        table.add_column(column, justify="right")
    for v in result.variants:
        c = v.p_regulation
        gen = "—" if v.generation is None else f"{v.generation.effect.delta:+.3f}"
        table.add_row(
            v.name,
            f"{c.effect.delta:+.4f}",
            f"{c.effect.sem:.4f}",
            f"{c.null_mean:+.4f}",
            f"{c.null_std:.4f}",
            f"{c.z:+.2f}",
            "yes" if c.outside_null else "no",
            gen,
        )
    return table


def probes_command(
    model: Path = typer.Argument(..., help="Run or export dir of the model to probe."),
    corpus: Path = CORPUS,
    out: Path = typer.Option(..., "--out", help="Output dir for three_probes.json/probes.png."),
    variant: str = typer.Option(_PR.variant, help="Sequences: auto (the model's), standard, adhd."),
    limit: int | None = typer.Option(_PR.limit, help="Held-out tasks (all if unset)."),
    train_fraction: float = typer.Option(_PR.train_fraction, help="Share of probe-train tasks."),
    max_step_index: int = typer.Option(_PR.max_step_index, help="Classes of the step probe."),
    weight_decay: float = typer.Option(_PR.weight_decay, help="L2 penalty of the probes."),
    n_random: int = typer.Option(_PR.n_random, help="Random subspaces per causal null."),
    causal_layers: str = typer.Option(_PR.causal_layers, help="best or all layers."),
    seed: int = typer.Option(_PR.seed, help="Seed of the task split and random subspaces."),
    batch_size: int = BATCH,
    device: str = DEVICE,
) -> None:
    """Onset, regulation and step-index probes on every layer, with causal checks."""
    if variant not in ("auto", "standard", "adhd"):
        raise UserError(f"--variant must be auto, standard or adhd, got {variant!r}")
    if causal_layers not in ("best", "all"):
        raise UserError(f"--causal-layers must be best or all, got {causal_layers!r}")
    config = ProbesConfig(
        model, corpus, out, variant=variant,  # type: ignore[arg-type]
        limit=limit, train_fraction=train_fraction,
        max_step_index=max_step_index, weight_decay=weight_decay, n_random=n_random,
        causal_layers=causal_layers,  # type: ignore[arg-type]
        seed=seed, batch_size=batch_size, device=device,
    )  # fmt: skip
    console = Console()
    with console.status("fitting probes"):
        result = run_probes(config)
    console.print(*probes_tables(result))
    console.print(f"wrote {result.json_path}, {result.plot_path}")


def probes_tables(result: ProbesResult) -> list[Table]:
    acc = Table(title="held-out probe accuracy")
    acc.add_column("probe")
    for label in [*result.layers, "baseline"]:
        acc.add_column(label, justify="right")
    causal = Table(title="causal checks (project the probe out)")
    for column in ("probe", "layer", "metric", "Δ", "random mean", "z", "acc after", "refit after"):
        causal.add_column(column, justify="right")
    for p in result.probes:
        if p.skipped:
            acc.add_row(p.name, *["—"] * len(result.layers), "skipped")
            continue
        acc.add_row(p.name, *[f"{a:.3f}" for a in p.accuracy], f"{p.baseline:.3f}")
        for c in p.causal:
            causal.add_row(
                p.name,
                c.layer,
                SHORT[p.name],
                f"{c.delta:+.4f}",
                f"{c.random_mean:+.4f}",
                f"{c.z:+.2f}",
                f"{c.accuracy_after_projection:.3f}",
                f"{c.refit_accuracy_after_projection:.3f}",
            )
    return [acc, causal]


def register_sae(sae_app: typer.Typer) -> None:
    """Add `diff` to the `interpgpt sae` group."""
    sae_app.command("diff")(diff)


def register(app: typer.Typer) -> None:
    app.command("steer")(steer_command)
    app.command("probes")(probes_command)
