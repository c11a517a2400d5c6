"""The sites of activation patching: names, hooks, axes, and where each patch takes effect.

Shared by exact patching (`patching`, `patching_suffix`) and attribution patching
(`patching_attribution`). Axes and index orders are TransformerLens's
(`transformer_lens.patching`); head outputs are patched on `attn.hook_z`, as there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.analysis.patching.config import Site

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]

SITE_HOOK = {
    "resid_pre": "resid_pre",
    "attn_head_out": "z",
    "attn_head_out_by_pos": "z",
    "mlp_out": "mlp_out",
}
"""Per site: the short hook name (`interventions.act_name`) it patches."""
SITE_AXES = {
    "resid_pre": ("layer", "pos"),
    "attn_head_out": ("layer", "head"),
    "attn_head_out_by_pos": ("layer", "pos", "head"),
    "mlp_out": ("layer", "pos"),
}
"""Per site: the axes of its result, in TransformerLens's order."""


class SiteSpec(NamedTuple):
    """One patch: its layer, its index after the layer (TransformerLens's order), and the
    first position it changes (0 for a patch over every position)."""

    layer: int
    where: tuple[int, ...]
    first: int


def all_sites(site: Site, n_layer: int, n_pos: int, n_head: int) -> list[SiteSpec]:
    """Every patch of a site kind, in TransformerLens's index order."""
    per_layer: list[tuple[tuple[int, ...], int]]
    if site == "attn_head_out":
        per_layer = [((head,), 0) for head in range(n_head)]
    elif site == "attn_head_out_by_pos":
        per_layer = [((pos, head), pos) for pos in range(n_pos) for head in range(n_head)]
    else:
        per_layer = [((pos,), pos) for pos in range(n_pos)]
    return [SiteSpec(layer, i, first) for layer in range(n_layer) for i, first in per_layer]


def result_shape(site: Site, n_layer: int, n_pos: int, n_head: int) -> tuple[int, ...]:
    sizes = {"layer": n_layer, "pos": n_pos, "head": n_head}
    return tuple(sizes[axis] for axis in SITE_AXES[site])


def site_mask(site: Site, spec: SiteSpec, batch: int, n_pos: int, n_head: int) -> Tensor:
    """Which entries of the hooked activation's (batch, pos[, head]) dims one patch
    replaces: the mask `interventions.patch_from` takes."""
    if site in ("resid_pre", "mlp_out"):
        mask = torch.zeros(batch, n_pos, dtype=torch.bool)
        mask[:, spec.where[0]] = True
        return mask
    mask = torch.zeros(batch, n_pos, n_head, dtype=torch.bool)
    if site == "attn_head_out":
        mask[:, :, spec.where[0]] = True
    else:
        mask[:, spec.where[0], spec.where[1]] = True
    return mask
