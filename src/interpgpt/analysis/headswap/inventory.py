"""Attention profiles of every head of a matched pair, and the full head-swap inventory.

Profile (the seed notebook's `profile()`): teacher-force held-out sequences through a
model; for each head and each query position q in 1..T-1 of an example of length T,
the attention mass on the step-structure specials (`<|task|>`, `<|steps|>`, `<|sep|>`,
`<|end|>`) is added to bin `min(int(q / T * n_bins), n_bins - 1)` of a normalised
position axis; the profile is the per-bin mean over all queries of all examples. A
head that keeps broadcasting the step layout has a characteristic profile whatever
its index, so comparing profiles across the two models finds heads that moved.

The profiles are computed in `headswap_profiles` as per-example bin sums (the
sufficient statistics, which also make the task bootstrap cheap), never keeping a
pattern or a cache of activations; matching and statistics live in `headswap_stats`.
This module holds the config, the inventory and the files it writes.

Inventory:
- cosine of every standard head's profile against every ADHD head's profile, an
  (layer·head) × (layer·head) matrix (cosine 0 when a profile is all zero, as in the
  notebook);
- the one-to-one matching that maximises the summed cosine (the Hungarian algorithm,
  `scipy.optimize.linear_sum_assignment`), within each layer and over all heads;
- each head's best partner in the other model (argmax, not one-to-one).

Statistics, per layer:
- *matched* mean cosine (within-layer Hungarian matching) and *same-index* mean cosine
  (standard head h against ADHD head h); their gap is >= 0 by construction.
- Bootstrap over tasks (Efron's percentile bootstrap): resample held-out tasks with
  replacement, rebuild both models' profiles from the per-task sums, re-run the
  matching; the 2.5/97.5 percentiles give 95% CIs of the matched mean, the same-index
  mean and the gap, and the fraction of resamples in which each observed matched pair
  recurs is its *stability*. Re-optimising inside each resample keeps the matching's
  selection bias in the interval.
- Permutation null: uniformly random within-layer assignments (all of them when
  head! <= null_samples). `p_same_index` is the share of random assignments whose mean
  cosine is >= the same-index mean: small means heads kept their index. `p_matched` is
  the same share for the matched mean; since the matching maximises the mean it is the
  smallest attainable value unless many assignments tie with it, i.e. it says only
  that the matching is distinguishable from chance, not that heads moved — the gap and
  its CI say that.

A standard head "moved" when its within-layer partner has another index and the
matched cosine beats the same-index cosine by at least `move_margin`.

Beside the profile, the pair's heads are matched by every head signature of
`headswap.signatures` (OV and QK circuits, output correlation, z CKA), each with its hit
rate on a head-permuted copy of the standard model (headswap.json `signatures`); the
study picks the signature its cross-init alignment uses from these runs on the twin
pairs (`study.controls.alignment_choice`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interpgpt.analysis import plots
from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.headswap.config import HeadswapConfig
from interpgpt.analysis.headswap.profiles import (  # noqa: F401  (public API of this module)
    ProfileSums,
    attention_profile_sums,
    query_bins,
)
from interpgpt.analysis.headswap.signatures import (
    BASELINE,
    BASIS_FREE,
    SIGNATURES,
    SignatureComparison,
    compare_signatures,
)
from interpgpt.analysis.headswap.stats import (  # noqa: F401  (public API of this module)
    ROLES,
    Bootstrap,
    HeadMatch,
    LayerStats,
    best_partners,
    bootstrap_layers,
    cosine_matrix,
    layer_stats,
    match_heads,
    permutation_null,
    within_layer_matching,
)
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    figures,
    fmt,
)
from interpgpt.artifacts.load import load_pair
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.device import resolve_device
from interpgpt.io import provenance, read_json, write_json, write_text

HEADSWAP_JSON = "headswap.json"
MIGRATION_MAP = "migration_map.md"
SWAP_HEATMAP = "swap_heatmap.png"
PROFILE_PAIR = "profile_pair.png"


@dataclass
class Inventory:
    """The head-swap inventory of a pair, model a against model b (no files)."""

    profiles: dict[str, np.ndarray]
    """Per role ("a", "b"), (layer, head, bin) mean attention mass on the key positions."""
    cosine: np.ndarray
    """(layer, head, layer, head): head of a x head of b profile cosine."""
    within_layer: list[HeadMatch]
    """Hungarian matching inside each layer, one entry per head of a."""
    global_matching: list[HeadMatch]
    """Hungarian matching over all heads, one entry per head of a."""
    best_partners: dict[str, list[dict]]
    """Per role, each head's most similar head in the other model."""
    layers: list[LayerStats] = field(default_factory=list)
    """Per-layer matched vs same-index statistics."""

    @property
    def moved(self) -> list[HeadMatch]:
        return sorted((m for m in self.within_layer if m.moved), key=lambda m: m.same_index)


