"""Conversions: TaskGPT, Hugging Face Llama and TransformerLens compute the same function.

Checked on `tiny` and on a randomly initialised `full` (the seed cards' 23,471,104
parameters), in fp32: logits agree to 1e-4 (HF) and 1e-3 (TL), parameter counts
agree, state dicts survive round trips bit-exactly, and TransformerLens hook
names carry the same activations in both hooked implementations.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from interpgpt.artifacts import convert
from interpgpt.artifacts.export import llama_config
from interpgpt.artifacts.load import gpt_config_from_llama
from interpgpt.model.config import GPTConfig, preset
from interpgpt.model.taskgpt import TaskGPT

FULL_PARAMETERS = 23_471_104
SPECIALS = {"<|task|>": 0, "<|end|>": 3, "<|pad|>": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def hf_model(model: TaskGPT):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaForCausalLM(LlamaConfig(**llama_config(model.cfg, SPECIALS)))
    result = hf.load_state_dict(
        convert.to_llama_state_dict(model.state_dict(), model.cfg), strict=False
    )
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys
    hf.tie_weights()
    return hf.eval()


@pytest.fixture(scope="module", params=["tiny", "full"])
def trio(request):
    """(TaskGPT, HF Llama, HookedTransformer) holding the same random weights."""
    torch.manual_seed(0)
    model = TaskGPT(preset(request.param)).eval()
    # At init attention is nearly uniform and RMSNorm gains are one, so a wrong rotary
    # base or a dropped norm would hardly move the logits: sharpen and perturb them.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
            elif name.endswith("qkv_proj.weight"):
                param.mul_(8.0)
    return model, hf_model(model), convert.to_hooked_transformer(model)


def sample_ids(cfg: GPTConfig, pos: int = 24) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.vocab_size, (2, pos), generator=generator)


def test_logits_agree(trio):
    model, hf, tl = trio
    ids = sample_ids(model.cfg)
    with torch.no_grad():
        ours = model(ids)
        assert (hf(ids).logits - ours).abs().max() <= 1e-4
        assert (tl(ids) - ours).abs().max() <= 1e-3
    assert ours.std() > 0.1  # not a degenerate comparison of near-zero logits


def test_parameter_counts_agree(trio):
    model, hf, _ = trio
    counts = {convert.count_parameters(m) for m in trio} | {model.num_parameters()}
    counts |= {hf.num_parameters()}
    assert len(counts) == 1
    if model.cfg == preset("full"):
        assert counts == {FULL_PARAMETERS}


def test_hook_activations_agree(trio):
    """The same TL hook name holds the same activation in TaskGPT and HookedTransformer."""
    model, _, tl = trio
    last = model.cfg.n_layer - 1
    names = [
        "hook_embed",
        "blocks.0.hook_resid_pre",
        "blocks.0.attn.hook_q",
        "blocks.0.attn.hook_rot_k",
        f"blocks.{last}.attn.hook_pattern",
        f"blocks.{last}.attn.hook_z",
        "blocks.0.mlp.hook_post",
        f"blocks.{last}.hook_resid_post",
        "ln_final.hook_normalized",
    ]
    ids = sample_ids(model.cfg, pos=12)
    _, ours = model.run_with_cache(ids, names_filter=names)
    _, theirs = tl.run_with_cache(ids, names_filter=names)
    for name in names:
        # fp32, TL's tolerance: peaked attention (scores ~ 10^2) amplifies rounding in z
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-3, rtol=1e-3, msg=name)


def test_state_dict_round_trips(trio):
    model, hf, tl = trio
    state, cfg = model.state_dict(), model.cfg
    via_tl = convert.from_hooked_transformer(tl).state_dict()
    via_hf = convert.from_llama_state_dict(hf.state_dict(), cfg)
    via_tl_dict = convert.from_tl_state_dict(convert.to_tl_state_dict(state, cfg), cfg)
    for other in (via_tl, via_hf, via_tl_dict):
        assert other.keys() == state.keys()
        for name, tensor in state.items():
            assert torch.equal(other[name], tensor), name


def test_config_round_trips():
    for name in ("tiny", "full"):
        cfg = preset(name)
        assert convert.gpt_config_from_tl(convert.hooked_transformer_config(cfg)) == cfg
        hf = {"model_type": "llama", **llama_config(cfg, SPECIALS)}
        hf["rope_parameters"] = {"rope_theta": hf.pop("rope_theta"), "rope_type": "default"}
        assert gpt_config_from_llama(hf, Path("config.json")) == cfg


def test_tl_config_is_plain_values():
    plain = (int, float, str, bool, type(None))
    assert all(
        isinstance(v, plain) for v in convert.hooked_transformer_config(preset("full")).values()
    )


def test_from_tl_refuses_what_taskgpt_cannot_hold():
    cfg = preset("tiny")
    tl_state = convert.to_tl_state_dict(TaskGPT(cfg).state_dict(), cfg)
    with_bias = dict(tl_state, **{"blocks.0.attn.b_Q": tl_state["blocks.0.attn.b_Q"] + 1})
    with pytest.raises(ValueError, match="b_Q"):
        convert.from_tl_state_dict(with_bias, cfg)
    untied = dict(tl_state, **{"unembed.W_U": tl_state["unembed.W_U"] * 2})
    with pytest.raises(ValueError, match="W_U"):
        convert.from_tl_state_dict(untied, cfg)


def test_heads_stay_in_place():
    """Head h of TaskGPT's stacked projection is head h of the TL matrices, so head-level
    findings (L3H5) name the same head in both implementations."""
    cfg = dataclasses.replace(preset("tiny"), n_layer=1)
    model = TaskGPT(cfg)
    tl_state = convert.to_tl_state_dict(model.state_dict(), cfg)
    inner = cfg.n_head * cfg.d_head
    w = model.state_dict()["blocks.0.attn.qkv_proj.weight"]
    for head in range(cfg.n_head):
        rows = slice(head * cfg.d_head, (head + 1) * cfg.d_head)
        assert torch.equal(tl_state["blocks.0.attn.W_Q"][head], w[rows].T)
        v_rows = slice(2 * inner + head * cfg.d_head, 2 * inner + (head + 1) * cfg.d_head)
        assert torch.equal(tl_state["blocks.0.attn.W_V"][head], w[v_rows].T)
