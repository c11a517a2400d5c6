"""Cross-model SAE feature diff: which dictionary features fire at ADHD step onsets only.

One SAE (trained on one model's residual stream at `cfg.hook_name`) is applied to the
activations of *both* models of the pair at that hook. Because the two models share
architecture, seed and tokenizer, a single dictionary is a common coordinate system for
the two residual streams (the "cross-model feature" comparison of the seed SAE card;
cf. crosscoders, Lindsey et al. 2024, which learn the shared dictionary jointly).

Positions: the *onset predictors* — the `<|steps|>`/`<|sep|>` position right before
each step. Under the logit lens (`model.unembed(resid)`) the residual there predicts
the step's first token, so a feature that fires there is one the model can use to
choose what kind of step comes next (a regulation action or content). Each model is
run on its own variant's held-out sequences by default (`sequences="own"`), which is
the comparison the card reports; `sequences="adhd"` or `"standard"` feeds both models
the same token ids instead.

Per feature and model: the firing rate (fraction of onset predictors where the TopK
latent is > 0), the mean activation when firing, and the asymmetry ratio
(rate_adhd + eps) / (rate_standard + eps). Features with rate_adhd >= `adhd_min_rate`
and rate_standard <= `standard_max_rate` are the ADHD-specific ones; they are ranked by
the ratio. The thresholds make "specific" a stated, checkable claim rather than a top-k
of whatever differs most; the smoothing keeps a feature that never fires in the
standard model finite and still ranked by how often it fires in the ADHD one.

`dashboard.html` (`interpgpt.analysis.dashboard`) has a card per shown feature: its top
contexts over all tokens of the ADHD sequences, its activation histogram, its statistics
and the tokens its decoder row promotes and suppresses in each model. It reuses the
activations the contexts are taken from, so it costs no extra forward pass.

In the study (`stage`), the SAE is the ADHD model's at `layer` (a study-only setting,
`FeatureDiffStudyConfig`); the stage records that SAE and the diff file in its summary,
so the steering stage reads the very feature the diff selected. The study feeds both
models the ADHD sequences (`FeatureDiffStudyConfig.sequences`), so that its count, and
the same count between a model and its data-order twin, compare models on the same
inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.analysis import dashboard
from interpgpt.analysis.controls import MATCH_THRESHOLD, Statistic, match_dictionaries
from interpgpt.analysis.feature_diff.config import FeatureDiffConfig
from interpgpt.analysis.protocol import Analysis, Layout, Section, StageOutput, Summary, fmt
from interpgpt.analysis.sae_features import (
    FeatureStats,
    encode_features,
    hook_activations,
    onset_feature_stats,
)
from interpgpt.artifacts.load import load_pair
from interpgpt.corpus.evalset import EncodedSet, load_eval_set
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, write_json, write_text
from interpgpt.sae.topk import TopKSAE, check_trained_on, sae_dir_name
from interpgpt.sae.training import seed_twin_name
from interpgpt.settings import at_least

FEATURE_DIFF_JSON = "feature_diff.json"
FEATURE_DIFF_MD = "feature_diff.md"
FEATURE_DIFF_DASHBOARD = "dashboard.html"


@dataclass(frozen=True)
class FeatureDiffStudyConfig(FeatureDiffConfig):
    """The study's `[feature_diff]` section: the diff's settings and which SAE it reads."""

    layer: int = 2
    """Layer of the ADHD SAE the study diffs (one of sae.adhd_layers); the study sets
    sae_dir from it."""
    sequences: Literal["own", "adhd", "standard"] = "adhd"
    """In the study both models read the ADHD held-out sequences: on the same inputs an
    ADHD-only feature is a difference between the models, and between a model and its
    data-order twin (the seed controls) a difference of training noise alone. With
    "own", the two roles read different sequences, so the count also measures the
    sequences: a model against itself can find "ADHD-only" features."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, layer=0)


