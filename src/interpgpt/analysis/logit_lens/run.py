"""Regulation logit lens and direct logit attribution at step onsets.

Logit lens (nostalgebraist 2020): read every layer's residual stream
(`blocks.{layer}.hook_resid_post`, and optionally the embedding `hook_embed` as layer
-1) through the model's own final RMSNorm and tied unembedding (`TaskGPT.unembed`).
At every position that predicts a step onset (`<|steps|>`/`<|sep|>` followed by a
step), P(regulation) is the probability mass on the *regulation first tokens* — the
first token of each regulation action as the tokenizer encodes it at step start
(`encode_text(action)[0]`; steps are encoded one by one, so that is exactly the onset
token). Averaged over positions, one curve per model; the seeds report a 17× jump
between the ADHD model's layers 1 and 2 and a standard model that never exceeds 1%.
The final layer of the lens is the model's own prediction, so its mean should track the
share of regulation steps in the ADHD data.

Direct logit attribution (Elhage et al. 2021; TransformerLens
`cache.stack_head_results(apply_ln=True)` + `logit_attrs`): the final residual at a
position is the sum of the embedding, every head's output (`attn.hook_result`) and
every MLP's output (`hook_mlp_out`); no biases. Dividing each term by the final
RMSNorm scale of that position (`ln_final.hook_scale`, frozen as in TL's apply_ln)
and projecting onto a direction in the normalised space decomposes the logit along
that direction exactly. The direction chosen is the *regulation logit*

    u = g ⊙ ( mean_{t ∈ R} W_U[:, t] − mean_{t ∈ V} W_U[:, t] )

with g the final RMSNorm gain, R the regulation first tokens, V the vocabulary: the
mean logit of the regulation tokens minus the mean logit over the vocabulary. Subtracting
the vocabulary mean makes it invariant to a shift of all logits (which softmax ignores)
without depending on which non-regulation token happens to be most likely, so it is
linear in the residual and the components sum to it exactly.

In the study (stage "logit-lens", after the export) both exported models read the ADHD
test sequences; the report section gives the largest layer-to-layer jump of the ADHD
curve (transformer layers only, as the seed card counts them), its final layer against
the regulation share of the data, and the standard model's peak.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.analysis import plots
from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.lm import as_lm
from interpgpt.analysis.logit_lens.config import LogitLensConfig
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
from interpgpt.corpus.evalset import EncodedSet, load_eval_set, load_records
from interpgpt.corpus.regulation import is_regulation
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, write_json

LOGIT_LENS_JSON = "logit_lens.json"
LOGIT_LENS_PLOT = "logit_lens.png"
DLA_JSON = "dla.json"
DLA_HEATMAP = "dla_heatmap.png"
EMBED_LAYER = -1


def regulation_direction(model, reg_ids: list[int]) -> Float[Tensor, " d_model"]:
    """u = g ⊙ (mean W_U[:, R] − mean W_U): the regulation logit in normalised space."""
    w_u = model.W_U.detach().float()
    return model.ln_final.weight.detach().float() * (w_u[:, reg_ids].mean(1) - w_u.mean(1))


# ---------------------------------------------------------------------------- one pass


@dataclass
class OnsetReadout:
    """Per onset-predictor position of one model, concatenated over the data set."""

    p_regulation: Float[Tensor, "pos lens_layer"]
    """Lens P(regulation) at each read-out layer (embed first when included)."""
    next_is_regulation: Tensor
    """(pos,) bool: the step that follows is a regulation action."""
    dla_embed: Float[Tensor, " pos"]
    """Embedding's contribution to the regulation logit."""
    dla_heads: Float[Tensor, "pos layer head"]
    """Each head's contribution."""
    dla_mlp: Float[Tensor, "pos layer"]
    """Each MLP's contribution."""
    regulation_logit: Float[Tensor, " pos"]
    """The regulation logit computed from the model's output logits."""


