"""The unhooked decoding step equals the model's own forward and TransformerLens's generate."""

from __future__ import annotations

import copy

import pytest
import torch

from interpgpt.analysis.interventions import Head, ablate_heads
from interpgpt.artifacts.convert import to_hooked_transformer
from interpgpt.model.config import GenerationConfig, preset
from interpgpt.model.fast.block import has_hooks
from interpgpt.model.fast.decode import Decoder, HeadMask, usable
from interpgpt.model.generate import generate_ids
from interpgpt.model.taskgpt import KVCache, TaskGPT

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> TaskGPT:
    # init_std 0.2: attention patterns and norms far from uniform, so folding errors show.
    torch.manual_seed(0)
    return TaskGPT(preset("tiny", vocab_size=97, n_ctx=40, init_std=0.2)).eval()


def _prefilled(model: TaskGPT, ids: torch.Tensor, mask: torch.Tensor, max_len: int) -> KVCache:
    cache = KVCache.empty(model.cfg, ids.shape[0], max_len, "cpu", torch.float32)
    with torch.no_grad():
        model(ids, attention_mask=mask, cache=cache)
    return cache


@pytest.mark.parametrize("threads", [1, 2])
def test_step_equals_the_model_forward_with_padding_and_dropped_rows(model, threads) -> None:
    torch.set_num_threads(threads)  # 2 threads: oneDNN / MKL kernels split the rows
    try:
        _check_steps(model)
    finally:
        torch.set_num_threads(1)


def _check_steps(model: TaskGPT) -> None:
    ids = torch.randint(5, 97, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, :3] = mask[3, :5] = False  # left padding
    reference, fast = _prefilled(model, ids, mask, 20), _prefilled(model, ids, mask, 20)
    decoder = Decoder(model)
    token = torch.tensor([7, 8, 9, 10])
    for step in range(8):
        if step == 4:  # rows 0 and 2 finish: both caches drop them
            keep = torch.tensor([1, 3])
            reference.select(keep)
            fast.select(keep)
            token = token[keep]
        with torch.no_grad():
            expected = model(token[:, None], cache=reference)[:, -1]
        got = decoder.step(token, fast)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert fast.length == reference.length
        token = expected.argmax(-1)
    for layer in range(model.cfg.n_layer):
        end = fast.length
        torch.testing.assert_close(fast.keys[layer][:, :, :end], reference.keys[layer][:, :, :end])
        torch.testing.assert_close(
            fast.values[layer][:, :, :end], reference.values[layer][:, :, :end]
        )


def test_select_keeps_the_rows_as_a_fresh_cache_would(model) -> None:
    ids = torch.randint(5, 97, (5, 7))
    mask = torch.ones(5, 7, dtype=torch.bool)
    cache = _prefilled(model, ids, mask, 12)
    keep = torch.tensor([0, 3, 4])
    cache.select(keep)
    fresh = _prefilled(model, ids[keep], mask[keep], 12)
    assert cache.keys[0].shape[0] == 3 and cache.key_mask.shape == (3, 12)
    for layer in range(model.cfg.n_layer):
        torch.testing.assert_close(cache.keys[layer][:, :, :7], fresh.keys[layer][:, :, :7])
        torch.testing.assert_close(cache.values[layer][:, :, :7], fresh.values[layer][:, :, :7])
    assert torch.equal(cache.key_mask, fresh.key_mask)


def test_greedy_generation_equals_transformer_lens(model) -> None:
    prompts = torch.randint(5, 97, (6, 5))
    ours = generate_ids(model, prompts.tolist(), GenerationConfig(max_new_tokens=20, temperature=0))
    tl_model = to_hooked_transformer(model)
    with torch.no_grad():
        theirs = tl_model.generate(
            prompts, max_new_tokens=20, do_sample=False, stop_at_eos=False, verbose=False
        )[:, 5:]
    assert ours == theirs.tolist()


