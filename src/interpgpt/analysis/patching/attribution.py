"""Attribution patching (Nanda 2023, "Attribution Patching"; Syed et al. 2023).

The first-order approximation of activation patching: the effect of patching a site is
estimated as (clean - corrupted) . d metric / d activation, with the gradient taken on
the corrupted run: one forward and one backward for every site at once, reported beside
the exact effects (`patching.activation_patch`) with their correlation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from interpgpt.analysis.interventions import Hook, act_name
from interpgpt.analysis.patching.config import SITES, Site
from interpgpt.analysis.patching.sites import SITE_HOOK, Metric


def attribution_patch(
    model,
    clean_ids: Int[Tensor, "batch pos"],
    corrupted_ids: Int[Tensor, "batch pos"],
    metric: Metric,
    sites: Sequence[Site] = SITES,
) -> dict[Site, Tensor]:
    """Attribution patching: the first-order estimate of (patched - corrupted metric) of
    every site index, from one forward and backward on the corrupted input."""
    n_layer = len(model.blocks)
    hooks_needed = sorted({SITE_HOOK[site] for site in sites})
    names = [act_name(h, layer) for h in hooks_needed for layer in range(n_layer)]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean_ids, names_filter=lambda n: n in names)
    stored: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> Tensor:
        stored[hook.name] = act
        return act

    def leaf(embed: Tensor, hook) -> Tensor:  # gradients flow even if the weights are frozen
        return embed.detach().requires_grad_(True)

    hooks = [Hook("hook_embed", leaf), *(Hook(name, keep) for name in names)]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        value = metric(model(corrupted_ids))
        grads = torch.autograd.grad(value, [stored[name] for name in names], allow_unused=True)
    grad_of = dict(zip(names, grads, strict=True))
    out: dict[Site, Tensor] = {}
    for site in sites:
        per_layer = []
        for layer in range(n_layer):
            name = act_name(SITE_HOOK[site], layer)
            grad = grad_of[name]
            delta = (clean_cache[name] - stored[name].detach()).float()
            prod = delta * (torch.zeros_like(delta) if grad is None else grad.float())
            per_layer.append(_reduce_attribution(site, prod))
        out[site] = torch.stack(per_layer).cpu()
    return out


def _reduce_attribution(site: Site, prod: Tensor) -> Tensor:
    """Sum (clean - corrupted) * grad over everything a site's patch covers."""
    if site == "attn_head_out":
        return prod.sum(dim=(0, 1, 3))  # (head)
    if site == "attn_head_out_by_pos":
        return prod.sum(dim=(0, 3))  # (pos head)
    return prod.sum(dim=(0, 2))  # (pos)
