"""Causal and direct attributions of the IOI logit difference to heads and positions.

- Activation patching (Wang et al. 2022; Heimersheim & Nanda 2024) of the residual
  stream by (layer, position) and of head outputs (`attn.hook_z`, all positions) by
  (layer, head), with the mean logit difference as the metric, normalised so the
  corrupted run is 0 and the clean run 1. On a TaskGPT this is the toolkit's
  `analysis.patching.activation_patch` (exact, batched); on a HookedTransformer
  (GPT-2) it is `transformer_lens.patching`, whose results that function reproduces.
- Attribution patching (Nanda 2023) of the same head sites, as a first-order check.
- Direct logit attribution per head (Elhage et al. 2021): head h's output at END,
  z_h @ W_O[h], divided by the final norm's scale at END (`ln_final.hook_scale`,
  frozen as in TransformerLens's `apply_ln_to_stack`) and projected on
  g ⊙ (W_U[:, IO] − W_U[:, S]). With TaskGPT's bias-free RMSNorm model the head,
  MLP and embedding terms sum to the logit difference exactly.
  Splitting W_U[:, IO] − W_U[:, S] at the mean name unembedding separates a head
  that raises IO (a name mover) from one that lowers S (a subject suppressor).
- Mean ablation of each head (`interventions.ablate_heads`): the drop in logit
  difference when the head's output no longer depends on the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import patching as tl_patching

from interpgpt.analysis.interventions import Head, ablate_heads, act_name, head_means
from interpgpt.analysis.patching.run import activation_patch, attribution_patch
from interpgpt.ioi.prompts import IOIBatch, logit_diff
from interpgpt.model.taskgpt import TaskGPT


class MeanLogitDiff:
    """The patching metric: mean logit(IO) − logit(S) at each prompt's END."""

    def __init__(self, batch: IOIBatch):
        self.batch = batch

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        return logit_diff(logits, self.batch).mean()


def patch(
    subject, clean: IOIBatch, corrupted: IOIBatch, site: Literal["resid_pre", "attn_head_out"]
) -> Tensor:
    """Patched mean logit difference per site index (TransformerLens layout)."""
    model, metric = subject.model, MeanLogitDiff(clean)
    if isinstance(model, TaskGPT):
        return activation_patch(model, clean.tokens, corrupted.tokens, metric, site)
    _, cache = model.run_with_cache(clean.tokens)
    fn = {
        "resid_pre": tl_patching.get_act_patch_resid_pre,
        "attn_head_out": tl_patching.get_act_patch_attn_head_out_all_pos,
    }[site]
    return fn(model, corrupted.tokens, cache, metric).cpu()


def attribute_heads(subject, clean: IOIBatch, corrupted: IOIBatch) -> Tensor | None:
    """Attribution-patching estimate of patched − corrupted per head (TaskGPT only)."""
    if not isinstance(subject.model, TaskGPT):
        return None
    metric = MeanLogitDiff(clean)
    out = attribution_patch(
        subject.model, clean.tokens, corrupted.tokens, metric, ["attn_head_out"]
    )
    return out["attn_head_out"]


@dataclass
class DirectAttribution:
    heads: Float[np.ndarray, "layer head"]
    """Mean direct contribution of each head to logit(IO) − logit(S) at END."""
    mlps: Float[np.ndarray, " layer"]
    embed: float
    heads_io: Float[np.ndarray, "layer head"]
    """The part of `heads` that raises IO relative to the mean name: direction W_U[:, IO] −
    mean over names of W_U; `heads − heads_io` is the part that lowers S."""
    mlps_io: Float[np.ndarray, " layer"]
    total: float
    """Sum of all terms (equals `logit_diff` for TaskGPT)."""
    logit_diff: float
    """Mean logit difference of the same forward pass."""


