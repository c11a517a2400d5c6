"""Attention profiles of every head: the per-example sufficient statistics of the
head-swap inventory (`analysis.headswap`).

Profile (the seed notebook's `profile()`): teacher-force held-out sequences through a
model; for each head and each query position q in 1..T-1 of an example of length T,
the attention mass on the step-structure specials (`<|task|>`, `<|steps|>`, `<|sep|>`,
`<|end|>`) is added to bin `min(int(q / T * n_bins), n_bins - 1)` of a normalised
position axis; the profile is the per-bin mean over all queries of all examples.

Two ways to get the mass, same numbers (tests check both against the notebook):

- any hooked model (a TaskGPT or a HookedTransformer): hooks on
  `blocks.{layer}.attn.hook_pattern` reduce each layer's pattern at once to per-example
  bin sums, and the last layer's hook raises to end the forward (TransformerLens's idiom
  for stopping early), since nothing downstream of that pattern is needed.
- a TaskGPT (`special_mass`): the pattern is never materialised. The mass on the
  specials is the attention output of a value that is 1 at special keys and 0
  elsewhere, so each head's value gets that indicator as one extra column and the
  fused attention kernel (`F.scaled_dot_product_attention`, flash attention on CPU)
  returns the head's output and its mass in one pass; queries and keys get a zero
  column so every score is unchanged. The last block stops after its attention. The
  rest of each block is the shared unhooked block (`interpgpt.model.fast.block`), its
  linears on oneDNN when the switch allows (`interpgpt.model.fast.onednn`).
"""

from __future__ import annotations

import math
from contextlib import suppress
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.model.fast import block as fast
from interpgpt.model.taskgpt import Block, TaskGPT


@dataclass
class ProfileSums:
    """Per-example sufficient statistics of the attention profiles."""

    sums: Float[Tensor, "batch layer head bin"]
    """Attention mass to specials summed over each example's queries in each bin (float64)."""
    counts: Float[Tensor, "batch bin"]
    """Queries of each example in each bin (float64)."""

    def profiles(self, weights: Tensor | None = None) -> Float[Tensor, "layer head bin"]:
        """Per-bin mean mass over all queries; `weights` (batch,) reweights examples."""
        if weights is None:
            sums, counts = self.sums.sum(0), self.counts.sum(0)
        else:
            sums = torch.einsum("b,blhn->lhn", weights, self.sums)
            counts = weights @ self.counts
        return sums / counts.clamp(min=1)

    def profiles_batch(self, weights: Float[Tensor, "sample batch"]) -> Tensor:
        """Profiles under many example reweightings at once: (sample, layer, head, bin)."""
        sums = (weights @ self.sums.flatten(1)).view(len(weights), *self.sums.shape[1:])
        return sums / (weights @ self.counts).clamp(min=1)[:, None, None, :]


def query_bins(
    lengths: Int[Tensor, " batch"], width: int, n_bins: int
) -> Float[Tensor, "batch pos bin"]:
    """One-hot bin of every query position; all-zero rows for q = 0 and for padding."""
    q = torch.arange(width, dtype=torch.float64, device=lengths.device)[None, :]
    length = lengths.to(torch.float64)[:, None]
    # Same float64 arithmetic as the notebook's `int(q / T * NBINS)`.
    index = torch.floor(q / length * n_bins).long().clamp(max=n_bins - 1)
    valid = (q >= 1) & (q < length)
    onehot = torch.nn.functional.one_hot(index.clamp(min=0), n_bins).to(torch.float32)
    return onehot * valid[..., None]


