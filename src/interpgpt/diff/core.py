"""The analyses of any pair, each reduced to the statistics seed controls judge.

`diff_pair(a, b, texts)` runs, on two models of one tokenizer and shape (`analysis.lm`
adapters: our TaskGPT or any TransformerLens HookedTransformer), the library cores of the
pair analyses, reused as they are:

- output KL per position (`analysis.kl.source_kl`), summarised over each position set
  the caller names, and the positions where the models disagree most;
- the activation difference lens (`analysis.diff_lens.difference_lens`) over each set;
- the logit lens of a token set the caller names (`analysis.logit_lens.token_lens`);
- head attention profiles and their matching (`analysis.headswap`), the keys being a
  position set (default: each text's first position, the usual attention sink);
- the weight distance per block (`analysis.weights.compare.layer_distances`), the change
  from init when b is fine-tuned from a.

Every analysis yields scalar distances (`Statistic`). Given control models (twins of a:
its recipe, another seed or data order), each statistic is also computed between a and
every twin, and counts as a finding only when the pair's value exceeds every twin's
(`analysis.controls.verdict`, the study's one rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from interpgpt.analysis.controls import BEYOND, verdict
from interpgpt.analysis.diff_lens import DiffLensResult, difference_lens
from interpgpt.analysis.headswap.inventory import HeadswapConfig, Inventory, build_inventory
from interpgpt.analysis.headswap.profiles import attention_profile_sums
from interpgpt.analysis.kl import (
    HighKL,
    KLResult,
    RoleStats,
    SourceKL,
    predicting_positions,
    set_stats,
    source_kl,
    top_positions,
)
from interpgpt.analysis.lm import TextSet, as_lm, check_pair, resolve_layer
from interpgpt.analysis.logit_lens import TokenLens, token_lens
from interpgpt.analysis.weights.compare import LayerDistances, layer_distances
from interpgpt.errors import UserError

TEXTS = "texts"
"""The name of the one evaluation set (the caller's texts) in the KL result."""
NO_CONTROLS = "no controls"
"""The verdict of a statistic when no control model was given."""


@dataclass
class Statistic:
    """One scalar distance between the pair, with the same distance between a and each
    control, and its verdict."""

    name: str
    description: str
    value: float
    controls: list[float] = field(default_factory=list)
    verdict: str = NO_CONTROLS

    @property
    def finding(self) -> bool:
        return self.verdict == BEYOND


@dataclass
class PairAnalyses:
    """What the analyses computed on one pair of models (the pair itself, or a and a twin)."""

    labels: tuple[str, str]
    kl: dict[str, RoleStats]
    """Position set -> output KL statistics."""
    top_kl: list[HighKL]
    """The positions of highest symmetric KL, readable."""
    lens: DiffLensResult
    token_lens: dict[str, TokenLens]
    """Per role (`a`, `b`; with tokens named), the lens of the token set."""
    inventory: Inventory
    weights: LayerDistances
    lens_layer: dict[str, int]
    """Position set -> the layer read (the caller's, else where |δ| is largest)."""


@dataclass
class PairDiff:
    """The pair's analyses, the controls' statistics and the verdicts."""

    pair: PairAnalyses
    statistics: dict[str, Statistic]
    control_labels: list[str]
    tokens: list[int]

    @property
    def findings(self) -> list[Statistic]:
        return [s for s in self.statistics.values() if s.finding]


def analyse(
    a: Any,
    b: Any,
    texts: TextSet,
    *,
    tokens: Sequence[int] = (),
    layer: float | str | None = None,
    profile_keys: str = "",
    top_k: int = 10,
    bins: int = 10,
    batch_size: int = 16,
) -> PairAnalyses:
    """Every pair analysis on `a` and `b` over `texts` (no files)."""
    a, b = as_lm(a), as_lm(b)
    check_pair(a, b)
    sets = texts.positions
    source = source_kl(a, b, texts, batch_size=batch_size, roles=predicting_positions(texts))
    tokenizer = a.tokenizer or b.tokenizer
    top = top_positions_of(source, texts, tokenizer, top_k) if tokenizer is not None else []
    n_tokens = tokenizer.vocab_size if tokenizer is not None else None
    lens = difference_lens(
        a,
        b,
        texts,
        names=(a.label, b.label),
        top_k=top_k,
        batch_size=batch_size,
        n_tokens=n_tokens,
        position_sets=sets,
    )
    fixed = None if layer in (None, "") else resolve_layer(layer, a.n_layer)
    lens_layer = {s: lens.max_norm_layer(s) if fixed is None else fixed for s in sets}
    lenses = (
        {
            r: token_lens(m, texts, tokens, sets, batch_size=batch_size)
            for r, m in (("a", a), ("b", b))
        }
        if tokens
        else {}
    )
    return PairAnalyses(
        labels=(a.label, b.label),
        kl=set_stats(source, sets),
        top_kl=top,
        lens=lens,
        token_lens=lenses,
        inventory=head_inventory(a, b, texts, profile_keys, bins, batch_size),
        weights=layer_distances(a.model, b.model),
        lens_layer=lens_layer,
    )


def top_positions_of(source: SourceKL, texts: TextSet, tokenizer, k: int) -> list[HighKL]:
    """`kl.top_positions` of the one source, the texts."""
    result = KLResult(("a", "b"), {TEXTS: source}, {}, {})
    return top_positions(result, {TEXTS: texts}, tokenizer, k, window=8)


def head_inventory(
    a: Any, b: Any, texts: TextSet, keys: str, bins: int, batch_size: int
) -> Inventory:
    """Each head's attention-mass profile on the key positions, in both models, matched
    (the head-swap inventory's cosines and within-layer Hungarian matching)."""
    if keys and keys not in texts.positions:
        raise UserError(f"--profile-keys {keys}: no such position set in the texts")
    key_mask = texts.positions[keys] if keys else torch.zeros_like(texts.ids, dtype=torch.bool)
    if not keys:
        key_mask[:, 0] = True
    sums = {
        role: attention_profile_sums(
            m.model, texts.ids, texts.lengths, key_mask, n_bins=bins, batch_size=batch_size
        )
        for role, m in zip(("standard", "adhd"), (a, b), strict=True)  # headswap's role names
    }
    return build_inventory(sums, HeadswapConfig(bins=bins, null_samples=0, bootstrap_samples=0))


def statistics(p: PairAnalyses) -> dict[str, tuple[str, float]]:
    """The pair's scalar distances: name -> (description, value)."""
    out: dict[str, tuple[str, float]] = {}
    for s, stats in p.kl.items():
        out[f"kl/{s}"] = (f"mean symmetric KL at {s} positions (nats)", stats.mean_symmetric)
    for s, layer in p.lens_layer.items():
        relative = p.lens.norms[s][layer] / p.lens.resid_norms[s][layer]
        out[f"diff_lens/{s}"] = (
            f"|mean resid difference| / mean |resid| at {s} positions, layer {layer}",
            relative,
        )
    if p.token_lens:
        la, lb = p.token_lens["a"], p.token_lens["b"]
        for s in la.p:
            gap = np.abs(np.asarray(lb.p[s]) - np.asarray(la.p[s]))
            out[f"token_lens/{s}"] = (
                f"largest |ΔP(token set)| over layers at {s} positions",
                float(np.nanmax(gap)) if np.isfinite(gap).any() else math.nan,
            )
    same = float(np.mean([layer.same_index_mean for layer in p.inventory.layers]))
    out["heads"] = ("1 − mean same-index attention-profile cosine", 1.0 - same)
    out["weights"] = ("‖θ_b − θ_a‖ / ‖θ_a‖ over every parameter", p.weights.total)
    return out


def diff_pair(
    a: Any,
    b: Any,
    texts: TextSet,
    *,
    controls: Sequence[Any] = (),
    tokens: Sequence[int] = (),
    layer: float | str | None = None,
    profile_keys: str = "",
    top_k: int = 10,
    bins: int = 10,
    batch_size: int = 16,
) -> PairDiff:
    """The pair analyses of `a` and `b` (TaskGPTs, HookedTransformers or `analysis.lm`
    adapters sharing a tokenizer and a shape) on `texts`, each statistic judged against
    the same statistic between `a` and each of `controls` (twins of `a`); pure."""
    a = as_lm(a, label="a")
    twins = [as_lm(c, label=f"control {i}") for i, c in enumerate(controls)]
    for twin in twins:
        check_pair(a, twin)
    options: dict[str, Any] = dict(
        tokens=tokens,
        layer=layer,
        profile_keys=profile_keys,
        top_k=top_k,
        bins=bins,
        batch_size=batch_size,
    )
    pair = analyse(a, as_lm(b, label="b"), texts, **options)
    values = statistics(pair)
    null = [statistics(analyse(a, twin, texts, **options)) for twin in twins]
    stats = {}
    for name, (description, value) in values.items():
        within = [n[name][1] for n in null]
        stat = Statistic(name, description, value, within)
        if within and all(map(math.isfinite, [value, *within])):
            stat.verdict = verdict(value, within)
        stats[name] = stat
    return PairDiff(pair, stats, [t.label for t in twins], list(tokens))
