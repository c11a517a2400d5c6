"""The chunked unembedding + cross-entropy equals the plain computation, values and grads."""

import pytest
import torch
import torch.nn.functional as F

from interpgpt.train.unembed_loss import unembed_cross_entropy


def _inputs(tokens=37, d_model=16, d_vocab=53):
    gen = torch.Generator().manual_seed(0)
    normed = torch.randn(tokens, d_model, generator=gen, requires_grad=True)
    weight = torch.randn(d_vocab, d_model, generator=gen).mul(0.3).requires_grad_()
    targets = torch.randint(0, d_vocab, (tokens,), generator=gen)
    return normed, weight, targets


def _loss_and_grads(loss_fn):
    normed, weight, targets = _inputs()
    loss = loss_fn(normed, weight, targets)
    (loss * 0.7).backward()  # a non-unit upstream gradient
    return loss.detach(), normed.grad, weight.grad


@pytest.mark.parametrize("chunk_rows", [1, 5, 37, 1000])
def test_equals_cross_entropy_of_full_logits_in_fp32(chunk_rows):
    reference = _loss_and_grads(lambda h, w, t: F.cross_entropy(F.linear(h, w), t, reduction="sum"))
    fused = _loss_and_grads(lambda h, w, t: unembed_cross_entropy(h, w, t, chunk_rows))
    for ours, theirs in zip(fused, reference, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_under_bf16_autocast_matches_autocast_cross_entropy():
    def reference(h, w, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.cross_entropy(F.linear(h, w).float(), t, reduction="sum")

    def fused(h, w, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return unembed_cross_entropy(h, w, t, chunk_rows=8)

    ref_loss, ref_grad_h, ref_grad_w = _loss_and_grads(reference)
    loss, grad_h, grad_w = _loss_and_grads(fused)
    torch.testing.assert_close(loss, ref_loss)  # same bf16 logits, fp32 softmax
    assert grad_h.dtype == grad_w.dtype == torch.float32  # grads in the parameters' dtype
    torch.testing.assert_close(grad_h, ref_grad_h, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grad_w, ref_grad_w, rtol=2e-2, atol=2e-2)
