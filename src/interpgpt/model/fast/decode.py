"""The unhooked one-token decoding step `generate` runs when no hook is attached.

What: `Decoder.step` is `TaskGPT.forward` for one new token per row after a KV cache,
with the model's constants folded into its weights once per `generate` call, no module
calls and no hook points. It is the unhooked block of `fast.block` specialised to one
query position: the rotary formula, the SwiGLU and the hook check are `fast.block`'s;
the norm and the projections read the folded weights.

Why: decoding one token per row is a few hundred tiny operations; at the analyses'
batch sizes the time of a step is mostly PyTorch's per-operation overhead, not
arithmetic. So the step removes operations rather than FLOPs, by folding constants into
weights, as inference engines fold normalisation gains and scales into the adjacent
linear layers (e.g. the RMSNorm gains in Ashkboos et al. 2024, "SliceGPT"):

- each block's RMSNorm gains into the weights of the linear that reads the norm's
  output, and the norm's 1/sqrt(d_model) too, so a norm is a vector norm, square, add
  eps, rsqrt, scale (the final norm's gain scales its output: folding it into the tied
  unembedding would copy the whole vocabulary matrix for every `generate` call);
- the attention scale 1/sqrt(d_head) into the query weights;
- `rotate_half` into extra output rows of the fused QKV projection: rotate_half(W x) is
  (R W) x for a signed permutation R, so one GEMM yields q, k, v, R q and R k, per head,
  and rotary (`block.rotary` given the rotated half) is one multiply and one fused
  multiply-add;
- residual additions into the output GEMMs (`addmm`).

The unembedding goes through `onednn.linear` from one row (it is wide enough for
oneDNN's kernels to pay off even at a handful of rows), so it follows the oneDNN switch;
it builds one kernel per batch size it meets (at most `GenerationConfig.batch_size`).

Attention for the single new query is two batched GEMMs and a softmax over the cached
keys (incremental decoding with a KV cache). Numerically this is the model's own
computation up to the order of fp32 sums (tests compare it with `TaskGPT.forward` and
TransformerLens); with a hook attached, `generate` calls the model instead, so
interventions see every step.

The one intervention the step takes itself is a `HeadMask`: every row scales each head's
output `hook_z` by its own factor before `o_proj` (0 ablates the head, 1 keeps it), so
one batch decodes many ablation conditions at once without hooks. Its `hooks` are the
same edit on the hooked model's `attn.hook_z`, which the tests hold the step equal to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.model.fast import block as fast
from interpgpt.model.fast import onednn
from interpgpt.model.taskgpt import KVCache, TaskGPT


class HeadMask(NamedTuple):
    """Per-row head ablation: row r's `hook_z` of head h in layer l becomes
    keep[r, l, h] * z + (1 - keep[r, l, h]) * fill[l, h] (zero ablation without `fill`)."""

    keep: Float[Tensor, "batch layer head"]
    """1 keeps a head's output, 0 ablates it (in between: scaled)."""
    fill: Float[Tensor, "layer head d_head"] | None = None
    """What an ablated head writes instead (e.g. its mean, for mean ablation); None: 0."""

    def select(self, rows: Tensor) -> HeadMask:
        """The rows in `rows` (as `KVCache.select`)."""
        return HeadMask(self.keep[rows], self.fill)

    def apply(self, z: Float[Tensor, "batch *pos head d_head"], layer: int) -> Tensor:
        """z with the mask of `layer` applied: exactly z where keep is 1, fill where 0."""
        keep = self.keep[:, layer].to(z.dtype)
        keep = keep.view(keep.shape[0], *[1] * (z.dim() - 3), keep.shape[1], 1)
        if self.fill is None:
            return z * keep
        return z * keep + (1 - keep) * self.fill[layer].to(z.dtype)

    def hooks(self) -> list[tuple[str | Callable[..., Any], Callable[..., Any]]]:
        """The same edit as forward hooks on the hooked model's `attn.hook_z` (batch pos
        head d_head): TransformerLens's `fwd_hooks` of `model.hooks(fwd_hooks=...)`."""

        def hook(layer: int) -> Callable[..., Tensor]:
            return lambda z, hook=None: self.apply(z, layer)

        return [(f"blocks.{layer}.attn.hook_z", hook(layer)) for layer in range(self.keep.shape[1])]


def usable(model: TaskGPT) -> bool:
    """Whether generation may decode with a `Decoder`: fp32 weights, no autocast on the
    model's device, and no hooks attached (with hooks, every step must call the model)."""
    device = model.embed.weight.device.type
    return (
        model.embed.weight.dtype == torch.float32
        and not torch.is_autocast_enabled(device)
        and not fast.has_hooks(model)
    )


@dataclass
class _Layer:
    qkv: Tensor
    """(d_model, 5 * n_head * d_head) as a transposed view: per head q, k, v, R q, R k,
    with the ln1 gain, 1/sqrt(d_model) and (for q) 1/sqrt(d_head) folded in."""
    out: Tensor
    """(n_head * d_head, d_model), transposed view of o_proj."""
    gate_up: Tensor
    """(d_model, 2 * d_mlp), ln2 gain and 1/sqrt(d_model) folded in."""
    down: Tensor
    """(d_mlp, d_model)."""


