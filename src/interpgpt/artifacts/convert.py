"""Weight conversions between TaskGPT, TransformerLens and Hugging Face Llama.

TaskGPT is a Llama-shaped model, so the same weights run unchanged as a
`transformers.LlamaForCausalLM` (half-half rotary, SwiGLU, RMSNorm, tied
embeddings) and as a TransformerLens `HookedTransformer` configured with
`normalization_type="RMS"`, `gated_mlp=True`, `act_fn="silu"` and rotary embeddings
with `rotary_adjacent_pairs=False`. Each direction is a pure state-dict mapping;
the tests check logits agree to 1e-4 (HF) and 1e-3 (TL).

TransformerLens stores per-head matrices (`W_Q: head d_model d_head`) and always
carries bias tensors and an untied `W_U`; converting to TL writes zero biases
and `W_U = W_E.T`, converting back checks that is what it finds.
"""

from __future__ import annotations

from typing import Any

import einops
import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interpgpt.model.config import GPTConfig
from interpgpt.model.taskgpt import TaskGPT

TL_ARCHITECTURE = "LlamaForCausalLM"


def hooked_transformer_config(cfg: GPTConfig) -> dict[str, Any]:
    """A `HookedTransformerConfig` for this shape, as plain Python values only."""
    return {
        "n_layers": cfg.n_layer,
        "n_heads": cfg.n_head,
        "d_model": cfg.d_model,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
        "d_vocab": cfg.vocab_size,
        "d_vocab_out": cfg.vocab_size,
        "n_ctx": cfg.n_ctx,
        "act_fn": "silu",
        "gated_mlp": True,
        "normalization_type": "RMS",
        "final_rms": True,
        "eps": cfg.norm_eps,
        "positional_embedding_type": "rotary",
        "rotary_dim": cfg.d_head,
        "rotary_base": int(cfg.rope_base),
        "rotary_adjacent_pairs": False,
        "default_prepend_bos": False,
        "tokenizer_prepends_bos": False,
        "original_architecture": TL_ARCHITECTURE,
        "model_name": "interpgpt",
        "tie_word_embeddings": True,
        "initializer_range": cfg.init_std,
    }


def gpt_config_from_tl(tl_cfg: Any) -> GPTConfig:
    """The GPTConfig of a HookedTransformerConfig (or its dict) built by this module; a
    missing field is a KeyError (dict) or AttributeError."""

    def get(key: str) -> Any:
        return tl_cfg[key] if isinstance(tl_cfg, dict) else getattr(tl_cfg, key)

    return GPTConfig(
        vocab_size=get("d_vocab"),
        n_layer=get("n_layers"),
        n_head=get("n_heads"),
        d_model=get("d_model"),
        d_head=get("d_head"),
        d_mlp=get("d_mlp"),
        n_ctx=get("n_ctx"),
        norm_eps=float(get("eps")),
        rope_base=float(get("rotary_base")),
    )


