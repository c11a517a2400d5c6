"""Seed controls: every cross-model finding shown beside the same statistic between a model
and its seed twin, with a verdict.

A difference between the standard and the ADHD model says something about the corpora
only if it is larger than the difference training noise alone makes. Each variant's model
therefore has a twin: the same initial weights, another data-order seed
(`TrainConfig.data_seed`). The statistic between a model and its twin is the seed null;
a cross-variant value is "beyond seed noise" only by the one rule `RULE` (`verdict`,
per component `component_verdicts`), and `replicate_recurrence` counts in how many
replicate pairs a named component recurs. This is the practice of MultiBERTs (Sellam et
al. 2022, "The MultiBERTs: BERT reproductions for robustness analysis") and PolyPythias
(van der Wal et al. 2025, "PolyPythias: stability and outliers across fifty language
model pre-training runs"): a claim about one trained model is read against the spread
over seeds.

Many components are tested at once (every head, every latent), so p-values are adjusted
to false-discovery-rate q-values (`benjamini_hochberg`; Benjamini & Hochberg 1995).

SAEs trained twice on the same activations with different seeds learn partly different
latents (Paulo & Belrose 2025, "Sparse autoencoders trained on the same data learn
different features"). Following them, latents are paired one-to-one by the Hungarian
algorithm on decoder-row cosine similarity (`match_dictionaries`), and a latent counts
as matched when its partner's cosine reaches `MATCH_THRESHOLD`; a feature is called
model-exclusive only if it is stable across SAE seeds (`stable_latents`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from jaxtyping import Float
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from interpgpt.io import provenance, to_jsonable, write_json

CONTROLS_JSON = "controls.json"

Verdict = Literal["beyond seed noise", "within seed noise"]
BEYOND: Verdict = "beyond seed noise"
WITHIN: Verdict = "within seed noise"

RULE = (
    "every statistic is oriented so that larger means more different (a count of moved "
    "heads or of exclusive features, a gap, the distance between two models' values); the "
    "cross-variant value (standard vs ADHD) is beyond seed noise when it exceeds every "
    "within-variant value (a model vs its data-order twin) and the upper end of every "
    "twin's confidence interval when one is given, and, when a bootstrap confidence "
    "interval of the cross-variant value is given, its lower end exceeds them too; "
    "otherwise within seed noise"
)
"""The one statement of the verdict rule; `verdict` applies it, every record quotes it."""

MATCH_THRESHOLD = 0.7
"""Decoder cosine at or above which a Hungarian-matched latent counts as the same feature.
Paulo & Belrose 2025 also compare encoder rows; the decoder row alone is the latent's
direction in the residual stream, which is what a model-exclusive claim is about."""


# ----------------------------------------------------------------------------- FDR


def benjamini_hochberg(p_values: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg q-values of `p_values` (any shape, one family), same shape.

    Step-up: the sorted p_(i) scaled by m / i, then made monotone from the largest down
    (which also caps them at the largest p, so at 1); equal to
    `scipy.stats.false_discovery_control(p, method="bh")`. NaNs (a statistic that could
    not be computed) stay NaN and are not counted in m.
    """
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = ~np.isnan(p)
    values = p[finite]
    if ((values < 0) | (values > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = values.size
    if m == 0:
        return q
    order = np.argsort(values, kind="stable")
    scaled = values[order] * (m / np.arange(1, m + 1))
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = monotone
    q[finite] = adjusted
    return q


# ----------------------------------------------------------------------------- verdicts


def verdict(
    cross: float,
    within: Sequence[float],
    cross_ci: tuple[float, float] | None = None,
    within_cis: Sequence[tuple[float, float]] | None = None,
) -> Verdict:
    """`RULE` applied to one statistic: `cross` between the variants, `within` between each
    model and its seed twin; optional (low, high) intervals of either.

    One-sided: a statistic measures how different two models are, and the claim under
    test is "the data made the pair more different than training noise makes twins". A
    cross value below the twins' (the variants closer than twins) is no such finding.
    """
    twins = [float(w) for w in within]
    if not twins:
        raise ValueError("no within-variant (twin) values: there is no seed null to compare")
    intervals = [tuple(map(float, ci)) for ci in (within_cis or [])]
    if within_cis is not None and len(intervals) != len(twins):
        raise ValueError(f"{len(intervals)} twin intervals for {len(twins)} twin values")
    points = [float(cross), *twins, *(b for ci in intervals for b in ci)]
    if cross_ci is not None:
        points += [float(b) for b in cross_ci]
    if not np.isfinite(points).all():
        raise ValueError(f"not finite: cross {cross}, within {twins}, intervals given")
    high = max([*twins, *(ci[1] for ci in intervals)])
    beyond = float(cross) > high
    if cross_ci is not None:
        lo, hi = (float(b) for b in cross_ci)
        if lo > hi:
            raise ValueError(f"cross_ci {cross_ci}: low above high")
        beyond = beyond and lo > high
    return BEYOND if beyond else WITHIN


@dataclass(frozen=True)
class ComponentVerdicts:
    """`verdict` per component (head, latent) of a vector statistic."""

    names: tuple[str, ...]
    """Each component's name (`L1H3`, a latent index)."""
    verdicts: tuple[Verdict | None, ...]
    """Each component's verdict; None where a value is NaN (no verdict)."""

    @property
    def beyond(self) -> tuple[str, ...]:
        """The components beyond seed noise."""
        return tuple(n for n, v in zip(self.names, self.verdicts, strict=True) if v == BEYOND)

    @property
    def n_beyond(self) -> int:
        return len(self.beyond)

    @property
    def n_defined(self) -> int:
        """Components with a verdict (no NaN among their values)."""
        return sum(v is not None for v in self.verdicts)


def component_verdicts(
    cross: Float[ArrayLike, " component"],
    within: Float[ArrayLike, "twin component"],
    cross_ci: Float[ArrayLike, "component 2"] | None = None,
    within_cis: Float[ArrayLike, "twin component 2"] | None = None,
    names: Sequence[str] | None = None,
) -> ComponentVerdicts:
    """`verdict` for each component; a component with a NaN among its values gets None."""
    x = np.asarray(cross, dtype=np.float64)
    w = np.asarray(within, dtype=np.float64)
    if x.ndim != 1 or w.ndim != 2 or w.shape[1] != x.size:
        raise ValueError(
            f"cross {x.shape} and within {w.shape}: want (component,), (twin, component)"
        )
    x_ci = None if cross_ci is None else np.asarray(cross_ci, dtype=np.float64)
    w_ci = None if within_cis is None else np.asarray(within_cis, dtype=np.float64)
    labels = tuple(names) if names is not None else tuple(str(i) for i in range(x.size))
    if len(labels) != x.size:
        raise ValueError(f"{len(labels)} names for {x.size} components")
    out: list[Verdict | None] = []
    for c in range(x.size):
        values = [x[c : c + 1], w[:, c]]
        values += [] if x_ci is None else [x_ci[c]]
        values += [] if w_ci is None else [w_ci[:, c].ravel()]
        if np.isnan(np.concatenate(values)).any():
            out.append(None)
            continue
        out.append(
            verdict(
                float(x[c]),
                list(w[:, c]),
                None if x_ci is None else (x_ci[c, 0], x_ci[c, 1]),
                None if w_ci is None else [(t[c, 0], t[c, 1]) for t in w_ci],
            )
        )
    return ComponentVerdicts(labels, tuple(out))


class Recurrence(NamedTuple):
    recurring: int
    """Replicate pairs whose findings name the component."""
    n: int
    """Replicate pairs."""


def replicate_recurrence(findings_per_replicate: Sequence[Collection[str]], key: str) -> Recurrence:
    """In how many replicate pairs (one collection of named findings each: the components
    beyond seed noise, or a mapping keyed by component name) component `key` recurs."""
    count = sum(key in findings for findings in findings_per_replicate)
    return Recurrence(count, len(findings_per_replicate))


def translate_named(named: Collection[str], alignment: Mapping[str, str]) -> set[str]:
    """A replicate's named components in the matched pair's names: `alignment` maps each
    component of the replicate's model to its partner in the matched pair's model (a
    one-to-one matching). A joint name ("L2H6+L3H1") maps part by part; a name with a
    part that has no partner is dropped."""
    out = set()
    for name in named:
        parts = name.split("+")
        if all(p in alignment for p in parts):
            out.add("+".join(alignment[p] for p in parts))
    return out


# ----------------------------------------------------------------------------- statistics

Value = float | Sequence[float]


@dataclass(frozen=True)
class Statistic:
    """One statistic of one run of an analysis on a pair of models (the study's matched
    pair, or a control pair: a model and its data-order twin).

    Of the pair (`of="pair"`): the statistic compares the run's two models (moved heads,
    exclusive features); its value on the matched pair is the cross-variant value, on
    each control pair the seed null. Of the model (`of="model"`): a property of the
    run's ADHD-role model alone (a target head's ablation effect, a patching map); the
    cross-variant value is the `distance` between the ADHD and the standard model's
    values, the null the distance between a model's and its twin's."""

    description: str
    """What is measured, in words (also the statistic's name in controls.json)."""
    value: Value
    """A number, or one per component (a vector)."""
    of: Literal["pair", "model"] = "pair"
    ci: Any = None
    """(low, high) of `value` (a bootstrap over tasks), or one per component."""
    components: Sequence[str] | None = None
    """The components' names of a vector statistic."""
    named: Sequence[str] = ()
    """The components this run names as findings (moved heads, the target head): what
    `replicate_recurrence` counts across replicate pairs."""
    named_in: Literal["standard", "adhd"] | None = None
    """Where `named` are heads ("L{layer}H{head}"), the role of the model whose head
    indices they are. Another init's heads have other indices for the same function, so
    a replicate pair's named heads are first mapped to this model's (the study's
    alignment pairs); None: the names are compared as they are."""
    distance: Literal["abs", "1-r"] = "abs"
    """How two models' values of an `of="model"` statistic are compared: the absolute
    difference (per component), or 1 - Pearson r of two maps (one number)."""


def model_distance(a: Value, b: Value, distance: Literal["abs", "1-r"]) -> Value:
    """The distance between two models' values of an `of="model"` statistic: NaN when
    either is undefined (a constant map has no correlation)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"values of different shapes: {x.shape} vs {y.shape}")
    if distance == "1-r":
        x, y = x.ravel(), y.ravel()
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 2 or x[ok].std() == 0 or y[ok].std() == 0:
            return float("nan")
        return float(1.0 - np.corrcoef(x[ok], y[ok])[0, 1])
    diff = np.abs(x - y)
    return float(diff) if diff.ndim == 0 else diff.tolist()


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Finding:
    """One cross-model statistic beside its seed null. A scalar statistic has one verdict;
    a vector one (per head, per latent) has one per component, named by `components`."""

    finding: str
    """What is claimed, in words."""
    statistic: str
    """What was measured (and between which models)."""
    cross_variant: Value
    """The statistic between the standard and the ADHD model."""
    within_variant: Mapping[str, Value]
    """Per variant, the same statistic between its model and that model's seed twin."""
    replicates: Sequence[Value] = ()
    """The cross-variant statistic in each further replicate pair (other seeds)."""
    cross_ci: Any = None
    """Bootstrap (low, high) of `cross_variant`; (component, 2) for a vector statistic."""
    within_ci: Mapping[str, Any] | None = None
    """Per variant, the (low, high) of its `within_variant` value (or (component, 2))."""
    components: Sequence[str] | None = None
    """Names of a vector statistic's components (None: their indices)."""
    analysis: str = ""
    """The analysis (study stage) that measured it."""
    recurrence: Mapping[str, Any] | None = None
    """Per named component, in how many replicate pairs it recurs (`Recurrence`)."""
    recurrence_check: Mapping[str, Any] | None = None
    """Where named heads were aligned across inits: how far that alignment can be trusted
    (`aligned_by`, and `twin_heads_at_own_index`: [kept, heads] when the same matching
    pairs a model with its same-init twin, whose true alignment is the identity)."""
    replicate_controls: Mapping[str, Finding] | None = None
    """Where the replicate pairs have their own twins, per replicate pair: the same
    statistic in that pair beside that pair's twins, with its own verdict."""

    @property
    def is_vector(self) -> bool:
        return np.ndim(self.cross_variant) == 1

    def verdicts(self) -> ComponentVerdicts:
        """`component_verdicts` of the statistic; a scalar is one component."""
        shape = (-1,) if self.is_vector else (1,)  # (component,)

        def per_component(values: Any, tail: tuple[int, ...] = ()) -> np.ndarray:
            return np.asarray(values, dtype=np.float64).reshape(*shape, *tail)

        variants = list(self.within_variant)
        within = np.stack([per_component(self.within_variant[v]) for v in variants])
        within_cis = None
        if self.within_ci is not None:
            within_cis = np.stack([per_component(self.within_ci[v], (2,)) for v in variants])
        cross_ci = None if self.cross_ci is None else per_component(self.cross_ci, (2,))
        return component_verdicts(
            per_component(self.cross_variant), within, cross_ci, within_cis, self.components
        )

    def verdict(self) -> Verdict | None:
        """The verdict of a scalar statistic (None when a value is NaN)."""
        if self.is_vector:
            raise ValueError(f"{self.finding!r}: a vector statistic has one verdict per component")
        return self.verdicts().verdicts[0]

    def to_json(self) -> dict[str, Any]:
        """The controls.json record; "verdict" is null where a value is NaN, and a vector
        statistic's is one per component, with the components beyond listed."""
        record: dict[str, Any] = {
            **({"analysis": self.analysis} if self.analysis else {}),
            "finding": self.finding,
            "statistic": self.statistic,
            "cross_variant": self.cross_variant,
            "within_variant": dict(self.within_variant),
            "replicates": list(self.replicates),
        }
        if self.cross_ci is not None:
            record["cross_ci"] = self.cross_ci
        if self.within_ci is not None:
            record["within_ci"] = dict(self.within_ci)
        if self.recurrence is not None:
            record["recurrence"] = {k: list(v) for k, v in self.recurrence.items()}
        if self.recurrence_check is not None:
            record["recurrence_check"] = dict(self.recurrence_check)
        if self.replicate_controls:
            record["replicate_controls"] = [
                _replicate_record(pair, f) for pair, f in self.replicate_controls.items()
            ]
        if self.is_vector:
            per = self.verdicts()
            record |= {
                "components": list(per.names),
                "verdict": list(per.verdicts),
                "beyond": list(per.beyond),
                "n_beyond": per.n_beyond,
                "n_defined": per.n_defined,
            }
        else:
            record["verdict"] = self.verdict()
        record["rule"] = RULE
        return to_jsonable(record)


def _replicate_record(pair: str, finding: Finding) -> dict[str, Any]:
    """A replicate pair's finding as its entry in `replicate_controls`: the pair, its
    values and verdict (for a vector statistic, the components beyond seed noise)."""
    record = finding.to_json()
    keys = ("cross_variant", "within_variant", "verdict", "beyond", "n_beyond")
    return {"pair": pair} | {k: record[k] for k in keys if k in record}


def write_controls(
    path: str | Path, findings: Sequence[Finding], config: Any = None, **extra: Any
) -> Path:
    """Write `controls.json` (atomically): every finding with its seed null and verdict,
    the rule, any `extra` blocks, and the provenance of `config` (the analysis that
    produced them). Strict JSON: a value that could not be computed (NaN) is null, as
    its verdict is."""
    return write_json(
        path,
        {
            "rule": RULE,
            "findings": [f.to_json() for f in findings],
            **extra,
            "provenance": provenance(config),
        },
        strict=True,
    )


# ----------------------------------------------------------------------------- SAE seeds


class DictionaryMatch(NamedTuple):
    matching: np.ndarray
    """(d_sae_a,) Each latent of A's Hungarian partner in B; -1 where B ran out of rows."""
    cosines: np.ndarray
    """(d_sae_a,) Decoder cosine with that partner; NaN where it has none."""
    share_matched: float
    """Share of A's latents whose partner's cosine reaches the threshold."""


def _matched(cosines: np.ndarray, threshold: float) -> np.ndarray:
    return np.nan_to_num(cosines, nan=-np.inf) >= threshold


def _unit_rows(w: Any) -> np.ndarray:
    if hasattr(w, "detach"):  # a torch tensor or parameter (no torch import here)
        w = w.detach().float().cpu().numpy()
    rows = np.asarray(w, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"a decoder is (d_sae, d_model), got shape {rows.shape}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def match_dictionaries(
    W_dec_a: Float[ArrayLike, "d_sae_a d_model"],
    W_dec_b: Float[ArrayLike, "d_sae_b d_model"],
    threshold: float = MATCH_THRESHOLD,
) -> DictionaryMatch:
    """Pair the latents of two SAEs one-to-one, maximising total decoder-row cosine
    (Hungarian, `scipy.optimize.linear_sum_assignment`); numpy arrays or tensors."""
    a, b = _unit_rows(W_dec_a), _unit_rows(W_dec_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"d_model differs: {a.shape[1]} vs {b.shape[1]}")
    cos = a @ b.T  # (d_sae_a, d_sae_b)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    matching = np.full(a.shape[0], -1, dtype=np.int64)
    cosines = np.full(a.shape[0], np.nan)
    matching[rows], cosines[rows] = cols, cos[rows, cols]
    share = float(_matched(cosines, threshold).mean()) if a.shape[0] else 0.0
    return DictionaryMatch(matching, cosines, share)


def stable_latents(
    W_dec_a: Float[ArrayLike, "d_sae_a d_model"],
    *others: Float[ArrayLike, "d_sae d_model"],
    threshold: float = MATCH_THRESHOLD,
) -> np.ndarray:
    """Indices of A's latents matched (cosine >= threshold) in every other-seed SAE."""
    if not others:
        raise ValueError("stable_latents needs at least one other-seed dictionary")
    stable = np.ones(_unit_rows(W_dec_a).shape[0], dtype=bool)
    for other in others:
        stable &= _matched(match_dictionaries(W_dec_a, other, threshold).cosines, threshold)
    return np.flatnonzero(stable)


__all__ = [
    "BEYOND",
    "CONTROLS_JSON",
    "MATCH_THRESHOLD",
    "RULE",
    "WITHIN",
    "ComponentVerdicts",
    "DictionaryMatch",
    "Finding",
    "Recurrence",
    "Statistic",
    "Verdict",
    "benjamini_hochberg",
    "component_verdicts",
    "match_dictionaries",
    "model_distance",
    "replicate_recurrence",
    "stable_latents",
    "translate_named",
    "verdict",
]
