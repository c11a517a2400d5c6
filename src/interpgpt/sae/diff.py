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
(rate_adhd + eps) / (rate_std + eps). Features with rate_adhd >= `adhd_min_rate` and
rate_std <= `std_max_rate` are the ADHD-specific ones; they are ranked by the ratio.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.analysis.data import EncodedSet, Split, load_eval_set, load_pair, resolve_device
from interpgpt.io import UserError, provenance, write_json, write_text

FEATURE_DIFF_JSON = "feature_diff.json"
FEATURE_DIFF_MD = "feature_diff.md"


@dataclass
class FeatureDiffConfig:
    """What `feature_diff` compares and how it thresholds."""

    sae_dir: Path
    """SAELens-format SAE directory (cfg.json + sae_weights.safetensors)."""
    std: Path
    """The standard model (run or export dir)."""
    adhd: Path
    """The ADHD model (run or export dir)."""
    corpus: Path
    """Corpus directory; its held-out split supplies the sequences."""
    out: Path
    """Directory for feature_diff.json and feature_diff.md."""
    sequences: Literal["own", "adhd", "standard"] = "own"
    """"own": each model reads its own variant's sequences; otherwise both read that variant's."""
    split: Split = "test"
    """Corpus split of the held-out tasks."""
    limit: int | None = 300
    """Held-out tasks per variant (one phrasing each); None for all."""
    adhd_min_rate: float = 0.05
    """A selected feature fires at least this often at ADHD onset predictors."""
    std_max_rate: float = 0.005
    """... and at most this often at standard onset predictors."""
    epsilon: float = 1e-4
    """Smoothing added to both rates in the asymmetry ratio, so a zero rate gives a finite ratio."""
    top_n: int = 20
    """Features shown with their contexts on the markdown page."""
    n_contexts: int = 5
    """Top-activating contexts per shown feature."""
    context_tokens: int = 10
    """Tokens of left context shown before the activating token."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""

    def __post_init__(self) -> None:
        if self.sequences not in ("own", "adhd", "standard"):
            raise UserError(f"--sequences must be own, adhd or standard, got {self.sequences!r}")
        if not 0 <= self.std_max_rate < self.adhd_min_rate <= 1:
            raise UserError("thresholds must satisfy 0 <= std-max-rate < adhd-min-rate <= 1")
        if self.epsilon <= 0:
            raise UserError(f"--epsilon must be positive, got {self.epsilon}")


@dataclass
class FeatureStats:
    """Per-feature statistics of one model at the onset predictors of one sequence set."""

    n_positions: int
    """Onset-predictor positions seen."""
    fire_count: Float[Tensor, " d_sae"]
    """Positions where the feature's activation is > 0."""
    act_sum: Float[Tensor, " d_sae"]
    """Sum of the feature's activation over those positions."""

    @property
    def onset_rate(self) -> Float[Tensor, " d_sae"]:
        return self.fire_count / max(self.n_positions, 1)

    @property
    def mean_when_firing(self) -> Float[Tensor, " d_sae"]:
        return self.act_sum / self.fire_count.clamp(min=1)


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


def hook_layer(hook_name: str) -> int | None:
    """Block index of a `blocks.{layer}.…` hook (None for hook_embed / ln_final)."""
    parts = hook_name.split(".")
    return int(parts[1]) if parts[0] == "blocks" else None


@torch.no_grad()
def hook_activations(model, ids: Tensor, hook_name: str) -> Float[Tensor, "batch pos d_model"]:
    """The activation at `hook_name`, running the model only as far as needed."""
    layer = hook_layer(hook_name)
    stop = 0 if hook_name == "hook_embed" else None
    if layer is not None and layer + 1 < model.cfg.n_layer:
        stop = layer + 1
    _, cache = model.run_with_cache(ids, names_filter=hook_name, stop_at_layer=stop)
    return cache[hook_name]


@torch.no_grad()
def encode_features(sae, acts: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_sae"]:
    """SAE latents of activations (in the SAE's dtype and device)."""
    return sae.encode(acts.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype))


