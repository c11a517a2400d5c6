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
  from init when b is fine-tuned from a;
- with SAEs (given, or trained on the texts), the features of each model's SAE that fire
  in that model only (`diff.saes`);
- with a crosscoder trained on the texts, the latents exclusive to each model, confirmed
  by Latent Scaling (`diff.crosscoder`);
- with the init both models were trained from, head matching, the loss barrier between
  them and each one's change from the init (`diff.weights`).

The SAEs and the crosscoder read one layer: the given SAEs', else the caller's, else
where the difference lens finds the mean difference over all positions largest.

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
from interpgpt.analysis.diff_lens.run import DiffLensResult, difference_lens
from interpgpt.analysis.headswap.inventory import Inventory, compare_profiles
from interpgpt.analysis.headswap.profiles import attention_profile_sums
from interpgpt.analysis.kl.run import (
    HighKL,
    KLResult,
    RoleStats,
    SourceKL,
    predicting_positions,
    set_stats,
    source_kl,
    top_positions,
)
from interpgpt.analysis.lm import ALL_POSITIONS, TextSet, as_lm, check_pair, resolve_layer
from interpgpt.analysis.logit_lens.run import TokenLens, token_lens
from interpgpt.analysis.weights.compare import LayerDistances, layer_distances
from interpgpt.diff import crosscoder as cc
from interpgpt.diff import saes as sd
from interpgpt.diff import weights as wv
from interpgpt.diff.crosscoder import CrosscoderDiff, CrosscoderSettings
from interpgpt.diff.saes import SAEDiffSettings, SAEFeatureDiff
from interpgpt.diff.weights import WeightViews
from interpgpt.errors import UserError
from interpgpt.sae.activations import hook_layer
from interpgpt.sae.topk import TopKSAE

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
    features: SAEFeatureDiff | None = None
    """The SAE feature diff (None: not asked for)."""
    crosscoder: CrosscoderDiff | None = None
    """The crosscoder diff (None: not asked for)."""
    weight_views: WeightViews | None = None
    """Head matching, loss barrier, change from init (None: no shared init given)."""


@dataclass
class PairSAEs:
    """The SAE feature diff's inputs: an SAE per model, given or trained on the texts."""

    settings: SAEDiffSettings = field(default_factory=SAEDiffSettings)
    a: TopKSAE | None = None
    """Model a's SAE (None: trained on the texts when `train`, else no a-only features)."""
    b: TopKSAE | None = None
    """Model b's SAE (likewise)."""
    controls: Sequence[TopKSAE | None] = ()
    """Each control's SAE, in the controls' order (the b role between a and a control)."""
    train: bool = False
    """Train every missing SAE on the texts."""

    @property
    def layer(self) -> int | None:
        """The layer of the given SAEs' hook (None: none given)."""
        given = [s for s in (self.a, self.b, *self.controls) if s is not None]
        layers = {hook_layer(s.cfg.hook_name) for s in given}
        if len(layers) > 1:
            raise UserError(f"the SAEs read different layers ({sorted(layers)}); give one layer's")
        return layers.pop() if layers else None

    def check_controls(self, n_controls: int) -> None:
        """Refuse a given b SAE without the controls' SAEs: a control's statistic would
        then come from another procedure than the pair's."""
        missing = [i for i in range(n_controls) if self.control(i) is None]
        if self.b is not None and not self.train and missing:
            raise UserError(
                f"b's SAE is given: give each control's SAE too ({n_controls} needed, "
                f"{n_controls - len(missing)} given), or have them trained"
            )

    def control(self, index: int) -> TopKSAE | None:
        return self.controls[index] if index < len(self.controls) else None

    def resolve(
        self, given: TopKSAE | None, model: Any, texts: TextSet, layer: int, batch: int
    ) -> TopKSAE | None:
        """`given` checked against `model`, else one trained on the texts when `train`.
        Trained SAEs are seeded alike, so a model and its exact copy get the same one."""
        if given is not None:
            sd.check_sae(given, model, as_lm(model).label)
            return given
        return sd.train_text_sae(model, texts, layer, self.settings, batch) if self.train else None


