"""An SAE's latents on a model's activations: the pieces the feature diff and steering share.

The activation at the SAE's hook is read with TransformerLens's `run_with_cache`,
stopping after the SAE's block, and encoded by the SAE; the statistics are taken at
the step-onset predictors (`<|steps|>`/`<|sep|>`), where a model decides what comes
next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.corpus.evalset import EncodedSet


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


@torch.no_grad()
def masked_feature_stats(
    sae, acts: Float[Tensor, "batch pos d_model"], mask: Tensor, chunk: int = 4096
) -> FeatureStats:
    """Firing counts and activation sums of every feature over the positions of `mask`
    (batch, pos) of activations already taken (any model, any position set)."""
    d_sae = sae.W_dec.shape[0]
    fire = torch.zeros(d_sae, dtype=torch.float64)
    total = torch.zeros(d_sae, dtype=torch.float64)
    for part in acts[mask].split(chunk):
        feats = encode_features(sae, part).double().cpu()
        fire += (feats > 0).sum(0)
        total += feats.clamp(min=0).sum(0)
    return FeatureStats(int(mask.sum()), fire, total)


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
