"""The one unhooked TaskGPT forward block, that every fast path is built from.

What: the computation of `model.taskgpt.Block` (pre-norm RMSNorm, fused QKV projection,
rotary in the half-half layout, causal attention, output projection, SwiGLU MLP, the
two residual additions) as plain functions of the model's own weights: no module calls,
no hook points, linears on oneDNN when its switch allows (`onednn`). `block_forward`
runs a whole block, `forward` the whole model; the pieces are public so that the fast
paths that need something in between (the patching suffix engine in
`analysis.patching.suffix`, the special-mass forward in `analysis.headswap.profiles`,
the folded one-token decoder in `decode`) compose them instead of keeping copies.

Why: the analyses read few activations but push many tokens through the model; the
hooked model runs every hook point, norm and rotary as separate modules and operations.
Written once here, the fast paths cannot drift apart from each other or from the
hooked model: tests/model/fast/test_block.py checks each piece, a block and the whole
forward against `TaskGPT` with the oneDNN switch on and off.

Techniques: RMSNorm (Zhang & Sennrich 2019) as one `F.rms_norm` call; rotary
position embeddings (Su et al. 2021, RoFormer) in the half-half layout of GPT-NeoX /
Llama, with the rotate-half product written as two fused multiply-adds instead of a
negated copy and a concatenation; attention through `F.scaled_dot_product_attention`
(the fused flash-attention kernel on CPU, Dao et al. 2022), on (batch, pos, head,
d_head) tensors passed as strided views so nothing is transposed in memory; SwiGLU
(Shazeer 2020) with its residual fused into oneDNN post-ops.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from interpgpt.model.fast import onednn
from interpgpt.model.taskgpt import Attention, Block, RMSNorm, TaskGPT


def has_hooks(model: nn.Module) -> bool:
    """Whether a forward or forward-pre hook is attached to `model` or any of its modules,
    or globally (`torch.nn.modules.module.register_module_forward_hook`). The unhooked
    paths would skip such a hook, so a caller with hooks attached must run the model.

    PyTorch has no public accessor for the hooks registered on a module (only the
    `register_*` functions and the handles' `remove`), so this reads the fields
    `Module.__call__` itself reads to decide whether to run hooks: `_forward_hooks`,
    `_forward_pre_hooks` and the global dicts. The hook points' TransformerLens hooks
    are forward hooks, so they count; this function is the only place the unhooked
    paths touch those private fields.
    """
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def rms_norm(norm: RMSNorm, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """A TaskGPT `RMSNorm`: x / rms(x) * gain."""
    return F.rms_norm(x, x.shape[-1:], norm.weight, norm.eps)


def rope(model: TaskGPT, positions: Int[Tensor, "*shape"]) -> tuple[Tensor, Tensor]:
    """The model's rotary cos and sin at `positions`, shaped (*shape, 1, 1, d_head) to
    broadcast over the (..., pos, q/k, head, d_head) projections of `qkv`."""
    cos, sin = model.get_buffer("rope_cos")[positions], model.get_buffer("rope_sin")[positions]
    return cos[..., None, None, :], sin[..., None, None, :]


def rotary(
    x: Tensor,
    cos: Tensor,
    sin: Tensor,
    *,
    out: Tensor | None = None,
    rotated: Tensor | None = None,
) -> Tensor:
    """`taskgpt.apply_rotary`: x * cos + rotate_half(x) * sin (half-half layout).

    out: written in place when given (no temporaries). rotated: rotate_half(x), when
    the caller already has it (the decoder's folded projection yields it from the same
    GEMM as x); otherwise its two halves are two fused multiply-adds."""
    out = x * cos if out is None else torch.mul(x, cos, out=out)
    if rotated is not None:
        return out.addcmul_(rotated, sin)
    half = x.shape[-1] // 2
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


def qkv(
    attn: Attention,
    h: Float[Tensor, "... d_model"],
    cos: Tensor,
    sin: Tensor,
    which: str = "qkv",
    *,
    out: Tensor | None = None,
) -> list[Tensor]:
    """The projections named in `which` (a contiguous slice of "qkv") of the normed input
    `h`, each (... head d_head), q and k rotated by cos and sin (`rope`). One GEMM on
    the matching rows of the fused `qkv_proj` weight. out: (... n_rotated head d_head),
    where the rotated q and/or k are written (the returned q, k are its views)."""
    cfg = attn.cfg
    inner, lo = cfg.n_head * cfg.d_head, "qkv".index(which[0])
    weight = attn.qkv_proj.weight[lo * inner : (lo + len(which)) * inner]
    proj = onednn.linear(h, weight).view(*h.shape[:-1], len(which), cfg.n_head, cfg.d_head)
    n_rot = len(which.replace("v", ""))  # q and k come first
    parts = list(rotary(proj[..., :n_rot, :, :], cos, sin, out=out).unbind(-3)) if n_rot else []
    return parts + ([proj[..., n_rot, :, :]] if "v" in which else [])


def attend(
    q: Float[Tensor, "batch pos head d_head"],
    k: Float[Tensor, "batch key head d_head"],
    v: Float[Tensor, "batch key head d_head"],
    mask: Bool[Tensor, "pos key"] | None = None,
) -> Float[Tensor, "batch pos head d_head"]:
    """softmax(q k^T / sqrt(d_head)) v, causal without `mask` (True: may attend). Takes
    and returns (batch pos head d_head): the fused kernel reads and writes that layout
    as strided (batch head pos d_head) views, so nothing is copied."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    causal = mask is None and q.shape[2] > 1
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal).transpose(1, 2)


