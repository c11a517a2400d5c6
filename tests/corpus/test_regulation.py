"""The regulation vocabulary, the effort rule that places breaks, its posterior, and the
one AUROC (Mann-Whitney U over pairs, ties one half)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, rankdata

from interpgpt.corpus.regulation import (
    EFFORT,
    REGULATION_ACTIONS,
    Onsets,
    RuleState,
    auroc,
    interleave,
    is_regulation,
    rule_variables,
    trace_without_breaks,
)


def test_regulation_vocabulary() -> None:
    assert set(REGULATION_ACTIONS) >= {
        "sip water",
        "deep breath",
        "close eyes briefly",
        "quick stretch",
        "pause",
    }
    assert is_regulation(" Sip water ") and not is_regulation("Sip water slowly")
    assert EFFORT["effortful"] > EFFORT["light"]


# ---------------------------------------------------------------------- the break rule


def test_break_rule_known_answer() -> None:
    # efforts 2 1 1 | 2 2 | 1 1 with budget 4: breaks after the 3rd and 5th steps
    efforts = (2, 1, 1, 2, 2, 1, 1)
    content = [f"Step {i}" for i in range(len(efforts))]
    for seed in range(5):
        p_break: list[str] = []
        onsets = Onsets()
        out = interleave(
            content, efforts, 4, 0.0, random.Random(seed),
            REGULATION_ACTIONS, [0] * len(REGULATION_ACTIONS), onsets, p_break,
        )  # fmt: skip
        flags = [is_regulation(s) for s in out]
        assert [i for i, f in enumerate(flags) if f] == [3, 6]
        assert [s for s in out if not is_regulation(s)] == content
        assert out[3] != out[6]
        assert p_break == ["0.0", "0.0", "0.0", "1.0", "0.0", "0.0", "1.0", "0.0", "0.0"]
        assert onsets.counts == [3, 4, 0, 0, 2]
        assert onsets.auroc(0.0) == 1.0


def test_rule_state_known_answer() -> None:
    """The state before each output step of the known-answer sequence above: the load
    reaches the budget (remaining 0) exactly where the breaks go."""
    efforts = (2, 1, 1, 2, 2, 1, 1)
    trace: list[RuleState] = []
    out = interleave(
        list(range(len(efforts))), efforts, 4, 0.0, random.Random(0), [-1, -2], [0, 0],
        Onsets(), trace=trace,
    )  # fmt: skip
    assert out == [0, 1, 2, -1, 3, 4, -2, 5, 6] or out == [0, 1, 2, -2, 3, 4, -1, 5, 6]
    got = rule_variables(trace, 4)
    assert got["load"] == [0, 2, 3, 4, 0, 2, 4, 0, 1]
    assert got["remaining"] == [4, 2, 1, 0, 4, 2, 0, 4, 3]
    assert got["since_break"] == [0, 1, 2, 3, 0, 1, 2, 0, 1]
    assert got["effort"] == [0, 2, 1, 1, 0, 2, 2, 0, 1]
    assert got["budget"] == [4] * 9
    # Without breaks the same code never resets the load.
    free = rule_variables(trace_without_breaks(efforts), 4)
    assert free["load"] == [0, 2, 3, 4, 6, 8, 9]
    assert free["since_break"] == list(range(7))
    assert free["effort"] == [0, *efforts[:-1]]


def test_break_rule_with_noise() -> None:
    """Never first, last or adjacent; no action twice in a row; flips happen at `noise`."""
    rng = random.Random(0)
    noise, budget = 0.3, 3
    gaps = flips = 0
    onsets = Onsets()
    for _ in range(3000):
        efforts = [rng.choice((1, 2)) for _ in range(rng.randint(2, 12))]
        content = [f"Step {i}" for i in range(len(efforts))]
        p_break: list[str] = []
        out = interleave(
            content, efforts, budget, noise, rng, REGULATION_ACTIONS,
            [0] * len(REGULATION_ACTIONS), onsets, p_break,
        )  # fmt: skip
        assert len(p_break) == len(out)
        flags = [is_regulation(s) for s in out]
        assert not flags[0] and not flags[-1]
        assert not any(a and b for a, b in itertools.pairwise(flags))
        breaks = [s for s in out if is_regulation(s)]
        assert all(a != b for a, b in itertools.pairwise(breaks))
        load, it = 0, iter(efforts)  # replay: where did the rule fire, where a break go?
        for prev, nxt in itertools.pairwise(out):
            if is_regulation(prev):
                continue
            load += next(it)
            gaps += 1
            flips += (load >= budget) != is_regulation(nxt)
            if is_regulation(nxt):
                load = 0
    assert abs(flips / gaps - noise) < 0.015
    assert onsets.flip_rate() == pytest.approx(flips / gaps, abs=1e-6)


def test_onsets_auroc_is_the_auroc_of_the_posterior() -> None:
    """The counted posterior levels give the AUROC of the per-step p_break lists."""
    rng = random.Random(1)
    for noise in (0.0, 0.05, 0.3):
        onsets = Onsets()
        scores: list[float] = []
        labels: list[bool] = []
        for _ in range(300):
            efforts = [rng.choice((1, 2)) for _ in range(rng.randint(2, 12))]
            p_break: list[str] = []
            out = interleave(
                list(range(len(efforts))), efforts, 3, noise, rng, [-1, -2], [0, 0], onsets,
                p_break,
            )  # fmt: skip
            scores += map(float, p_break)
            labels += [s < 0 for s in out]
        assert onsets.auroc(noise) == round(auroc(scores, labels), 6)
    assert Onsets().auroc(0.1) is None


# ----------------------------------------------------------------------------- AUROC


def test_auroc_is_mann_whitney_u_over_pairs() -> None:
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 60)
        scores = [rng.randint(0, 5) / 5 for _ in range(n)]  # many ties
        labels = [rng.random() < 0.3 for _ in range(n)]
        labels[0], labels[1] = True, False
        pos = [s for s, y in zip(scores, labels, strict=True) if y]
        neg = [s for s, y in zip(scores, labels, strict=True) if not y]
        expected = mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))
        assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_equals_the_rank_formula_bit_for_bit() -> None:
    """U from mean ranks, as analyses computed it before: the same float, not just close."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 2000))
        scores = rng.random(n).astype(np.float32).round(int(rng.integers(1, 4)))
        labels = rng.random(n) < rng.random()
        labels[:2] = True, False
        n_pos, n_neg = int(labels.sum()), int((~labels).sum())
        u = rankdata(scores.astype(np.float64))[labels].sum() - n_pos * (n_pos + 1) / 2
        assert auroc(scores.tolist(), labels.tolist()) == float(u / (n_pos * n_neg))


def test_auroc_weights_count_repeated_pairs() -> None:
    scores = [0.1, 0.1, 0.5, 0.9, 0.9]
    labels = [False, True, False, False, True]
    weights = [3, 1, 2, 1, 4]
    expanded = [(s, y) for s, y, w in zip(scores, labels, weights, strict=True) for _ in range(w)]
    assert auroc(scores, labels, weights) == auroc(*zip(*expanded, strict=True))


def test_auroc_known_answers() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [True, False, False]) == 0.5
    assert auroc([0.3, 0.7], [True, False]) == 0.0
    assert math.isnan(auroc([0.3, 0.7], [True, True]))
    assert math.isnan(auroc([], []))
