"""Figures and the markdown report of the IOI pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from interpgpt.analysis.plots import HeatmapPanel, save_heatmaps
from interpgpt.io import write_text

FIG_PATCH_RESID = "ioi_patch_resid_pre.png"
FIG_PATCH_HEADS = "ioi_patch_heads.png"
FIG_DLA = "ioi_dla_heads.png"
FIG_SCORES = "ioi_head_scores.png"


def _head_panel(values: np.ndarray, title: str) -> HeatmapPanel:
    n_layer, n_head = values.shape
    return HeatmapPanel(
        values,
        title=title,
        xlabel="head",
        ylabel="layer",
        xticklabels=[str(h) for h in range(n_head)],
        yticklabels=[f"L{layer}" for layer in range(n_layer)],
        annotate=values.size <= 64,
    )


def _symmetric(values: list[np.ndarray]) -> float:
    return max(float(np.nanmax(np.abs(v))) for v in values) or 1.0


def write_figures(res, out: Path) -> list[Path]:
    """Patching heatmaps, DLA per head and the four head scores."""
    p, figures = res.patching, []
    resid = HeatmapPanel(
        p.resid_pre,
        title=f"resid_pre patching ({p.n_position_prompts} prompts of one layout)",
        xlabel="position",
        ylabel="layer",
        xticklabels=p.positions,
        yticklabels=[f"L{layer}" for layer in range(p.resid_pre.shape[0])],
    )
    figures.append(
        save_heatmaps(out / FIG_PATCH_RESID, [resid], cmap="RdBu_r", vmin=-1, vmax=1,
                      colorbar_label="normalised logit diff", panel_size=(8.0, 4.0))
    )  # fmt: skip
    panels = [_head_panel(p.heads, "activation patching (exact)")]
    if p.heads_attribution is not None:
        panels.append(_head_panel(p.heads_attribution, "attribution patching (Δ estimate)"))
    bound = _symmetric([panel.matrix for panel in panels])
    figures.append(
        save_heatmaps(out / FIG_PATCH_HEADS, panels, cmap="RdBu_r", vmin=-bound, vmax=bound,
                      colorbar_label="normalised logit diff", suptitle="head output patching")
    )  # fmt: skip
    bound = _symmetric([res.dla.heads])
    figures.append(
        save_heatmaps(out / FIG_DLA, [_head_panel(res.dla.heads, "direct logit attribution")],
                      cmap="RdBu_r", vmin=-bound, vmax=bound, colorbar_label="logit(IO) − logit(S)")
    )  # fmt: skip
    s = res.scores
    score_panels = [
        _head_panel(s.duplicate_token, "duplicate-token (S2→S1)"),
        _head_panel(s.previous_token, "previous-token"),
        _head_panel(s.induction, "induction (repeated random)"),
        _head_panel(s.name_mover_io - s.name_mover_s, "END→IO minus END→S"),
    ]
    figures.append(
        save_heatmaps(out / FIG_SCORES, score_panels, cmap="viridis", vmin=-1, vmax=1,
                      colorbar_label="attention", panel_size=(4.0, 3.5))
    )  # fmt: skip
    return figures


def _swap_table(res, limit: int = 8) -> list[str]:
    """The name pairs with the weakest role swap, both assignments side by side."""
    by_pair = {(r.io, r.s): r.logit_diff for r in res.baseline.swaps}
    pairs = sorted({tuple(sorted(k)) for k in by_pair if k[::-1] in by_pair})
    rows = sorted(pairs, key=lambda ab: min(by_pair[ab], by_pair[ab[::-1]]))[:limit]
    lines = ["| A | B | IO=A, S=B | IO=B, S=A |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {by_pair[(a, b)]:+.2f} | {by_pair[(b, a)]:+.2f} |" for a, b in rows]
    return lines


def write_report(res, subject, path: Path) -> Path:
    """`ioi_report.md`: numbers, findings, figures."""
    b, p, f = res.baseline, res.patching, res.findings
    lines = [
        f"# IOI on `{res.subject}`",
        "",
        f"Model: {subject.n_layer} layers × {subject.n_head} heads.",
    ]
    if subject.heldout_definition:
        lines += ["", f"Evaluation set (held out): {subject.heldout_definition}."]
    lines += [
        "",
        "## Baseline",
        "",
        f"- mean logit(IO) − logit(S) at END: **{b.mean_logit_diff:+.2f}** "
        f"(std {b.std_logit_diff:.2f}, {b.n_prompts} prompts)",
        f"- prompts with a positive logit difference: {b.frac_positive:.1%}; "
        f"top-1 prediction is the IO: {b.frac_top_io:.1%}",
        "- by order: " + ", ".join(f"{k} {v:+.2f}" for k, v in b.by_order.items()),
        f"- role swaps (every ordered name pair): {len(b.swaps)}, all positive: "
        f"**{b.all_swaps_positive}**, smallest {min(r.logit_diff for r in b.swaps):+.2f}",
        "",
        "The weakest role swaps (mean over each assignment's prompts):",
        "",
        *_swap_table(res),
        "",
        "## What the pipeline finds",
        "",
        *[f"- {line}" for line in f.summary],
        f"- name movers (DLA > 0, attend END→IO more than END→S): "
        f"{', '.join(f.name_movers) or '—'}",
        f"- subject suppressors (DLA > 0, attend END→S more than END→IO): "
        f"{', '.join(f.subject_suppressors) or '—'}",
        f"- negative name movers: {', '.join(f.negative_movers) or '—'}",
        f"- duplicate-token heads: {', '.join(f.duplicate_token)}; induction heads: "
        f"{', '.join(f.induction)}; previous-token heads: {', '.join(f.previous_token)}",
        f"- strongest head patching effects: {', '.join(f.patching)}; largest mean-ablation "
        f"drops: {', '.join(f.ablation)}",
        "",
        "## Patching",
        "",
        f"Corruption `{res.config.corruption}`: clean mean logit diff {p.clean:+.2f}, "
        f"corrupted {p.corrupted:+.2f}; values are normalised (0 = corrupted, 1 = clean).",
        "",
        f"![resid_pre patching]({FIG_PATCH_RESID})",
        f"![head patching]({FIG_PATCH_HEADS})",
        "",
        "## Direct logit attribution and head scores",
        "",
        f"DLA terms sum to {res.dla.total:+.3f} against a logit difference of "
        f"{res.dla.logit_diff:+.3f} (equal for TaskGPT: no biases).",
        "",
        f"![DLA]({FIG_DLA})",
        f"![head scores]({FIG_SCORES})",
        "",
    ]
    return write_text(path, "\n".join(lines))