def test_hooks_are_detected_and_take_the_model_path(model) -> None:
    assert not has_hooks(model)
    calls = []
    with model.hooks(fwd_hooks=[("blocks.1.hook_mlp_out", lambda t, hook: calls.append(1))]):
        assert has_hooks(model)
        generate_ids(model, [[5, 6, 7]], GenerationConfig(max_new_tokens=4, temperature=0))
    assert len(calls) == 4  # the prompt forward and three one-token steps
    handle = model.blocks[0].register_forward_pre_hook(lambda module, args: None)
    assert has_hooks(model)  # plain PyTorch hooks count too
    handle.remove()
    assert not has_hooks(model) and usable(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not usable(model)  # the decoder has no mixed-precision casts
    assert not usable(copy.deepcopy(model).to(torch.bfloat16))


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_head_masked_steps_equal_the_hooked_ablation_of_each_row(model, mode) -> None:
    """Rows with different head masks in one batch (prompt forward with the mask's hooks,
    then decoder steps) each equal the whole sequence re-run alone with
    `interventions.ablate_heads`: the reference that sets z_h by assignment."""
    torch.manual_seed(2)
    ablated = [[], [Head(0, 1), Head(1, 3)], [Head(1, 0)], [Head(0, 0), Head(0, 2), Head(1, 2)]]
    keep = torch.ones(len(ablated), model.cfg.n_layer, model.cfg.n_head)
    for row, heads in enumerate(ablated):
        for head in heads:
            keep[row, head.layer, head.head] = 0.0
    fill = torch.randn(model.cfg.n_layer, model.cfg.n_head, model.cfg.d_head)
    mask = HeadMask(keep, fill if mode == "mean" else None)
    ids = torch.randint(5, 97, (len(ablated), 6))
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[2, :2] = False  # left padding
    cache = KVCache.empty(model.cfg, len(ablated), 20, "cpu", torch.float32)
    with torch.no_grad(), model.hooks(fwd_hooks=mask.hooks()):
        logits = model(ids, attention_mask=valid, cache=cache)[:, -1]
    decoder, sequences = Decoder(model), [ids[r][valid[r]].tolist() for r in range(len(ablated))]
    for _ in range(6):
        for row, heads in enumerate(ablated):
            hooks = ablate_heads(heads, mode, fill) if heads else []
            with torch.no_grad():
                alone = model.run_with_hooks(torch.tensor([sequences[row]]), fwd_hooks=hooks)
            torch.testing.assert_close(logits[row], alone[0, -1], rtol=1e-5, atol=1e-5)
        token = logits.argmax(-1)
        for row, tok in enumerate(token.tolist()):
            sequences[row].append(tok)
        logits = decoder.step(token, cache, mask)
    unmasked = decoder.step(token, copy.deepcopy(cache))
    assert not torch.allclose(unmasked[1:], decoder.step(token, cache, mask)[1:], atol=1e-3)


def test_head_mask_keeps_ones_exactly_and_selects_rows() -> None:
    z = torch.randn(3, 5, 4, 8)  # batch pos head d_head
    keep = torch.ones(3, 2, 4)
    keep[1, 1, 2] = 0.0
    fill = torch.randn(2, 4, 8)
    for mask in (HeadMask(keep), HeadMask(keep, fill)):
        assert torch.equal(mask.apply(z, 0), z)  # all ones: z itself, bit for bit
        out = mask.apply(z, 1)
        assert torch.equal(out[[0, 2]], z[[0, 2]]) and torch.equal(
            out[1, :, [0, 1, 3]], z[1, :, [0, 1, 3]]
        )
        expected = torch.zeros(5, 8) if mask.fill is None else fill[1, 2].expand(5, 8)
        assert torch.equal(out[1, :, 2], expected)
        assert torch.equal(mask.select(torch.tensor([1])).apply(z[1:2], 1), out[1:2])