def onset_feature_stats(
    model, sae, eset: EncodedSet, hook_name: str, batch_size: int = 32
) -> FeatureStats:
    """Firing counts and activation sums of every feature at the onset predictors."""
    d_sae = sae.W_dec.shape[0]
    fire = torch.zeros(d_sae, dtype=torch.float64)
    total = torch.zeros(d_sae, dtype=torch.float64)
    n = 0
    device = next(model.parameters()).device
    for batch in eset.batches(batch_size):
        mask = batch.onset_predictor_mask()
        acts = hook_activations(model, batch.ids.to(device), hook_name)
        feats = encode_features(sae, acts[mask.to(device)]).double().cpu()
        fire += (feats > 0).sum(0)
        total += feats.clamp(min=0).sum(0)
        n += int(mask.sum())
    return FeatureStats(n, fire, total)


def asymmetry(std: FeatureStats, adhd: FeatureStats, epsilon: float) -> Tensor:
    """(rate_adhd + eps) / (rate_std + eps), per feature."""
    return (adhd.onset_rate + epsilon) / (std.onset_rate + epsilon)


def select_features(std: FeatureStats, adhd: FeatureStats, config: FeatureDiffConfig) -> list[int]:
    """Features firing often at ADHD onsets and (almost) never at standard ones."""
    keep = (adhd.onset_rate >= config.adhd_min_rate) & (std.onset_rate <= config.std_max_rate)
    ratio = asymmetry(std, adhd, config.epsilon)
    idx = keep.nonzero().flatten().tolist()
    return sorted(idx, key=lambda f: (-float(ratio[f]), -float(adhd.onset_rate[f]), f))


@torch.no_grad()
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
) -> dict[int, list[Context]]:
    """The highest activations of each feature over all real positions of `eset`."""
    if not features:
        return {}
    device = next(model.parameters()).device
    per_row: list[Tensor] = []  # (pos, n_features) per example
    for batch in eset.batches(batch_size):
        acts = hook_activations(model, batch.ids.to(device), hook_name)
        feats = encode_features(sae, acts)[..., features].float().cpu()
        per_row += [feats[i, : int(n)] for i, n in enumerate(batch.lengths)]
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
    from interpgpt.sae.topk import TopKSAE

    device = resolve_device(config.device)
    pair = load_pair(config.std, config.adhd, device)
    sae = TopKSAE.load(config.sae_dir).to(device).eval()
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
    shown = selected[: config.top_n]
    contexts = top_contexts(
        pair.adhd.model,
        sae,
        pair.tokenizer,
        sets["adhd"],
        hook_name,
        shown,
        config.n_contexts,
        config.context_tokens,
        config.batch_size,
    )
    out = Path(config.out)
    blob = _result_json(config, sae, stats, selected, contexts)
    json_path = write_json(out / FEATURE_DIFF_JSON, blob)
    md_path = write_text(out / FEATURE_DIFF_MD, render_markdown(blob))
    return FeatureDiffResult(json_path, md_path, selected, stats["standard"], stats["adhd"])


def _check_hook(model, hook_name: str, sae_dir: Path, d_in: int) -> None:
    if hook_name not in model.hook_dict:
        raise UserError(f"{sae_dir}: the SAE's hook {hook_name!r} is not a hook of this model")
    if d_in != model.cfg.d_model:
        raise UserError(
            f"{sae_dir}: the SAE reads {d_in}-wide activations, the models have "
            f"d_model={model.cfg.d_model}; pass an SAE trained on this pair"
        )


def feature_row(f: int, stats: dict[str, FeatureStats], epsilon: float) -> dict:
    std, adhd = stats["standard"], stats["adhd"]
    return {
        "feature": f,
        "adhd_rate": float(adhd.onset_rate[f]),
        "standard_rate": float(std.onset_rate[f]),
        "asymmetry": float(asymmetry(std, adhd, epsilon)[f]),
        "adhd_mean_act": float(adhd.mean_when_firing[f]),
        "standard_mean_act": float(std.mean_when_firing[f]),
    }


def _result_json(config, sae, stats, selected, contexts) -> dict:
    std, adhd = stats["standard"], stats["adhd"]
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
        "n_positions": {"standard": std.n_positions, "adhd": adhd.n_positions},
        "thresholds": {"adhd_min_rate": config.adhd_min_rate, "std_max_rate": config.std_max_rate},
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
        f"onset predictors and ≤ {th['std_max_rate']:.2%} of standard ones. "
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
