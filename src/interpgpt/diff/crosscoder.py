"""The crosscoder diff of any pair: latents whose decoder lives in one model only.

The project's BatchTopK crosscoder (`interpgpt.crosscoder`: Lindsey et al. 2024 with
BatchTopK, Minder, Dumas et al. 2025, arXiv 2504.02922) is trained here on both models'
activations at one layer over the texts (`crosscoder.training.fit`, on the texts'
activations cycled; small defaults), and every latent is measured and classed by the
same pure core the study uses (`crosscoder.diff.latent_table` and `classify`): the
relative decoder norm ‖d_j^b‖ / (‖d_j^a‖ + ‖d_j^b‖) calls a latent a-only or b-only,
and Latent Scaling confirms it only when the other model carries under a set share of it
in its reconstruction error and in its reconstruction. The confirmed counts are the
statistics the seed controls judge: a crosscoder of a and its twin, trained the same
way, also finds "exclusive" latents, and a pair's count means something only beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from interpgpt.analysis.diff_lens.run import read_lens
from interpgpt.analysis.lm import TextSet, as_lm, hook_activations
from interpgpt.crosscoder.diff import (
    DiffCounts,
    LatentClasses,
    LatentTable,
    Thresholds,
    classify,
    latent_table,
)
from interpgpt.crosscoder.model import BatchTopKCrosscoder, ModelRecord, model_sha256
from interpgpt.crosscoder.training import CrosscoderHyperparams, fit, pair_hooks, stack_pair
from interpgpt.sae.activations import memory_stream
from interpgpt.sae.topk import sae_hook_name

TEXTS = "texts"
CLASS_OF_ROLE = {"a": "std_only", "b": "adhd_only"}
"""The crosscoder core's class names: model 0 is "std", model 1 "adhd", whatever the pair."""


@dataclass(frozen=True)
class CrosscoderSettings:
    """How the pair's crosscoder is trained and its latents classed."""

    d_latent: int = 64
    """Latents."""
    k: int = 8
    """Mean active latents per token (BatchTopK)."""
    tokens: int = 30_000
    """Training tokens (the texts' activations, cycled)."""
    batch_size: int = 64
    """Tokens per optimiser step."""
    lr: float = 4e-3
    """Adam learning rate."""
    # Minder, Dumas et al. 2025's criterion, Δnorm = ((‖d^b‖ − ‖d^a‖) / max + 1) / 2 ≥ 0.9,
    # i.e. the other model's decoder at most 0.2 of the own one's: relative norm beyond
    # 5/6. The study keeps Lindsey et al.'s 0.1; a crosscoder trained on a few texts does
    # not shrink the other model's decoder that far (on the planted pair of the tests its
    # b-only latents reach 0.84-0.87, with both Latent Scaling ratios under 0.05).
    exclusive_margin: float = 1 / 6
    """a-only when the relative decoder norm is below this, b-only above 1 minus it."""
    max_nu_error: float = 0.1
    """Confirmed exclusive: |ν^ε| below this ..."""
    max_nu_reconstruction: float = 0.2
    """... and |ν^r| below this (Latent Scaling)."""
    top_n: int = 5
    """Exclusive latents per side listed with the tokens they promote."""
    seed: int = 0
    """Seed of the init and of the activation order."""


@dataclass
class ExclusiveLatent:
    """One confirmed exclusive latent."""

    latent: int
    rel_norm: float
    """‖d^b‖ / (‖d^a‖ + ‖d^b‖)."""
    nu_error: float
    nu_reconstruction: float
    rates: dict[str, float]
    """Position set -> share of its positions where the latent is active."""
    promoted: list[int]
    """Token ids its decoder row in its model promotes most (that model's final norm and
    unembedding)."""
    confirmed: bool = True
    """Exclusive by relative norm and confirmed by Latent Scaling (False: only the live
    latent leaning most to the model, listed when none is confirmed)."""


@dataclass
class CrosscoderDiff:
    """What the crosscoder diff of one pair found (no files)."""

    layer: int
    labels: tuple[str, str]
    table: LatentTable
    classes: LatentClasses
    counts: DiffCounts
    fve: list[float]
    """Fraction of each model's activation variance the crosscoder explains (on the texts)."""
    top: dict[str, list[ExclusiveLatent]] = field(default_factory=dict)
    """Role -> its confirmed exclusive latents, most exclusive first; when there are none,
    the live latents leaning most to it (`confirmed` False)."""


def pair_activations(
    a: Any, b: Any, texts: TextSet, layer: int, batch_size: int = 16
) -> torch.Tensor:
    """Both models' residual streams after block `layer` at every real position of `texts`,
    (n, model, d_model): row t is one token in both models."""
    hook = sae_hook_name(layer)
    return torch.stack(
        [hook_activations(m, texts, hook, batch_size)[texts.valid] for m in (a, b)], dim=1
    )


