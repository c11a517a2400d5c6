"""Where the break rule's variables live: closed-form ridge probes at the rule's decision
points, each beside a control task of shuffled labels.

The decision points are the onset predictors (`<|sep|>` before step k) right after a
content step: where the rule compares the load with the budget. At the first step and
right after a break every variable sits at its reset value, which the token just read
gives away, so those onsets are left out. The labels are the records' own values
(`corpus.regulation.RULE_VARIABLES`, written by the code that placed the breaks) and the
task's complexity.

A probe is ridge regression on one residual site (closed form, Hoerl & Kennard 1970),
its penalty chosen by 5-fold cross-validation over the tasks of probe-train (points of
one task are not independent: GCV, which assumes they are, picked penalties that
overfit the tasks); a categorical variable (`effort`) regresses its one-hot code and
predicts the largest output. Score: R² on probe-test (1 - SSE / SST about the probe-test mean), or
accuracy for a categorical variable. Control task (Hewitt & Liang 2019): the same
variable's labels shuffled over the decision points, fitted and scored the same way;
selectivity = score - control. Probe-train and probe-test are split by task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.analysis.interventions import act_name
from interpgpt.corpus.evalset import EncodedSet
from interpgpt.corpus.regulation import RULE_VARIABLES
from interpgpt.errors import UserError

VARIABLES: tuple[str, ...] = (*RULE_VARIABLES, "complexity")
"""The known answers, in report order: the rule's state before a step and the task's
complexity."""
CATEGORICAL = frozenset({"effort"})
"""Variables scored by accuracy; the others by R²."""
ALPHAS: tuple[float, ...] = tuple(10.0**e for e in range(-6, 3))
"""Ridge penalties tried, relative to the mean squared singular value of probe-train."""


def residual_sites(n_layer: int) -> list[tuple[str, str]]:
    """(label, hook name) of the residuals probed: the embedding, then each block's output."""
    return [("embed", act_name("embed"))] + [
        (f"L{layer}", act_name("resid_post", layer)) for layer in range(n_layer)
    ]


@dataclass
class DecisionPoints:
    """The residuals, labels and clean P(regulation next) at the rule's decision points."""

    acts: dict[str, Float[Tensor, "n d_model"]]
    """Per hook name, one row per decision point."""
    labels: dict[str, Float[Tensor, " n"]]
    """Per `VARIABLES` name, its value at each decision point."""
    task: Int[Tensor, " n"]
    row: Int[Tensor, " n"]
    """Row of the evaluation set."""
    pos: Int[Tensor, " n"]
    """Position of the onset predictor in that row."""
    p_regulation: Float[Tensor, " n"]
    """The model's clean P(first token of a regulation action next)."""

    def __len__(self) -> int:
        return len(self.task)

    @property
    def layers(self) -> list[str]:
        """The label of each site of `acts`, in order (`residual_sites`)."""
        return [label for label, _ in residual_sites(len(self.acts) - 1)]

    @property
    def fires(self) -> Bool[Tensor, " n"]:
        """The rule asks for a break here (remaining <= 0)."""
        return self.labels["remaining"] <= 0


def decision_labels(eset: EncodedSet) -> tuple[list[tuple[int, int]], dict[str, list[float]]]:
    """(row, position) of every decision point of `eset` and each variable's values there."""
    where: list[tuple[int, int]] = []
    labels: dict[str, list[float]] = {name: [] for name in VARIABLES}
    for row, (roles, record) in enumerate(zip(eset.roles, eset.records, strict=True)):
        if any(name not in record for name in RULE_VARIABLES):
            raise UserError(
                "the records carry no break-rule variables (load, budget, ...): rebuild the "
                "corpus with `interpgpt corpus` and read its val or test split"
            )
        if len(roles.onset_predictors) != len(record["steps"]):
            raise UserError(f"task {record['task_id']}: steps and step onsets do not align")
        for k in range(1, len(roles.onset_predictors)):
            if roles.step_is_regulation[k - 1]:
                continue
            where.append((row, roles.onset_predictors[k]))
            for name in RULE_VARIABLES:
                labels[name].append(float(record[name][k]))
            labels["complexity"].append(float(record["complexity"]))
    if not where:
        raise UserError("no decision point (an onset after a content step) in the sequences")
    return where, labels


