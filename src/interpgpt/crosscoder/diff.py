"""Per-latent measurements of a crosscoder on a pair, and the classes they give.

The pure core of a crosscoder model diff (`analysis.crosscoder_diff` feeds it sequences
and writes the result): from normalised activations of both models it measures each
latent's decoder geometry (norms, relative norm ‖d_j^1‖ / (‖d_j^0‖ + ‖d_j^1‖), cosine),
Latent Scaling (`scaling.py`) and activation frequencies, then classes the latents by
relative norm (Lindsey et al. 2024) and confirms the exclusive ones when both Latent
Scaling ratios agree (Minder, Dumas et al. 2025, arXiv 2504.02922). Model 0 is "std" and
model 1 "adhd" in the class names, whatever the two models are (a model and its twin).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interpgpt.crosscoder.config import Thresholds
from interpgpt.crosscoder.model import BatchTopKCrosscoder
from interpgpt.crosscoder.scaling import LatentScaling, ScalingSums

CLASSES = ("shared", "std_only", "adhd_only")
"""Classes of a live latent; a latent active on no measured token is "dead"."""


@dataclass
class LatentTable:
    """Per-latent measurements of a crosscoder on a pair (tensors over d_latent)."""

    norms: Float[Tensor, "d_latent model"]
    """Decoder norms ‖d_j^m‖ (normalised units)."""
    rel_norm: Float[Tensor, " d_latent"]
    """‖d_j^adhd‖ / (‖d_j^std‖ + ‖d_j^adhd‖)."""
    cosine: Float[Tensor, " d_latent"]
    """cos(d_j^std, d_j^adhd)."""
    scaling: LatentScaling
    freq: dict[str, Float[Tensor, " d_latent"]]
    """Sequence set -> fraction of its tokens where the latent is active."""
    onset_freq: dict[str, Float[Tensor, " d_latent"]]
    """Sequence set -> the same at its onset positions."""
    n_tokens: dict[str, int]
    n_onsets: dict[str, int]

    @property
    def live(self) -> Bool[Tensor, " d_latent"]:
        return self.scaling.n_active > 0


@torch.no_grad()
def latent_table(
    crosscoder: BatchTopKCrosscoder,
    xs: Mapping[str, Float[Tensor, "n model d_model"]],
    onsets: Mapping[str, Bool[Tensor, " n"]],
    chunk: int = 4096,
) -> LatentTable:
    """Decoder geometry, Latent Scaling over all tokens of `xs` (normalised activations
    per sequence set), and frequencies over all tokens and at the `onsets`."""
    sums = ScalingSums(crosscoder)
    freq, onset_freq, n_tokens, n_onsets = {}, {}, {}, {}
    for name, x_all in xs.items():
        fired = torch.zeros(crosscoder.cfg.d_latent, dtype=torch.float64)
        at_onset = torch.zeros_like(fired)
        for x, onset in zip(x_all.split(chunk), onsets[name].split(chunk), strict=True):
            active = (sums.update(x) > 0).cpu()
            fired += active.sum(0)
            at_onset += active[onset].sum(0)
        n_tokens[name], n_onsets[name] = len(x_all), int(onsets[name].sum())
        freq[name] = (fired / max(n_tokens[name], 1)).float()
        onset_freq[name] = (at_onset / max(n_onsets[name], 1)).float()
    W = crosscoder.W_dec.detach().cpu()
    norms = W.norm(dim=-1)
    return LatentTable(
        norms=norms,
        rel_norm=norms[:, 1] / norms.sum(-1).clamp(min=1e-12),
        cosine=torch.nn.functional.cosine_similarity(W[:, 0], W[:, 1], dim=-1),
        scaling=sums.result(),
        freq=freq,
        onset_freq=onset_freq,
        n_tokens=n_tokens,
        n_onsets=n_onsets,
    )


class DiffCounts(NamedTuple):
    """The diff's headline numbers."""

    n_latents: int
    n_live: int
    n_dead: int
    n_shared: int
    n_std_only: int
    n_adhd_only: int
    n_std_only_confirmed: int
    n_adhd_only_confirmed: int


@dataclass
class LatentClasses:
    """What `classify` says of every latent."""

    labels: list[str]
    """Per latent: "shared", "std_only", "adhd_only" or "dead"."""
    confirmed: Bool[Tensor, " d_latent"]
    """Exclusive and confirmed by Latent Scaling."""

    def counts(self) -> DiffCounts:
        n = {c: self.labels.count(c) for c in (*CLASSES, "dead")}
        exclusive = {c: [i for i, label in enumerate(self.labels) if label == c]
                     for c in ("std_only", "adhd_only")}  # fmt: skip
        return DiffCounts(
            n_latents=len(self.labels),
            n_live=len(self.labels) - n["dead"],
            n_dead=n["dead"],
            n_shared=n["shared"],
            n_std_only=n["std_only"],
            n_adhd_only=n["adhd_only"],
            n_std_only_confirmed=int(self.confirmed[exclusive["std_only"]].sum()),
            n_adhd_only_confirmed=int(self.confirmed[exclusive["adhd_only"]].sum()),
        )


def classify(table: LatentTable, thresholds: Thresholds) -> LatentClasses:
    """Classes from the relative decoder norm; confirmation from Latent Scaling."""
    margin = thresholds.exclusive_margin
    labels = [
        "dead" if not live else "std_only" if r < margin else "adhd_only" if r > 1 - margin
        else "shared"
        for live, r in zip(table.live.tolist(), table.rel_norm.tolist(), strict=True)
    ]  # fmt: skip
    nu_e = table.scaling.nu("error").abs()
    nu_r = table.scaling.nu("reconstruction").abs()
    agree = (nu_e < thresholds.max_nu_error) & (nu_r < thresholds.max_nu_reconstruction)
    exclusive = torch.tensor([label in ("std_only", "adhd_only") for label in labels])
    return LatentClasses(labels, exclusive & agree)
