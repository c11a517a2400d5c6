"""TaskGPT: the decoder-only transformer both models of a matched pair share.

One readable file, top to bottom: config and presets, RMSNorm and rotary helpers,
attention, SwiGLU MLP, block, model. The architecture is the one the seed model
cards state (Llama-style): pre-norm RMSNorm, rotary position embeddings in the
half-half layout (`rotate_half`, as GPT-NeoX / Llama / TransformerLens with
`rotary_adjacent_pairs=False`), SwiGLU MLP, no biases, final RMSNorm and an
unembedding tied to the input embedding.

Every activation worth analysing passes through a TransformerLens `HookPoint`
whose name is its module path (`blocks.3.attn.hook_pattern`,
`blocks.2.hook_resid_post`), and the model is a `HookedRootModule`, so
`run_with_cache`, `run_with_hooks` and `hooks()` work exactly as they do on a
`HookedTransformer`. Two hooks cost extra compute and are only materialised
when something is attached to them: the attention scores/pattern (otherwise the
fused `scaled_dot_product_attention` kernel runs) and the per-head output
`hook_result`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interpgpt.model.config import GPTConfig


class RMSNorm(nn.Module):
    """x / rms(x) * w, computed in fp32 like Llama and TransformerLens's RMSNorm."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.hook_scale = HookPoint()  # (batch, pos, 1)
        self.hook_normalized = HookPoint()  # (batch, pos, d_model)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        dtype = x.dtype
        x = x.float()
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized((x / scale).to(dtype)) * self.weight.to(dtype)