@dataclass
class Context:
    """One top-activating position of a feature, with the tokens before it."""

    example: int
    """Row of the evaluation set."""
    position: int
    """Position of the activating token."""
    activation: float
    """The feature's activation there."""
    tokens: list[str]
    """Decoded tokens of the window, the activating token last."""
    activations: list[float]
    """The feature's activation at each token of the window."""


@dataclass
class FeatureDiffResult:
    """What `feature_diff` wrote and found."""

    json_path: Path
    """feature_diff.json."""
    markdown_path: Path
    """feature_diff.md."""
    selected: list[int]
    """ADHD-specific features, strongest asymmetry first."""
    standard: FeatureStats
    """Statistics in the standard model."""
    adhd: FeatureStats
    """Statistics in the ADHD model."""
    dashboard_path: Path
    """dashboard.html: a card per shown feature."""
    seed_stability: dict[str, Any] | None = None
    """With a stability SAE: the share of latents matched across SAE seeds and the
    candidates dropped as unstable (`seed_stability`)."""


def asymmetry(standard: FeatureStats, adhd: FeatureStats, epsilon: float) -> Tensor:
    """(rate_adhd + eps) / (rate_standard + eps), per feature."""
    return (adhd.onset_rate + epsilon) / (standard.onset_rate + epsilon)


def select_features(
    standard: FeatureStats, adhd: FeatureStats, config: FeatureDiffConfig
) -> list[int]:
    """Features firing often at ADHD onsets and (almost) never at standard ones."""
    return exclusive_features(
        standard, adhd, config.adhd_min_rate, config.standard_max_rate, config.epsilon
    )


def exclusive_features(
    reference: FeatureStats, other: FeatureStats, min_rate: float, max_rate: float, epsilon: float
) -> list[int]:
    """Features exclusive to `other`: firing at >= `min_rate` of its positions and at <=
    `max_rate` of `reference`'s, ranked by the asymmetry (then by `other`'s rate, then
    index). Any two models' statistics of one SAE, whatever their roles."""
    keep = (other.onset_rate >= min_rate) & (reference.onset_rate <= max_rate)
    ratio = asymmetry(reference, other, epsilon)
    idx = keep.nonzero().flatten().tolist()
    return sorted(idx, key=lambda f: (-float(ratio[f]), -float(other.onset_rate[f]), f))


@torch.no_grad()
def feature_activations(
    model, sae, eset: EncodedSet, hook_name: str, features: list[int], batch_size: int = 32
) -> Float[Tensor, "batch pos n_features"]:
    """The activations of `features` (in that order) at every position of `eset`; 0 at padding."""
    device = next(model.parameters()).device
    out = torch.zeros(*eset.ids.shape, len(features))
    if not features:
        return out
    start = 0
    for batch in eset.batches(batch_size):
        acts = hook_activations(model, batch.ids.to(device), hook_name)
        feats = encode_features(sae, acts)[..., features].float().cpu()
        out[start : start + len(batch), : feats.shape[1]] = feats * batch.valid[..., None]
        start += len(batch)
    return out


def top_contexts(
    model,
    sae,
    tokenizer,
    eset: EncodedSet,
    hook_name: str,
    features: list[int],
    n_contexts: int = 5,
    context_tokens: int = 10,
    batch_size: int = 32,
    acts: Tensor | None = None,
) -> dict[int, list[Context]]:
    """The highest activations of each feature over all real positions of `eset`
    (`acts`: their `feature_activations`, when already computed)."""
    if not features:
        return {}
    if acts is None:
        acts = feature_activations(model, sae, eset, hook_name, features, batch_size)
    per_row = [acts[i, : int(n)] for i, n in enumerate(eset.lengths)]  # (pos, n_features) each
    contexts: dict[int, list[Context]] = {}
    for j, feature in enumerate(features):
        scored = [(float(v), r, p) for r, f in enumerate(per_row) for p, v in enumerate(f[:, j])]
        scored = sorted((s for s in scored if s[0] > 0), reverse=True)[:n_contexts]
        contexts[feature] = [
            _context(tokenizer, eset, per_row[r][:, j], r, p, context_tokens) for _, r, p in scored
        ]
    return contexts


