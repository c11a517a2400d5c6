"""Head signatures: which head of model b does the job of head h of model a, named by what
the head computes, each signature checked against answers known in advance before use.

A signature is a (layer, head of a, head of b) similarity; heads are paired one-to-one
within a layer by the Hungarian algorithm (`stats.within_layer_matching`), as the
inventory pairs attention profiles.

- profile: the inventory's attention-profile cosine (`headswap.profiles`).
- ov, qk: cosine of the flattened OV circuit W_V^h W_O^h and QK circuit W_Q^h W_K^hᵀ
  (d_model × d_model; Elhage et al. 2021, "A Mathematical Framework for Transformer
  Circuits"), the block's ln1 gain folded into W_Q, W_K and W_V (TransformerLens's
  `fold_ln`). Products, so blind to the symmetries inside a head that leave its function
  as it is (V/O under any invertible d_head map). QK is the bilinear form at relative
  offset 0: RoPE rotates q and k by tables every head shares.
- output: Pearson correlation of two heads' outputs (`hook_z` @ W_O) over the same token
  positions, each residual dimension centred: Σ cov / √(Σ var · Σ var) over d_model.
- cka: linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations
  Revisited") of two heads' `hook_z` over the same positions: blind to rotations and
  scalings of a head's value space.

Both activation signatures come from one pass per model that keeps only sufficient
statistics: the mean and covariance over positions of every head's z, of all the models
side by side (`ZMoments`).

Known answers (`compare_signatures`):
- planted: model a against a copy of it whose heads are permuted within each layer (Q, K,
  V and O together, `analysis.lm`: the same function) must be undone, every head of a
  paired with the copy's head it went to (hit rate 1.0);
- identity: a model against its same-init data-order twin starts as the same weights, so
  the right partner of head h is head h; the share of heads paired with their own index
  (`same_index`) is, on a twin pair, the signature's hit rate.

Basis: ov, qk and output compare vectors in the residual stream's basis, which two models
share only when they share an init. The study aligns models from different init seeds,
where such a cosine says nothing, so only the basis-free signatures (`BASIS_FREE`) can
become the alignment (`adopt`); the others are scored beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.analysis.headswap.profiles import ProfileSums, attention_profile_sums
from interpgpt.analysis.headswap.stats import cosine_matrix, within_layer_matching
from interpgpt.analysis.lm import as_lm

SIGNATURES = ("profile", "ov", "qk", "output", "cka")
"""Every signature, the inventory's own first."""
BASIS_FREE = ("profile", "cka")
"""The signatures that mean the same between models of different inits."""
BASELINE = "profile"
"""The alignment a signature must beat on the twin pairs to replace it."""


# ---------------------------------------------------------------------------- weights


def _ln1_gains(lm: Any) -> Float[Tensor, "layer d_model"]:
    """Each block's ln1 gain (a TaskGPT's `weight`, a HookedTransformer's `w`; ones when
    the norm has none, e.g. after TransformerLens folded it)."""
    gains = []
    for block in lm.model.blocks:
        gain = getattr(block.ln1, "weight", None)
        gain = getattr(block.ln1, "w", None) if gain is None else gain
        gains.append(torch.ones(lm.d_model) if gain is None else gain.detach().float().cpu())
    return torch.stack(gains)


def _circuit_inner(
    x: tuple[Tensor, Tensor], y: tuple[Tensor, Tensor]
) -> Float[Tensor, "layer head head"]:
    """⟨L_xᵀ R_x, L_yᵀ R_y⟩_F of every head of x with every head of y in its layer, each
    side given by its two (layer, head, d_head, d_model) factors, without forming the
    d_model × d_model products: tr(R_xᵀ L_x L_yᵀ R_y) = Σ (L_x L_yᵀ) ∘ (R_x R_yᵀ)."""
    left = torch.einsum("lhdm,lgem->lhgde", x[0], y[0])
    right = torch.einsum("lhdm,lgem->lhgde", x[1], y[1])
    return (left * right).sum((-1, -2))


def circuit_similarity(
    model_a: Any, model_b: Any, circuit: Literal["ov", "qk"]
) -> Float[np.ndarray, "layer head head"]:
    """Cosine of the flattened OV (W_V W_O) or QK (W_Q W_Kᵀ) circuits of every head of a
    with every head of b in the same layer (module docstring)."""
    factors = []
    for model in (model_a, model_b):
        lm = as_lm(model)
        weights = lm.head_weights().cpu().double()  # (layer, Q/K/V/O, head, d_head, d_model)
        folded = weights[:, :3] * _ln1_gains(lm).double()[:, None, None, None, :]
        pick = (folded[:, 2], weights[:, 3]) if circuit == "ov" else (folded[:, 0], folded[:, 1])
        factors.append(pick)
    inner = _circuit_inner(factors[0], factors[1])
    norms = [_circuit_inner(f, f).diagonal(dim1=1, dim2=2).clamp(min=0).sqrt() for f in factors]
    return _ratio(inner, norms[0][:, :, None] * norms[1][:, None, :])