@torch.no_grad()
def decision_points(
    model, eset: EncodedSet, reg_ids: list[int], batch_size: int = 32
) -> DecisionPoints:
    """Run the model once over `eset`; keep every site's residual and P(regulation next) at
    the decision points."""
    where, labels = decision_labels(eset)
    sites = [name for _, name in residual_sites(model.cfg.n_layer)]
    device = next(model.parameters()).device
    rows = torch.tensor([r for r, _ in where])
    pos = torch.tensor([p for _, p in where])
    acts: dict[str, list[Tensor]] = {name: [] for name in sites}
    p_reg: list[Tensor] = []
    for start in range(0, len(eset), batch_size):
        batch = eset.subset(slice(start, start + batch_size))
        keep = (rows >= start) & (rows < start + len(batch))
        r, p = (rows[keep] - start).to(device), pos[keep].to(device)
        final, cache = model.run_with_cache(  # unembedded at the decision points only
            batch.ids.to(device), names_filter=sites, stop_at_layer=model.cfg.n_layer
        )
        for name in sites:
            acts[name].append(cache[name][r, p].float().cpu())
        logits = model.unembed(final[r, p])
        p_reg.append(logits.float().softmax(-1)[:, reg_ids].sum(-1).cpu())
    task = torch.tensor([int(eset.records[r]["task_id"]) for r, _ in where])
    return DecisionPoints(
        acts={name: torch.cat(chunks) for name, chunks in acts.items()},
        labels={name: torch.tensor(values, dtype=torch.float64) for name, values in labels.items()},
        task=task,
        row=rows,
        pos=pos,
        p_regulation=torch.cat(p_reg),
    )


def split_by_task(task: Tensor, train_fraction: float, seed: int) -> Bool[Tensor, " n"]:
    """True for the points of probe-train tasks; no task is on both sides."""
    tasks = task.unique()
    if len(tasks) < 2:
        raise UserError("the probes need at least two tasks to split by task")
    order = tasks[torch.randperm(len(tasks), generator=torch.Generator().manual_seed(seed))]
    n_train = min(max(1, round(train_fraction * len(tasks))), len(tasks) - 1)
    return torch.isin(task, order[:n_train])


# ------------------------------------------------------------------------------- ridge


@dataclass
class RidgeProbe:
    """y ≈ x W + b, fitted by ridge; a categorical probe predicts `classes[argmax]`."""

    weight: Float[Tensor, "d_model out"]
    bias: Float[Tensor, " out"]
    alpha: float
    """The penalty chosen (absolute): by cross-validation over tasks, or GCV."""
    classes: Tensor | None = None
    """A categorical probe's class values, one per output; None for a regression."""

    def predict(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, " n"]:
        out = x.double() @ self.weight + self.bias
        if self.classes is None:
            return out[:, 0]
        return self.classes[out.argmax(-1)]

    def direction(self) -> Float[Tensor, " d_model"]:
        """The unit vector the regression reads (its weight, normalised); regressions only."""
        w = self.weight[:, 0]
        return (w / w.norm().clamp(min=1e-12)).float()


@dataclass
class CentredSVD:
    """The thin SVD of centred x, from which ridge on x is closed form for every penalty
    and every target: W = V diag(s / (s² + λ)) Uᵀ (y - ȳ), b = ȳ - x̄ W."""

    mean: Float[Tensor, " d_model"]
    u: Float[Tensor, "n k"]
    s: Float[Tensor, " k"]
    vt: Float[Tensor, "k d_model"]

    @classmethod
    def of(cls, x: Float[Tensor, "n d_model"]) -> CentredSVD:
        mean = x.mean(0)
        u, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
        return cls(mean, u, s, vt)

    def path(self, target: Tensor, lams: list[float]) -> list[tuple[Tensor, Tensor]]:
        """(weight, bias) of ridge of `target` (n, out) for each penalty."""
        my = target.mean(0)
        uty = self.u.T @ (target - my)
        out = []
        for lam in lams:
            weight = self.vt.T @ ((self.s / (self.s.square() + lam))[:, None] * uty)
            out.append((weight, my - self.mean @ weight))
        return out


@dataclass
class RidgeDesign:
    """What every ridge probe on one x shares, whatever it regresses: the SVD of centred
    x, the penalties tried, and each cross-validation fold's held-out points with the SVD
    of the rest. Probes of several variables (and their shuffled controls) on one site
    factorise x once (`fit` per target)."""

    x: Float[Tensor, "n d_model"]
    """float64."""
    full: CentredSVD
    lams: list[float]
    """ALPHAS times the mean squared singular value of centred x."""
    folds: list[tuple[Bool[Tensor, " n"], CentredSVD]]
    """(held out, SVD of the rest) per fold; empty: the penalty is chosen by GCV."""

    def fit(self, y: Tensor, categorical: bool = False) -> RidgeProbe:
        """Ridge of `y` (or its one-hot code) with the penalty of least squared error under
        cross-validation over the folds, or by GCV without them."""
        x, lams = self.x, self.lams
        classes = y.unique() if categorical else None
        column = y.double()[:, None]
        target = column if classes is None else (y[:, None] == classes[None, :]).double()
        errors = torch.zeros(len(lams), dtype=torch.float64)
        for held, svd in self.folds:
            for i, (w, b) in enumerate(svd.path(target[~held], lams)):
                errors[i] += (target[held] - x[held] @ w - b).square().sum()
        if not self.folds:  # GCV = n RSS / (n - df - 1)^2, df = sum s^2 / (s^2 + lam)
            s2, n = self.full.s.square(), x.shape[0]  # (Golub et al. 1979)
            for i, (w, b) in enumerate(self.full.path(target, lams)):
                dof = n - float((s2 / (s2 + lams[i])).sum()) - 1
                rss = float((target - x @ w - b).square().sum())
                errors[i] = n * rss / dof**2 if dof > 0 else float("inf")
        lam = lams[int(errors.argmin())]
        ((weight, bias),) = self.full.path(target, [lam])
        return RidgeProbe(weight, bias, lam, classes)