@dataclass
class Dictionaries:
    """What the SAE feature diff and the crosscoder of one pair read (`analyse`)."""

    layer: int
    saes: dict[str, TopKSAE] = field(default_factory=dict)
    """Role -> that model's SAE."""
    sae_settings: SAEDiffSettings | None = None
    crosscoder: CrosscoderSettings | None = None


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
    init: Any = None,
) -> PairAnalyses:
    """Every pair analysis on `a` and `b` over `texts` but the dictionaries' (no files);
    the weight views with the shared `init`."""
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
    out = PairAnalyses(
        labels=(a.label, b.label),
        kl=set_stats(source, sets),
        top_kl=top,
        lens=lens,
        token_lens=lenses,
        inventory=head_inventory(a, b, texts, profile_keys, bins, batch_size),
        weights=layer_distances(a.model, b.model),
        lens_layer=lens_layer,
    )
    if init is not None:
        out.weight_views = wv.weight_views(a, b, init, texts)
    return out


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
    sums_a, sums_b = (
        attention_profile_sums(
            m.model, texts.ids, texts.lengths, key_mask, n_bins=bins, batch_size=batch_size
        )
        for m in (a, b)
    )
    return compare_profiles(sums_a, sums_b)


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
    if p.features is not None:
        out |= sd.statistics(p.features)
    if p.crosscoder is not None:
        out |= cc.statistics(p.crosscoder)
    if p.weight_views is not None:
        out |= wv.statistics(p.weight_views)
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
    saes: PairSAEs | None = None,
    crosscoder: CrosscoderSettings | None = None,
    init: Any = None,
) -> PairDiff:
    """The pair analyses of `a` and `b` (TaskGPTs, HookedTransformers or `analysis.lm`
    adapters sharing a tokenizer and a shape) on `texts`, each statistic judged against
    the same statistic between `a` and each of `controls` (twins of `a`); pure.

    `saes` adds the SAE feature diff, `crosscoder` the crosscoder diff (both at the given
    SAEs' layer, else `layer`, else where the difference lens is largest), `init` (the
    model a and b were both trained from) the weight views."""
    a = as_lm(a, label="a")
    b = as_lm(b, label="b")
    twins = [as_lm(c, label=f"control {i}") for i, c in enumerate(controls)]
    for other in [*twins, *([] if init is None else [as_lm(init, label="init")])]:
        check_pair(a, other)
    if saes is not None:
        saes.check_controls(len(twins))
    options: dict[str, Any] = dict(
        tokens=tokens,
        layer=layer,
        profile_keys=profile_keys,
        top_k=top_k,
        bins=bins,
        batch_size=batch_size,
        init=init,
    )
    pair = analyse(a, b, texts, **options)
    null = [analyse(a, twin, texts, **options) for twin in twins]
    if saes is not None or crosscoder is not None:
        layer_read = dictionary_layer(pair, saes, layer)
        others = [b, *twins]
        sae_a = saes.resolve(saes.a, a, texts, layer_read, batch_size) if saes else None
        for i, (other, found) in enumerate(zip(others, [pair, *null], strict=True)):
            words = Dictionaries(layer_read, crosscoder=crosscoder)
            if saes is not None:
                given = saes.b if i == 0 else saes.control(i - 1)
                words.sae_settings = saes.settings
                words.saes = {
                    role: sae
                    for role, sae in (
                        ("a", sae_a),
                        ("b", saes.resolve(given, other, texts, layer_read, batch_size)),
                    )
                    if sae is not None
                }
            found.features, found.crosscoder = analyse_dictionaries(
                a, other, texts, words, batch_size
            )
    values = statistics(pair)
    null_values = [statistics(n) for n in null]
    stats = {}
    for name, (description, value) in values.items():
        within = [n[name][1] for n in null_values if name in n]
        stat = Statistic(name, description, value, within)
        if within and len(within) == len(null_values) and all(map(math.isfinite, [value, *within])):
            stat.verdict = verdict(value, within)
        stats[name] = stat
    return PairDiff(pair, stats, [t.label for t in twins], list(tokens))


def dictionary_layer(pair: PairAnalyses, saes: PairSAEs | None, layer: float | str | None) -> int:
    """The layer the SAEs and the crosscoder read: the given SAEs', else the caller's, else
    where the pair's mean difference over all positions is largest."""
    given = saes.layer if saes is not None else None
    if given is not None:
        return given
    if layer in (None, ""):
        return pair.lens.max_norm_layer(ALL_POSITIONS)
    return resolve_layer(layer, len(pair.lens.norms[ALL_POSITIONS]))


def analyse_dictionaries(
    a: Any, b: Any, texts: TextSet, words: Dictionaries, batch_size: int
) -> tuple[SAEFeatureDiff | None, CrosscoderDiff | None]:
    """The SAE feature diff and the crosscoder diff of one pair at `words.layer`."""
    features = None
    if words.sae_settings is not None and words.saes:
        features = sd.sae_feature_diff(a, b, texts, words.saes, words.sae_settings, batch_size)
    found = None
    if words.crosscoder is not None:
        found = cc.crosscoder_diff(a, b, texts, words.layer, words.crosscoder, batch_size)
    return features, found
