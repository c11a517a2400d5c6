"""Matching and statistics of the head-swap inventory (`analysis.headswap`): profile
cosines, Hungarian matchings, the task bootstrap and the permutation null. The module
docstring of `analysis.headswap` says what each statistic means."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from interpgpt.analysis.controls import benjamini_hochberg
from interpgpt.analysis.headswap.profiles import ProfileSums

ROLES = ("a", "b")
"""The two models of the core, whatever they are; the study names them standard and ADHD."""


# ---------------------------------------------------------------------------- matching


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of every row of `a` (..., n, bin) with every row of `b` (..., m, bin); 0 when
    either row is all zero, like the notebook's `cosine`."""
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    a_unit = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    b_unit = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return a_unit @ np.swapaxes(b_unit, -1, -2)


def within_layer_matching(cos: np.ndarray) -> np.ndarray:
    """(layer, head, head) cosines -> (layer, head) partner in b of each head of a."""
    return np.stack([linear_sum_assignment(block, maximize=True)[1] for block in cos])


@dataclass
class HeadMatch:
    """A head of model a and its partner in model b."""

    a: tuple[int, int]
    """(layer, head) in model a."""
    b: tuple[int, int]
    """(layer, head) of its partner in model b."""
    cosine: float
    """Profile cosine of the pair."""
    same_index: float
    """Cosine of a's head with b's head at the same index."""
    partner_same_index: float
    """Cosine of b's partner with a's head at the partner's index."""
    stability: float | None = None
    """Share of task-bootstrap resamples that match the same pair (None: not computed)."""
    moved: bool = False
    """Partner index differs and cosine - same_index >= move_margin."""

    @property
    def label(self) -> str:
        return f"a L{self.a[0]}H{self.a[1]} → b L{self.b[0]}H{self.b[1]}"


def _head_match(cos4: np.ndarray, a: tuple[int, int], b: tuple[int, int], margin: float):
    cosine, same = float(cos4[a + b]), float(cos4[a + a])
    return HeadMatch(
        a=a,
        b=b,
        cosine=cosine,
        same_index=same,
        partner_same_index=float(cos4[b + b]),
        moved=a != b and cosine - same >= margin,
    )


def match_heads(cos4: np.ndarray, margin: float) -> tuple[list[HeadMatch], list[HeadMatch]]:
    """Within-layer and global one-to-one matchings from the (L, H, L, H) cosine array."""
    n_layer, n_head = cos4.shape[:2]
    per_layer = within_layer_matching(np.stack([cos4[i, :, i, :] for i in range(n_layer)]))
    within = [
        _head_match(cos4, (i, h), (i, int(per_layer[i, h])), margin)
        for i in range(n_layer)
        for h in range(n_head)
    ]
    cols = linear_sum_assignment(cos4.reshape(n_layer * n_head, -1), maximize=True)[1]
    global_ = [
        _head_match(cos4, divmod(row, n_head), divmod(int(col), n_head), margin)
        for row, col in enumerate(cols)
    ]
    return within, global_


def best_partners(cos4: np.ndarray) -> dict[str, list[dict]]:
    """Each head's most similar head in the other model (not one-to-one)."""
    n_layer, n_head = cos4.shape[:2]
    flat = cos4.reshape(n_layer * n_head, n_layer * n_head)
    out: dict[str, list[dict]] = {}
    for name, matrix in zip(ROLES, (flat, flat.T), strict=True):
        out[name] = [
            {"head": _hl(row, n_head), "partner": _hl(int(col), n_head), "cosine": matrix[row, col]}
            for row, col in enumerate(matrix.argmax(1))
        ]
    return out


def _hl(flat_index: int, n_head: int) -> str:
    layer, head = divmod(flat_index, n_head)
    return f"L{layer}H{head}"


# ---------------------------------------------------------------------------- statistics


@dataclass
class LayerStats:
    """Matched vs same-index profile cosine of one layer, with its uncertainty."""

    layer: int
    matched_mean: float
    """Mean cosine of the within-layer Hungarian pairs."""
    same_index_mean: float
    """Mean cosine of head h of a with head h of b."""
    gap: float
    """matched_mean - same_index_mean."""
    n_moved: int
    """Heads of this layer that moved (see module docstring)."""
    matched_ci: tuple[float, float] | None = None
    """95% task-bootstrap percentile interval of matched_mean."""
    same_index_ci: tuple[float, float] | None = None
    """95% task-bootstrap percentile interval of same_index_mean."""
    gap_ci: tuple[float, float] | None = None
    """95% task-bootstrap percentile interval of the gap."""
    null_mean: float | None = None
    """Mean cosine of a uniformly random within-layer assignment."""
    null_std: float | None = None
    """Its standard deviation over assignments."""
    p_matched: float | None = None
    """Share of random assignments with mean cosine >= matched_mean."""
    p_same_index: float | None = None
    """Share of random assignments with mean cosine >= same_index_mean."""
    q_matched: float | None = None
    """`p_matched` as a Benjamini-Hochberg q-value over the layers (one test per layer)."""
    q_same_index: float | None = None
    """`p_same_index` as a Benjamini-Hochberg q-value over the layers."""