def rotary_tables(n_ctx: int, d_head: int, base: float) -> tuple[Tensor, Tensor]:
    """cos/sin of shape (n_ctx, d_head) for the half-half layout (frequencies repeated twice)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.float32) / d_head))
    angles = torch.outer(torch.arange(n_ctx, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(
    x: Float[Tensor, "batch pos head d_head"],
    cos: Float[Tensor, "batch pos d_head"],
    sin: Float[Tensor, "batch pos d_head"],
) -> Float[Tensor, "batch pos head d_head"]:
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)
    return x * cos + rotate_half(x) * sin


@dataclass
class KVCache:
    """Per-layer rotated keys and values for incremental decoding.

    Buffers are preallocated to `max_len`; `length` is how many positions are filled.
    `key_mask` marks valid key positions (False for left padding of a batched prompt).
    """

    keys: list[Tensor]  # each (batch, head, max_len, d_head)
    values: list[Tensor]
    key_mask: Bool[Tensor, "batch max_len"]
    length: int = 0

    @classmethod
    def empty(cls, cfg: GPTConfig, batch: int, max_len: int, device, dtype) -> KVCache:
        shape = (batch, cfg.n_head, max_len, cfg.d_head)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)],
            key_mask=torch.zeros(batch, max_len, dtype=torch.bool, device=device),
        )

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows in `rows`, ascending (drop finished sequences).

        Compacts in place: the kept rows' filled positions move to the front of the
        same buffers, which stay contiguous; nothing is allocated for the whole length.
        """
        n, filled = rows.numel(), self.length
        for buffers in (self.keys, self.values):
            for layer, buf in enumerate(buffers):
                buf[:n, :, :filled] = buf[rows, :, :filled]
                buffers[layer] = buf[:n]
        self.key_mask[:n] = self.key_mask[rows]
        self.key_mask = self.key_mask[:n]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        inner = cfg.n_head * cfg.d_head
        self.qkv_proj = nn.Linear(cfg.d_model, 3 * inner, bias=False)  # q, k, v stacked
        self.o_proj = nn.Linear(inner, cfg.d_model, bias=False)
        self.hook_q = HookPoint()  # (batch, pos, head, d_head), before rotary
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()
        self.hook_attn_scores = HookPoint()  # (batch, head, query_pos, key_pos)
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()  # (batch, pos, head, d_head)
        self.hook_result = HookPoint()  # (batch, pos, head, d_model), only when hooked

    @property
    def W_O(self) -> Float[Tensor, "head d_head d_model"]:
        cfg = self.cfg
        return self.o_proj.weight.T.reshape(cfg.n_head, cfg.d_head, cfg.d_model)

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        cos: Tensor,
        sin: Tensor,
        mask: Bool[Tensor, "batch 1 pos key_pos"] | None,
        cache: tuple[Tensor, Tensor, int] | None,
    ) -> Float[Tensor, "batch pos d_model"]:
        cfg = self.cfg
        batch, pos, _ = x.shape
        q, k, v = self.qkv_proj(x).view(batch, pos, 3, cfg.n_head, cfg.d_head).unbind(2)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q = self.hook_rot_q(apply_rotary(q, cos, sin))
        k = self.hook_rot_k(apply_rotary(k, cos, sin))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, head, pos, d_head)
        if cache is not None:
            k_buf, v_buf, start = cache
            k_buf[:, :, start : start + pos] = k
            v_buf[:, :, start : start + pos] = v
            k, v = k_buf[:, :, : start + pos], v_buf[:, :, : start + pos]
        z = self._attend(q, k, v, mask)  # (batch, head, pos, d_head)
        z = self.hook_z(z.transpose(1, 2))  # (batch, pos, head, d_head)
        if self.hook_result.fwd_hooks or self.hook_result.bwd_hooks:
            w_o = self.W_O.to(z.dtype)
            result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, w_o))
            return result.sum(dim=2)
        return self.o_proj(z.reshape(batch, pos, cfg.n_head * cfg.d_head))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        hooked = any(h.fwd_hooks or h.bwd_hooks for h in (self.hook_attn_scores, self.hook_pattern))
        on_cpu = q.device.type == "cpu"
        # Measured on CPU (torch 2.13, d_head 16): PyTorch's flash-attention kernel is the
        # fastest forward in fp32 (bf16 is slower), but its backward is several times slower
        # than autograd through the explicit softmax path, so CPU training attends
        # explicitly. GPUs use the fused kernel in the autocast dtype.
        if hooked or (on_cpu and torch.is_grad_enabled() and q.requires_grad):
            return self._attend_explicit(q, k, v, mask)
        dtype = q.dtype
        if on_cpu and dtype != torch.float32:
            q, k, v = q.float(), k.float(), v.float()
        z = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and q.shape[2] > 1
        )
        return z.to(dtype)

    def _attend_explicit(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """softmax(q k^T / sqrt(d_head)) v with fp32 scores, through the pattern hooks."""
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.cfg.d_head)
        causal_only = mask is None
        if mask is None:
            qp, kp = q.shape[2], k.shape[2]
            mask = torch.ones(qp, kp, dtype=torch.bool, device=q.device).tril(kp - qp)
        scores = self.hook_attn_scores(scores.masked_fill(~mask, float("-inf")))
        pattern = scores.softmax(dim=-1)
        if not causal_only:  # a fully masked (padding) row softmaxes to NaN: make it zero
            pattern = pattern.nan_to_num(0.0)
        pattern = self.hook_pattern(pattern)
        return pattern.to(v.dtype) @ v


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), the Llama MLP."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.d_model, 2 * cfg.d_mlp, bias=False)  # gate, up stacked
        self.down_proj = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)
        self.hook_pre = HookPoint()  # gate pre-activation, (batch, pos, d_mlp)
        self.hook_pre_linear = HookPoint()  # up projection
        self.hook_post = HookPoint()  # silu(gate) * up

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        post = self.hook_post(F.silu(self.hook_pre(gate)) * self.hook_pre_linear(up))
        return self.down_proj(post)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)
        self.hook_resid_pre = HookPoint()  # (batch, pos, d_model)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: Tensor, cos: Tensor, sin: Tensor, mask, cache) -> Tensor:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(
            resid + self.hook_attn_out(self.attn(self.ln1(resid), cos, sin, mask, cache))
        )
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))