@torch.no_grad()
def direct_logit_attribution(subject, batch: IOIBatch) -> DirectAttribution:
    """Per-head DLA of the logit difference at END (see module docstring)."""
    model, n_layer = subject.model, subject.n_layer
    rows = torch.arange(len(batch), device=subject.device)
    end = batch.end_pos.to(subject.device)
    names = {act_name("z", layer) for layer in range(n_layer)}
    names |= {act_name("mlp_out", layer) for layer in range(n_layer)}
    names |= {"hook_embed", "hook_pos_embed", "ln_final.hook_scale"}
    logits, cache = model.run_with_cache(batch.tokens, names_filter=lambda n: n in names)
    ln = model.ln_final  # TaskGPT RMSNorm `weight`, TL RMSNorm `w`, GPT-2's folded LayerNormPre
    gain = getattr(ln, "weight", getattr(ln, "w", None))
    gain = 1.0 if gain is None else gain.detach().float()
    w_u = model.W_U.detach().float()
    name_ids = torch.tensor([subject.encode(" " + n)[0] for n in subject.names])
    mean_name = w_u[:, name_ids.to(w_u.device)].mean(1, keepdim=True)
    io_dir = (w_u[:, batch.io_token.to(w_u.device)] - mean_name).T * gain  # (batch d_model)
    s_dir = (mean_name - w_u[:, batch.s_token.to(w_u.device)]).T * gain
    scale = cache["ln_final.hook_scale"][rows, end].float()  # (batch 1)
    centre = "LayerNorm" in type(ln).__name__  # LayerNorm centres before the scale; RMS does not

    def project(x: Tensor, direction: Tensor) -> Tensor:  # (batch, ..., d_model) -> (batch, ...)
        x = x.float()
        x = x - x.mean(-1, keepdim=True) if centre else x
        shape = (len(batch),) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return (x * direction.view(shape)).sum(-1) / scale.view(shape[:-1])

    def both(x: Tensor) -> tuple[Tensor, Tensor]:
        io = project(x, io_dir).mean(0)
        return io + project(x, s_dir).mean(0), io

    heads, mlps = [], []
    for layer in range(n_layer):
        z = cache[act_name("z", layer)][rows, end].float()  # (batch head d_head)
        w_o = model.blocks[layer].attn.W_O.detach().float()
        heads.append(both(torch.einsum("bhd,hdm->bhm", z, w_o)))
        mlps.append(both(cache[act_name("mlp_out", layer)][rows, end]))
    embed = both(cache["hook_embed"][rows, end])[0]
    if "hook_pos_embed" in cache:
        embed = embed + both(cache["hook_pos_embed"][rows, end])[0]
    head_arr = torch.stack([h[0] for h in heads]).cpu().numpy()
    mlp_arr = torch.stack([m[0] for m in mlps]).cpu().numpy()
    return DirectAttribution(
        heads=head_arr,
        mlps=mlp_arr,
        embed=float(embed),
        heads_io=torch.stack([h[1] for h in heads]).cpu().numpy(),
        mlps_io=torch.stack([m[1] for m in mlps]).cpu().numpy(),
        total=float(head_arr.sum() + mlp_arr.sum() + float(embed)),
        logit_diff=float(logit_diff(logits, batch).mean()),
    )


@torch.no_grad()
def mean_ablation(subject, batch: IOIBatch) -> Float[np.ndarray, "layer head"]:
    """Mean logit difference with each head mean-ablated (means over the batch's real tokens)."""
    pos = torch.arange(batch.tokens.shape[1])
    valid = pos[None, :] <= batch.end_pos.cpu()[:, None]
    means = head_means(subject.model, batch.tokens, valid.to(subject.device))
    out = np.zeros((subject.n_layer, subject.n_head))
    for layer in range(subject.n_layer):
        for head in range(subject.n_head):
            hooks = ablate_heads([Head(layer, head)], "mean", means)
            with subject.model.hooks(fwd_hooks=hooks):
                out[layer, head] = float(MeanLogitDiff(batch)(subject.model(batch.tokens)))
    return out
