"""The SAE feature diff of any pair: features one model's SAE finds in that model only.

As the study's cross-model feature diff (`analysis.feature_diff`), an SAE trained on one
model's residual stream is a coordinate system in which both models' activations at its
hook are read; a feature that fires at >= `min_rate` of a position set's positions in the
SAE's own model and at <= `max_rate` of them in the other is exclusive to its model
(`feature_diff.exclusive_features`). Read with b's SAE this gives b-only features, with
a's SAE a-only ones; with both, the share of b's decoder rows without a partner in a's
(`controls.match_dictionaries`, the study's SAE-seed stability rule) says how differently
the two dictionaries cut the residual stream. Each exclusive feature is read through its
model's own final norm and unembedding (`diff_lens.read_lens`), so a feature can be tied
to what it makes the model predict.

The SAEs are SAELens-format TopK dirs (`sae.TopKSAE.load`), or trained here on the texts
themselves (`train_text_sae`: the project's TopK trainer, `sae.training.fit_saes`, on the
texts' activations at the layer, small and quick: a dictionary of a few texts, for a
pair diffed on a few texts). Between a and a control the same SAE of a is used with the
control's own SAE, so the seed controls see the same procedure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jaxtyping import Float
from torch import Tensor

from interpgpt.analysis.controls import MATCH_THRESHOLD, match_dictionaries
from interpgpt.analysis.diff_lens.run import read_lens
from interpgpt.analysis.feature_diff.run import exclusive_features
from interpgpt.analysis.lm import TextSet, as_lm, hook_activations
from interpgpt.analysis.sae_features import FeatureStats, masked_feature_stats
from interpgpt.errors import UserError
from interpgpt.sae.activations import memory_stream
from interpgpt.sae.hyperparams import SAEHyperparams
from interpgpt.sae.topk import TopKSAE, sae_hook_name
from interpgpt.sae.training import FitSpec, fit_saes

ROLES = ("a", "b")


@dataclass(frozen=True)
class SAEDiffSettings:
    """How the pair's SAEs are trained (when not given) and their features thresholded."""

    expansion: int = 4
    """Latents per residual dimension of an SAE trained here (d_sae = expansion x d_model)."""
    k: int = 8
    """Active latents per token of an SAE trained here."""
    tokens: int = 30_000
    """Training activations of an SAE trained here (the texts' activations, cycled)."""
    batch_size: int = 64
    """Activations per optimiser step of an SAE trained here."""
    lr: float = 4e-3
    """Adam learning rate of an SAE trained here."""
    min_rate: float = 0.05
    """An exclusive feature fires at >= this share of the set's positions in its model..."""
    max_rate: float = 0.005
    """... and at <= this share in the other model."""
    epsilon: float = 1e-4
    """Smoothing of the rates in the asymmetry ratio that ranks exclusive features."""
    top_n: int = 5
    """Exclusive features per set listed with the tokens they promote."""
    seed: int = 0
    """Seed of an SAE trained here (its init and the activation order)."""


def check_sae(sae: TopKSAE, model: Any, source: str) -> None:
    """Refuse, in one line, an SAE that does not read this model: its recorded hook is not
    one of the model's, or its width is not the model's d_model."""
    lm = as_lm(model)
    hook, d_in = sae.cfg.hook_name, int(sae.W_dec.shape[1])
    if hook not in lm.model.hook_dict:
        raise UserError(f"{source}: the SAE reads {hook!r}, which {lm.label} does not have")
    if d_in != lm.d_model:
        raise UserError(
            f"{source}: the SAE reads {d_in}-wide activations at {hook}, {lm.label} has "
            f"d_model {lm.d_model}"
        )


def train_text_sae(
    model: Any, texts: TextSet, layer: int, settings: SAEDiffSettings, batch_size: int = 16
) -> TopKSAE:
    """A small TopK SAE of `model`'s residual stream after block `layer`, trained on the
    real positions of `texts` by the project's trainer."""
    lm = as_lm(model)
    hook = sae_hook_name(layer)
    acts = hook_activations(lm, texts, hook, batch_size)[texts.valid]
    d_sae = settings.expansion * lm.d_model
    batch = min(settings.batch_size, acts.shape[0])
    hyper = SAEHyperparams(
        k=min(settings.k, d_sae), d_sae=d_sae, tokens=max(settings.tokens, batch),
        batch_size=batch, lr=settings.lr, dead_tokens=max(batch, acts.shape[0]),
        seed=settings.seed, autocast=False, device="cpu",
    )  # fmt: skip
    stream = memory_stream({hook: acts}, batch, settings.seed)
    spec = FitSpec(lm.label, layer, settings.seed + layer)
    saes, _ = fit_saes([spec], stream, hyper, d_sae)
    return saes[0]