def _context(tokenizer, eset, acts: Tensor, row: int, pos: int, width: int) -> Context:
    start = max(0, pos - width)
    ids = eset.ids[row, start : pos + 1].tolist()
    return Context(
        example=row,
        position=pos,
        activation=float(acts[pos]),
        tokens=[tokenizer.decode_text([t]) for t in ids],
        activations=[round(float(a), 4) for a in acts[start : pos + 1]],
    )


def feature_diff(config: FeatureDiffConfig) -> FeatureDiffResult:
    """Run the diff and write feature_diff.json and feature_diff.md under `config.out`."""
    device = resolve_device(config.device)
    pair = load_pair(config.standard, config.adhd, device, config.same_variant)
    sae = TopKSAE.load(config.sae_dir).to(device).eval()
    check_trained_on(sae, config.sae_dir, pair.adhd, "adhd", config.same_variant)
    hook_name = sae.cfg.hook_name
    _check_hook(pair.standard.model, hook_name, config.sae_dir, sae.W_dec.shape[1])
    sets = {
        variant: load_eval_set(
            config.corpus,
            pair.tokenizer,
            variant if config.sequences == "own" else config.sequences,
            config.split,
            config.limit,
            pair.standard.model.cfg.n_ctx,
        )
        for variant in ("standard", "adhd")
    }
    stats = {
        variant: onset_feature_stats(
            pair.models[variant], sae, sets[variant], hook_name, config.batch_size
        )
        for variant in ("standard", "adhd")
    }
    selected = select_features(stats["standard"], stats["adhd"], config)
    stability = None
    if config.stability_sae is not None:
        stability = seed_stability(sae, config.stability_sae, selected)
        selected = [f for f in selected if f not in set(stability["unstable"])]
    shown = selected[: config.top_n]
    acts = feature_activations(
        pair.adhd.model, sae, sets["adhd"], hook_name, shown, config.batch_size
    )
    contexts = top_contexts(
        pair.adhd.model,
        sae,
        pair.tokenizer,
        sets["adhd"],
        hook_name,
        shown,
        config.n_contexts,
        config.context_tokens,
        acts=acts,
    )
    out = Path(config.out)
    blob = _result_json(config, sae, stats, selected, contexts)
    blob["seed_stability"] = stability
    json_path = write_json(out / FEATURE_DIFF_JSON, blob)
    md_path = write_text(out / FEATURE_DIFF_MD, render_markdown(blob))
    cards = dashboard_cards(
        config, sae, pair.models, pair.tokenizer, sets["adhd"], stats, shown, acts
    )
    dashboard_path = dashboard.write_dashboard(
        out / FEATURE_DIFF_DASHBOARD,
        "Cross-model SAE feature diff: ADHD-only features",
        cards,
        [{"latent": c.latent, "kind": c.kind, **c.stats} for c in cards],
        dashboard_intro(blob),
    )
    return FeatureDiffResult(
        json_path, md_path, selected, stats["standard"], stats["adhd"], dashboard_path, stability
    )