def permutation_null(block: np.ndarray, samples: int, rng: np.random.Generator):
    """Mean cosine of random one-to-one assignments of a (head, head) block; exhaustive
    when head! <= samples. Returns (means, exact)."""
    n_head = block.shape[0]
    if math.factorial(n_head) <= samples:
        perms = np.array(list(itertools.permutations(range(n_head))))
        exact = True
    else:
        perms = rng.permuted(np.tile(np.arange(n_head), (samples, 1)), axis=1)
        exact = False
    return block[np.arange(n_head), perms].mean(1), exact


def _p_at_least(null: np.ndarray, observed: float, exact: bool) -> float:
    """Upper-tail p-value; a sampled null counts the observation itself (Phipson & Smyth)."""
    hits = int((null >= observed - 1e-12).sum())
    return hits / len(null) if exact else (hits + 1) / (len(null) + 1)


@dataclass
class Bootstrap:
    """Task-bootstrap replicates of the per-layer statistics."""

    matched: np.ndarray  # (sample, layer)
    same_index: np.ndarray  # (sample, layer)
    stability: np.ndarray  # (layer, head): share of resamples reproducing each pair


def bootstrap_layers(
    sums: tuple[ProfileSums, ProfileSums],
    partners: np.ndarray,
    samples: int,
    rng: np.random.Generator,
) -> Bootstrap:
    """Resample tasks with replacement and redo profiles, cosines and matching (`sums`:
    model a's and model b's)."""
    n = sums[0].sums.shape[0]
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(samples)])
    weights_t = torch.from_numpy(weights).double()
    pa, pb = (s.profiles_batch(weights_t).numpy() for s in sums)  # (sample, L, H, B)
    cos = cosine_matrix(pa, pb)  # (sample, layer, head, head): same-layer pairs only
    same = np.diagonal(cos, axis1=-2, axis2=-1).mean(-1)
    boot_partners = np.stack([within_layer_matching(c) for c in cos])  # (sample, layer, head)
    matched = np.take_along_axis(cos, boot_partners[..., None], -1)[..., 0].mean(-1)
    return Bootstrap(matched, same, (boot_partners == partners[None]).mean(0))


def _ci(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def layer_stats(
    cos4: np.ndarray,
    within: list[HeadMatch],
    boot: Bootstrap | None,
    *,
    seed: int,
    null_samples: int,
) -> list[LayerStats]:
    """Per layer: matched vs same-index cosine, their bootstrap CIs (with `boot`), and
    the permutation null of `null_samples` draws seeded by `seed` (none when 0)."""
    n_layer, n_head = cos4.shape[:2]
    rng = np.random.default_rng([seed, 1])
    stats = []
    for layer in range(n_layer):
        pairs = within[layer * n_head : (layer + 1) * n_head]
        matched = float(np.mean([p.cosine for p in pairs]))
        same = float(np.mean([p.same_index for p in pairs]))
        row = LayerStats(layer, matched, same, matched - same, sum(p.moved for p in pairs))
        if boot is not None:
            row.matched_ci = _ci(boot.matched[:, layer])
            row.same_index_ci = _ci(boot.same_index[:, layer])
            row.gap_ci = _ci(boot.matched[:, layer] - boot.same_index[:, layer])
        if null_samples:
            null, exact = permutation_null(cos4[layer, :, layer, :], null_samples, rng)
            row.null_mean, row.null_std = float(null.mean()), float(null.std())
            row.p_matched = _p_at_least(null, matched, exact)
            row.p_same_index = _p_at_least(null, same, exact)
        stats.append(row)
    if null_samples:  # every layer is tested at once: false-discovery-rate q-values
        for name in ("matched", "same_index"):
            q = benjamini_hochberg([getattr(s, f"p_{name}") for s in stats])
            for row, value in zip(stats, q, strict=True):
                setattr(row, f"q_{name}", float(value))
    return stats
