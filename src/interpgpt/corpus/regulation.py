"""Micro-regulation in the ADHD variant: its vocabulary, the rule that places it, and the
rule's Bayes-optimal posterior.

The vocabulary (`REGULATION_ACTIONS`, `is_regulation`) is defined here once: the task data
may never use it as a step (`taskpool`), the ADHD corpus places it (`build`), and the
tokenizer and every analysis recognise it.

The break rule has a reason — effort:

- each content step weighs its phase's effort (`EFFORT`: effortful 2, light 1); the
  *load* is the weight of the content steps since the last break;
- after a content step that is not the last, a break goes in when
  load >= budget(complexity) = max(2, `break_budget` - complexity), so harder tasks
  get more frequent breaks; with probability `break_noise` that decision is flipped;
- a break resets the load; it is never first, never last, never two in a row, and its
  action is drawn uniformly among the actions other than the previous one.

So the Bayes-optimal P(next step is a break | prefix) is 0 at the first step and right
after a break, else 1 - noise where the rule fires and noise where it does not. Val and
test ADHD records carry it per step (`p_break`), and stats.json records the AUROC it
reaches (`Onsets.auroc`): the ceiling for a model predicting breaks from the prefix,
which the behaviour analysis sets beside the model's own AUROC (both `auroc`).

The rule's state before each step is the ground truth the known-answer analysis probes
for (`RULE_VARIABLES`): `interleave` reports it as it places the breaks (`trace`), so the
records carry what the rule itself computed, and `trace_without_breaks` reads a sequence
that has no breaks (the standard variant's steps) with the same code.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple, TypeVar

import numpy as np

REGULATION_ACTIONS: tuple[str, ...] = (
    "sip water",
    "deep breath",
    "close eyes briefly",
    "quick stretch",
    "pause",
)
"""Micro-regulation steps of the ADHD variant; always lowercase, never a content step."""

_REGULATION_SET = frozenset(REGULATION_ACTIONS)


def is_regulation(step: str) -> bool:
    """True if `step` is one of the micro-regulation actions (ignoring case and spaces)."""
    return step.strip().lower() in _REGULATION_SET


EFFORT = {"effortful": 2, "light": 1}
"""Weight of an ADHD content step towards the next break, by its phase's effort."""