def seed_stability(sae: TopKSAE, other_dir: Path, candidates: list[int]) -> dict[str, Any]:
    """Which `candidates` (latents of `sae`) are stable across SAE seeds: matched one-to-one
    (Hungarian on decoder cosine, `match_dictionaries`) to a latent of the other-seed SAE
    at `other_dir` with cosine >= MATCH_THRESHOLD; and the share of all latents matched."""
    other = TopKSAE.load(other_dir)
    if other.cfg.hook_name != sae.cfg.hook_name or other.W_dec.shape[1] != sae.W_dec.shape[1]:
        raise UserError(
            f"{other_dir}: reads {other.cfg.hook_name} ({other.W_dec.shape[1]} wide), the "
            f"diffed SAE {sae.cfg.hook_name} ({sae.W_dec.shape[1]} wide); pass an SAE of the "
            "same layer"
        )
    match = match_dictionaries(sae.W_dec, other.W_dec, MATCH_THRESHOLD)
    matched = np.nan_to_num(match.cosines, nan=-1.0) >= MATCH_THRESHOLD
    return {
        "sae": str(other_dir),
        "threshold": MATCH_THRESHOLD,
        "rule": "Hungarian matching of decoder rows (cosine); stable: partner cosine >= threshold",
        "share_matched": match.share_matched,
        "unstable": [f for f in candidates if not matched[f]],
        "candidate_cosines": {str(f): float(match.cosines[f]) for f in candidates},
    }


def _check_hook(model, hook_name: str, sae_dir: Path, d_in: int) -> None:
    if hook_name not in model.hook_dict:
        raise UserError(f"{sae_dir}: the SAE's hook {hook_name!r} is not a hook of this model")
    if d_in != model.cfg.d_model:
        raise UserError(
            f"{sae_dir}: the SAE reads {d_in}-wide activations, the models have "
            f"d_model={model.cfg.d_model}; pass an SAE trained on this pair"
        )


def feature_row(f: int, stats: dict[str, FeatureStats], epsilon: float) -> dict:
    standard, adhd = stats["standard"], stats["adhd"]
    return {
        "feature": f,
        "adhd_rate": float(adhd.onset_rate[f]),
        "standard_rate": float(standard.onset_rate[f]),
        "asymmetry": float(asymmetry(standard, adhd, epsilon)[f]),
        "adhd_mean_act": float(adhd.mean_when_firing[f]),
        "standard_mean_act": float(standard.mean_when_firing[f]),
    }


def _result_json(config, sae, stats, selected, contexts) -> dict:
    standard, adhd = stats["standard"], stats["adhd"]
    return {
        "sae": {
            "dir": str(config.sae_dir),
            "hook_name": sae.cfg.hook_name,
            "layer": sae.cfg.layer,
            "d_sae": int(sae.W_dec.shape[0]),
            "k": sae.cfg.k,
            "model_name": getattr(sae.cfg, "model_name", None),
        },
        "positions": "onset predictors: the <|steps|>/<|sep|> position before each step, "
        "whose next-token prediction is the step's first token",
        "sequences": config.sequences,
        "n_positions": {"standard": standard.n_positions, "adhd": adhd.n_positions},
        "thresholds": {
            "adhd_min_rate": config.adhd_min_rate,
            "standard_max_rate": config.standard_max_rate,
        },
        "asymmetry": f"(adhd_rate + {config.epsilon}) / (standard_rate + {config.epsilon})",
        "epsilon": config.epsilon,
        "n_selected": len(selected),
        "features": [feature_row(f, stats, config.epsilon) for f in selected],
        "top_n": config.top_n,
        "top_contexts": {str(f): [dataclasses.asdict(c) for c in contexts[f]] for f in contexts},
        "provenance": provenance(config),
    }