def _ratio(num: Tensor, den: Tensor) -> np.ndarray:
    """num / den, 0 where den is 0 (a dead head is like no other)."""
    return torch.where(den > 0, num / den.clamp(min=1e-300), 0.0).numpy()


# ---------------------------------------------------------------------------- activations


@dataclass
class ZMoments:
    """Mean and covariance over token positions of every head's `hook_z`, of several
    models run on the same positions (the sufficient statistics of `output` and `cka`)."""

    mean: Float[Tensor, "layer model head d_head"]
    cov: Float[Tensor, "layer model head d_head model head d_head"]
    positions: int
    """Token positions the moments average over."""


def _hook_z(lm: Any, ids: Tensor) -> list[Tensor]:
    """Every layer's `blocks.{layer}.attn.hook_z` (batch, pos, head, d_head) of one forward
    pass, where the model computed it."""
    zs: list[Tensor] = [torch.empty(0)] * lm.n_layer

    def keep(layer: int):
        def hook(z: Tensor, hook) -> None:
            zs[layer] = z.detach()

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", keep(layer)) for layer in range(lm.n_layer)]
    with lm.model.hooks(fwd_hooks=hooks):
        lm.model(ids.to(lm.device), stop_at_layer=lm.n_layer)  # the logits are not needed
    return zs


