"""Is the remaining budget used? Interchange interventions along the probe's direction.

An interchange intervention (Geiger et al. 2021 "Causal abstractions of neural
networks"; Geiger et al. 2024 "Finding alignments between interpretable causal variables
and distributed neural representations", DAS) runs the model on a base input with one
variable's representation taken from a source input, and asks whether the output changes
as the high-level model says it should with the source's value of the variable.

Here the high-level model is the corpus's break rule and the variable is `remaining`.
Base and source are two decision points (onset predictors after a content step, of
probe-test tasks) whose `remaining` differs; half the pairs are drawn so the rule's
decision differs (the source fires, the base not, or the reverse), half so it does not.
At one residual site, the base's coordinate along the unit direction u of the
`remaining` probe is replaced by the source's (`interventions.interchange`, a 1-D
subspace): h' = h + ((h_src - h) · u) u. The rule predicts P(break next) = 1 - noise if
the source's remaining <= 0, else noise.

Statistics, per site: the interchange-intervention accuracy (IIA), the share of pairs
whose intervened decision (P(regulation next) > 1/2) is the rule's decision for the
source, over the pairs whose base the model decides as the rule does unintervened (as
Geiger et al. score only inputs the model gets right), in all and in the flip pairs
alone; the sign agreement, the share of flip pairs whose P(regulation next) moves the
way the rule's does; and the mean change on flip pairs the rule sends up and down. The
same with random unit directions is the null.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.analysis.interventions import (
    ResidualCache,
    interchange,
    resid_block,
    resumed_logits,
)
from interpgpt.analysis.known_answers.probing import DecisionPoints, residual_sites
from interpgpt.corpus.evalset import EncodedSet


@dataclass
class Pairs:
    """(base, source) decision points, as indices into a `DecisionPoints`."""

    base: Int[Tensor, " pair"]
    source: Int[Tensor, " pair"]


def sample_pairs(
    points: DecisionPoints, among: Bool[Tensor, " n"], n_pairs: int, gen: torch.Generator
) -> Pairs:
    """`n_pairs` pairs of points of `among` whose `remaining` differs: even pairs with the
    rule's decision differing where possible, odd ones with it the same where possible."""
    idx = among.nonzero()[:, 0]
    remaining, fires = points.labels["remaining"], points.fires
    bases, sources = [], []
    for i in range(n_pairs if len(idx) else 0):
        b = int(idx[torch.randint(len(idx), (1,), generator=gen)])
        other = remaining[idx] != remaining[b]
        wanted = other & ((fires[idx] != fires[b]) if i % 2 == 0 else (fires[idx] == fires[b]))
        pool = idx[wanted] if bool(wanted.any()) else idx[other]
        if len(pool) == 0:
            continue
        bases.append(b)
        sources.append(int(pool[torch.randint(len(pool), (1,), generator=gen)]))
    return Pairs(torch.tensor(bases, dtype=torch.long), torch.tensor(sources, dtype=torch.long))


@dataclass
class BaseBatch:
    """Bases of one batch of pairs, their rows cut after the latest decision point."""

    ids: Int[Tensor, "batch pos"]
    read: Bool[Tensor, "batch pos"]
    """Each base's decision point (one per row)."""
    pairs: Int[Tensor, " batch"]
    """Which pair each row is."""