def compare_profiles(
    a: ProfileSums,
    b: ProfileSums,
    *,
    move_margin: float = 0.1,
    null_samples: int = 0,
    bootstrap_samples: int = 0,
    seed: int = 0,
) -> Inventory:
    """Model a's and model b's head profiles -> cosines -> matchings -> per-layer
    statistics (the task bootstrap and the permutation null when asked for)."""
    profiles = {role: s.profiles().numpy() for role, s in zip(ROLES, (a, b), strict=True)}
    n_layer, n_head, n_bins = profiles["a"].shape
    flat = {m: p.reshape(n_layer * n_head, n_bins) for m, p in profiles.items()}
    cos4 = cosine_matrix(flat["a"], flat["b"]).reshape(n_layer, n_head, n_layer, n_head)
    within, global_ = match_heads(cos4, move_margin)
    boot = None
    if bootstrap_samples:
        partners = np.array([m.b[1] for m in within]).reshape(n_layer, n_head)
        rng = np.random.default_rng([seed, 0])
        boot = bootstrap_layers((a, b), partners, bootstrap_samples, rng)
        for match in within:
            match.stability = float(boot.stability[match.a])
    stats = layer_stats(cos4, within, boot, seed=seed, null_samples=null_samples)
    return Inventory(profiles, cos4, within, global_, best_partners(cos4), stats)


STUDY_ROLES = {"a": "standard", "b": "adhd"}
"""The study's names of the core's roles, in its files."""


def build_inventory(sums: dict[str, ProfileSums], config: HeadswapConfig) -> Inventory:
    """The study's inventory: the standard model as a, the ADHD model as b."""
    return compare_profiles(
        sums["standard"],
        sums["adhd"],
        move_margin=config.move_margin,
        null_samples=config.null_samples,
        bootstrap_samples=config.bootstrap_samples,
        seed=config.seed,
    )


def study_label(match: HeadMatch) -> str:
    return f"std L{match.a[0]}H{match.a[1]} → adhd L{match.b[0]}H{match.b[1]}"


# ---------------------------------------------------------------------------- entry point


@dataclass
class HeadswapResult:
    """What `run_headswap` computed and wrote."""

    inventory: Inventory
    """Profiles, cosines, matchings and per-layer statistics."""
    n_tasks: int
    """Held-out sequences the profiles average over."""
    files: dict[str, Path]
    """Artifact name -> path written."""
    signatures: SignatureComparison
    """Every head signature's matching of the pair, and its planted-permutation hit rate."""