def render_markdown(blob: dict) -> str:
    """A readable page: the thresholds, the selected features, their top contexts."""
    th = blob["thresholds"]
    lines = [
        "# Cross-model SAE feature diff",
        "",
        f"SAE `{blob['sae']['dir']}` at `{blob['sae']['hook_name']}` "
        f"(d_sae = {blob['sae']['d_sae']}). Positions: {blob['positions']}. "
        f"Onset predictors seen: standard {blob['n_positions']['standard']}, "
        f"ADHD {blob['n_positions']['adhd']} (sequences: {blob['sequences']}).",
        "",
        f"**{blob['n_selected']} features** fire at ≥ {th['adhd_min_rate']:.1%} of ADHD "
        f"onset predictors and ≤ {th['standard_max_rate']:.2%} of standard ones. "
        f"Asymmetry = {blob['asymmetry']}.",
        "",
        "| feature | ADHD rate | standard rate | asymmetry | ADHD mean act |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in blob["features"][: blob["top_n"]]:
        lines.append(
            f"| {row['feature']} | {row['adhd_rate']:.2%} | {row['standard_rate']:.3%} | "
            f"{row['asymmetry']:.1f}× | {row['adhd_mean_act']:.3g} |"
        )
    for feature, contexts in blob["top_contexts"].items():
        lines += ["", f"## Feature {feature}", ""]
        for ctx in contexts:
            lines.append(f"- **{ctx['activation']:.3g}** — {_highlight(ctx)}")
        if not contexts:
            lines.append("- (never fires in the ADHD sequences)")
    return "\n".join(lines) + "\n"


def _highlight(ctx: dict) -> str:
    """Tokens with their activations; the activating token in bold."""
    parts = []
    tokens = ctx["tokens"]
    for i, (tok, act) in enumerate(zip(tokens, ctx["activations"], strict=True)):
        text = tok.replace("`", "'").replace("\n", "⏎") or "∅"
        text = f"`{text}`" + (f"<sub>{act:.2g}</sub>" if act > 0 else "")
        parts.append(f"**{text}**" if i == len(tokens) - 1 else text)
    return " ".join(parts)


# ---------------------------------------------------------------------------- dashboard


def dashboard_cards(
    config: FeatureDiffConfig,
    sae: TopKSAE,
    models: dict[str, Any],
    tokenizer,
    eset: EncodedSet,
    stats: dict[str, FeatureStats],
    features: list[int],
    acts: Float[Tensor, "batch pos n_features"],
) -> list[dashboard.LatentCard]:
    """One card per shown ADHD-only feature, from the activations the diff already took on
    the ADHD sequences (`feature_activations`) and the feature's SAE decoder row."""
    n_tokens = max(int(eset.lengths.sum()), 1)
    cards = []
    for j, f in enumerate(features):
        row = feature_row(f, stats, config.epsilon)
        direction = sae.W_dec[f].detach()
        logits = {
            name: dashboard.output_tokens(direction, model, tokenizer)
            for name, model in models.items()
        }
        card_stats: dict[str, float | str] = {
            "ADHD onset rate": row["adhd_rate"],
            "standard onset rate": row["standard_rate"],
            "asymmetry": row["asymmetry"],
            "ADHD mean act": row["adhd_mean_act"],
            "standard mean act": row["standard_mean_act"],
            "ADHD token frequency": float((acts[..., j] > 0).sum()) / n_tokens,
            "decoder norm": float(direction.norm()),
        }
        cards.append(
            dashboard.LatentCard(
                latent=f,
                title=f"feature {f} — ADHD-only",
                kind="ADHD-only",
                stats=card_stats,
                contexts=dashboard.top_contexts(
                    acts[..., j],
                    eset.ids,
                    tokenizer,
                    config.n_contexts,
                    config.context_tokens,
                    lengths=eset.lengths,
                ),
                activations=dashboard.activation_sample(acts[..., j]),
                promoted={name: out.promoted for name, out in logits.items()},
                suppressed={name: out.suppressed for name, out in logits.items()},
            )
        )
    return cards


def dashboard_intro(blob: dict) -> str:
    th = blob["thresholds"]
    return (
        f"SAE {blob['sae']['dir']} at {blob['sae']['hook_name']} (d_sae = "
        f"{blob['sae']['d_sae']}). {blob['n_selected']} features fire at ≥ "
        f"{th['adhd_min_rate']:.1%} of ADHD onset predictors and ≤ "
        f"{th['standard_max_rate']:.2%} of standard ones; the first {blob['top_n']} have "
        f"cards. Asymmetry = {blob['asymmetry']}.\n\n"
        "Contexts and histograms: the feature on the ADHD model's held-out sequences, every "
        "token (not only onset predictors); the outlined token is the activating one. "
        "Promoted/suppressed tokens: the decoder row through each model's final norm gain "
        "and unembedding (its direct effect on the logits, later layers skipped)."
    )


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: FeatureDiffStudyConfig) -> StageOutput:
    sae_dir = ws.sae("adhd", config.layer)
    twin = ws.saes / sae_dir_name(seed_twin_name("adhd"), config.layer)
    result = feature_diff(
        dataclasses.replace(
            config,
            sae_dir=sae_dir,
            stability_sae=twin if twin.is_dir() else None,
            standard=ws.export("standard"),
            adhd=ws.export("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("feature_diff"),
        )
    )
    top = [
        {
            "feature": f,
            "adhd_rate": float(result.adhd.onset_rate[f]),
            "std_rate": float(result.standard.onset_rate[f]),
        }
        for f in result.selected[:10]
    ]
    summary: dict[str, Any] = {
        "sae_dir": str(sae_dir),
        "diff_file": str(result.json_path),
        "n_selected": len(result.selected),
        "top": top,
        "sequences": config.sequences,
    }
    if result.seed_stability is not None:
        summary["seed_stability"] = {
            "share_matched": result.seed_stability["share_matched"],
            "n_unstable": len(result.seed_stability["unstable"]),
            "threshold": result.seed_stability["threshold"],
        }
    return StageOutput([result.json_path, result.markdown_path, result.dashboard_path], summary)


def section(summary: Summary, outputs: list[str]) -> Section:
    table = [["feature", "ADHD onset rate", "standard onset rate"]]
    for t in summary["top"]:
        table.append([str(t["feature"]), fmt(t["adhd_rate"]), fmt(t["std_rate"])])
    top = summary["top"][0] if summary["top"] else None
    sequences = summary.get("sequences", "own")
    if sequences == "own":
        where = "fire at ADHD step onsets and almost never at standard ones"
    else:
        where = (
            "fire at the ADHD model's step onsets and almost never at the standard "
            f"model's, both reading the {sequences} held-out sequences"
        )
    finding = (
        f"{summary['n_selected']} SAE features {where}; the top one, {top['feature']}, "
        f"fires at {fmt(top['adhd_rate'])} vs {fmt(top['std_rate'])}."
        if top
        else "No SAE feature is specific to ADHD step onsets at the stated thresholds."
    )
    stability = summary.get("seed_stability")
    if stability:
        finding += (
            f" Only features stable across two SAE seeds count: {fmt(stability['share_matched'])}"
            f" of the SAE's latents have a partner at decoder cosine ≥ "
            f"{fmt(stability['threshold'])} in the other seed's SAE, and "
            f"{stability['n_unstable']} candidate(s) were dropped as unstable."
        )
    md = [Path(p) for p in outputs if str(p).endswith(".md")]
    dashboards = [Path(p) for p in outputs if str(p).endswith(".html")]
    rows = [("contexts", str(md[0]))] if md else []
    pages = [("feature dashboards", dashboards[0])] if dashboards else []
    return Section("Cross-model feature diff", finding, rows=rows, table=table, pages=pages)


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistic: how many features the procedure calls ADHD-only
    (exclusive to the ADHD-role model); between a model and its twin, every one is noise."""
    return {"exclusive": Statistic("ADHD-only SAE features (count)", summary["n_selected"])}


def check(config: FeatureDiffStudyConfig, sections: Mapping[str, Any], n_layer: int) -> None:
    """The diff's layer is one the study trains an ADHD SAE at."""
    adhd_layers = sections["sae"].adhd_layers
    if config.layer not in adhd_layers:
        raise UserError(
            f"feature_diff.layer={config.layer} must be one of sae.adhd_layers "
            f"{list(adhd_layers)} (the diff reads the ADHD SAE at that layer)"
        )


ANALYSIS = Analysis(
    name="feature-diff",
    description="cross-model SAE feature diff",
    config=FeatureDiffStudyConfig,
    stage=stage,
    section=section,
    after=("sae",),
    statistics=statistics,
    check=check,
)