class Decoder:
    """Folded weights of one TaskGPT and `step`, its unhooked incremental forward.

    Build it right before decoding: the weights with constants folded in are copies made
    now (the others are the model's own tensors). For fp32 weights without autocast
    (`usable`): it has no mixed-precision casts of its own.
    """

    def __init__(self, model: TaskGPT):
        self.cfg = cfg = model.cfg
        # rsqrt(mean x^2 + eps) = sqrt(d) rsqrt(sum x^2 + d eps); sqrt(d) goes in the weights
        self.eps = cfg.d_model * cfg.norm_eps
        self.rope_cos, self.rope_sin = model.get_buffer("rope_cos"), model.get_buffer("rope_sin")
        self.embed = model.embed.weight  # tied: also the unembedding
        with torch.no_grad():
            self.layers = [self._fold(block) for block in model.blocks]
            self.final_gain = model.ln_final.weight * math.sqrt(cfg.d_model)

    def _norm_folded(self, norm, weight: Tensor) -> Tensor:
        """`weight` (d_out, d_model) reading a normed input: gain and sqrt(d_model) folded."""
        return (weight * (norm.weight * math.sqrt(self.cfg.d_model))).contiguous()

    def _fold(self, block) -> _Layer:
        cfg = self.cfg
        q, k, v = block.attn.qkv_proj.weight.view(3, cfg.n_head, cfg.d_head, cfg.d_model)
        q = q / math.sqrt(cfg.d_head)
        half = cfg.d_head // 2

        def rotated(w: Tensor) -> Tensor:  # rows of rotate_half(w x): (-w2 x, w1 x)
            return torch.cat([-w[:, half:], w[:, :half]], dim=1)

        per_head = torch.stack([q, k, v, rotated(q), rotated(k)], dim=1)  # head, 5, d_head, d
        qkv = per_head.reshape(-1, cfg.d_model)
        mlp = block.mlp
        return _Layer(
            qkv=self._norm_folded(block.ln1, qkv).t(),
            out=block.attn.o_proj.weight.t(),
            gate_up=self._norm_folded(block.ln2, mlp.gate_up_proj.weight).t(),
            down=mlp.down_proj.weight.t(),
        )

    def _normed(self, x: Float[Tensor, "batch d_model"]) -> Tensor:
        """x / sqrt(sum x^2 + d eps): the RMSNorm with its constants folded elsewhere."""
        scale = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x * scale.square_().add_(self.eps).rsqrt_()

    @torch.no_grad()
    def step(
        self, token: Int[Tensor, " batch"], cache: KVCache, heads: HeadMask | None = None
    ) -> Float[Tensor, "batch d_vocab"]:
        """Logits for one new token per row after the cached positions; appends its keys
        and values to `cache`. heads: each row's head mask (its rows are the batch's)."""
        start, d_head = cache.length, self.cfg.d_head
        cache.key_mask[:, start] = True
        key_mask = cache.key_mask[:, : start + 1]
        positions = key_mask[:, :start].sum(-1)  # real tokens before this one
        rope = (  # cos, sin broadcasting over (batch, head, q/k, d_head)
            self.rope_cos.index_select(0, positions).view(-1, 1, 1, d_head),
            self.rope_sin.index_select(0, positions).view(-1, 1, 1, d_head),
        )
        bias = self._padding_bias(key_mask)
        x = F.embedding(token, self.embed)
        for layer, weights in enumerate(self.layers):
            kv = cache.keys[layer], cache.values[layer]
            z = self._attention(x, weights, kv, start, rope, bias)
            if heads is not None:
                z = heads.apply(z.view(z.shape[0], self.cfg.n_head, d_head), layer).flatten(1)
            x = torch.addmm(x, z, weights.out)
            hidden = fast.swiglu(torch.mm(self._normed(x), weights.gate_up))
            x = torch.addmm(x, hidden, weights.down)
        cache.length = start + 1
        normed = self._normed(x).mul_(self.final_gain)
        return onednn.linear(normed, self.embed, min_rows=1, row_bucket=1)

    def _attention(
        self,
        x: Float[Tensor, "batch d_model"],
        weights: _Layer,
        kv: tuple[Tensor, Tensor],
        start: int,
        rope: tuple[Tensor, Tensor],
        bias: Tensor | None,
    ) -> Float[Tensor, "batch inner"]:
        """The heads' outputs z of attention(ln1(x)) (`hook_z`, flattened to head * d_head)
        for the new position `start`, its keys and values written into the cache `kv`."""
        batch, n_head, d_head = x.shape[0], self.cfg.n_head, self.cfg.d_head
        qkv = torch.mm(self._normed(x), weights.qkv).view(batch, n_head, 5, d_head)
        rotated = fast.rotary(qkv[:, :, :2], *rope, rotated=qkv[:, :, 3:])  # q, k
        keys, values = kv
        keys[:, :, start].copy_(rotated[:, :, 1])
        values[:, :, start].copy_(qkv[:, :, 2])
        q = rotated[:, :, :1].view(batch * n_head, 1, d_head)
        k = keys.view(batch * n_head, -1, d_head)[:, : start + 1].transpose(1, 2)
        scores = torch.bmm(q, k) if bias is None else torch.baddbmm(bias, q, k)
        v = values.view(batch * n_head, -1, d_head)[:, : start + 1]
        return torch.bmm(scores.softmax(-1), v).view(batch, n_head * d_head)

    def _padding_bias(self, key_mask: Tensor) -> Tensor | None:
        """(batch * n_head, 1, keys) additive mask, -inf at left padding; None without."""
        if bool(key_mask.all()):
            return None
        bias = torch.zeros(key_mask.shape, dtype=torch.float32, device=key_mask.device)
        bias.masked_fill_(~key_mask, float("-inf"))
        n_head = self.cfg.n_head
        return bias[:, None, None].expand(-1, n_head, 1, -1).reshape(-1, 1, key_mask.shape[1])
