"""The BatchTopK crosscoder's training step: selection, sparse backward, AuxK, threshold.

Per batch of normalised activations x (batch, model, d_model), following Minder, Dumas et
al. 2025 (arXiv 2504.02922) and the dictionary_learning `BatchTopKCrossCoderTrainer`
they trained with, in this project's TopK SAE conventions (`interpgpt.sae.topk`):

1. Pre-activations of every latent, the step's one dense matmul (in bf16 when
   autocasting); scaled activations ReLU(pre)·(‖d_j^0‖ + ‖d_j^1‖).
2. BatchTopK (Bussmann et al. 2024): the k·batch largest scaled activations of the whole
   batch survive, so a token may use more or fewer than k latents (`batch_topk`).
3. Loss: normalised MSE of both models' reconstructions together (SSE over the total
   variance of the batch, as our SAE), plus AuxK (Gao et al. 2024): the top dead latents
   of each token (silent for `dead_tokens` tokens) reconstruct the main error, normalised
   by the error's own variance and without a ReLU, as in our SAE's `_aux_loss`.
4. Adam, with each latent's decoder norms summing to one, Σ_m ‖d_j^m‖ = 1: the radial
   gradient removed before the step and the rows rescaled after it, as our SAE keeps
   unit-norm rows. Only a gauge: f_j·Σ_m‖d_j^m‖ and the reconstruction are unchanged by
   f → c·f, d → d/c, so neither the model class nor the selection differs from the
   free decoders of the reference code, and how the norm splits between the models
   (what the diff measures) stays free. On the small preset it changed neither FVE nor
   dead latents; it is kept so that f_j is the scaled activation θ thresholds and the
   encoder and decoder cannot drift apart in scale. The learning rate is constant, then
   decays linearly to 0 over the last `decay_fraction` of the steps.
5. The inference threshold θ: the mean over the decay phase of each batch's smallest
   selected positive scaled activation (Bussmann et al.'s estimate; dictionary_learning
   keeps an EMA of the same statistic). Averaged where the weights have settled.

Only the selected (token, latent) pairs carry a gradient: the encoder's backward is a
sparse matmul over them (`_SelectedPreActivations`), the decoder a weighted gather
(`embedding_bag` with one bag per token) instead of dense (batch, d_latent) products.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.crosscoder.model import BatchTopKCrosscoder
from interpgpt.sae.topk import decaying_adam, geometric_median

FLOOR_MARGIN = 0.5
"""`batch_topk`'s search floor, as a fraction of the previous batch's smallest selected
scaled activation: low enough that a batch almost never needs the full search."""


class BatchCode(NamedTuple):
    """The surviving (token, latent) pairs of a batch, ordered by token."""

    values: Float[Tensor, " active"]
    """f_j(x) of each pair (unscaled)."""
    rows: Int[Tensor, " active"]
    """Token (row of the batch), nondecreasing."""
    cols: Int[Tensor, " active"]
    """Latent."""


class Selection(NamedTuple):
    rows: Int[Tensor, " active"]
    cols: Int[Tensor, " active"]
    min_positive: float
    """The smallest positive selected scaled activation (nan if none is positive)."""


def batch_topk(scaled: Float[Tensor, "batch d_latent"], k: int, floor: float = 0.0) -> Selection:
    """The k·batch largest entries of the whole batch (BatchTopK), sorted by token.

    `floor` only makes it faster: when at least k·batch entries exceed it, the search runs
    over those alone, which holds the same top k·batch; otherwise over all entries. The
    trainer passes a little under the previous batch's smallest selected value.
    """
    batch, d_latent = scaled.shape
    n = min(k * batch, scaled.numel())
    flat = scaled.flatten()
    index = (flat > floor).nonzero().flatten() if floor > 0 else None
    if index is not None and index.numel() >= n:
        top = flat[index].topk(n, sorted=False)
        chosen = index[top.indices]
    else:
        top = flat.topk(n, sorted=False)
        chosen = top.indices
    chosen = chosen.sort().values
    positive = top.values[top.values > 0]
    low = float(positive.min()) if positive.numel() else float("nan")
    return Selection(chosen // d_latent, chosen % d_latent, low)


def bag_decode(
    code: BatchCode, W_dec: Float[Tensor, "d_latent width"], batch: int
) -> Float[Tensor, "batch width"]:
    """Σ_j f_j W_dec[j] per token as one `embedding_bag` (a token with no latent gets 0)."""
    counts = torch.bincount(code.rows, minlength=batch)
    offsets = counts.cumsum(0) - counts
    return F.embedding_bag(
        code.cols, W_dec, offsets, mode="sum", per_sample_weights=code.values.to(W_dec.dtype)
    )


class _SelectedPreActivations(torch.autograd.Function):
    """Pre-activations at the selected (row, col) pairs, with a backward over those only.

    Forward returns `values` = ((x - b_dec) @ W_enc + b_enc)[rows, cols], computed by the
    caller. With g = dL/dvalues: dL/db_enc scatters g onto the latents; dL/dW_enc =
    (x - b_dec)^T G for the sparse (batch, d_latent) G holding g, a sparse matmul of
    len(g) non-zeros; dL/db_dec = -W_enc dL/db_enc. The same backward as our SAE's
    `_SparseEncode`, for a variable number of latents per token.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, rows, cols, values):
        ctx.save_for_backward(x, W_enc, b_dec, rows, cols)
        return values

    @staticmethod
    def backward(ctx, grad):
        x, W_enc, b_dec, rows, cols = ctx.saved_tensors
        d_latent, batch = W_enc.shape[1], x.shape[0]
        g = grad.to(W_enc.dtype)
        grad_b_enc = torch.zeros(d_latent, dtype=W_enc.dtype, device=W_enc.device)
        grad_b_enc.index_add_(0, cols, g)
        sparse_g = torch.sparse_coo_tensor(
            torch.stack([cols, rows]), g, (d_latent, batch), check_invariants=False
        )
        grad_W_enc = torch.sparse.mm(sparse_g, (x - b_dec).to(W_enc.dtype)).T
        grad_b_dec = -(W_enc @ grad_b_enc)
        return None, grad_W_enc, grad_b_enc, grad_b_dec, None, None, None