@torch.no_grad()
def attention_profile_sums(
    model: torch.nn.Module,
    ids: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
    special: Bool[Tensor, "batch pos"],
    *,
    n_bins: int = 20,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
) -> ProfileSums:
    """Profile sums of every head of `model` (a TaskGPT or a HookedTransformer).

    No cache of activations is kept: memory is one batch's activations of one layer.
    Sequences are batched in order of length (less padding: attention cost grows with
    the square of the batch width); right padding needs no mask under causal attention.
    """
    n_layer, n_head = _shape(model)
    device = next(model.parameters()).device
    sums = torch.zeros(len(ids), n_layer, n_head, n_bins, dtype=torch.float64)
    order = torch.argsort(lengths, stable=True)
    for start in range(0, len(ids), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows].max())
        onehot = query_bins(lengths[rows].to(device), width, n_bins)
        batch_ids = ids[rows, :width].to(device)
        spec = special[rows, :width].to(device, torch.float32)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            if isinstance(model, TaskGPT):
                mass = special_mass(model, batch_ids, spec).float()
                out = torch.einsum("blhq,bqn->blhn", mass, onehot)
            else:
                out = _hooked_profile_sums(model, batch_ids, spec, onehot)
        sums[rows] = out.double().cpu()
    counts = query_bins(lengths, ids.shape[1], n_bins).sum(1).double()
    return ProfileSums(sums, counts)


@torch.no_grad()
def special_mass(
    model: TaskGPT, ids: Int[Tensor, "batch pos"], special: Float[Tensor, "batch pos"]
) -> Float[Tensor, "batch layer head pos"]:
    """Each head's attention mass on the keys where `special` is 1, at every query: the
    TaskGPT forward with the indicator as an extra value column (module docstring)."""
    cfg = model.cfg
    batch, width = ids.shape
    n_head, d_head, inner = cfg.n_head, cfg.d_head, cfg.n_head * cfg.d_head
    cos, sin = fast.rope(model, torch.arange(width, device=ids.device))
    resid = model.embed(ids)
    mass = resid.new_empty(batch, cfg.n_layer, n_head, width)
    # Written in place every layer; the zero column of q and k and the indicator column
    # of v are set once. `rotated` views q and k as (batch pos 2 head d_head).
    qk = resid.new_zeros(2, batch, n_head, width, d_head + 1)
    rotated = qk[..., :d_head].permute(1, 3, 0, 2, 4)
    value = resid.new_empty(batch, n_head, width, d_head + 1)
    value[..., d_head] = special[:, None, :]
    for layer, module in enumerate(model.blocks):
        block = cast(Block, module)
        attn, last = block.attn, layer == cfg.n_layer - 1
        x = fast.rms_norm(block.ln1, resid)
        # The last block's values feed nothing the profile reads: project q and k only.
        projected = fast.qkv(attn, x, cos, sin, "qk" if last else "qkv", out=rotated)
        if not last:
            value[..., :d_head] = projected[2].transpose(1, 2)
        out = F.scaled_dot_product_attention(
            qk[0], qk[1], value, is_causal=True, scale=1 / math.sqrt(d_head)
        )  # (batch head pos d_head + 1)
        mass[:, layer] = out[..., d_head]
        if last:
            break  # the last block's output feeds nothing the profile reads
        z = out[..., :d_head].transpose(1, 2).reshape(batch, width, inner)
        resid = fast.mlp_residual(block, fast.out_residual(attn, resid, z))
    return mass


def _hooked_profile_sums(model, ids: Tensor, special: Tensor, onehot: Tensor) -> Tensor:
    """(batch, layer, head, bin) sums from hooks on every layer's `hook_pattern`."""
    n_layer, n_head = _shape(model)
    out = torch.zeros(len(ids), n_layer, n_head, onehot.shape[-1], device=ids.device)
    hooks = [
        (
            f"blocks.{layer}.attn.hook_pattern",
            _reduce_hook(layer, special, onehot, out, layer == n_layer - 1),
        )
        for layer in range(n_layer)
    ]
    with model.hooks(fwd_hooks=hooks), suppress(_PatternsDone):
        model(ids)
    return out


class _PatternsDone(Exception):
    """Raised by the last layer's pattern hook to end a forward pass early."""


def _reduce_hook(layer: int, special: Tensor, onehot: Tensor, out: Tensor, last: bool = False):
    def hook(pattern: Tensor, hook) -> None:
        mass = torch.einsum("bhqk,bk->bhq", pattern.float(), special)  # mass on specials
        out[:, layer] = torch.einsum("bhq,bqn->bhn", mass, onehot)
        if last:
            raise _PatternsDone

    return hook


def _shape(model) -> tuple[int, int]:
    cfg = model.cfg
    return (cfg.n_layer, cfg.n_head) if hasattr(cfg, "n_layer") else (cfg.n_layers, cfg.n_heads)
