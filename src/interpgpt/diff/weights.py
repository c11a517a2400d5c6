"""The weight views of any pair that shares an init (`analysis.weights.compare` on the model
protocol).

Weight matching (Git Re-Basin, Ainsworth et al. 2023) pairs each head of b with one of a
within each layer, and the loss along the straight line between the two models (Frankle
et al. 2020) says whether they sit in one basin, before and after aligning b's heads.
Both read meaningfully only for two models trained from one init: models of two inits
sit in different basins and their heads at arbitrary indices whatever they compute. So
the views need that init (`init`: the model both started from), and each model's change
from it is reported per block (`layer_distances`). The loss is the next-token
cross-entropy over the texts (`compare.text_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from interpgpt.analysis.lm import TextSet, as_lm
from interpgpt.analysis.weights.compare import (
    LayerDistances,
    WeightComparison,
    check_same_shape,
    compare_weights,
    layer_distances,
    text_loss,
)

TEXTS = "texts"


@dataclass
class WeightViews:
    """Head matching, the loss line and the change from the shared init of one pair."""

    labels: tuple[str, str]
    comparison: WeightComparison
    change: dict[str, LayerDistances]
    """Role ("a", "b") -> its distance from the shared init, per block."""


def weight_views(a: Any, b: Any, init: Any, texts: TextSet, points: int = 11) -> WeightViews:
    """Match b's heads to a's, measure the loss along the line between them on `texts`
    (before and after the matching), and each model's change from `init`."""
    lm_a, lm_b, lm_init = as_lm(a), as_lm(b), as_lm(init)
    for m in (lm_a, lm_b):
        check_same_shape(lm_init, m)
    comparison = compare_weights(
        lm_a.model,
        lm_b.model,
        eval_sets={TEXTS: texts},
        alphas=np.linspace(0.0, 1.0, points).tolist(),
        names=(lm_a.label, lm_b.label),
        loss=text_loss,
    )
    change = {r: layer_distances(lm_init.model, m.model) for r, m in (("a", lm_a), ("b", lm_b))}
    return WeightViews((lm_a.label, lm_b.label), comparison, change)


def statistics(views: WeightViews) -> dict[str, tuple[str, float]]:
    """The weight views' scalar distances (the study's weights statistics): name ->
    (description, value)."""
    line = views.comparison.interpolation or {}
    change = abs(views.change["b"].total - views.change["a"].total)
    return {
        "weights/off_diagonal": (
            "heads weight matching puts off the diagonal (count)",
            float(views.comparison.matching.off_diagonal),
        ),
        "weights/barrier": (
            "loss barrier on the line between the two models (nats/token)",
            float(line["before"].barrier) if line else float("nan"),
        ),
        "weights/change": (
            "|difference| in relative change from the shared init",
            float(change),
        ),
    }