class StepStats(NamedTuple):
    loss: float
    """Normalised MSE of the batch, both models together."""
    aux_loss: float
    """AuxK loss (0 when no latent is dead)."""
    n_dead: int
    """Latents that have not fired for `dead_tokens` training tokens."""


class CrosscoderTrainer:
    """One crosscoder's optimiser state, training step and threshold estimate."""

    def __init__(
        self,
        crosscoder: BatchTopKCrosscoder,
        *,
        lr: float,
        total_steps: int,
        aux_coef: float = 1 / 32,
        dead_tokens: int = 32_768,
        decay_fraction: float = 0.2,
        autocast: bool = True,
    ):
        self.cc = crosscoder
        self.aux_coef = aux_coef
        self.dead_tokens = dead_tokens
        self.autocast = autocast
        device = crosscoder.W_dec.device
        self.optimizer, self.scheduler, self.decay_start = decaying_adam(
            crosscoder.parameters(), lr, total_steps, decay_fraction, device
        )
        self.since_fired = torch.zeros(crosscoder.cfg.d_latent, dtype=torch.long, device=device)
        self.steps = 0
        self.minima: list[float] = []
        self.floor = 0.0

    @torch.no_grad()
    def _pre_activations(self, x: Tensor) -> Tensor:
        """(x - b_dec) @ W_enc + b_enc as one fused addmm, in bf16 when autocasting."""
        cc = self.cc
        dtype = torch.bfloat16 if self.autocast else cc.W_enc.dtype
        xc = (x - cc.b_dec.flatten()).to(dtype)
        return torch.addmm(cc.b_enc.to(dtype), xc, cc.W_enc.flatten(0, 1).to(dtype))

    def _select(self, x: Tensor, pre: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Pre-activations at (rows, cols) as a differentiable function of the encoder."""
        cc = self.cc
        return _SelectedPreActivations.apply(
            x, cc.W_enc.flatten(0, 1), cc.b_enc, cc.b_dec.flatten(), rows, cols,
            pre[rows, cols].float(),
        )  # fmt: skip

    def step(self, x: Float[Tensor, "batch model d_model"]) -> StepStats:
        """One Adam step on a batch of normalised activations of both models."""
        cc = self.cc
        xf = x.flatten(1)  # (batch, model * d_model)
        pre = self._pre_activations(xf)
        norms = cc.decoder_norms().detach().sum(-1)  # (d_latent,)
        selection = batch_topk(pre.float().relu() * norms, cc.cfg.k, self.floor)
        values = self._select(xf, pre, selection.rows, selection.cols).relu()
        code = BatchCode(values, selection.rows, selection.cols)
        error = xf - (bag_decode(code, cc.W_dec.flatten(1), xf.shape[0]) + cc.b_dec.flatten())
        loss = error.pow(2).sum() / (xf - xf.mean(0)).pow(2).sum().clamp(min=1e-12)
        dead = self._update_dead(code, xf.shape[0])
        aux = self._aux_loss(xf, pre, error.detach(), dead)
        (loss + self.aux_coef * aux).backward()
        self._constrained_step()
        low = selection.min_positive
        if low == low:  # not NaN
            self.floor = FLOOR_MARGIN * low
            if self.steps >= self.decay_start:
                self.minima.append(low)
        self.steps += 1
        return StepStats(float(loss.detach()), float(aux.detach()), int(dead.sum()))

    @torch.no_grad()
    def _constrained_step(self) -> None:
        """Adam with Σ_m ‖d_j^m‖ = 1 per latent: the gradient's component along
        ∇Σ_m‖d_j^m‖ is removed before the step and the rows rescaled after it."""
        W_dec = self.cc.W_dec  # (d_latent, model, d_model)
        if W_dec.grad is not None:
            radial = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8)
            along = (W_dec.grad * radial).sum((1, 2), keepdim=True)
            W_dec.grad -= along / radial.pow(2).sum((1, 2), keepdim=True).clamp(min=1e-8) * radial
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        W_dec.div_(W_dec.norm(dim=-1).sum(-1)[:, None, None].clamp(min=1e-8))

    @torch.no_grad()
    def _update_dead(self, code: BatchCode, n_tokens: int) -> Tensor:
        fired = torch.zeros_like(self.since_fired, dtype=torch.bool)
        fired[code.cols[code.values > 0]] = True
        self.since_fired += n_tokens
        self.since_fired[fired] = 0
        return self.since_fired >= self.dead_tokens

    def _aux_loss(self, x: Tensor, pre: Tensor, error: Tensor, dead: Tensor) -> Tensor:
        """AuxK: each token's top-k_aux dead latents (by pre-activation, no ReLU)
        reconstruct the main error; k_aux = half the input width (Gao et al. app. B.1)."""
        dead_idx = dead.nonzero().flatten()
        if dead_idx.numel() == 0:
            return error.new_zeros(())
        batch = x.shape[0]
        k_aux = min(x.shape[1] // 2, dead_idx.numel())
        local = pre[:, dead_idx].topk(k_aux, dim=-1, sorted=False).indices
        rows = torch.arange(batch, device=x.device).repeat_interleave(k_aux)
        cols = dead_idx[local].flatten()
        code = BatchCode(self._select(x, pre, rows, cols), rows, cols)
        error_var = (error - error.mean(0)).pow(2).sum().clamp(min=1e-12)
        recon = bag_decode(code, self.cc.W_dec.flatten(1), batch)
        return (recon - error).pow(2).sum() / error_var

    @torch.no_grad()
    def finish(self) -> BatchTopKCrosscoder:
        """Set the inference threshold θ (mean of the decay phase's batch minima)."""
        if self.minima:
            self.cc.threshold.fill_(sum(self.minima) / len(self.minima))
        return self.cc.eval()


@torch.no_grad()
def init_from_data(
    cc: BatchTopKCrosscoder, x: Float[Tensor, "n model d_model"], generator: torch.Generator
) -> None:
    """b_dec at the geometric median of the concatenated activations (Bricken et al. 2023);
    each latent's decoder rows at one random centred token of both models, unit norm
    over the concatenation, the encoder their transpose over k: our SAE's
    `init_from_data`, so every latent wins the selection for some tokens from the start."""
    xf = x.flatten(1)
    median = geometric_median(xf[:8192])
    centred = xf - median
    n_latent = cc.cfg.d_latent
    rows = torch.randint(0, xf.shape[0], (n_latent,), generator=generator).to(xf.device)
    noise = torch.randn(n_latent, xf.shape[1], generator=generator).to(xf.device)
    w_dec = centred[rows] + 0.1 * centred.std() * noise
    w_dec /= w_dec.view_as(cc.W_dec).norm(dim=-1).sum(-1, keepdim=True).clamp(min=1e-8)
    cc.b_dec.copy_(median.view_as(cc.b_dec))
    cc.W_dec.copy_(w_dec.view_as(cc.W_dec))
    cc.W_enc.copy_((w_dec.T / cc.cfg.k).reshape_as(cc.W_enc))