def out_residual(
    attn: Attention, resid: Float[Tensor, "... d_model"], z: Float[Tensor, "... inner"]
) -> Float[Tensor, "... d_model"]:
    """resid + o_proj(z), z the heads' outputs (`attn.hook_z`) flattened to head * d_head."""
    return onednn.linear(z, attn.o_proj.weight, residual=resid)


def swiglu(gate_up: Float[Tensor, "... two_d_mlp"]) -> Float[Tensor, "... d_mlp"]:
    """silu(gate) * up from the stacked gate/up projection's output (gate first)."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate).mul_(up)


def mlp_residual(block: Block, mid: Float[Tensor, "... d_model"]) -> Tensor:
    """The second half of a block: mid + mlp(ln2(mid)), fused on oneDNN when usable."""
    h = rms_norm(block.ln2, mid)
    gate_up, down = block.mlp.gate_up_proj.weight, block.mlp.down_proj.weight
    if onednn.usable(h, gate_up):
        return onednn.swiglu_residual(h, gate_up, down, mid)
    return mid + F.linear(swiglu(F.linear(h, gate_up)), down)


class Attended(NamedTuple):
    """The first half of a block on a whole sequence, with what the fast paths keep."""

    mid: Tensor
    """(batch pos d_model): resid + attention, the block's `hook_resid_mid`."""
    q: Tensor
    """(batch pos head d_head), rotated (`attn.hook_rot_q`)."""
    k: Tensor
    """(batch pos head d_head), rotated (`attn.hook_rot_k`)."""
    v: Tensor
    """(batch pos head d_head) (`attn.hook_v`)."""
    z: Tensor
    """(batch pos head d_head) (`attn.hook_z`)."""


def attention_residual(
    block: Block, resid: Float[Tensor, "batch pos d_model"], cos: Tensor, sin: Tensor
) -> Attended:
    """The first half of a block with causal attention: resid + attn(ln1(resid))."""
    q, k, v = qkv(block.attn, rms_norm(block.ln1, resid), cos, sin)
    z = attend(q, k, v)
    return Attended(out_residual(block.attn, resid, z.flatten(-2)), q, k, v, z)


def block_forward(
    block: Block, resid: Float[Tensor, "batch pos d_model"], cos: Tensor, sin: Tensor
) -> Float[Tensor, "batch pos d_model"]:
    """A `taskgpt.Block` on whole sequences without padding (causal attention), unhooked:
    `hook_resid_pre` in, `hook_resid_post` out. cos, sin: `rope(model, positions)`."""
    return mlp_residual(block, attention_residual(block, resid, cos, sin).mid)


def unembed(model: TaskGPT, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """`TaskGPT.unembed`: final norm, then the tied unembedding."""
    return onednn.linear(rms_norm(model.ln_final, resid), model.embed.weight)


@torch.no_grad()
def forward(model: TaskGPT, ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
    """`TaskGPT.forward(ids)` (no padding, no cache), unhooked: logits."""
    if ids.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"{ids.shape[1]} tokens exceed the model context of {model.cfg.n_ctx}")
    cos, sin = rope(model, torch.arange(ids.shape[1], device=ids.device))
    resid = F.embedding(ids, model.embed.weight)
    for block in model.blocks:
        resid = block_forward(cast(Block, block), resid, cos, sin)
    return unembed(model, resid)
