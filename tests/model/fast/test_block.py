"""The unhooked block (`model.fast.block`) equals the hooked TaskGPT: piece by piece, a
whole block, and the whole forward, with the oneDNN switch on and off."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules import module as torch_module

from interpgpt.model.config import preset
from interpgpt.model.fast import block as fast
from interpgpt.model.fast import onednn
from interpgpt.model.taskgpt import TaskGPT, apply_rotary

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {"rtol": 1e-5, "atol": 1e-5}
SWITCH = pytest.mark.parametrize("on", [True, False], ids=["onednn", "plain"])


@pytest.fixture(scope="module")
def model() -> TaskGPT:
    # init_std 0.2: attention patterns and norms far from uniform, so any error shows.
    torch.manual_seed(0)
    return TaskGPT(preset("tiny", vocab_size=97, n_ctx=40, init_std=0.2)).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    # 3 x 20 = 60 tokens: above onednn.MIN_ROWS, so the block linears take oneDNN when on.
    return torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def cache(model, ids):
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
    return logits, cache


def _rope(model: TaskGPT, n_pos: int):
    return fast.rope(model, torch.arange(n_pos))


@SWITCH
def test_block_forward_equals_the_hooked_block(model, cache, on) -> None:
    _, cache = cache
    cos, sin = _rope(model, cache["blocks.0.hook_resid_pre"].shape[1])
    with torch.no_grad(), onednn.switched(on):
        for layer, block in enumerate(model.blocks):
            resid = cache[f"blocks.{layer}.hook_resid_pre"]
            assert onednn.usable(resid, block.attn.qkv_proj.weight) == (on and onednn.available())
            attended = fast.attention_residual(block, resid, cos, sin)
            for name, got in zip(
                (
                    "hook_resid_mid",
                    "attn.hook_rot_q",
                    "attn.hook_rot_k",
                    "attn.hook_v",
                    "attn.hook_z",
                ),
                attended,
                strict=True,
            ):
                torch.testing.assert_close(got, cache[f"blocks.{layer}.{name}"], **TOL)
            out = fast.block_forward(block, resid, cos, sin)
            torch.testing.assert_close(out, cache[f"blocks.{layer}.hook_resid_post"], **TOL)


@SWITCH
def test_forward_equals_the_model_forward(model, ids, cache, on, onednn_calls) -> None:
    logits, _ = cache
    with torch.no_grad(), onednn.switched(on):
        got = fast.forward(model, ids)
        calls = onednn_calls(lambda: fast.forward(model, ids))
    torch.testing.assert_close(got, logits, **TOL)
    torch.testing.assert_close(got, model(ids), **TOL)
    # on: every block's qkv, o_proj and 3 MLP GEMMs plus the unembedding ran on oneDNN
    expected = 5 * model.cfg.n_layer + 1 if on and onednn.available() else 0
    assert calls == expected


def test_pieces_equal_the_hooked_modules(model, cache) -> None:
    _, cache = cache
    block = model.blocks[1]
    resid = cache["blocks.1.hook_resid_pre"]
    mid = cache["blocks.1.hook_resid_mid"]
    n_pos = resid.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(fast.rms_norm(block.ln1, resid), block.ln1(resid), **TOL)
        torch.testing.assert_close(
            fast.mlp_residual(block, mid), cache["blocks.1.hook_resid_post"], **TOL
        )
        hidden = fast.swiglu(
            torch.nn.functional.linear(block.ln2(mid), block.mlp.gate_up_proj.weight)
        )
        torch.testing.assert_close(hidden, cache["blocks.1.mlp.hook_post"], **TOL)
        # rotary, three ways, against the model's apply_rotary (batch pos head d_head)
        q = cache["blocks.1.attn.hook_q"]
        positions = torch.arange(n_pos).expand(q.shape[0], n_pos)
        expected = apply_rotary(q, model.rope_cos[positions], model.rope_sin[positions])
        cos, sin = model.rope_cos[:n_pos, None], model.rope_sin[:n_pos, None]
        torch.testing.assert_close(fast.rotary(q, cos, sin), expected, **TOL)
        out = torch.empty_like(q)
        assert fast.rotary(q, cos, sin, out=out) is out
        torch.testing.assert_close(out, expected, **TOL)
        half = q.shape[-1] // 2
        rotated = torch.cat([-q[..., half:], q[..., :half]], dim=-1)
        torch.testing.assert_close(fast.rotary(q, cos, sin, rotated=rotated), expected, **TOL)
        # qkv slices: "kv" and "q" alone equal the fused projection's parts
        h = block.ln1(resid)
        cos, sin = _rope(model, n_pos)
        k, v = fast.qkv(block.attn, h, cos, sin, "kv")
        (q_rot,) = fast.qkv(block.attn, h, cos, sin, "q")
        torch.testing.assert_close(q_rot, cache["blocks.1.attn.hook_rot_q"], **TOL)
        torch.testing.assert_close(k, cache["blocks.1.attn.hook_rot_k"], **TOL)
        torch.testing.assert_close(v, cache["blocks.1.attn.hook_v"], **TOL)
        # attention under an explicit mask (the last query row alone) equals causal's row
        q, k, v = (cache[f"blocks.1.attn.hook_{n}"] for n in ("rot_q", "rot_k", "v"))
        mask = torch.ones(1, n_pos, dtype=torch.bool)
        z = fast.attend(q[:, -1:], k, v, mask)
        torch.testing.assert_close(z, cache["blocks.1.attn.hook_z"][:, -1:], **TOL)


def test_has_hooks_sees_every_kind_of_hook(model) -> None:
    assert not fast.has_hooks(model)
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", lambda t, hook: None)]):
        assert fast.has_hooks(model)  # a TransformerLens hook point hook
    assert not fast.has_hooks(model)
    handle = model.blocks[1].mlp.register_forward_pre_hook(lambda module, args: None)
    assert fast.has_hooks(model)  # a plain PyTorch hook on a submodule
    handle.remove()
    handle = torch_module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert fast.has_hooks(model)  # a global module hook would also see every module
    finally:
        handle.remove()
    assert not fast.has_hooks(model)


def test_forward_rejects_sequences_past_the_context(model) -> None:
    with pytest.raises(ValueError, match="exceed the model context"):
        fast.forward(model, torch.zeros(1, model.cfg.n_ctx + 1, dtype=torch.long))
