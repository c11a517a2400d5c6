"""Latent Scaling: how much of each crosscoder latent each model actually carries.

A latent's decoder norms alone can call it exclusive to one model when the other model
carries it too (Minder, Dumas et al. 2025, "Robustly identifying concepts introduced
during chat fine-tuning using crosscoders", arXiv 2504.02922, sec. 3): its decoder row
in the other model may have shrunk while the concept stays in that model's activation
(Complete Shrinkage), or other latents may reconstruct it there (Latent Decoupling).
Latent Scaling measures it from data. For latent j with activation f_j(x) and one fixed
direction d, the scale that best explains a target y^m(x) of model m is the
least-squares fit

    β_j^m = argmin_β Σ_x ‖β f_j(x) d − y^m(x)‖² = Σ_x f_j(x) ⟨d, y^m(x)⟩ / (‖d‖² Σ_x f_j(x)²)

(`closed_form_beta`). As in the paper, d is the decoder row of the model the latent is
claimed for, here `own` = the model with the larger decoder norm, and the ratios are
ν_j = β_j^other / β_j^own, for two targets (the paper's ν^ε and ν^r; its code is
diffing-toolkit's `latent_scaling/closed_form.py` and `utils.py`):

- error: ε_j^m(x) = x^m − x̂^m(x) + f_j(x) d_j^m, model m's reconstruction error with
  the latent's own contribution in m added back. A concept m carries under a shrunk
  decoder row lands in m's error, so ν^ε ≈ the other model's true share of it.
- reconstruction: x̂^m(x) − b_dec^m, what all latents together reconstruct of m. A
  concept other latents rebuild in the other model shows up as ν^r > 0.

A latent exclusive to `own` has ν^ε ≈ ν^r ≈ 0. One deviation from the paper's code: the
reconstruction target leaves out the decoder bias b_dec^m, a constant whose projection
on d would only grow with how often the latent fires, not with what it means. The
bias-free activation x^m − b_dec^m is reported too (ν^a), for reference only.

Everything is in the crosscoder's normalised units (E‖x^m‖² = d_model per model), and
the sums run over all tokens given, so β of a latent that never fires is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.crosscoder.model import N_MODELS, BatchTopKCrosscoder

TARGETS = ("error", "reconstruction", "activation")


def closed_form_beta(
    f: Float[Tensor, " n"], d: Float[Tensor, " d_model"], y: Float[Tensor, "n d_model"]
) -> float:
    """argmin_β Σ_t ‖β f(t) d − y(t)‖² = Σ_t f(t) ⟨d, y(t)⟩ / (‖d‖² Σ_t f(t)²), for one latent."""
    f64, d64, y64 = f.double(), d.double(), y.double()
    return float((f64 * (y64 @ d64)).sum() / (d64.dot(d64) * f64.pow(2).sum()))


@dataclass
class LatentScaling:
    """β of every latent in both models for each target, and the ratios."""

    own: Int[Tensor, " d_latent"]
    """The model whose decoder row is the direction d (larger decoder norm)."""
    beta: dict[str, Float[Tensor, "model d_latent"]]
    """Target ("error", "reconstruction", "activation") -> β_j^m."""
    n_active: Int[Tensor, " d_latent"]
    """Tokens where the latent is active."""

    def nu(self, target: str) -> Float[Tensor, " d_latent"]:
        """β^other / β^own (NaN where the latent never fires or β^own ≤ 0)."""
        beta = self.beta[target]
        own = beta.gather(0, self.own[None]).squeeze(0)
        other = beta.gather(0, (1 - self.own)[None]).squeeze(0)
        return torch.where(own > 0, other / own, torch.full_like(own, float("nan")))


class ScalingSums:
    """Running numerators Σ_t f_j ⟨d_j, y^m⟩ and Σ_t f_j² over batches (float64), so the
    closed form runs over any number of tokens in bounded memory."""

    def __init__(self, crosscoder: BatchTopKCrosscoder):
        self.cc = crosscoder
        norms = crosscoder.decoder_norms().detach()
        self.own = norms.argmax(-1)  # (d_latent,)
        d_latent = crosscoder.cfg.d_latent
        rows = torch.arange(d_latent, device=norms.device)
        self.directions = crosscoder.W_dec.detach()[rows, self.own]  # (d_latent, d_model)
        device = norms.device
        self.numerators = {
            t: torch.zeros(N_MODELS, d_latent, dtype=torch.float64, device=device) for t in TARGETS
        }
        self.f_squared = torch.zeros(d_latent, dtype=torch.float64, device=device)
        self.n_active = torch.zeros(d_latent, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, x: Float[Tensor, "n model d_model"]) -> Float[Tensor, "n d_latent"]:
        """Add a batch of normalised activations of both models; return its code (so a
        caller counting activity need not encode again)."""
        cc, dirs = self.cc, self.directions
        f = cc.encode(x)  # (n, d_latent)
        latent_part = (f @ cc.W_dec.flatten(1)).unflatten(-1, (N_MODELS, cc.cfg.d_model))
        error = x - latent_part - cc.b_dec
        f_sq = f.pow(2).sum(0).double()
        for m in range(N_MODELS):
            # Σ_t f_j ⟨d_j, ε_j^m⟩ = Σ_t f_j ⟨d_j, x^m − x̂^m⟩ + ⟨d_j, d_j^m⟩ Σ_t f_j²
            own_share = (dirs * cc.W_dec[:, m]).sum(-1).double() * f_sq
            targets = {
                "error": error[:, m],
                "reconstruction": latent_part[:, m],
                "activation": x[:, m] - cc.b_dec[m],
            }
            for name, y in targets.items():
                numerator = ((f.T @ y) * dirs).sum(-1).double()
                self.numerators[name][m] += numerator + (own_share if name == "error" else 0)
        self.f_squared += f_sq
        self.n_active += (f > 0).sum(0)
        return f

    def result(self) -> LatentScaling:
        denominator = self.directions.double().pow(2).sum(-1) * self.f_squared
        beta = {
            t: (num / denominator).float().cpu()  # 0/0 = NaN for a latent that never fired
            for t, num in self.numerators.items()
        }
        return LatentScaling(self.own.cpu(), beta, self.n_active.cpu())


def latent_scaling(
    crosscoder: BatchTopKCrosscoder, x: Float[Tensor, "n model d_model"], chunk: int = 4096
) -> LatentScaling:
    """Latent Scaling of every latent over normalised activations `x` (in chunks)."""
    sums = ScalingSums(crosscoder)
    for part in x.split(chunk):
        sums.update(part.to(crosscoder.W_dec.device))
    return sums.result()
