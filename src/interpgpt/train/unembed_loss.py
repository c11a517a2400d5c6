"""Fused unembedding + cross-entropy over row chunks: the training loss without full logits.

For a small model the vocabulary projection and its softmax are most of a training step,
and most of that cost is not arithmetic but memory traffic: `F.cross_entropy` on a
(tokens, d_vocab) logit matrix makes several passes over a 100 MB fp32 tensor (cast,
log-softmax, its backward, the one-hot scatter), each far slower than the matmul that
produced it on a CPU. The same idea as the chunked/fused cross-entropy kernels of large-
vocabulary training (e.g. Liger-Kernel's FusedLinearCrossEntropy, Wijmans et al. 2024,
"Cut Your Losses in Large-Vocabulary Language Models"): process rows in chunks small
enough to stay in cache, keep only each row's log-sum-exp for the backward pass, and
recompute the chunk's logits there. The backward is the closed form
d loss / d logits = softmax(logits) - onehot(target), so no log-softmax graph is kept.

Numerics match `F.cross_entropy(F.linear(h, W).float(), t, reduction="sum")` under the
same autocast: logits come from a matmul in the compute dtype (bf16 under autocast, as
`F.linear` would produce), softmax statistics are taken in fp32, and the weight gradient
is accumulated over chunks in fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_BYTES = {"cpu": 2**21, "cuda": 2**28}
"""fp32 logit bytes per chunk: a few MB keeps a CPU chunk in cache; GPUs prefer big ones."""


def unembed_cross_entropy(
    normed: Tensor, weight: Tensor, targets: Tensor, chunk_rows: int | None = None
) -> Tensor:
    """Σ over rows of −log softmax(normed @ weight.T)[target] (a scalar, fp32).

    normed: (tokens, d_model) final-norm output; weight: (d_vocab, d_model) unembedding;
    targets: (tokens,) ids, every one carrying loss (drop ignored positions before).
    Under autocast the matmuls run in the autocast dtype, like `F.linear` would.
    """
    device = normed.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(normed.dtype, weight.dtype)
    if chunk_rows is None:
        budget = CHUNK_BYTES.get(device, CHUNK_BYTES["cuda"])
        chunk_rows = max(1, budget // (4 * weight.shape[0]))
    return _UnembedCrossEntropy.apply(normed, weight, targets, dtype, chunk_rows)


class _UnembedCrossEntropy(torch.autograd.Function):
    """Chunks reuse preallocated buffers (`out=`, in-place ops): on a CPU a fresh multi-MB
    tensor per chunk costs more in page faults than the chunk's arithmetic."""

    @staticmethod
    def forward(ctx, normed, weight, targets, dtype, chunk_rows):
        h, w = normed.to(dtype), weight.to(dtype)
        buffers = _Buffers(min(chunk_rows, h.shape[0]), w, dtype)
        lse = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        target_logit = torch.empty_like(lse)
        for rows in _chunks(h.shape[0], chunk_rows):
            logits = buffers.logits(h[rows], w)
            torch.logsumexp(logits, -1, out=lse[rows])
            target_logit[rows] = logits.gather(1, targets[rows, None])[:, 0]
        ctx.save_for_backward(h, w, targets, lse)
        ctx.chunk_rows = chunk_rows
        ctx.input_dtypes = (normed.dtype, weight.dtype)
        return (lse - target_logit).sum()

    @staticmethod
    def backward(ctx, grad_loss):
        h, w, targets, lse = ctx.saved_tensors
        buffers = _Buffers(min(ctx.chunk_rows, h.shape[0]), w, h.dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        arange = torch.arange(min(ctx.chunk_rows, h.shape[0]), device=h.device)
        for rows in _chunks(h.shape[0], ctx.chunk_rows):
            # d loss / d logits = softmax(logits) - onehot(target), from the saved log-sum-exp
            grad_logits = buffers.logits(h[rows], w).sub_(lse[rows, None]).exp_()
            grad_logits[arange[: grad_logits.shape[0]], targets[rows]] -= 1.0
            grad_logits = buffers.to_compute(grad_logits.mul_(grad_loss))
            torch.mm(grad_logits, w, out=grad_h[rows])
            grad_w += torch.mm(grad_logits.T, h[rows], out=buffers.weight_grad)
        normed_dtype, weight_dtype = ctx.input_dtypes
        return grad_h.to(normed_dtype), grad_w.to(weight_dtype), None, None, None


class _Buffers:
    """One chunk's logits in the compute dtype and in fp32, and one weight-gradient term."""

    def __init__(self, rows: int, w: Tensor, dtype: torch.dtype):
        self.compute = torch.empty(rows, w.shape[0], dtype=dtype, device=w.device)
        self.fp32 = torch.empty(rows, w.shape[0], dtype=torch.float32, device=w.device)
        self.weight_grad = torch.empty_like(w)

    def logits(self, h_rows: Tensor, w: Tensor) -> Tensor:
        """fp32 logits of a chunk, from a matmul in the compute dtype (as autocast does)."""
        n = h_rows.shape[0]
        torch.mm(h_rows, w.T, out=self.compute[:n])
        return self.fp32[:n].copy_(self.compute[:n])

    def to_compute(self, x: Tensor) -> Tensor:
        return self.compute[: x.shape[0]].copy_(x)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]