@torch.no_grad()
def z_moments(
    models: Sequence[Any],
    ids: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
    batch_size: int = 32,
) -> ZMoments:
    """The `ZMoments` of `models` (TaskGPTs or HookedTransformers of one shape, on one
    device) over every real position of `ids` (right-padded to `lengths`), accumulated in
    float64 one layer at a time on the models' device."""
    lms = [as_lm(m) for m in models]
    n_layer, n_head, device = lms[0].n_layer, lms[0].n_head, lms[0].device
    total: list[Tensor] = []
    second: list[Tensor] = []
    n = 0
    order = torch.argsort(lengths, stable=True)
    for start in range(0, len(ids), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows].max())
        real = (torch.arange(width)[None, :] < lengths[rows][:, None]).to(device)
        zs = [_hook_z(lm, ids[rows, :width]) for lm in lms]
        for layer in range(n_layer):
            # (position, model·head·d_head)
            x = torch.cat([z[layer][real].flatten(1) for z in zs], 1).double()
            if len(total) <= layer:
                total.append(torch.zeros_like(x[0]))
                second.append(x.new_zeros(x.shape[1], x.shape[1]))
            total[layer] += x.sum(0)
            second[layer] += x.T @ x
        n += int(real.sum())
    if not n:
        raise ValueError("no token positions to take moments over")
    mean = torch.stack(total).cpu() / n
    cov = torch.stack(second).cpu() / n - mean[:, :, None] * mean[:, None, :]
    shape = (len(lms), n_head, mean.shape[1] // (len(lms) * n_head))
    return ZMoments(mean.view(n_layer, *shape), cov.view(n_layer, *shape, *shape), n)


def _diagonal_blocks(cov: Tensor) -> Float[Tensor, "layer head d_head d_head"]:
    """Each head's own covariance block of a (layer, head, d_head, head, d_head) array."""
    heads = torch.arange(cov.shape[1])
    return cov[:, heads, :, heads, :].transpose(0, 1)


def cka_similarity(moments: ZMoments, a: int, b: int) -> Float[np.ndarray, "layer head head"]:
    """Linear CKA of every head's z in model `a` with every head's z in model `b` (indices
    into the models of `moments`), same layer: ‖Σ_ab‖²_F / (‖Σ_aa‖_F ‖Σ_bb‖_F)."""
    cov = moments.cov
    cross = cov[:, a, :, :, b].pow(2).sum((2, 4))  # (layer, head_a, head_b)
    norms = [_diagonal_blocks(cov[:, m, :, :, m]).pow(2).sum((2, 3)).sqrt() for m in (a, b)]
    return _ratio(cross, norms[0][:, :, None] * norms[1][:, None, :])


def output_similarity(
    moments: ZMoments, a: int, b: int, w_o: tuple[Tensor, Tensor]
) -> Float[np.ndarray, "layer head head"]:
    """Pearson correlation of every head's output (z @ W_O) in model `a` with every head's
    in model `b`, same layer; `w_o`: the two models' (layer, head, d_head, d_model) W_O."""
    cov = moments.cov
    wa, wb = (w.double() for w in w_o)
    cross = torch.einsum("lhdge,lhdm,lgem->lhg", cov[:, a, :, :, b], wa, wb)
    var = [
        torch.einsum("lhde,lhdm,lhem->lh", _diagonal_blocks(cov[:, m, :, :, m]), w, w)
        for m, w in ((a, wa), (b, wb))
    ]
    return _ratio(cross, (var[0][:, :, None] * var[1][:, None, :]).clamp(min=0).sqrt())


# ---------------------------------------------------------------------------- known answers


def planted_permutation(n_layer: int, n_head: int, seed: int) -> list[list[int]]:
    """A random permutation of each layer's heads that moves at least one (`seed`)."""
    rng = np.random.default_rng([seed, 2])
    perms = []
    for _ in range(n_layer):
        perm = rng.permutation(n_head)
        while n_head > 1 and (perm == np.arange(n_head)).all():
            perm = rng.permutation(n_head)
        perms.append([int(h) for h in perm])
    return perms


def hit_rate(partners: np.ndarray, truth: np.ndarray) -> float:
    """Share of heads whose partner is the true one; both (layer, head)."""
    return float((partners == truth).mean())


@dataclass
class SignatureComparison:
    """Every signature's matching of model a's heads to model b's, and its known answers."""

    similarity: dict[str, np.ndarray]
    """Signature -> (layer, head of a, head of b) similarity."""
    partners: dict[str, np.ndarray]
    """Signature -> (layer, head of a): the within-layer Hungarian partner in b."""
    planted: dict[str, float]
    """Signature -> hit rate on a's head-permuted copy (1.0: the permutation undone)."""
    permutation: list[list[int]]
    """The planted permutation: the copy's head i of layer l is a's head permutation[l][i]."""
    positions: int
    """Token positions the activation signatures average over."""
    same_index: dict[str, float] = field(init=False)
    """Signature -> share of a's heads paired with b's head of the same index (on a
    same-init twin pair: the identity hit rate)."""

    def __post_init__(self) -> None:
        self.same_index = {
            name: hit_rate(p, np.arange(p.shape[1])[None, :]) for name, p in self.partners.items()
        }


def similarities(
    models: Sequence[Any], profiles: Sequence[ProfileSums], moments: ZMoments, a: int, b: int
) -> dict[str, np.ndarray]:
    """Every signature of models[a] against models[b] (`profiles` and `moments` of all)."""
    w_o = tuple(as_lm(models[m]).head_weights()[:, 3].cpu() for m in (a, b))
    prof = [profiles[m].profiles().numpy() for m in (a, b)]
    return {
        "profile": cosine_matrix(prof[0], prof[1]),
        "ov": circuit_similarity(models[a], models[b], "ov"),
        "qk": circuit_similarity(models[a], models[b], "qk"),
        "output": output_similarity(moments, a, b, (w_o[0], w_o[1])),
        "cka": cka_similarity(moments, a, b),
    }


def compare_signatures(
    model_a: Any,
    model_b: Any,
    ids: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
    special: Bool[Tensor, "batch pos"],
    *,
    profiles: Sequence[ProfileSums] | None = None,
    n_bins: int = 20,
    batch_size: int = 32,
    seed: int = 0,
) -> SignatureComparison:
    """Every signature of model a against model b on the same sequences, and each one's
    hit rate on a head-permuted copy of a (`profiles`: a's and b's, when already made)."""
    lm = as_lm(model_a)
    perms = planted_permutation(lm.n_layer, lm.n_head, seed)
    models = [model_a, model_b, lm.permute_heads(perms).model]

    def profile(model: Any) -> ProfileSums:
        return attention_profile_sums(
            model, ids, lengths, special, n_bins=n_bins, batch_size=batch_size
        )

    sums = [*(profiles or map(profile, models[:2])), profile(models[2])]
    moments = z_moments(models, ids, lengths, batch_size)
    pair = similarities(models, sums, moments, 0, 1)
    planted = similarities(models, sums, moments, 0, 2)
    truth = np.argsort(np.array(perms), axis=1)  # a's head h went to the copy's truth[l, h]
    return SignatureComparison(
        similarity=pair,
        partners={name: within_layer_matching(s) for name, s in pair.items()},
        planted={name: hit_rate(within_layer_matching(s), truth) for name, s in planted.items()},
        permutation=perms,
        positions=moments.positions,
    )


# ---------------------------------------------------------------------------- adoption


@dataclass
class Adoption:
    """Which signature aligns heads across models, and the known answers that chose it."""

    adopted: str
    identity: dict[str, float]
    """Signature -> identity hit rate on the same-init twin pairs."""
    planted: dict[str, float]
    """Signature -> its worst hit rate on a planted permutation."""
    reason: str
    """Why, in one sentence."""


def adopt(identity: Mapping[str, float], planted: Mapping[str, float]) -> Adoption:
    """The alignment: the basis-free signature with the best twin identity hit rate, if it
    undoes every planted permutation and beats the attention profile's rate; else the
    profile. Ties go to the profile, then to `SIGNATURES` order."""
    base = identity[BASELINE]
    candidates = [
        s
        for s in SIGNATURES
        if s != BASELINE and s in BASIS_FREE and planted.get(s) == 1.0 and identity.get(s, 0) > base
    ]
    if candidates:
        best = max(candidates, key=lambda s: identity[s])
        reason = (
            f"{best} pairs {identity[best]:.0%} of a same-init twin's heads with their own "
            f"index (attention profile: {base:.0%}) and undoes a planted permutation"
        )
    else:
        best = BASELINE
        reason = (
            f"no basis-free signature beats the attention profile's {base:.0%} of a same-init "
            "twin's heads at their own index while undoing a planted permutation"
        )
    return Adoption(best, dict(identity), dict(planted), reason)