@dataclass
class ExclusiveFeature:
    """One feature of a model's SAE that fires in that model only, at one position set."""

    feature: int
    rate: float
    """Share of the set's positions where it fires in its own model."""
    other_rate: float
    """... and in the other model."""
    rates: dict[str, float]
    """Position set -> its firing share there in its own model."""
    promoted: list[int]
    """Token ids its decoder row promotes most through its model's final norm and
    unembedding."""


@dataclass
class SAEFeatureDiff:
    """What the SAE feature diff of one pair found (no files)."""

    hook_name: str
    labels: tuple[str, str]
    exclusive: dict[str, dict[str, list[int]]]
    """Role ("a": a's SAE, features in a only; "b": b's SAE, in b only) -> position set ->
    exclusive features, strongest asymmetry first."""
    top: dict[str, dict[str, list[ExclusiveFeature]]] = field(default_factory=dict)
    """Role -> position set -> the first `top_n` exclusive features, described."""
    share_matched: float | None = None
    """Share of b's SAE latents matched to one of a's at decoder cosine >= the threshold
    (None: not both SAEs)."""


def feature_stats(
    sae: TopKSAE, acts: Float[Tensor, "batch pos d_model"], sets: Mapping[str, Tensor]
) -> dict[str, FeatureStats]:
    return {name: masked_feature_stats(sae, acts, mask) for name, mask in sets.items()}


def sae_feature_diff(
    a: Any,
    b: Any,
    texts: TextSet,
    saes: Mapping[str, TopKSAE],
    settings: SAEDiffSettings,
    batch_size: int = 16,
) -> SAEFeatureDiff:
    """Exclusive features of each given SAE (`saes`: role "a" and/or "b" -> the SAE of that
    model) between `a` and `b` over every position set of `texts`."""
    models = {"a": as_lm(a), "b": as_lm(b)}
    hooks = {s.cfg.hook_name for s in saes.values()}
    if len(hooks) != 1:
        raise UserError(f"the pair's SAEs read different hooks ({', '.join(sorted(hooks))})")
    hook = hooks.pop()
    acts = {role: hook_activations(m, texts, hook, batch_size) for role, m in models.items()}
    sets = texts.positions
    tokenizer = models["a"].tokenizer or models["b"].tokenizer
    n_tokens = tokenizer.vocab_size if tokenizer is not None else None
    result = SAEFeatureDiff(hook, (models["a"].label, models["b"].label), {})
    for role, sae in saes.items():
        other = "b" if role == "a" else "a"
        own_stats, other_stats = (feature_stats(sae, acts[r], sets) for r in (role, other))
        result.exclusive[role] = {
            s: exclusive_features(
                other_stats[s], own_stats[s], settings.min_rate, settings.max_rate,
                settings.epsilon,
            )
            for s in sets
        }  # fmt: skip
        result.top[role] = {
            s: [
                ExclusiveFeature(
                    f,
                    float(own_stats[s].onset_rate[f]),
                    float(other_stats[s].onset_rate[f]),
                    {t: float(own_stats[t].onset_rate[f]) for t in sets},
                    read_lens(models[role], sae.W_dec[f].detach(), 5, n_tokens=n_tokens).promoted,
                )
                for f in features[: settings.top_n]
            ]
            for s, features in result.exclusive[role].items()
        }
    if set(saes) == set(ROLES):
        match = match_dictionaries(
            saes["b"].W_dec.detach(), saes["a"].W_dec.detach(), MATCH_THRESHOLD
        )
        result.share_matched = float(match.share_matched)
    return result


def statistics(diff: SAEFeatureDiff) -> dict[str, tuple[str, float]]:
    """The feature diff's scalar distances: name -> (description, value)."""
    a, b = diff.labels
    out: dict[str, tuple[str, float]] = {}
    for role, per_set in diff.exclusive.items():
        owner, other = (a, b) if role == "a" else (b, a)
        for s, features in per_set.items():
            out[f"sae/{role}_only/{s}"] = (
                f"features of {owner}'s SAE firing at {s} positions in {owner}, not in {other} "
                "(count)",
                float(len(features)),
            )
    if diff.share_matched is not None:
        out["sae/unmatched"] = (
            f"share of b's SAE latents without a partner in a's (decoder cosine < "
            f"{MATCH_THRESHOLD})",
            float(np.round(1.0 - diff.share_matched, 12)),
        )
    return out
