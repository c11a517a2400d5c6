"""TaskGPT: parameter count, hook points, numerics against references, cached decoding."""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from interpgpt.model.config import PRESETS, GPTConfig, preset
from interpgpt.model.taskgpt import KVCache, RMSNorm, TaskGPT, apply_rotary, rotary_tables


def tiny_model(seed: int = 0) -> TaskGPT:
    torch.manual_seed(seed)
    return TaskGPT(preset("tiny")).eval()


def test_full_preset_has_exactly_the_cards_parameter_count():
    assert TaskGPT(PRESETS["full"]).num_parameters() == 23_471_104


def test_small_preset_keeps_the_head_grid():
    small, full = PRESETS["small"], PRESETS["full"]
    assert (small.n_layer, small.n_head) == (full.n_layer, full.n_head)


def test_no_biases_and_tied_embedding():
    model = tiny_model()
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert model.W_U.data_ptr() == model.embed.weight.data_ptr()


def test_raw_config_round_trip_matches_the_cards_snippet():
    model = tiny_model()
    blob = {"config": model.cfg.to_dict(), "model_state_dict": model.state_dict()}
    again = TaskGPT(GPTConfig(**blob["config"]))
    again.load_state_dict(blob["model_state_dict"])
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    assert torch.equal(again.eval()(ids), model(ids))


def test_hook_points_are_named_like_transformer_lens():
    model = tiny_model()
    names = set(model.hook_dict)
    for layer in range(model.cfg.n_layer):
        for hook in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out"):
            assert f"blocks.{layer}.{hook}" in names
        for hook in ("hook_pattern", "hook_z", "hook_result", "hook_attn_scores"):
            assert f"blocks.{layer}.attn.{hook}" in names


def test_cache_shapes_and_hooked_path_equals_fused_path():
    model = tiny_model()
    cfg = model.cfg
    ids = torch.randint(0, cfg.vocab_size, (3, 11))
    logits, cache = model.run_with_cache(ids)
    assert cache["blocks.1.attn.hook_pattern"].shape == (3, cfg.n_head, 11, 11)
    assert cache["blocks.1.attn.hook_z"].shape == (3, 11, cfg.n_head, cfg.d_head)
    assert cache["blocks.1.attn.hook_result"].shape == (3, 11, cfg.n_head, cfg.d_model)
    torch.testing.assert_close(logits, model(ids), atol=1e-5, rtol=1e-5)
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, cfg.n_head, 11))
    assert pattern.triu(1).abs().max() == 0  # causal


def test_rmsnorm_matches_llama():
    ours = RMSNorm(16, 1e-6)
    theirs = LlamaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        theirs.weight.copy_(ours.weight)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours(x), theirs(x))


def test_rotary_matches_llama_half_half_layout():
    cos, sin = rotary_tables(32, 8, 10_000.0)
    q = torch.randn(1, 6, 2, 8)  # (batch, pos, head, d_head)
    k = torch.randn(1, 6, 2, 8)
    positions = torch.arange(6)[None]
    ours_q = apply_rotary(q, cos[positions], sin[positions])
    hf_q, _ = apply_rotary_pos_emb(
        q.transpose(1, 2), k.transpose(1, 2), cos[positions], sin[positions]
    )
    torch.testing.assert_close(ours_q, hf_q.transpose(1, 2))


def test_kv_cache_decoding_equals_full_forward():
    model = tiny_model()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 12))
    cache = KVCache.empty(model.cfg, 2, 12, "cpu", torch.float32)
    pieces = [model(ids[:, :5], cache=cache)]
    pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(ids), atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_the_real_tokens():
    model = tiny_model()
    ids = torch.randint(5, model.cfg.vocab_size, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 7])
    torch.testing.assert_close(
        model(padded, attention_mask=mask)[:, 3:], model(ids), atol=1e-5, rtol=1e-5
    )


def test_context_overflow_is_refused():
    model = tiny_model()
    ids = torch.zeros(1, model.cfg.n_ctx + 1, dtype=torch.long)
    try:
        model(ids)
    except ValueError as err:
        assert "context" in str(err)
    else:
        raise AssertionError("a sequence longer than the context must be refused")


def test_start_at_layer_resumes_what_stop_at_layer_returns():
    """A run resumed from the residual stream entering block L (TransformerLens's
    `start_at_layer`) gives the full forward's logits, and only blocks from L on fire."""
    model = tiny_model()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    full = model(ids)
    for layer in range(model.cfg.n_layer + 1):
        resid = model(ids, stop_at_layer=layer)
        torch.testing.assert_close(model(resid, start_at_layer=layer), full)
    fired: list[str] = []
    hooks = [("hook_embed", lambda act, hook: fired.append(hook.name))]
    hooks += [
        (f"blocks.{layer}.hook_resid_pre", lambda act, hook: fired.append(hook.name))
        for layer in range(model.cfg.n_layer)
    ]
    model.run_with_hooks(model(ids, stop_at_layer=1), start_at_layer=1, fwd_hooks=hooks)
    assert fired == [f"blocks.{layer}.hook_resid_pre" for layer in range(1, model.cfg.n_layer)]
    try:
        model(resid, start_at_layer=model.cfg.n_layer + 1)
    except ValueError as err:
        assert "start_at_layer" in str(err)
    else:
        raise AssertionError("a start past the last block must be refused")