class BaseRuns:
    """P(regulation next) at the bases of `pairs`, intervened along directions at sites.

    The values are those of a full forward under the interchange hook, read at each base's
    decision point (the reference in tests/analysis/test_known_answers.py), computed with
    less: everything upstream of the site is the same for every direction, so the bases'
    residual stream at the site is kept per batch (one site at a time) and only the blocks
    after it run (`interventions.resumed_logits`); only the decision points are
    unembedded; and the pairs are batched in order of their base's position, so a batch is
    cut close to each of its rows' decision point.
    """

    def __init__(self, model, eset: EncodedSet, points: DecisionPoints, pairs: Pairs,
                 batch_size: int = 32):  # fmt: skip
        self.model, self.points, self.pairs = model, points, pairs
        device = next(model.parameters()).device
        pos = points.pos[pairs.base]
        order = torch.argsort(pos, stable=True)
        self.batches: list[BaseBatch] = []
        for start in range(0, len(order), batch_size):
            which = order[start : start + batch_size]
            base_pos = pos[which]
            ids = eset.ids[points.row[pairs.base[which]], : int(base_pos.max()) + 1]
            read = torch.zeros(ids.shape, dtype=torch.bool)
            read[torch.arange(len(which)), base_pos] = True
            self.batches.append(BaseBatch(ids.to(device), read.to(device), which))
        self.resid = ResidualCache(model, [b.ids for b in self.batches])
        """The bases' clean residual stream entering a block, per batch (one at a time)."""

    def log_p_regulation(
        self, hook_name: str, direction: Float[Tensor, " d_model"], reg_ids: list[int], batch: int
    ) -> Float[Tensor, " batch"]:
        """log P(regulation next) at the bases of batch `batch` (`self.batches`) with their
        coordinate along `direction` at `hook_name` set to their sources' (read from
        `points.acts`); differentiable in `direction`."""
        block = resid_block(hook_name, self.model.cfg.n_layer)
        b, resid = self.batches[batch], self.resid(block)[batch]
        u = direction.float() / direction.float().norm().clamp(min=1e-12)
        source = self.points.acts[hook_name][self.pairs.source[b.pairs]].float().to(u.device)
        coords = torch.zeros(*b.ids.shape, 1, device=b.ids.device)
        coords[b.read] = (source @ u)[:, None].to(coords.device)
        hook = interchange(hook_name, u[:, None], coords, b.read)
        logits = resumed_logits(self.model, resid, block, b.read, [hook])
        return logits.float().log_softmax(-1)[:, reg_ids].logsumexp(-1)

    @torch.no_grad()
    def p_regulation(
        self, hook_name: str, direction: Float[Tensor, " d_model"], reg_ids: list[int]
    ) -> Float[Tensor, " pair"]:
        """P(regulation next) at each base with its coordinate along `direction` at
        `hook_name` set to its source's (read from `points.acts`)."""
        out = torch.zeros(len(self.pairs.base))
        for i, b in enumerate(self.batches):
            out[b.pairs] = self.log_p_regulation(hook_name, direction, reg_ids, i).exp().cpu()
        return out


def learn_direction(
    runs: BaseRuns,
    hook_name: str,
    reg_ids: list[int],
    init: Float[Tensor, " d_model"],
    steps: int,
    lr: float = 0.01,
) -> Float[Tensor, " d_model"]:
    """Distributed alignment search with a 1-D subspace (Geiger et al. 2024): the unit
    direction u at `hook_name` along which the interchange makes the model decide as the
    rule decides for the source, learned by Adam from `init` on the pairs of `runs`
    (training pairs, not the scored ones). Loss: the cross-entropy of P(regulation next)
    after the interchange against the rule's decision for the source; only u is trained
    (the model's weights get no gradient)."""
    target = runs.points.fires.double()[runs.pairs.source]
    w = init.detach().float().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for step in range(steps):
        batch = step % len(runs.batches)
        log_p = runs.log_p_regulation(hook_name, w, reg_ids, batch)
        y = target[runs.batches[batch].pairs].to(log_p)
        log_not = torch.log(-torch.expm1(log_p.clamp(max=-1e-7)))
        loss = -(y * log_p + (1 - y) * log_not).mean()
        (w.grad,) = torch.autograd.grad(loss, [w])
        opt.step()
    return (w / w.norm().clamp(min=1e-12)).detach()


def intervened_p_regulation(
    model,
    eset: EncodedSet,
    points: DecisionPoints,
    pairs: Pairs,
    hook_name: str,
    direction: Float[Tensor, " d_model"],
    reg_ids: list[int],
    batch_size: int = 32,
) -> Float[Tensor, " pair"]:
    """P(regulation next) at each base with its coordinate along `direction` at
    `hook_name` set to its source's (read from `points.acts`). (One call; `BaseRuns` keeps
    what the runs with other directions share.)"""
    runs = BaseRuns(model, eset, points, pairs, batch_size)
    return runs.p_regulation(hook_name, direction, reg_ids)