def train_pair_crosscoder(
    a: Any, b: Any, x: torch.Tensor, layer: int, settings: CrosscoderSettings
) -> BatchTopKCrosscoder:
    """The project's BatchTopK crosscoder on raw activations `x` (n, model, d_model)."""
    lm_a, lm_b = as_lm(a), as_lm(b)
    batch = min(settings.batch_size, x.shape[0])
    hyper = CrosscoderHyperparams(
        d_latent=settings.d_latent, k=min(settings.k, settings.d_latent),
        tokens=max(settings.tokens, batch), batch_size=batch, lr=settings.lr,
        dead_tokens=max(batch, x.shape[0]), seed=settings.seed, device="cpu", autocast=False,
    )  # fmt: skip
    hooks = pair_hooks(sae_hook_name(layer))
    stream = memory_stream({h: x[:, m] for m, h in enumerate(hooks)}, batch, settings.seed)
    records = tuple(ModelRecord(m.label, "", model_sha256(m.model)) for m in (lm_a, lm_b))
    return fit((stack_pair(s, hooks) for s in stream), records, layer, hyper).crosscoder  # type: ignore[arg-type]


@torch.no_grad()
def crosscoder_diff(
    a: Any,
    b: Any,
    texts: TextSet,
    layer: int,
    settings: CrosscoderSettings,
    batch_size: int = 16,
) -> CrosscoderDiff:
    """Train a crosscoder on `a` and `b` at `layer` over `texts`, and class its latents."""
    lm_a, lm_b = as_lm(a), as_lm(b)
    raw = pair_activations(lm_a, lm_b, texts, layer, batch_size)
    with torch.enable_grad():
        cc = train_pair_crosscoder(lm_a, lm_b, raw, layer, settings).eval()
    x = cc.normalise(raw)
    table = latent_table(cc, {TEXTS: x}, {TEXTS: torch.ones(len(x), dtype=torch.bool)})
    thresholds = Thresholds(
        settings.exclusive_margin, settings.max_nu_error, settings.max_nu_reconstruction
    )
    classes = classify(table, thresholds)
    recon = cc(x)
    fve = [
        float(1 - (x[:, m] - recon[:, m]).pow(2).sum() / (x[:, m] - x[:, m].mean(0)).pow(2).sum())
        for m in range(2)
    ]
    diff = CrosscoderDiff(layer, (lm_a.label, lm_b.label), table, classes, classes.counts(), fve)
    active = cc.encode(x) > 0  # (n, d_latent)
    masks = {s: m[texts.valid] for s, m in texts.positions.items()}
    tokenizer = lm_a.tokenizer or lm_b.tokenizer
    n_tokens = tokenizer.vocab_size if tokenizer is not None else None
    nu_e, nu_r = table.scaling.nu("error"), table.scaling.nu("reconstruction")
    for index, (role, lm) in enumerate((("a", lm_a), ("b", lm_b))):
        wanted = CLASS_OF_ROLE[role]
        latents = [
            j
            for j, label in enumerate(classes.labels)
            if label == wanted and bool(classes.confirmed[j])
        ]
        confirmed = bool(latents)
        if not latents:
            latents = [j for j, label in enumerate(classes.labels) if label != "dead"]

        def lean(j: int, index: int = index) -> float:
            return abs(float(table.rel_norm[j]) - (1 - index))

        latents.sort(key=lean, reverse=True)
        direction = cc.denormalise(cc.W_dec.detach())  # decoder rows in the models' units
        diff.top[role] = [
            ExclusiveLatent(
                j,
                float(table.rel_norm[j]),
                float(nu_e[j]),
                float(nu_r[j]),
                {s: float(active[m, j].float().mean()) if m.any() else 0.0
                 for s, m in masks.items()},
                read_lens(lm, direction[j, index], 5, n_tokens=n_tokens).promoted,
                confirmed,
            )
            for j in latents[: settings.top_n]
        ]  # fmt: skip
    return diff


def statistics(diff: CrosscoderDiff) -> dict[str, tuple[str, float]]:
    """The crosscoder's scalar distances: name -> (description, value)."""
    a, b = diff.labels
    c = diff.counts
    live = diff.table.live
    rel = diff.table.rel_norm[live]
    return {
        "crosscoder/a_lean": (
            f"largest share of a live latent's decoder norm in {a}'s decoder",
            float(1 - rel.min()) if len(rel) else float("nan"),
        ),
        "crosscoder/b_lean": (
            f"largest share of a live latent's decoder norm in {b}'s decoder",
            float(rel.max()) if len(rel) else float("nan"),
        ),
        "crosscoder/a_only": (
            f"crosscoder latents exclusive to {a}, confirmed by Latent Scaling (count)",
            float(c.n_std_only_confirmed),
        ),
        "crosscoder/b_only": (
            f"crosscoder latents exclusive to {b}, confirmed by Latent Scaling (count)",
            float(c.n_adhd_only_confirmed),
        ),
    }