@torch.no_grad()
def onset_readout(
    model, data: EncodedSet, reg_ids: list[int], *, batch_size: int = 32, dtype=torch.float32
) -> OnsetReadout:
    """One forward pass per batch gives the lens and the DLA at every onset predictor.

    Hooks keep only rows at onset predictors; the lens is applied after the pass so that
    its own `ln_final` call does not fire the captured `ln_final.hook_scale`.
    """
    device = next(model.parameters()).device
    direction = regulation_direction(model, reg_ids).to(device)
    reg = torch.tensor(reg_ids, device=device)
    parts: dict[str, list[Tensor]] = {}
    for batch in data.batches(batch_size):
        mask = batch.onset_predictor_mask().to(device)
        grabbed, hooks = _grab_hooks(model.cfg.n_layer, mask)
        with (
            model.hooks(fwd_hooks=hooks),
            torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32),
        ):
            logits = model(batch.ids.to(device))[mask].float()
        resid = torch.stack([grabbed["embed"], *grabbed["resid"]], dim=1)  # (pos, layer+1, d)
        probs = model.unembed(resid).float().softmax(-1)
        scale = grabbed["scale"][:, 0]  # (pos,)
        per_batch = {
            "p_regulation": probs[..., reg].sum(-1),
            "next_is_regulation": batch.regulation_next_mask().to(device)[mask],
            "dla_embed": grabbed["embed"] @ direction / scale,
            "dla_heads": torch.stack(grabbed["result"], 1) @ direction / scale[:, None, None],
            "dla_mlp": torch.stack(grabbed["mlp"], 1) @ direction / scale[:, None],
            "regulation_logit": logits[:, reg].mean(-1) - logits.mean(-1),
        }
        for name, value in per_batch.items():
            parts.setdefault(name, []).append(value.cpu())
    if not parts:
        raise UserError("no sequence in the evaluation set")
    return OnsetReadout(**{name: torch.cat(values) for name, values in parts.items()})


def _grab_hooks(n_layer: int, mask: Tensor):
    """Hooks that keep each activation's rows at `mask` positions."""
    grabbed: dict = {"resid": [None] * n_layer, "result": [None] * n_layer, "mlp": [None] * n_layer}

    def keep(slot: str, layer: int | None = None):
        def hook(act: Tensor, hook) -> None:
            rows = act[mask].float()
            if layer is None:
                grabbed[slot] = rows
            else:
                grabbed[slot][layer] = rows

        return hook

    hooks = [("hook_embed", keep("embed")), ("ln_final.hook_scale", keep("scale"))]
    for layer in range(n_layer):
        hooks += [
            (f"blocks.{layer}.hook_resid_post", keep("resid", layer)),
            (f"blocks.{layer}.attn.hook_result", keep("result", layer)),
            (f"blocks.{layer}.hook_mlp_out", keep("mlp", layer)),
        ]
    return grabbed, hooks


# ---------------------------------------------------------------------------- any token set


@dataclass
class TokenLens:
    """The logit lens of a token set the caller names, on any model: the mean probability
    mass on the set when each layer's `resid_post` is read through the model's own final
    norm and unembedding (the last layer is the model's prediction)."""

    tokens: list[int]
    p: dict[str, list[float]]
    """Position set -> per layer, the mean P(token set) over its positions (nan: none)."""
    counts: dict[str, int]
    """Position set -> positions averaged over."""


@torch.no_grad()
def token_lens(
    model,
    data,
    token_ids: Sequence[int],
    position_sets: Mapping[str, Tensor],
    *,
    batch_size: int = 32,
) -> TokenLens:
    """Per position set, the mean lens P(token set) at every layer of `model` (a TaskGPT, a
    HookedTransformer or an `analysis.lm` adapter) over the texts of `data` (`ids`,
    `lengths`; the masks are (batch, pos) over them)."""
    if not token_ids:
        raise UserError("the token lens needs at least one token")
    lm = as_lm(model)
    names = [lm.resid_hook(layer) for layer in range(lm.n_layer)]
    tokens = torch.tensor(list(token_ids), device=lm.device)
    sums = {s: torch.zeros(lm.n_layer, dtype=torch.float64) for s in position_sets}
    counts = dict.fromkeys(position_sets, 0)
    for start in range(0, len(data.ids), batch_size):
        rows = slice(start, start + batch_size)
        width = int(data.lengths[rows].max())
        ids = data.ids[rows, :width].to(lm.device)
        _, cache = lm.model.run_with_cache(ids, names_filter=names, stop_at_layer=lm.n_layer)
        resid = torch.stack([cache[n] for n in names], 2)  # (batch, pos, layer, d_model)
        for s, full in position_sets.items():
            mask = full[rows, :width].to(lm.device)
            probs = lm.unembed(resid[mask]).float().softmax(-1)  # (n, layer, d_vocab)
            sums[s] += probs[..., tokens].sum(-1).double().sum(0).cpu()
            counts[s] += int(mask.sum())
    p = {s: (sums[s] / counts[s]).tolist() if counts[s] else [math.nan] * lm.n_layer for s in sums}
    return TokenLens([int(t) for t in token_ids], p, counts)