def auroc(
    scores: Sequence[float], labels: Sequence[bool], weights: Sequence[int] | None = None
) -> float:
    """Area under the ROC curve, ties counting one half: the Mann-Whitney U of the positive
    scores against the negative ones over n_pos * n_neg (nan without both classes).

    `weights[i]` (default 1) is how many times the pair (scores[i], labels[i]) occurs. U is
    summed in exact half-integers, so the result is the correctly rounded ratio.
    """
    y = np.asarray(labels, dtype=bool)
    w = np.ones(len(y), np.int64) if weights is None else np.asarray(weights, np.int64)
    values, index = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    neg = np.bincount(index[~y], w[~y], minlength=len(values))  # per distinct score, sorted
    pos = np.bincount(index[y], w[y], minlength=len(values))
    n_neg, n_pos = int(neg.sum()), int(pos.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives scored strictly lower
    u = float((pos * (below + 0.5 * neg)).sum())
    return u / (n_pos * n_neg)


class Onsets:
    """Step onsets of ADHD examples counted by (Bayes posterior level, is a break).

    Columns: [first or after a break (never a break), rule quiet & no break, rule quiet &
    break, rule fires & no break, rule fires & break].
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0] * 5

    def add(self, other: Onsets) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]

    def auroc(self, noise: float) -> float | None:
        """`auroc` of the posterior against the labels (None without both classes)."""
        zero, quiet_neg, quiet_pos, fire_neg, fire_pos = self.counts
        scores = [0.0, noise, noise, 1.0 - noise, 1.0 - noise]  # noise 0 ties the first two
        labels = [False, False, True, False, True]
        area = auroc(scores, labels, weights=[zero, quiet_neg, quiet_pos, fire_neg, fire_pos])
        return None if np.isnan(area) else round(area, 6)

    def flip_rate(self) -> float | None:
        _, quiet_neg, quiet_pos, fire_neg, fire_pos = self.counts
        gaps = quiet_neg + quiet_pos + fire_neg + fire_pos
        return round((quiet_pos + fire_neg) / gaps, 6) if gaps else None


T = TypeVar("T")

RULE_VARIABLES: tuple[str, ...] = ("load", "budget", "remaining", "since_break", "effort")
"""The rule's state before a step, as val and test records carry it (one value per step):
the effort load of the content steps since the last break, the task's budget, remaining
= budget - load (the rule fires after a content step when it is <= 0), the content steps
since the last break, and the effort of the step just written (0 at the first step and
right after a break)."""


class RuleState(NamedTuple):
    """What the rule knows before a step, budget aside (`interleave`'s `trace`)."""

    load: int
    since_break: int
    effort: int


_START = RuleState(0, 0, 0)


def rule_variables(trace: Sequence[RuleState], budget: int) -> dict[str, list[int]]:
    """Per `RULE_VARIABLES` name, its value before each step of a traced sequence."""
    load = [s.load for s in trace]
    return {
        "load": load,
        "budget": [budget] * len(trace),
        "remaining": [budget - x for x in load],
        "since_break": [s.since_break for s in trace],
        "effort": [s.effort for s in trace],
    }


_P_ZERO = "0.0"


def interleave(
    content: Sequence[T],
    efforts: Sequence[int],
    budget: int,
    noise: float,
    rng: random.Random,
    actions: Sequence[T],
    by_action: list[int],
    onsets: Onsets,
    p_break: list[str] | None = None,
    trace: list[RuleState] | None = None,
) -> list[T]:
    """`content` with breaks placed by the effort rule (module docstring).

    `efforts[j]` weighs content step j; `by_action` counts the actions drawn, `onsets`
    the step onsets by posterior level, `p_break` (if given) receives the posterior
    of every output step, the first included, as JSON text, and `trace` (if given) the
    rule's state before every output step (`RuleState`).
    """
    rand = rng.random
    n_actions = len(actions)
    last = n_actions  # no action yet
    counts = onsets.counts
    if p_break is not None:  # json.dumps writes a float as its repr
        p_quiet, p_fire = repr(float(noise)), repr(1.0 - noise)
        p_break.append(_P_ZERO)
    if trace is not None:
        trace.append(_START)
    out = [content[0]]
    load = efforts[0]
    since = 1
    breaks = 0
    for j in range(1, len(content)):
        fires = load >= budget
        placed = (rand() < noise) != fires
        counts[1 + 2 * fires + placed] += 1
        if p_break is not None:
            p_break.append(p_fire if fires else p_quiet)
        if trace is not None:
            trace.append(RuleState(load, since, efforts[j - 1]))
        if placed:
            i = int(rand() * (n_actions - (last < n_actions)))
            i += i >= last
            out.append(actions[i])
            by_action[i] += 1
            last = i
            load = since = 0
            breaks += 1
            if p_break is not None:
                p_break.append(_P_ZERO)
            if trace is not None:
                trace.append(_START)
        out.append(content[j])
        load += efforts[j]
        since += 1
    counts[0] += 1 + breaks
    return out


def trace_without_breaks(efforts: Sequence[int]) -> list[RuleState]:
    """The rule's state before each step of a sequence of content steps with no break in
    it (the standard variant's, one step per phase): `interleave` itself, with a budget the
    load never reaches, so the load is never reset."""
    trace: list[RuleState] = []
    content = range(len(efforts))
    interleave(content, efforts, sum(efforts) + 1, 0.0, random.Random(0), (), [], Onsets(),
               trace=trace)  # fmt: skip
    return trace
