"""The behaviour targets a trained model of the pair should meet on held-out test tasks
(the behaviour stage's metrics, seen and unseen families): what the speedrun
(`bench/speedrun.py`) times and what the release build records per model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """One target: its words, the models it applies to, its value and its threshold."""

    words: str
    variants: tuple[str, ...]
    """Which models it applies to."""
    value: Callable[[dict[str, Any]], float | None]
    """Its value from one model's behaviour ({subset: SubsetBehaviour as JSON})."""
    holds: Callable[[float], bool]


def metric_of(subset: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    """A metric of one subset from a model's behaviour."""
    return lambda b: (b.get(subset) or {}).get(key)


def auroc_gap(subset: str) -> Callable[[dict[str, Any]], float | None]:
    """Bayes AUROC minus the model's, on one subset (None when either is missing)."""

    def gap(b: dict[str, Any]) -> float | None:
        onset = (b.get(subset) or {}).get("auroc") or {}
        if onset.get("model") is None or onset.get("bayes") is None:
            return None
        return float(onset["bayes"]) - float(onset["model"])

    return gap


BOTH = ("standard", "adhd")
TARGETS: tuple[Target, ...] = (
    Target(
        "unseen on-topic >= 0.90", BOTH, metric_of("unseen", "on_topic_rate"), lambda v: v >= 0.90
    ),
    Target(
        "unseen object mention >= 0.60",
        BOTH,
        metric_of("unseen", "object_mention_rate"),
        lambda v: v >= 0.60,
    ),
    Target("seen on-topic >= 0.95", BOTH, metric_of("seen", "on_topic_rate"), lambda v: v >= 0.95),
    Target("seen parse >= 0.98", BOTH, metric_of("seen", "parse_rate"), lambda v: v >= 0.98),
    Target("unseen parse >= 0.98", BOTH, metric_of("unseen", "parse_rate"), lambda v: v >= 0.98),
    Target(
        "seen Spearman >= 0.8",
        BOTH,
        metric_of("seen", "spearman_complexity_steps"),
        lambda v: v >= 0.8,
    ),
    Target(
        "unseen Spearman >= 0.8",
        BOTH,
        metric_of("unseen", "spearman_complexity_steps"),
        lambda v: v >= 0.8,
    ),
    Target("seen AUROC gap <= 0.05", ("adhd",), auroc_gap("seen"), lambda v: v <= 0.05),
    Target("unseen AUROC gap <= 0.05", ("adhd",), auroc_gap("unseen"), lambda v: v <= 0.05),
    Target(
        "never regulates (seen)",
        ("standard",),
        metric_of("seen", "regulating_outputs"),
        lambda v: v == 0,
    ),
    Target(
        "never regulates (unseen)",
        ("standard",),
        metric_of("unseen", "regulating_outputs"),
        lambda v: v == 0,
    ),
)


def check_targets(variant: str, behaviour: dict[str, Any]) -> dict[str, bool]:
    """Target words -> whether it holds, for the targets of `variant` (a missing value
    fails)."""
    met = {}
    for target in TARGETS:
        if variant in target.variants:
            value = target.value(behaviour)
            met[target.words] = value is not None and bool(target.holds(float(value)))
    return met
