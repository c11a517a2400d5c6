"""Activation patching and attribution patching: where does the model decide "regulation next"?

Activation patching (Meng et al. 2022, "ROME"; Wang et al. 2022, "IOI"; the best-practice
guide of Heimersheim & Nanda 2024) runs the model on a *corrupted* input, replaces one
activation by its value on the *clean* input, and reads a metric off the logits: sites
whose clean value restores the clean behaviour carry the information that tells the
two inputs apart. Semantics follow `transformer_lens.patching` exactly — the same
sites, index orders and result shapes, the metric a callable from logits
(batch, pos, d_vocab) to a scalar over the whole batch — and the results equal its
`get_act_patch_resid_pre` (layer, pos), `get_act_patch_attn_head_out_all_pos`
(layer, head), `get_act_patch_attn_head_out_by_pos` (layer, pos, head) and
`get_act_patch_mlp_out` (layer, pos) (tested to 1e-4). Head outputs are patched on
`attn.hook_z`, as TransformerLens does.

Speed. TransformerLens runs one full forward per site. Here every patch computes only
what it can change (`patching_suffix`): from its layer on, from its position on (the
corrupted run's keys and values before it as a KV-cache prefix), and, when the metric
reads only some positions (`metric_positions`, e.g. the final one), only those in the
last block and the unembedding. The patched rows of many sites are packed into one
pass. A patch before the first position where the clean and corrupted tokens differ
(a shared header) replaces a value by an equal one and is not run. Every result is
still exact. A model with hooks attached is patched the plain
way (`reference_patch`, one full forward per site), so those hooks act as they would
under TransformerLens.

Attribution patching (`patching_attribution`) is the first-order approximation, from
one forward and one backward; it is reported beside the exact effects with their
correlation. The default clean/corrupted pairs and metric are in `patching_pairs`.

In the study (stage "patching", after the export) the ADHD export is patched at every
site; the report gives the clean and corrupted metric and, per site, how well
attribution patching tracks the exact effects.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.interventions import act_name, patch_from
from interpgpt.analysis.patching.attribution import attribution_patch
from interpgpt.analysis.patching.config import SITES, PatchingConfig, Site
from interpgpt.analysis.patching.pairs import PatchPairs, RegulationLogitDiff, build_pairs
from interpgpt.analysis.patching.sites import (
    SITE_AXES,
    SITE_HOOK,
    Metric,
    SiteSpec,
    all_sites,
    result_shape,
    site_mask,
)
from interpgpt.analysis.patching.suffix import (
    CorruptedRun,
    corrupted_run,
    patched_final,
    site_entries,
    unembed,
)
from interpgpt.analysis.plots import HeatmapPanel, save_heatmaps
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    figures,
    fmt,
)
from interpgpt.artifacts.load import load_model
from interpgpt.device import resolve_device
from interpgpt.io import provenance, read_json, write_json

__all__ = [
    "RESULT_FILE",
    "SITES",
    "Metric",
    "PatchPairs",
    "PatchingConfig",
    "PatchingResult",
    "RegulationLogitDiff",
    "Site",
    "activation_patch",
    "attribution_patch",
    "build_pairs",
    "reference_patch",
    "run_patching",
]

RESULT_FILE = "patching.json"
PASS_TOKENS = 2048
"""Most suffix tokens in one packed pass. Larger passes batch more sites per GEMM but
outgrow the cache and fault in fresh pages; chosen with `bench/bench_patching.py`."""
SCORE_ROWS = 128
"""Patched tokens unembedded at a time: (rows, d_vocab) logits stay cache-sized, and the
rows fill one oneDNN row bucket (`onednn.ROW_BUCKET`)."""


@torch.no_grad()
def activation_patch(
    model,
    clean_ids: Int[Tensor, "batch pos"],
    corrupted_ids: Int[Tensor, "batch pos"],
    metric: Metric,
    site: Site,
    *,
    metric_positions: Sequence[int] | None = None,
    clean_cache: dict[str, Tensor] | None = None,
    max_chunk_mb: int = 256,
) -> Tensor:
    """Exact activation patching of every `site` index: the metric of the corrupted run
    with that one activation taken from the clean run. Shape as TransformerLens's
    (`SITE_AXES`).

    metric_positions: the positions whose logits the metric reads (e.g. `[-1]`); only
        those are computed and the others are NaN, so a metric that reads elsewhere
        fails loudly. None: full logits (slower).
    clean_cache: hook name -> clean activation, used instead of running `clean_ids`.
    max_chunk_mb: memory budget of one packed pass; 0 patches one site per pass.
    """
    if clean_ids.shape != corrupted_ids.shape:
        raise ValueError(
            f"clean {tuple(clean_ids.shape)} and corrupted {tuple(corrupted_ids.shape)} "
            "inputs must have the same shape"
        )
    n_layer, n_head = len(model.blocks), model.cfg.n_head
    n_pos = corrupted_ids.shape[1]
    names = [act_name(SITE_HOOK[site], layer) for layer in range(n_layer)]
    shared = 0  # leading positions where clean and corrupted tokens agree in every row
    if clean_cache is None:
        _, clean_cache = model.run_with_cache(clean_ids, names_filter=lambda n: n in names)
        same = (clean_ids == corrupted_ids).all(0).long()
        shared = 0 if site == "attn_head_out" else int(same.cumprod(0).sum())
    if any(point.fwd_hooks or point.bwd_hooks for point in model.hook_dict.values()):
        return reference_patch(model, corrupted_ids, metric, site, clean_cache)
    read = None if metric_positions is None else sorted({p % n_pos for p in metric_positions})
    # Positions after the last one read cannot change what is read (causal attention).
    width = n_pos if read is None else read[-1] + 1
    run = corrupted_run(model, corrupted_ids[:, :width], read)
    clean = [clean_cache[name][:, :width] for name in names]
    out = torch.full(result_shape(site, n_layer, n_pos, n_head), float("nan"))
    # A patch changes nothing if it sits after the last read position, or before the
    # first position where the inputs differ (its clean and corrupted values are equal).
    live = [s for s in all_sites(site, n_layer, n_pos, n_head) if shared <= s.first < width]
    for chunk in _chunks(live, run, read, max_chunk_mb):
        entries = site_entries(model, site, chunk, run, clean)
        final, row, pos = patched_final(model, run, entries, read)
        _score(out, metric, model, run, chunk, final, row, pos, n_pos, read)
    computed = set(live)
    unchanged = [s for s in all_sites(site, n_layer, n_pos, n_head) if s not in computed]
    _score(out, metric, model, run, unchanged, None, None, None, n_pos, read)
    return out


def _chunks(specs: list[SiteSpec], run: CorruptedRun, read, max_chunk_mb: int):
    """Consecutive sites (sorted by layer) of one packed pass: at most `PASS_TOKENS`
    suffix tokens, and within `max_chunk_mb` (per token: its residual streams, MLP hidden,
    padded attention inputs and, without `read`, its logits)."""
    if max_chunk_mb == 0:
        return [[spec] for spec in specs]
    n_batch, width, d_model = run.resid_pre[0].shape
    d_vocab = run.logits.shape[-1]
    per_token = 4 * (16 * d_model + (d_vocab if read is None else 0))
    limit = max(1, min(PASS_TOKENS, (max_chunk_mb << 20) // per_token))
    chunks: list[list[SiteSpec]] = [[]]
    used = 0
    for spec in specs:
        tokens = n_batch * (width - spec.first)
        if chunks[-1] and used + tokens > limit:
            chunks.append([])
            used = 0
        chunks[-1].append(spec)
        used += tokens
    return [chunk for chunk in chunks if chunk]


def _score(out, metric, model, run, specs, final, row, pos, n_pos: int, read) -> None:
    """The metric of each site: the corrupted logits (NaN outside `read`) with its rows'
    patched tokens put in (`final` residual streams at (`row`, `pos`), rows site-major,
    so each site's tokens are one contiguous range). Unembeds `SCORE_ROWS` at a time."""
    if not specs:
        return
    n_batch, width, d_vocab = run.logits.shape
    base = run.logits.new_full((n_batch, n_pos, d_vocab), float("nan"))
    base[:, :width] = run.logits
    if final is None:  # nothing patched reaches the read logits
        value = float(metric(base))
        for spec in specs:
            out[(spec.layer, *spec.where)] = value
        return
    flat_base = base.view(n_batch * n_pos, d_vocab)
    working = flat_base.clone()
    # Flat (batch * pos) index of each patched token; consecutive sites mostly change the
    # same tokens, which then need no restoring in between.
    flat = (row % n_batch * n_pos + pos).tolist()
    sites = torch.arange(len(specs) + 1, device=row.device) * n_batch
    bounds = torch.searchsorted(row, sites).tolist()
    changed: list[int] = []
    step = max(1, SCORE_ROWS // (n_batch * (width if read is None else len(read))))
    for group in range(0, len(specs), step):
        last = min(group + step, len(specs))
        lo = bounds[group]
        logits = unembed(model, final[lo : bounds[last]])
        for i in range(group, last):
            now = flat[bounds[i] : bounds[i + 1]]
            if changed and changed != now:
                where = torch.tensor(changed, device=base.device)
                working.index_copy_(0, where, flat_base[where])
            if now:
                patched = logits[bounds[i] - lo : bounds[i + 1] - lo]
                working.index_copy_(0, torch.tensor(now, device=base.device), patched)
            changed = now
            spec = specs[i]
            out[(spec.layer, *spec.where)] = float(metric(working.view_as(base)))


@torch.no_grad()
def reference_patch(
    model, corrupted_ids: Tensor, metric: Metric, site: Site, clean_cache: dict[str, Tensor]
) -> Tensor:
    """Activation patching the plain way, as TransformerLens does it: one full forward of
    the corrupted input per site, with an `interventions.patch_from` hook."""
    n_layer, n_head = len(model.blocks), model.cfg.n_head
    batch, n_pos = corrupted_ids.shape
    out = torch.zeros(result_shape(site, n_layer, n_pos, n_head))
    for spec in all_sites(site, n_layer, n_pos, n_head):
        name = act_name(SITE_HOOK[site], spec.layer)
        mask = site_mask(site, spec, batch, n_pos, n_head).to(corrupted_ids.device)
        with model.hooks(fwd_hooks=[patch_from(name, clean_cache[name], mask)]):
            out[(spec.layer, *spec.where)] = float(metric(model(corrupted_ids)))
    return out


@dataclass
class PatchingResult:
    """What `run_patching` computed and wrote."""

    json_path: Path
    figures: list[Path]
    exact: dict[Site, Tensor]
    """Patched metric per site index (TransformerLens's values)."""
    attribution: dict[Site, Tensor] = field(default_factory=dict)
    """Estimated patched-minus-corrupted metric per site index."""
    correlation: dict[Site, float] = field(default_factory=dict)
    """Pearson r between exact and attributed effects, per site."""
    clean_metric: float = 0.0
    corrupted_metric: float = 0.0


def _pearson(a: Tensor, b: Tensor) -> float:
    x, y = a.flatten().double().numpy(), b.flatten().double().numpy()
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _heatmap(path: Path, site: Site, panels: list[tuple[str, Tensor]], labels: list[str]):
    """Exact and attributed effects side by side, on one symmetric colour scale."""
    mats = []
    for title, values in panels:
        if site == "attn_head_out_by_pos":  # (layer pos head) -> rows layer x head, cols pos
            values = values.permute(0, 2, 1).reshape(-1, values.shape[1])
        mats.append((title, values.numpy()))
    bound = max(float(np.nanmax(np.abs(m))) for _, m in mats) or 1.0
    n_head = panels[0][1].shape[-1]
    rows = mats[0][1].shape[0]
    if site == "attn_head_out_by_pos":
        ylabels = [f"L{r // n_head}H{r % n_head}" for r in range(rows)]
    else:
        ylabels = [f"L{r}" for r in range(rows)]
    along = "head" if site == "attn_head_out" else "position"
    ylabel = "layer, head" if site == "attn_head_out_by_pos" else "layer"
    xlabels = None if site == "attn_head_out" else labels
    heatmaps = [
        HeatmapPanel(
            m, title=t, xlabel=along, ylabel=ylabel, xticklabels=xlabels, yticklabels=ylabels
        )
        for t, m in mats
    ]
    return save_heatmaps(
        path,
        heatmaps,
        suptitle=f"patching: {site}",
        cmap="RdBu_r",
        vmin=-bound,
        vmax=bound,
        colorbar_label="Δ metric vs corrupted",
    )


def run_patching(config: PatchingConfig) -> PatchingResult:
    """Build pairs, patch every requested site exactly (and by attribution), write
    `patching.json` and one heatmap per site."""
    loaded = load_model(config.model)
    device = resolve_device(config.device)
    model = loaded.model.to(device).eval()
    pairs = build_pairs(
        config.corpus, loaded.tokenizer, config.n_pairs, config.phrasings, model.cfg.n_ctx
    )
    metric = RegulationLogitDiff(pairs.regulation_tokens, pairs.content_tokens)
    clean, corrupted = pairs.clean.to(device), pairs.corrupted.to(device)
    with torch.no_grad():
        clean_value, corrupted_value = float(metric(model(clean))), float(metric(model(corrupted)))
    result = PatchingResult(
        Path(config.out) / RESULT_FILE,
        [],
        {},
        clean_metric=clean_value,
        corrupted_metric=corrupted_value,
    )
    timings: dict[str, float] = {}
    for site in config.sites:
        began = time.perf_counter()
        result.exact[site] = activation_patch(
            model, clean, corrupted, metric, site, metric_positions=metric.positions,
            max_chunk_mb=config.max_chunk_mb,
        )  # fmt: skip
        timings[f"exact_{site}"] = time.perf_counter() - began
    if config.attribution:
        began = time.perf_counter()
        result.attribution = attribution_patch(model, clean, corrupted, metric, config.sites)
        timings["attribution_all_sites"] = time.perf_counter() - began
        for site in config.sites:
            effect = result.exact[site] - corrupted_value
            result.correlation[site] = _pearson(effect, result.attribution[site])
    labels = [f"{i}:{loaded.tokenizer.decode_text([t])}" for i, t in enumerate(pairs.clean[0])]
    for site in config.sites:
        panels = [("exact Δ", result.exact[site] - corrupted_value)]
        if site in result.attribution:
            panels.append(
                (f"attribution (r={result.correlation[site]:.2f})", result.attribution[site])
            )
        path = Path(config.out) / f"patching_{site}.png"
        result.figures.append(_heatmap(path, site, panels, labels))
    write_json(result.json_path, _report(config, loaded.name, pairs, result, timings))
    return result


def _report(config, name, pairs: PatchPairs, result: PatchingResult, timings) -> dict:
    gap = result.clean_metric - result.corrupted_metric
    sites = {}
    for site, exact in result.exact.items():
        sites[site] = {
            "axes": list(SITE_AXES[site]),
            "exact": exact,
            "exact_normalized": (exact - result.corrupted_metric) / gap if gap else None,
            "attribution": result.attribution.get(site),
            "correlation_pearson": result.correlation.get(site),
        }
    return {
        "model": name,
        "metric": {
            "name": "regulation_logit_diff",
            "definition": "mean over pairs of logsumexp(final logits of regulation first "
            "tokens) - logsumexp(final logits of content-step first tokens)",
            "clean": result.clean_metric,
            "corrupted": result.corrupted_metric,
        },
        "pairs": {
            "n": len(pairs.task_ids),
            "length": int(pairs.clean.shape[1]),
            "task_ids": pairs.task_ids,
            "tasks_with_a_match": pairs.tasks_with_a_match,
            "regulation_tokens": pairs.regulation_tokens,
            "content_tokens": pairs.content_tokens,
        },
        "values": "exact: patched metric (TransformerLens semantics); exact_normalized: "
        "(patched - corrupted) / (clean - corrupted); attribution: estimated patched - corrupted",
        "sites": sites,
        "seconds": timings,
        "provenance": provenance(config),
    }


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: PatchingConfig) -> StageOutput:
    result = run_patching(
        dataclasses.replace(
            config, model=ws.export("adhd"), corpus=ws.corpus, out=ws.analysis("patching")
        )
    )
    summary = {
        "clean_metric": result.clean_metric,
        "corrupted_metric": result.corrupted_metric,
        "correlation": result.correlation,
    }
    return StageOutput([result.json_path, *result.figures], summary)


def section(summary: Summary, outputs: list[str]) -> Section:
    corr = summary.get("correlation") or {}
    corr_text = (
        ", ".join(f"{k} {fmt(v)}" for k, v in corr.items()) if isinstance(corr, dict) else fmt(corr)
    )
    finding = (
        "Clean: an ADHD prefix where the break rule fires (a break next); corrupted: another "
        "ADHD decomposition of the same task where the rule is quiet, same length. "
        f"Regulation logit difference: clean {fmt(summary['clean_metric'])}, corrupted "
        f"{fmt(summary['corrupted_metric'])}; attribution patching vs exact: {corr_text}."
    )
    return Section("Activation patching", finding, figures=figures(outputs))


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistics: the patched model's maps (exact patched metric per
    head, and per layer and position of the residual stream), compared between models
    as 1 - Pearson r, and its clean - corrupted metric gap."""
    sites = read_json(next(p for p in outputs if Path(p).name == RESULT_FILE))["sites"]
    stats = {
        "metric gap": Statistic(
            "clean - corrupted regulation logit difference",
            summary["clean_metric"] - summary["corrupted_metric"],
            of="model",
        )
    }
    for site in ("attn_head_out", "resid_pre"):
        if site in sites:
            stats[f"{site} map"] = Statistic(
                f"activation-patching map of {site} (1 - Pearson r between models)",
                np.asarray(sites[site]["exact"], dtype=np.float64).ravel().tolist(),
                of="model",
                distance="1-r",
            )
    return stats


ANALYSIS = Analysis(
    name="patching",
    description="activation + attribution patching",
    config=PatchingConfig,
    stage=stage,
    section=section,
    after=("export",),
    statistics=statistics,
)