# ---------------------------------------------------------------------------- summaries


@dataclass
class Jump:
    """The largest ratio between consecutive read-out layers of a lens curve."""

    from_layer: int
    to_layer: int
    p_from: float
    p_to: float
    ratio: float


@dataclass
class LensCurve:
    """Mean lens P(regulation) per read-out layer of one model."""

    layers: list[int]
    """Read-out layers; -1 is the embedding."""
    p_regulation: list[float]
    """Mean over all onset predictors."""
    p_next_regulation: list[float]
    """Mean over onset predictors whose next step is a regulation action (nan if none)."""
    p_next_content: list[float]
    """Mean over onset predictors whose next step is a content step (nan if none)."""
    largest_jump: Jump | None
    """Largest layer-to-layer ratio (None with fewer than two layers or zero mass)."""

    @property
    def final(self) -> float:
        return self.p_regulation[-1]


@dataclass
class DLASummary:
    """Mean direct logit attribution to the regulation logit at onset predictors."""

    embed: float
    heads: np.ndarray
    """(layer, head)."""
    mlp: np.ndarray
    """(layer,)."""
    total: float
    """Mean regulation logit from the model's output."""
    max_abs_residual: float
    """max over positions |embed + heads + MLPs − regulation logit| (should be ~0)."""
    heads_next_regulation: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(layer, head) mean over positions whose next step is regulation."""


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    if not bool(mask.any()):
        return torch.full(values.shape[1:], float("nan"))
    return values[mask].double().mean(0)


def lens_curve(readout: OnsetReadout, include_embed: bool) -> LensCurve:
    p = readout.p_regulation if include_embed else readout.p_regulation[:, 1:]
    n_layer = readout.p_regulation.shape[1] - 1
    layers = ([EMBED_LAYER] if include_embed else []) + list(range(n_layer))
    every = torch.ones(len(p), dtype=torch.bool)
    means = _masked_mean(p, every).tolist()
    return LensCurve(
        layers=layers,
        p_regulation=means,
        p_next_regulation=_masked_mean(p, readout.next_is_regulation).tolist(),
        p_next_content=_masked_mean(p, ~readout.next_is_regulation).tolist(),
        largest_jump=largest_jump(layers, means),
    )


def largest_jump(layers: list[int], p: list[float]) -> Jump | None:
    jumps = [
        Jump(layers[i], layers[i + 1], p[i], p[i + 1], p[i + 1] / p[i])
        for i in range(len(p) - 1)
        if p[i] > 0
    ]
    return max(jumps, key=lambda j: j.ratio, default=None)


def dla_summary(readout: OnsetReadout) -> DLASummary:
    parts = (
        readout.dla_embed
        + readout.dla_heads.sum((1, 2))
        + readout.dla_mlp.sum(1)
        - readout.regulation_logit
    )
    return DLASummary(
        embed=float(readout.dla_embed.double().mean()),
        heads=readout.dla_heads.double().mean(0).numpy(),
        mlp=readout.dla_mlp.double().mean(0).numpy(),
        total=float(readout.regulation_logit.double().mean()),
        max_abs_residual=float(parts.abs().max()),
        heads_next_regulation=_masked_mean(readout.dla_heads, readout.next_is_regulation).numpy(),
    )


def regulation_step_share(records: list[dict]) -> float:
    """Share of regulation steps among all steps of `records`."""
    steps = [step for record in records for step in record["steps"]]
    return sum(map(is_regulation, steps)) / max(len(steps), 1)


# ---------------------------------------------------------------------------- entry point


@dataclass
class LogitLensResult:
    """What `run_logit_lens` computed and wrote."""

    curves: dict[str, LensCurve]
    """Per model, the lens curve."""
    dla: dict[str, DLASummary]
    """Per model, the direct logit attribution."""
    regulation_tokens: dict[int, list[str]]
    """Regulation first-token id -> actions starting with it."""
    regulation_step_share: float
    """Share of regulation steps among all steps of the ADHD split."""
    n_tasks: int
    """Sequences evaluated."""
    n_positions: int
    """Onset-predictor positions evaluated (per model)."""
    files: dict[str, Path] = field(default_factory=dict)
    """Artifact name -> path written."""

    @property
    def final_vs_share(self) -> float:
        """|ADHD final-layer P(regulation) − regulation step share| / share."""
        share = self.regulation_step_share
        return abs(self.curves["adhd"].final - share) / share if share else float("nan")


def run_logit_lens(config: LogitLensConfig) -> LogitLensResult:
    """Lens curves and DLA of both models at step-onset predictors; writes JSON and PNGs."""
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
    reg_tokens = regulation_first_tokens(pair.tokenizer)
    # The share is taken over the ADHD sequences evaluated (those that fit the context).
    adhd_records = data.records
    if config.sequences != "adhd":
        adhd_records = load_records(config.corpus, "adhd", config.split, config.limit)
    dtype = getattr(torch, config.dtype)
    readouts = {
        name: onset_readout(
            model, data, list(reg_tokens), batch_size=config.batch_size, dtype=dtype
        )
        for name, model in pair.models.items()
    }
    result = LogitLensResult(
        curves={n: lens_curve(r, config.include_embed) for n, r in readouts.items()},
        dla={n: dla_summary(r) for n, r in readouts.items()},
        regulation_tokens=reg_tokens,
        regulation_step_share=regulation_step_share(adhd_records),
        n_tasks=len(data),
        n_positions=len(readouts["standard"].regulation_logit),
    )
    result.files = write_outputs(result, pair.tokenizer, config)
    return result


def write_outputs(result: LogitLensResult, tokenizer, config: LogitLensConfig) -> dict[str, Path]:
    out = config.out
    tokens = [
        {"id": i, "token": tokenizer.decode_text([i]), "actions": actions}
        for i, actions in result.regulation_tokens.items()
    ]
    lens = {
        "sequences": config.sequences,
        "n_tasks": result.n_tasks,
        "n_positions": result.n_positions,
        "regulation_tokens": tokens,
        "models": result.curves,
        "regulation_step_share": result.regulation_step_share,
        "adhd_final_p_regulation": result.curves["adhd"].final,
        "final_vs_share_relative_difference": result.final_vs_share,
        "final_within_20pct_of_share": bool(result.final_vs_share <= 0.2),
        "provenance": provenance(config),
    }
    dla = {
        "direction": "final-norm gain ⊙ (mean W_U over regulation first tokens − mean W_U "
        "over the vocabulary); components divided by ln_final.hook_scale",
        "positions": "onset predictors (<|steps|>/<|sep|> before a step)",
        "models": result.dla,
        "provenance": provenance(config),
    }
    return {
        "logit_lens": write_json(out / LOGIT_LENS_JSON, lens),
        "logit_lens_plot": _plot_lens(result, out / LOGIT_LENS_PLOT),
        "dla": write_json(out / DLA_JSON, dla),
        "dla_heatmap": _plot_dla(result, out / DLA_HEATMAP),
    }


def _plot_lens(result: LogitLensResult, path: Path) -> Path:
    curves = result.curves
    layers = curves["standard"].layers
    ticks = ["embed" if layer == EMBED_LAYER else f"L{layer}" for layer in layers]
    overall = plots.LinePanel(
        [plots.Series(layers, c.p_regulation, name, marker="o") for name, c in curves.items()],
        title="P(regulation first token) at step-onset predictors",
        xlabel="residual stream read out (resid_post)",
        ylabel="mean probability",
        logy=True,
        xticks=layers,
        xticklabels=ticks,
    )
    split = plots.LinePanel(
        [
            plots.Series(layers, curves["adhd"].p_next_regulation, "ADHD, next is regulation", "o"),
            plots.Series(layers, curves["adhd"].p_next_content, "ADHD, next is content", "o"),
        ],
        title="ADHD model by the step that follows",
        xlabel="residual stream read out (resid_post)",
        logy=True,
        xticks=layers,
        xticklabels=ticks,
    )
    return plots.save_line_plot(path, [overall, split])


def _plot_dla(result: LogitLensResult, path: Path) -> Path:
    panels, bound = [], 0.0
    for name, summary in result.dla.items():
        matrix = np.concatenate([summary.heads, summary.mlp[:, None]], axis=1)
        bound = max(bound, float(np.abs(matrix).max()))
        n_layer, n_head = summary.heads.shape
        panels.append(
            plots.HeatmapPanel(
                matrix,
                title=f"{name} (embedding {summary.embed:+.2f})",
                xlabel="component",
                ylabel="layer",
                xticklabels=[f"H{h}" for h in range(n_head)] + ["MLP"],
                yticklabels=[f"L{layer}" for layer in range(n_layer)],
                annotate=n_head <= 16,
            )
        )
    return plots.save_heatmaps(
        path,
        panels,
        suptitle="direct logit attribution to the regulation logit at step-onset predictors",
        cmap="RdBu_r",
        vmin=-bound,
        vmax=bound,
        colorbar_label="logit",
    )


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: LogitLensConfig) -> StageOutput:
    result = run_logit_lens(
        dataclasses.replace(
            config,
            standard=ws.export("standard"),
            adhd=ws.export("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("logit_lens"),
        )
    )
    curves = {name: dataclasses.asdict(curve) for name, curve in result.curves.items()}
    summary = {
        "curves": curves,
        "regulation_step_share": result.regulation_step_share,
        "n_positions": result.n_positions,
    }
    return StageOutput(list(result.files.values()), summary)


def layer_jump(layers: list[int], probs: list[float]) -> dict[str, Any]:
    """`largest_jump` between consecutive transformer layers (the embedding excluded), the
    quantity the seed card reports (0.014 -> 0.251 between layers 1 and 2); {} if none."""
    kept = [i for i, layer in enumerate(layers) if layer != EMBED_LAYER]
    jump = largest_jump([layers[i] for i in kept], [probs[i] for i in kept])
    return {} if jump is None else dataclasses.asdict(jump)


def section(summary: Summary, outputs: list[str]) -> Section:
    curves = summary["curves"]
    adhd, std = curves.get("adhd", {}), curves.get("standard", {})
    jump = layer_jump(adhd.get("layers", []), adhd.get("p_regulation", []))
    share = summary.get("regulation_step_share")
    table = [["layer", *[str(layer) for layer in adhd.get("layers", [])]]]
    for name, curve in curves.items():
        table.append([name, *[fmt(p) for p in curve["p_regulation"]]])
    finding = (
        f"ADHD P(regulation) at step-onset predictors jumps {fmt(jump.get('ratio'), 2)}× between "
        f"layers {jump.get('from_layer')} and {jump.get('to_layer')} "
        f"({fmt(jump.get('p_from'))} → {fmt(jump.get('p_to'))}); final layer "
        f"{fmt(adhd['p_regulation'][-1])} vs {fmt(share)} regulation steps in the ADHD test set; "
        f"the standard model peaks at {fmt(max(std.get('p_regulation', [math.nan])))}."
    )
    return Section("Regulation logit lens", finding, table=table, figures=figures(outputs))


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistics: how far apart the two models' P(regulation) curves
    get at any transformer layer, and the largest layer-to-layer rise of the ADHD-role
    curve (a property of that model, compared across models)."""
    curves = summary["curves"]

    def transformer_layers(curve: dict[str, Any]) -> np.ndarray:
        keep = [i for i, layer in enumerate(curve["layers"]) if layer != EMBED_LAYER]
        return np.asarray(curve["p_regulation"], dtype=np.float64)[keep]

    std, adhd = transformer_layers(curves["standard"]), transformer_layers(curves["adhd"])
    rise = float(np.diff(adhd).max()) if adhd.size > 1 else float("nan")
    return {
        "curve gap": Statistic(
            "largest |P(regulation) difference| between the two curves over layers",
            float(np.abs(adhd - std).max()),
        ),
        "largest rise": Statistic(
            "largest layer-to-layer rise of the ADHD model's P(regulation)", rise, of="model"
        ),
    }


ANALYSIS = Analysis(
    name="logit-lens",
    description="regulation logit lens + DLA",
    config=LogitLensConfig,
    stage=stage,
    section=section,
    after=("export",),
    statistics=statistics,
)
