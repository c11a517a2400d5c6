"""The statistics of a steering effect: paired deltas with their SEM over tasks, the
random-direction null, and the rule that decides whether an effect lies outside it.

A feature direction only counts as doing something when its effect is beyond both its
own sampling noise and what random directions of the same norm do (`RULE`); otherwise
the verdict says "null result" in as many words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

RULE = "outside_null = |delta - null_mean| > 2 * max(sem, null_std)"


@dataclass
class Delta:
    """A paired effect: mean over positions of intervened minus clean, with its SEM."""

    delta: float
    """Mean difference."""
    sem: float
    """Standard error over tasks (per-task mean difference), so a task counts once."""
    n_positions: int
    """Positions averaged."""
    n_tasks: int
    """Tasks (sequences) they come from."""


@dataclass
class NullComparison:
    """One variant's effect against its random-direction null."""

    effect: Delta
    """The feature direction's effect."""
    null_deltas: list[float]
    """The same intervention with each random direction."""
    null_mean: float
    null_std: float
    z: float
    """(delta - null_mean) / null_std."""
    outside_null: bool
    """See `RULE`."""
    verdict: str
    """One line saying what the numbers mean, null or not."""


def paired_delta(clean: Tensor, steered: Tensor, rows: Tensor) -> Delta:
    """Mean of steered - clean with the SEM over tasks (per-task mean difference)."""
    diff = (steered - clean).double()
    if diff.numel() == 0:
        return Delta(float("nan"), float("nan"), 0, 0)
    per_task = torch.stack([diff[rows == r].mean() for r in rows.unique()])
    n = per_task.numel()
    sem = float(per_task.std(correction=1) / math.sqrt(n)) if n > 1 else float("nan")
    return Delta(float(diff.mean()), sem, int(diff.numel()), n)


def compare_to_null(effect: Delta, null_deltas: list[float], what: str) -> NullComparison:
    """z-score and the `RULE` verdict of one effect against its null."""
    null = np.asarray(null_deltas, dtype=float)
    if not np.isfinite(null).any():
        verdict = f"no null drawn: {what} changes by {effect.delta:+.4f} ± {effect.sem:.4f} (SEM)"
        return NullComparison(effect, [], math.nan, math.nan, math.nan, False, verdict)
    mean, std = float(null.mean()), float(null.std(ddof=1)) if len(null) > 1 else 0.0
    gap = effect.delta - mean
    z = gap / std if std > 0 else (0.0 if gap == 0 else math.copysign(math.inf, gap))
    band = 2 * max(effect.sem if math.isfinite(effect.sem) else 0.0, std)
    outside = abs(gap) > band
    if outside:
        verdict = (
            f"effect: {what} changes by {effect.delta:+.4f} (z = {z:+.1f}), outside the "
            f"null band {mean:+.4f} ± {band:.4f}"
        )
    else:
        verdict = (
            f"null result: {what} changes by {effect.delta:+.4f}, within the null band "
            f"{mean:+.4f} ± {band:.4f} (z = {z:+.1f}); the feature direction does no "
            f"more than a random direction of the same norm"
        )
    return NullComparison(effect, [float(v) for v in null], mean, std, z, outside, verdict)


def random_directions(n: int, d_model: int, seed: int) -> Float[Tensor, "n d_model"]:
    """Unit vectors drawn uniformly on the sphere (normalised Gaussians)."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n, d_model, generator=gen, dtype=torch.float64)
    return (dirs / dirs.norm(dim=-1, keepdim=True)).float()