@dataclass
class InterchangeScores:
    """How the intervened P(regulation next) compares with the rule's counterfactual."""

    iia: float
    """Share of pairs (base decided as the rule does) whose intervened decision is the
    rule's decision for the source."""
    iia_flip: float
    """The same over the flip pairs (the rule's decision differs) alone."""
    n_scored: int
    """Pairs whose base the model decides as the rule does, unintervened."""
    n_flip_scored: int
    sign_agreement: float
    """Share of flip pairs whose P(regulation next) moves the way the rule's does."""
    mean_delta_up: float
    """Mean change of P(regulation next) on flip pairs the rule sends up (nan if none)."""
    mean_delta_down: float
    """The same on flip pairs the rule sends down."""


def _mean(x: Tensor) -> float:
    return float(x.double().mean()) if len(x) else float("nan")


def interchange_scores(
    points: DecisionPoints, pairs: Pairs, p_after: Float[Tensor, " pair"]
) -> InterchangeScores:
    """`InterchangeScores` of one intervention's outputs."""
    before, after = points.fires[pairs.base], points.fires[pairs.source]
    p_clean = points.p_regulation[pairs.base]
    right = (p_clean > 0.5) == before
    flip = before != after
    agree = (p_after > 0.5) == after
    delta = p_after - p_clean
    up, down = flip & after, flip & ~after
    moved = torch.where(after, delta > 0, delta < 0)
    return InterchangeScores(
        iia=_mean(agree[right].double()),
        iia_flip=_mean(agree[right & flip].double()),
        n_scored=int(right.sum()),
        n_flip_scored=int((right & flip).sum()),
        sign_agreement=_mean(moved[flip].double()),
        mean_delta_up=_mean(delta[up]),
        mean_delta_down=_mean(delta[down]),
    )


@dataclass
class LayerInterchange:
    """The interchange along the probe's direction at one site, and along random ones."""

    layer: str
    hook_name: str
    probe: InterchangeScores
    random: list[InterchangeScores] = field(default_factory=list)
    das: InterchangeScores | None = None
    """Along the direction learned by `learn_direction` on probe-train pairs (None: not
    learned at this site)."""
    das_cosine: float | None = None
    """|cosine| between the learned direction and the probe's."""

    @property
    def random_iia_flip(self) -> float:
        """Mean flip-pair IIA of the random directions (nan ones left out)."""
        values = [r.iia_flip for r in self.random if not math.isnan(r.iia_flip)]
        return sum(values) / len(values) if values else float("nan")

    @property
    def random_sign_agreement(self) -> float:
        values = [r.sign_agreement for r in self.random if not math.isnan(r.sign_agreement)]
        return sum(values) / len(values) if values else float("nan")


def interchange_layers(
    model,
    eset: EncodedSet,
    points: DecisionPoints,
    pairs: Pairs,
    directions: dict[str, Tensor],
    reg_ids: list[int],
    n_random: int,
    gen: torch.Generator,
    batch_size: int = 32,
    das_pairs: Pairs | None = None,
    das_steps: int = 0,
    das_sites: Collection[str] = (),
) -> list[LayerInterchange]:
    """The interchange at each site of `directions` (hook name -> the probe's direction),
    beside `n_random` random unit directions per site; at the sites of `das_sites`, also
    along the direction `learn_direction` learns from the probe's in `das_steps` steps on
    the training pairs `das_pairs`."""
    labels = dict((name, label) for label, name in residual_sites(model.cfg.n_layer))
    runs = BaseRuns(model, eset, points, pairs, batch_size)
    train = (
        BaseRuns(model, eset, points, das_pairs, batch_size)
        if das_pairs is not None and das_steps > 0 and das_sites
        else None
    )
    results = []
    for hook_name, direction in directions.items():

        def run(u: Tensor, hook_name: str = hook_name) -> InterchangeScores:
            return interchange_scores(points, pairs, runs.p_regulation(hook_name, u, reg_ids))

        randoms = [run(torch.randn(direction.shape[0], generator=gen)) for _ in range(n_random)]
        layer = LayerInterchange(labels[hook_name], hook_name, run(direction), randoms)
        if train is not None and hook_name in das_sites:
            learned = learn_direction(train, hook_name, reg_ids, direction, das_steps)
            layer.das = run(learned)
            layer.das_cosine = abs(float(learned @ direction / direction.norm()))
        results.append(layer)
    return results