class TaskGPT(HookedRootModule):
    """The matched-pair model. `forward(ids)` returns logits (batch, pos, d_vocab)."""

    rope_cos: Tensor  # (n_ctx, d_head) buffers, recomputed rather than saved
    rope_sin: Tensor

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_final = RMSNorm(cfg.d_model, cfg.norm_eps)
        cos, sin = rotary_tables(cfg.n_ctx, cfg.d_head, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()
        self.setup()  # names every HookPoint after its module path

    def reset_parameters(self) -> None:
        """All weight init in one place: GPT-2 style normal(0, std), residual writers scaled
        by 1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth."""
        std = self.cfg.init_std
        for name, param in self.named_parameters():
            if param.dim() == 1:
                nn.init.ones_(param)  # RMSNorm gains
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(param, 0.0, std)

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.embed.weight.T  # tied: the unembedding is the input embedding

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Final norm then tied unembedding: also the logit lens of any residual stream."""
        return F.linear(self.ln_final(resid), self.embed.weight)

    def forward(
        self,
        input_ids: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_model"],
        *,
        attention_mask: Bool[Tensor, "batch pos"] | None = None,
        cache: KVCache | None = None,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits for `input_ids`.

        attention_mask: False at left-padding positions (batched prompts of unequal
        length); positions are counted from each row's first real token.
        cache: a KVCache to read from and append to (incremental decoding).
        stop_at_layer: return the residual stream entering this block instead of logits
        (n_layer: the residual stream after the last block, before the final norm).
        start_at_layer: `input_ids` is instead the residual stream entering this block
        (what `stop_at_layer` returns) and only the blocks from it on run (TransformerLens's
        `start_at_layer`): runs that share everything upstream compute it once.
        """
        batch, pos = input_ids.shape[:2]
        start = cache.length if cache is not None else 0
        if start + pos > self.cfg.n_ctx:
            raise ValueError(
                f"sequence of {start + pos} tokens exceeds the model context of {self.cfg.n_ctx}"
            )
        first = 0 if start_at_layer is None else start_at_layer
        if not 0 <= first <= self.cfg.n_layer or (first and cache is not None):
            raise ValueError(
                f"start_at_layer={start_at_layer}: must be a block index or n_layer, and "
                "cannot resume a KV-cached run"
            )
        mask, positions = self._mask_and_positions(batch, pos, attention_mask, cache)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        resid = input_ids if start_at_layer is not None else self.hook_embed(self.embed(input_ids))
        for layer in range(first, self.cfg.n_layer):
            if stop_at_layer is not None and layer == stop_at_layer:
                return resid
            kv = (cache.keys[layer], cache.values[layer], start) if cache is not None else None
            resid = self.blocks[layer](resid, cos, sin, mask, kv)
        if cache is not None:
            cache.length = start + pos
        if stop_at_layer == self.cfg.n_layer:  # as in TransformerLens: the final residual stream
            return resid
        return self.unembed(resid)

    def _mask_and_positions(self, batch, pos, attention_mask, cache):
        """Boolean (batch, 1, pos, key_pos) mask and rotary positions (batch, pos).

        Without padding or cache the mask is None and the causal kernel path is used.
        """
        device = self.embed.weight.device
        start = cache.length if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, pos, dtype=torch.bool, device=device)
        if cache is None and bool(attention_mask.all()):
            return None, torch.arange(pos, device=device).expand(batch, pos)
        if cache is not None:
            cache.key_mask[:, start : start + pos] = attention_mask
            key_mask = cache.key_mask[:, : start + pos]
        else:
            key_mask = attention_mask
        positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:]
        causal = torch.ones(pos, start + pos, dtype=torch.bool, device=device).tril(start)
        mask = causal[None, None] & key_mask[:, None, None, :]
        # A query row that sees no key (a padding query) would softmax to NaN: let it see itself.
        eye = torch.zeros_like(causal)
        eye[torch.arange(pos), start + torch.arange(pos)] = True
        return mask | eye[None, None], positions

    @torch.no_grad()
    def num_parameters(self) -> int:
        """Unique parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())