def run_headswap(config: HeadswapConfig) -> HeadswapResult:
    """Profile every head of both models on held-out tasks and write the inventory."""
    device = resolve_device(config.device)
    pair = load_pair(config.standard, config.adhd, device, config.same_variant)
    data = load_eval_set(
        config.corpus,
        pair.tokenizer,
        config.sequences,
        config.split,
        config.limit,
        max_len=pair.standard.model.cfg.n_ctx,
    )
    special = data.special_mask()
    dtype = getattr(torch, config.dtype)
    sums = {
        name: attention_profile_sums(
            model,
            data.ids,
            data.lengths,
            special,
            n_bins=config.bins,
            batch_size=config.batch_size,
            dtype=dtype,
        )
        for name, model in pair.models.items()
    }
    inventory = build_inventory(sums, config)
    signatures = compare_signatures(
        pair.standard.model,
        pair.adhd.model,
        data.ids,
        data.lengths,
        special,
        profiles=[sums["standard"], sums["adhd"]],
        n_bins=config.bins,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    blob = _inventory_json(inventory, len(data), config, sums["standard"].counts.sum(0))
    blob["signatures"] = _signatures_json(signatures)
    files = write_outputs(inventory, blob, len(data), config)
    return HeadswapResult(inventory, len(data), files, signatures)


def write_outputs(
    inv: Inventory, blob: dict, n_tasks: int, config: HeadswapConfig
) -> dict[str, Path]:
    """headswap.json (`blob`), the migration map and the two figures."""
    out = config.out
    files = {
        "headswap": write_json(out / HEADSWAP_JSON, blob),
        "migration_map": write_text(out / MIGRATION_MAP, migration_map(inv, n_tasks, config)),
        "swap_heatmap": _plot_heatmap(inv, out / SWAP_HEATMAP),
        "profile_pair": _plot_profile_pair(inv, out / PROFILE_PAIR),
    }
    return files


def _inventory_json(inv: Inventory, n_tasks: int, config: HeadswapConfig, bin_counts: Tensor):
    n_layer, n_head = inv.cosine.shape[:2]
    return {
        "n_tasks": n_tasks,
        "sequences": config.sequences,
        "heads": [f"L{i}H{h}" for i in range(n_layer) for h in range(n_head)],
        "bin_query_counts": bin_counts,
        "profiles": {STUDY_ROLES[r]: p for r, p in inv.profiles.items()},
        "cosine_matrix": inv.cosine.reshape(n_layer * n_head, n_layer * n_head),
        "cosine_matrix_axes": "rows: standard heads, columns: ADHD heads, order of `heads`",
        "matching": {
            "within_layer": [_match_json(m) for m in inv.within_layer],
            "global": [_match_json(m) for m in inv.global_matching],
        },
        "best_partners": {STUDY_ROLES[r]: p for r, p in inv.best_partners.items()},
        "moved": [study_label(m) for m in inv.moved],
        "layers": inv.layers,
        "provenance": provenance(config),
    }


def _signatures_json(sig: SignatureComparison) -> dict[str, Any]:
    return {
        "signatures": list(SIGNATURES),
        "basis_free": list(BASIS_FREE),
        "positions": sig.positions,
        "planted_permutation": sig.permutation,
        "planted_permutation_axes": "layer, head of the copy: the standard model's head it holds",
        "planted": sig.planted,
        "same_index": sig.same_index,
        "within_layer": {name: p.tolist() for name, p in sig.partners.items()},
        "within_layer_axes": "layer, standard head: its ADHD partner's index in that layer",
        "similarity": sig.similarity,
        "similarity_axes": "layer, standard head, ADHD head",
    }


def _match_json(match: HeadMatch) -> dict:
    blob: dict[str, Any] = {"label": study_label(match)}
    blob.update({"std" if k == "a" else "adhd" if k == "b" else k: v
                 for k, v in match.__dict__.items()})  # fmt: skip
    return blob


def migration_map(inv: Inventory, n_tasks: int, config: HeadswapConfig) -> str:
    """Markdown list of the heads that moved, and the per-layer statistics."""
    lines = [
        "# Head migration map",
        "",
        f"Attention profiles on {n_tasks} held-out {config.sequences} sequences "
        f"({config.bins} position bins). A standard head *moved* when its within-layer "
        f"Hungarian partner has another index and the matched profile cosine beats the "
        f"same-index cosine by at least {config.move_margin}.",
        "",
        "## Moved heads (within-layer matching)",
        "",
    ]
    for m in inv.moved:
        stable = "" if m.stability is None else f"; stability {m.stability:.0%}"
        lines.append(
            f"- {study_label(m)}: cos {m.cosine:.3f} vs same-index {m.same_index:.3f} "
            f"(std L{m.b[0]}H{m.b[1]} ~ adhd L{m.b[0]}H{m.b[1]}: "
            f"{m.partner_same_index:.3f}){stable}"
        )
    if not inv.moved:
        lines.append("- none")
    crossed = [m for m in inv.global_matching if m.a[0] != m.b[0] and m.moved]
    lines += ["", "## Global matching: pairs that cross layers", ""]
    lines += [
        f"- {study_label(m)}: cos {m.cosine:.3f} vs same-index {m.same_index:.3f}" for m in crossed
    ]
    lines += [] if crossed else ["- none"]
    lines += ["", "## Per layer", "", _layer_table(inv.layers), ""]
    return "\n".join(lines)


def _layer_table(layers: list[LayerStats]) -> str:
    def fmt_ci(ci):
        return "—" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"

    def fmt_p(p):
        return "—" if p is None else f"{p:.3g}"

    rows = [
        "| layer | matched | same-index | gap | gap 95% CI | p(matched) | q(matched) "
        "| p(same-index) | q(same-index) | moved |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in layers:
        rows.append(
            f"| {s.layer} | {s.matched_mean:.3f} | {s.same_index_mean:.3f} | {s.gap:.3f} | "
            f"{fmt_ci(s.gap_ci)} | {fmt_p(s.p_matched)} | {fmt_p(s.q_matched)} | "
            f"{fmt_p(s.p_same_index)} | {fmt_p(s.q_same_index)} | {s.n_moved} |"
        )
    rows += ["", "q: Benjamini-Hochberg q-values over the layers (one test per layer)."]
    return "\n".join(rows)


def strongest_pair(inv: Inventory) -> HeadMatch:
    """The moved pair with the largest cosine gain; else the largest gain of any pair."""
    pool = inv.moved or inv.within_layer
    return max(pool, key=lambda m: (m.cosine - m.same_index, m.cosine))


def _plot_heatmap(inv: Inventory, path: Path) -> Path:
    n_layer, n_head = inv.cosine.shape[:2]
    labels = [f"L{i}H{h}" for i in range(n_layer) for h in range(n_head)]
    panel = plots.HeatmapPanel(
        inv.cosine.reshape(n_layer * n_head, -1),
        title="profile cosine (outlined: within-layer matching)",
        xlabel="ADHD head",
        ylabel="standard head",
        xticklabels=labels,
        yticklabels=labels,
        outlined=[(m.a[0] * n_head + m.a[1], m.b[0] * n_head + m.b[1]) for m in inv.within_layer],
    )
    return plots.save_heatmaps(path, [panel], cmap="viridis", colorbar_label="cosine")


def _plot_profile_pair(inv: Inventory, path: Path) -> Path:
    """The notebook's two panels: matched pair, and the same-index baseline."""
    m = strongest_pair(inv)
    x = np.linspace(0, 1, inv.profiles["a"].shape[-1])

    def series(role: str, head: tuple[int, int]) -> plots.Series:
        label = f"{'standard' if role == 'a' else 'ADHD'} L{head[0]}H{head[1]}"
        return plots.Series(x, inv.profiles[role][head], label)

    panels = [
        plots.LinePanel(
            [series("a", m.a), series("b", other)],
            title=title,
            xlabel="normalized query position",
            ylabel="attention mass → step-structure specials",
        )
        for title, other in (
            (f"matched pair (cos = {m.cosine:.3f})", m.b),
            (f"same-index baseline (cos = {m.same_index:.3f})", m.a),
        )
    ]
    return plots.save_line_plot(path, panels)


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: HeadswapConfig) -> StageOutput:
    result = run_headswap(
        dataclasses.replace(
            config,
            standard=ws.export("standard"),
            adhd=ws.export("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("headswap"),
        )
    )
    inv = result.inventory
    matches = sorted(inv.within_layer, key=lambda m: m.cosine - m.same_index, reverse=True)
    moved = [m for m in matches if m.moved]
    summary = {
        "n_tasks": result.n_tasks,
        "moved": [_match_summary(m) for m in moved],
        "strongest": _match_summary(moved[0] if moved else matches[0]),
        "layers": [dataclasses.asdict(s) for s in inv.layers],
        "signatures": {
            "same_index": result.signatures.same_index,
            "planted": result.signatures.planted,
        },
    }
    return StageOutput(list(result.files.values()), summary)


def _match_summary(match: HeadMatch) -> dict[str, Any]:
    return {
        "label": study_label(match),
        "std": list(match.a),
        "adhd": list(match.b),
        "cosine": match.cosine,
        "same_index": match.same_index,
        "partner_same_index": match.partner_same_index,
    }


def section(summary: Summary, outputs: list[str]) -> Section:
    strongest = summary["strongest"]
    header = ["layer", "matched mean cos", "same-index mean cos", "gap [95% CI]",
              "p (perm.) / q (BH over layers)"]  # fmt: skip
    table = [[*header, "moved heads"]]
    for s in summary["layers"]:
        ci = s.get("gap_ci")
        ci_text = f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""
        table.append(
            [
                str(s["layer"]),
                fmt(s["matched_mean"]),
                fmt(s["same_index_mean"]),
                fmt(s["gap"]) + ci_text,
                f"{fmt(s.get('p_matched'))} / {fmt(s.get('q_matched'))}",
                str(s["n_moved"]),
            ]
        )
    moved = summary["moved"]
    finding = (
        f"{len(moved)} head{'s' if len(moved) != 1 else ''} moved; "
        f"strongest: {strongest['label']}, cos "
        f"{fmt(strongest['cosine'])} vs same-index {fmt(strongest['same_index'])}."
        if moved
        else "No head moved: every head's best within-layer partner is at its own index "
        f"(best pair {strongest['label']}, cos {fmt(strongest['cosine'])})."
    )
    rows = [
        (m["label"], f"cos {fmt(m['cosine'])} vs same-index {fmt(m['same_index'])}")
        for m in moved[:8]
    ]
    if "signatures" in summary:
        finding += " " + signatures_text(summary["signatures"])
    return Section("Head-swap inventory", finding, rows=rows, table=table, figures=figures(outputs))


def signatures_text(scores: dict[str, dict[str, float]]) -> str:
    """Each head signature's share of heads paired with their own index, and its hit rate
    on a head-permuted copy of the standard model, in one sentence."""
    listed = ", ".join(
        f"{name} {fmt(scores['same_index'][name])} / {fmt(scores['planted'][name])}"
        for name in scores["same_index"]
    )
    return (
        "Head signatures, share of heads paired with their own index / hit rate on a "
        f"head-permuted copy of the standard model: {listed}."
    )


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistics of one inventory: how many heads moved, the per-layer
    matched - same-index gap (with its bootstrap CI), and the per-head gap, whose
    component verdicts say which moved heads moved beyond seed noise."""
    layers = summary["layers"]
    moved = [f"L{m['std'][0]}H{m['std'][1]}" for m in summary["moved"]]
    inventory = _inventory_file(outputs)
    stats = {
        "moved heads": Statistic(
            "heads that moved (count)", len(moved), named=moved, named_in="standard"
        ),
        "layer gap": Statistic(
            "matched - same-index profile cosine, per layer",
            [s["gap"] for s in layers],
            ci=[s["gap_ci"] for s in layers] if all(s.get("gap_ci") for s in layers) else None,
            components=[f"L{s['layer']}" for s in layers],
        ),
    }
    if inventory is not None:
        matches = read_json(inventory)["matching"]["within_layer"]
        # A head's own gap can be negative (the matching maximises the layer's total);
        # a head moved only as far as its partner beats its same-index head.
        stats["head gap"] = Statistic(
            "how far a head moved: max(0, matched - same-index profile cosine), per head",
            [max(0.0, m["cosine"] - m["same_index"]) for m in matches],
            components=[f"L{m['std'][0]}H{m['std'][1]}" for m in matches],
            named=moved,
            named_in="standard",
        )
    return stats


def _inventory_file(outputs: list[str]) -> str | None:
    """The inventory's headswap.json among a stage's outputs, if there."""
    return next((p for p in outputs if Path(p).name == HEADSWAP_JSON), None)


def head_alignment(outputs: list[str], signature: str = BASELINE) -> dict[str, str]:
    """From an inventory's files: each ADHD-role head ("L{layer}H{head}") -> its
    within-layer partner in the standard-role model (one-to-one, by `signature`: the
    attention profile unless another is named). Between two models of one variant from
    different inits this names, for each head of the second, the head of the first that
    does its job (the study's alignment pairs)."""
    inventory = _inventory_file(outputs)
    if inventory is None:
        raise ValueError(f"no {HEADSWAP_JSON} among the outputs {outputs}")
    blob = read_json(inventory)
    if signature == BASELINE:
        return {
            f"L{m['adhd'][0]}H{m['adhd'][1]}": f"L{m['std'][0]}H{m['std'][1]}"
            for m in blob["matching"]["within_layer"]
        }
    partners = blob["signatures"]["within_layer"][signature]
    return {
        f"L{layer}H{adhd}": f"L{layer}H{std}"
        for layer, row in enumerate(partners)
        for std, adhd in enumerate(row)
    }


ANALYSIS = Analysis(
    name="headswap",
    description="head-swap inventory",
    config=HeadswapConfig,
    stage=stage,
    section=section,
    after=("export",),
    statistics=statistics,
)