def _qkv(state: dict[str, Tensor], layer: int, cfg: GPTConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Our stacked qkv weight split into q, k, v of shape (head * d_head, d_model)."""
    inner = cfg.n_head * cfg.d_head
    w = state[f"blocks.{layer}.attn.qkv_proj.weight"]
    return w[:inner], w[inner : 2 * inner], w[2 * inner :]


def _gate_up(state: dict[str, Tensor], layer: int) -> tuple[Tensor, Tensor]:
    gate, up = state[f"blocks.{layer}.mlp.gate_up_proj.weight"].chunk(2, dim=0)
    return gate, up


def to_tl_state_dict(state: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    """TaskGPT state dict -> HookedTransformer state dict (parameters only)."""
    n_head, d_model, d_head = cfg.n_head, cfg.d_model, cfg.d_head
    out = {"embed.W_E": state["embed.weight"].clone()}
    for layer in range(cfg.n_layer):
        prefix = f"blocks.{layer}"
        q, k, v = _qkv(state, layer, cfg)
        for name, w in (("Q", q), ("K", k), ("V", v)):
            out[f"{prefix}.attn.W_{name}"] = einops.rearrange(w, "(h d) m -> h m d", h=n_head)
            out[f"{prefix}.attn.b_{name}"] = torch.zeros(n_head, d_head, dtype=w.dtype)
        o = state[f"{prefix}.attn.o_proj.weight"]
        out[f"{prefix}.attn.W_O"] = einops.rearrange(o, "m (h d) -> h d m", h=n_head)
        out[f"{prefix}.attn.b_O"] = torch.zeros(d_model, dtype=o.dtype)
        gate, up = _gate_up(state, layer)
        out[f"{prefix}.mlp.W_gate"] = gate.T.contiguous()
        out[f"{prefix}.mlp.W_in"] = up.T.contiguous()
        out[f"{prefix}.mlp.W_out"] = state[f"{prefix}.mlp.down_proj.weight"].T.contiguous()
        out[f"{prefix}.mlp.b_in"] = torch.zeros(cfg.d_mlp, dtype=o.dtype)
        out[f"{prefix}.mlp.b_out"] = torch.zeros(d_model, dtype=o.dtype)
        out[f"{prefix}.ln1.w"] = state[f"{prefix}.ln1.weight"].clone()
        out[f"{prefix}.ln2.w"] = state[f"{prefix}.ln2.weight"].clone()
    out["ln_final.w"] = state["ln_final.weight"].clone()
    out["unembed.W_U"] = state["embed.weight"].T.contiguous()
    out["unembed.b_U"] = torch.zeros(cfg.vocab_size, dtype=out["embed.W_E"].dtype)
    return out


def from_tl_state_dict(tl_state: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    """HookedTransformer state dict -> TaskGPT state dict; refuses nonzero biases / untied W_U."""
    for name, tensor in tl_state.items():
        if ".b_" in name and tensor.abs().max() > 0:
            raise ValueError(f"{name} is nonzero: TaskGPT has no biases")
    out = {"embed.weight": tl_state["embed.W_E"].clone()}
    if not torch.allclose(tl_state["unembed.W_U"].T, out["embed.weight"]):
        raise ValueError("unembed.W_U is not the transpose of embed.W_E: TaskGPT ties them")
    for layer in range(cfg.n_layer):
        prefix = f"blocks.{layer}"
        qkv = [
            einops.rearrange(tl_state[f"{prefix}.attn.W_{n}"], "h m d -> (h d) m") for n in "QKV"
        ]
        out[f"{prefix}.attn.qkv_proj.weight"] = torch.cat(qkv, dim=0)
        out[f"{prefix}.attn.o_proj.weight"] = einops.rearrange(
            tl_state[f"{prefix}.attn.W_O"], "h d m -> m (h d)"
        )
        gate_up = [tl_state[f"{prefix}.mlp.W_gate"].T, tl_state[f"{prefix}.mlp.W_in"].T]
        out[f"{prefix}.mlp.gate_up_proj.weight"] = torch.cat(gate_up, dim=0)
        out[f"{prefix}.mlp.down_proj.weight"] = tl_state[f"{prefix}.mlp.W_out"].T.contiguous()
        out[f"{prefix}.ln1.weight"] = tl_state[f"{prefix}.ln1.w"].clone()
        out[f"{prefix}.ln2.weight"] = tl_state[f"{prefix}.ln2.w"].clone()
    out["ln_final.weight"] = tl_state["ln_final.w"].clone()
    return out


def to_hooked_transformer(model: TaskGPT, device: str | torch.device | None = None):
    """A HookedTransformer computing the same function as `model` (fp32)."""
    tl_cfg = HookedTransformerConfig(
        **hooked_transformer_config(model.cfg), device=str(device or "cpu")
    )
    tl_model = HookedTransformer(tl_cfg, move_to_device=True)
    state = to_tl_state_dict({k: v.float() for k, v in model.state_dict().items()}, model.cfg)
    tl_model.load_state_dict(state, strict=False)
    return tl_model.eval()


def from_hooked_transformer(tl_model) -> TaskGPT:
    cfg = gpt_config_from_tl(tl_model.cfg)
    model = TaskGPT(cfg)
    model.load_state_dict(from_tl_state_dict(tl_model.state_dict(), cfg))
    return model.eval()


def to_llama_state_dict(state: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    """TaskGPT state dict -> `LlamaForCausalLM` state dict (lm_head tied, so not stored)."""
    out = {"model.embed_tokens.weight": state["embed.weight"]}
    for layer in range(cfg.n_layer):
        ours, theirs = f"blocks.{layer}", f"model.layers.{layer}"
        q, k, v = _qkv(state, layer, cfg)
        gate, up = _gate_up(state, layer)
        out |= {
            f"{theirs}.self_attn.q_proj.weight": q,
            f"{theirs}.self_attn.k_proj.weight": k,
            f"{theirs}.self_attn.v_proj.weight": v,
            f"{theirs}.self_attn.o_proj.weight": state[f"{ours}.attn.o_proj.weight"],
            f"{theirs}.mlp.gate_proj.weight": gate,
            f"{theirs}.mlp.up_proj.weight": up,
            f"{theirs}.mlp.down_proj.weight": state[f"{ours}.mlp.down_proj.weight"],
            f"{theirs}.input_layernorm.weight": state[f"{ours}.ln1.weight"],
            f"{theirs}.post_attention_layernorm.weight": state[f"{ours}.ln2.weight"],
        }
    out["model.norm.weight"] = state["ln_final.weight"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def from_llama_state_dict(hf_state: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    """`LlamaForCausalLM` (or `LlamaModel`) state dict -> TaskGPT state dict."""
    hf_state = {k.removeprefix("model."): v for k, v in hf_state.items()}
    out = {"embed.weight": hf_state["embed_tokens.weight"]}
    for layer in range(cfg.n_layer):
        ours, theirs = f"blocks.{layer}", f"layers.{layer}"
        attn, mlp = f"{theirs}.self_attn", f"{theirs}.mlp"
        out[f"{ours}.attn.qkv_proj.weight"] = torch.cat(
            [hf_state[f"{attn}.{n}_proj.weight"] for n in "qkv"], dim=0
        )
        out[f"{ours}.attn.o_proj.weight"] = hf_state[f"{attn}.o_proj.weight"]
        out[f"{ours}.mlp.gate_up_proj.weight"] = torch.cat(
            [hf_state[f"{mlp}.gate_proj.weight"], hf_state[f"{mlp}.up_proj.weight"]], dim=0
        )
        out[f"{ours}.mlp.down_proj.weight"] = hf_state[f"{mlp}.down_proj.weight"]
        out[f"{ours}.ln1.weight"] = hf_state[f"{theirs}.input_layernorm.weight"]
        out[f"{ours}.ln2.weight"] = hf_state[f"{theirs}.post_attention_layernorm.weight"]
    out["ln_final.weight"] = hf_state["norm.weight"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters of the architecture, counted the same way for all three implementations.

    TaskGPT and HF Llama (tied) count each tensor once. A HookedTransformer always
    allocates bias tensors and a separate `W_U`; for a converted TaskGPT those are
    structurally zero / the embedding's transpose, so they are not counted.
    """
    if isinstance(model, HookedTransformer):
        return sum(
            p.numel()
            for name, p in model.named_parameters()
            if ".b_" not in name and not name.startswith("unembed.")
        )
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    return sum(unique.values())