def ridge_design(
    x: Float[Tensor, "n d_model"],
    groups: Int[Tensor, " n"] | None = None,
    alphas: tuple[float, ...] = ALPHAS,
    folds: int = 5,
) -> RidgeDesign:
    """Factorise `x` for ridge probes: `folds` cross-validation folds of whole `groups`
    (tasks: points of one task are not independent, and a penalty chosen as if they were
    overfits the task); without groups (or with one), GCV."""
    x64 = x.double()
    full = CentredSVD.of(x64)
    scale = float(full.s.square().mean())
    lams = [a * (scale if scale > 0 else 1.0) for a in alphas]
    splits = []
    if groups is not None and len(groups.unique()) >= 2:
        ids = torch.unique(groups, return_inverse=True)[1] % min(folds, len(groups.unique()))
        for fold in ids.unique():
            held = ids == fold
            splits.append((held, CentredSVD.of(x64[~held])))
    return RidgeDesign(x64, full, lams, splits)


def fit_ridge(
    x: Float[Tensor, "n d_model"],
    y: Float[Tensor, " n"],
    categorical: bool = False,
    groups: Int[Tensor, " n"] | None = None,
    alphas: tuple[float, ...] = ALPHAS,
    folds: int = 5,
) -> RidgeProbe:
    """Ridge regression of `y` (or its one-hot code) on `x` in closed form (through the
    SVD of centred x), with the penalty of least squared error under cross-validation
    over `folds` folds of whole `groups`; without groups, by GCV (`ridge_design`; to fit
    several targets on one x, factorise it once and call its `fit` per target)."""
    return ridge_design(x, groups, alphas, folds).fit(y, categorical)


def score(probe: RidgeProbe, x: Tensor, y: Tensor) -> float:
    """Accuracy of a categorical probe; R² of a regression (nan when y is constant)."""
    pred = probe.predict(x)
    y = y.double()
    if probe.classes is not None:
        return float((pred == y).double().mean())
    sst = float((y - y.mean()).square().sum())
    return 1.0 - float((y - pred).square().sum()) / sst if sst > 0 else float("nan")


# ------------------------------------------------------------------------- all layers


@dataclass
class VariableScores:
    """One variable's probe on every residual site."""

    variable: str
    metric: str
    """r2 or accuracy."""
    score: list[float] = field(default_factory=list)
    """Probe-test score per site (embed first)."""
    control: list[float] = field(default_factory=list)
    """The same probe on shuffled labels, per site."""
    selectivity: list[float] = field(default_factory=list)
    """score - control, per site."""
    baseline: float = 0.0
    """R² 0 (the probe-train mean); accuracy: the probe-train majority class."""
    best: int = 0
    """Index of the site with the highest score (ties: the earliest)."""
    skipped: str | None = None
    """Why the variable was not probed (constant labels), else None."""


@dataclass
class VariableProbes:
    """Every variable's scores, and the fitted probes (per variable, per hook name)."""

    layers: list[str]
    scores: list[VariableScores]
    probes: dict[str, dict[str, RidgeProbe]]

    def get(self, variable: str) -> VariableScores:
        return next(v for v in self.scores if v.variable == variable)


def probe_variables(
    points: DecisionPoints, train: Tensor, seed: int = 0, variables: tuple[str, ...] = VARIABLES
) -> VariableProbes:
    """Fit and score every variable's probe on every site, and its shuffled-label control."""
    sites = list(points.acts)
    gen = torch.Generator().manual_seed(seed)
    scores: list[VariableScores] = []
    probes: dict[str, dict[str, RidgeProbe]] = {}
    designs: dict[str, RidgeDesign] = {}
    for name in variables:
        y = points.labels[name]
        categorical = name in CATEGORICAL
        result = VariableScores(name, "accuracy" if categorical else "r2")
        scores.append(result)
        if len(y[train].unique()) < 2 or int((~train).sum()) == 0:
            result.skipped = f"{name} takes one value on probe-train, or probe-test is empty"
            continue
        shuffled = y[torch.randperm(len(y), generator=gen)]
        if categorical:
            values, counts = y[train].unique(return_counts=True)
            result.baseline = float((y[~train] == values[counts.argmax()]).double().mean())
        probes[name] = {}
        for site in sites:
            x = points.acts[site]
            if site not in designs:  # shared by every variable and control on this site
                designs[site] = ridge_design(x[train], points.task[train])
            probe = designs[site].fit(y[train], categorical)
            control = designs[site].fit(shuffled[train], categorical)
            probes[name][site] = probe
            result.score.append(score(probe, x[~train], y[~train]))
            result.control.append(score(control, x[~train], shuffled[~train]))
            result.selectivity.append(result.score[-1] - result.control[-1])
        finite = [s if s == s else -float("inf") for s in result.score]
        result.best = max(range(len(finite)), key=lambda i: finite[i])
    return VariableProbes(points.layers, scores, probes)
