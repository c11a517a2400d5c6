"""CLI for the Phase 1 causal analyses: `ablate` (head ablation with nulls) and `patch`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interpgpt.analysis.ablation import AblationConfig, AblationResult, run_ablation
from interpgpt.analysis.patching import PatchingConfig, PatchingResult, run_patching

_AB = AblationConfig(Path(), Path(), Path())
_PA = PatchingConfig(Path(), Path(), Path())

MODEL = typer.Argument(..., help="Run or export dir of the model.")
CORPUS = typer.Option(..., "--corpus", help="Corpus dir written by `interpgpt corpus`.")
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")


def ablate(
    model: Path = MODEL,
    heads: str = typer.Option(..., "--heads", help="Target heads, e.g. L3H5 or L3H5,L3H1."),
    corpus: Path = CORPUS,
    out: Path = typer.Option(..., "--out", help="Output dir for causal_nulls_per_seed.json."),
    seeds: int = typer.Option(_AB.seeds, help="Sampling seeds (each condition once per seed)."),
    mode: str = typer.Option(_AB.mode, help="zero or mean ablation of the heads' hook_z."),
    split: str = typer.Option(_AB.split, help="Corpus split whose tasks are decomposed."),
    limit: int | None = typer.Option(None, help="Use only the first N tasks (default: all)."),
    null_random: int = typer.Option(
        _AB.null_random, help="Random head sets of the target's size used as nulls."
    ),
    layer_null: bool = typer.Option(
        _AB.layer_null, help="Also ablate every other head of the target's layer(s)."
    ),
    null_seed: int = typer.Option(_AB.null_seed, help="Seed of the random null head sets."),
    max_new_tokens: int = typer.Option(_AB.max_new_tokens, help="Generation budget per task."),
    temperature: float = typer.Option(_AB.temperature, help="Sampling temperature."),
    top_k: int | None = typer.Option(None, help="Sample among the k most likely tokens."),
    batch_size: int | None = typer.Option(
        None, help="Prompts per generation batch (default: all tasks at once)."
    ),
    device: str = DEVICE,
    dtype: str = typer.Option(_AB.dtype, help="float32, or bfloat16 autocast (faster)."),
) -> None:
    """Ablate heads during generation; Spearman(complexity, step count) vs head nulls."""
    config = AblationConfig(
        model, corpus, out, heads=heads, seeds=seeds, mode=mode, split=split, limit=limit,
        null_random=null_random, layer_null=layer_null, null_seed=null_seed,
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
        batch_size=batch_size, device=device, dtype=dtype,
    )  # fmt: skip
    console = Console()
    with console.status("sampling decompositions under ablation"):
        result = run_ablation(config)
    console.print(ablation_table(result))
    console.print(f"wrote {result.json_path}, {result.figure_path}")


def ablation_table(result: AblationResult) -> Table:
    """One row per condition: median Spearman ablated and the median delta."""
    parsed = " ".join(str(r.n_parsed) for r in result.baseline)
    table = Table(
        title=f"head ablation: baseline Spearman per seed {_scores(result.baseline)} "
        f"(parsed outputs {parsed})"
    )
    for column in ("condition", "heads", "ablated (per seed)", "parsed", "median Δ"):
        table.add_column(column)
    for label, runs in result.ablated.items():
        kind = "target" if label == result.target.label else "null"
        counts = " ".join(str(r.n_parsed) for r in runs)
        table.add_row(kind, label, _scores(runs), counts, f"{result.median_delta[label]:+.3f}")
    for kind, comparison in result.comparisons.items():
        table.caption = (table.caption or "") + (
            f"{kind} nulls: rank {comparison.rank}/{comparison.n_null + 1}, "
            f"p = {comparison.p_empirical:.3f}.  "
        )
    return table


def _scores(runs) -> str:
    return " ".join(f"{r.spearman:.3f}" for r in runs)


def patch(
    model: Path = MODEL,
    corpus: Path = CORPUS,
    out: Path = typer.Option(..., "--out", help="Output dir for patching.json and heatmaps."),
    site: str = typer.Option(
        _PA.site, help="resid_pre, attn_head_out, attn_head_out_by_pos, mlp_out or all."
    ),
    pairs: int = typer.Option(_PA.n_pairs, "--pairs", help="Clean/corrupted pairs (tasks)."),
    phrasings: int = typer.Option(
        _PA.phrasings, help="Decompositions per task searched for equal-length pairs."
    ),
    attribution: bool = typer.Option(
        _PA.attribution, help="Also run attribution patching and report its correlation."
    ),
    device: str = DEVICE,
    max_chunk_mb: int = typer.Option(
        _PA.max_chunk_mb, help="Memory budget of one stacked forward, in MiB."
    ),
) -> None:
    """Activation patching (exact, batched) and attribution patching on corpus pairs."""
    config = PatchingConfig(
        model, corpus, out, site=site, n_pairs=pairs, phrasings=phrasings,
        attribution=attribution, device=device, max_chunk_mb=max_chunk_mb,
    )  # fmt: skip
    console = Console()
    with console.status("patching"):
        result = run_patching(config)
    console.print(patching_table(result))
    console.print(f"wrote {result.json_path}, " + ", ".join(str(p) for p in result.figures))


def patching_table(result: PatchingResult) -> Table:
    """Per site: the strongest exact effect and the attribution correlation."""
    gap = result.clean_metric - result.corrupted_metric
    table = Table(
        title=f"activation patching (metric clean {result.clean_metric:.3f}, "
        f"corrupted {result.corrupted_metric:.3f})"
    )
    for column in ("site", "max |Δ|", "argmax", "normalized", "attribution r"):
        table.add_column(column)
    for site, exact in result.exact.items():
        effect = exact - result.corrupted_metric
        flat = int(effect.abs().argmax())
        index = tuple(int(i) for i in _unravel(flat, tuple(effect.shape)))
        peak = float(effect.flatten()[flat])
        r = result.correlation.get(site)
        table.add_row(
            site,
            f"{peak:+.3f}",
            str(index),
            f"{peak / gap:+.2f}" if gap else "—",
            "—" if r is None else f"{r:.2f}",
        )
    return table


def _unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return index[::-1]


def register(app: typer.Typer) -> None:
    app.command("ablate")(ablate)
    app.command("patch")(patch)
