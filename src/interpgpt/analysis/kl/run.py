"""Where the pair's next-token distributions differ: per-token KL divergence by token role.

The outside-in first look at a model diff: before any activation is read, compare what
the two models *say*. Teacher-force the same held-out sequence through both and, at every
position p, take the KL divergence between their next-token distributions (the
distribution over token p+1 given tokens 0..p), in both directions:

    KL(a‖b) = Σ_t P_a(t) (log P_a(t) − log P_b(t)),   and KL(b‖a) likewise,

in float64 (a model and its data-order twin differ by little, and small KLs must not
drown in rounding). Comparing output distributions token by token is the base-vs-finetuned
comparison of model-diffing work (e.g. the KL "where does the finetune diverge" view of
the science-of-finetuning diffing toolkit); here the positions are grouped by what they
predict, from the corpus's one definition of token roles (`TokenRoles`). Each position p
with a next token (p < length − 1) has exactly one role:

- `task`: `<|task|>` and the task's tokens; they predict the next task token, the last
  one `<|steps|>`.
- `onset_predictor`: a `<|steps|>`/`<|sep|>` followed by a step; it predicts the step's
  first token, which is where a regulation action is chosen.
- `step_content`: tokens of a content step; they predict the step's next token or the
  `<|sep|>` closing it.
- `regulation_step`: tokens of a regulation step; likewise.
- `end_predictor`: the last token of the last step; it predicts `<|end|>`.
- `other`: anything else with a next token (a `<|sep|>` before an empty step; none in
  corpus records).

The `<|end|>` position and the padding after it predict nothing that is scored.

`compare_outputs` is the pure computation for any two models sharing a tokenizer (the
study also runs it on a model and its data-order twin, the seed null of every pair
difference); `run_kl` reads a pair and both variants' test sequences and writes kl.json
and kl_by_role.png. In the study the stage is "kl", after the export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from matplotlib.figure import Figure
from torch import Tensor

from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.kl.config import KLConfig
from interpgpt.analysis.lm import TextSet, as_lm
from interpgpt.analysis.plots import save_figure
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    figures,
    fmt,
)
from interpgpt.artifacts.load import load_pair
from interpgpt.constants import VARIANTS
from interpgpt.corpus.evalset import EncodedSet, load_eval_set
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, to_jsonable, write_json

KL_JSON = "kl.json"
KL_PLOT = "kl_by_role.png"

ROLES: tuple[str, ...] = (
    "task",
    "onset_predictor",
    "step_content",
    "regulation_step",
    "end_predictor",
    "other",
)
"""Token roles of a predicting position, in the order of the module docstring."""
ALL = "all"
"""The role key of every scored position together."""
POOLED = "pooled"
"""The source key of every evaluation set together."""
NOT_SCORED = -1
"""Role id of positions without a next token (`<|end|>`, padding)."""
STATS = ("kl_ab", "kl_ba", "symmetric")
"""Headline statistics: KL(a‖b), KL(b‖a) and their mean (half the Jeffreys divergence)."""


# ---------------------------------------------------------------------------- roles


def position_roles(data: EncodedSet) -> Int[Tensor, "batch pos"]:
    """Role id (index into `ROLES`) of every position, `NOT_SCORED` where there is no next
    token; see the module docstring for what each role predicts."""
    roles = torch.full_like(data.ids, NOT_SCORED)
    role = {name: i for i, name in enumerate(ROLES)}
    for row, (tr, length) in enumerate(zip(data.roles, data.lengths.tolist(), strict=True)):
        roles[row, : length - 1] = role["other"]
        roles[row, [0, *tr.task_range]] = role["task"]
        roles[row, list(tr.onset_predictors)] = role["onset_predictor"]
        for (start, end), is_reg in zip(tr.step_spans, tr.step_is_regulation, strict=True):
            roles[row, start:end] = role["regulation_step" if is_reg else "step_content"]
        if tr.end_position is not None:
            roles[row, tr.end_position - 1] = role["end_predictor"]
        roles[row, length - 1 :] = NOT_SCORED
    return roles


def predicting_positions(data) -> Int[Tensor, "batch pos"]:
    """Role `other` at every position with a next token, `NOT_SCORED` elsewhere: the roles
    of texts that are not corpus records (any `TextSet`)."""
    pos = torch.arange(data.ids.shape[1])[None, :]
    scored = pos < (data.lengths[:, None] - 1)
    return torch.where(scored, ROLES.index("other"), NOT_SCORED)


# ---------------------------------------------------------------------------- the pass


@dataclass
class SourceKL:
    """One evaluation set, flattened over its scored positions (row-major)."""

    kl_ab: Float[Tensor, " n"]
    """KL(a‖b) of the next-token distributions."""
    kl_ba: Float[Tensor, " n"]
    """KL(b‖a)."""
    role: Int[Tensor, " n"]
    """Index into `ROLES`."""
    row: Int[Tensor, " n"]
    """Sequence of the evaluation set."""
    pos: Int[Tensor, " n"]
    """Position in the sequence (it predicts token pos + 1)."""
    top_a: Int[Tensor, "n k"]
    """Model a's most likely next tokens, most likely first."""
    top_b: Int[Tensor, "n k"]
    p_top_a: Float[Tensor, "n k"]
    """Their probabilities under model a."""
    p_top_b: Float[Tensor, "n k"]

    @property
    def symmetric(self) -> Float[Tensor, " n"]:
        return (self.kl_ab + self.kl_ba) / 2


@dataclass
class RoleStats:
    """KL at the positions of one role in one source."""

    count: int
    mean_ab: float
    median_ab: float
    mean_ba: float
    median_ba: float
    mean_symmetric: float


@dataclass
class KLResult:
    """What `compare_outputs` computed (no files)."""

    names: tuple[str, str]
    """Labels of model a and model b."""
    sources: dict[str, SourceKL]
    """Evaluation-set name -> its per-position KLs."""
    roles: dict[str, dict[str, RoleStats]]
    """Source (and `POOLED`) -> role (and `ALL`) -> statistics."""
    headline: dict[str, float]
    """`{stat}_{role}` for stat in `STATS` and every role but `other` plus `all`, pooled
    over sources: e.g. `kl_ab_all`, `symmetric_onset_predictor`."""


@torch.no_grad()
def source_kl(
    model_a,
    model_b,
    data,
    *,
    batch_size: int = 16,
    next_tokens: int = 5,
    roles: Tensor | None = None,
) -> SourceKL:
    """KL both ways at every scored position of `data`: one forward per model per batch,
    sequences batched by length (less padding), only scored positions unembedded.

    The models are TaskGPTs, HookedTransformers or `analysis.lm` adapters; `data` an
    `EncodedSet` (roles from the corpus) or any set of `ids` and `lengths` with `roles`
    given (`predicting_positions`: every position with a next token)."""
    device = as_lm(model_a).device
    roles = position_roles(data) if roles is None else roles
    order = data.lengths.argsort(descending=True)
    parts: dict[str, list[Tensor]] = {}
    for chunk in order.split(batch_size):
        batch = data.subset(chunk)
        role = roles[chunk, : batch.ids.shape[1]]
        mask = role != NOT_SCORED
        log_a = _log_probs(model_a, batch.ids.to(device), mask.to(device))
        log_b = _log_probs(model_b, batch.ids.to(device), mask.to(device))
        gap = log_a - log_b
        k = min(next_tokens, log_a.shape[-1])
        top_a, top_b = log_a.topk(k, -1), log_b.topk(k, -1)
        where = mask.nonzero()
        per_batch = {
            "kl_ab": (log_a.exp() * gap).sum(-1),
            "kl_ba": -(log_b.exp() * gap).sum(-1),
            "role": role[mask],
            "row": chunk[where[:, 0]],
            "pos": where[:, 1],
            "top_a": top_a.indices,
            "top_b": top_b.indices,
            "p_top_a": top_a.values.exp(),
            "p_top_b": top_b.values.exp(),
        }
        for name, value in per_batch.items():
            parts.setdefault(name, []).append(value.cpu())
    if not parts:
        raise UserError("no sequence in the evaluation set")
    flat = {name: torch.cat(values) for name, values in parts.items()}
    row_major = (flat["row"] * data.ids.shape[1] + flat["pos"]).argsort()
    return SourceKL(**{name: value[row_major] for name, value in flat.items()})


def _log_probs(model, ids: Int[Tensor, "batch pos"], mask: Tensor) -> Float[Tensor, "n d_vocab"]:
    """Next-token log-probabilities at the `mask` positions (the final residual stream of
    those positions alone goes through the model's own final norm and unembedding)."""
    lm = as_lm(model)
    return lm.unembed(lm.final_residual(ids)[mask]).float().log_softmax(-1)


def role_stats(kl_ab: Tensor, kl_ba: Tensor) -> RoleStats:
    """Mean and median of both directions (nan where there is no position)."""
    if kl_ab.numel() == 0:
        nan = float("nan")
        return RoleStats(0, nan, nan, nan, nan, nan)
    ab, ba = kl_ab.double().numpy(), kl_ba.double().numpy()
    return RoleStats(
        count=int(ab.size),
        mean_ab=float(ab.mean()),
        median_ab=float(np.median(ab)),
        mean_ba=float(ba.mean()),
        median_ba=float(np.median(ba)),
        mean_symmetric=float((ab.mean() + ba.mean()) / 2),
    )


def summarise_roles(source: SourceKL) -> dict[str, RoleStats]:
    """Statistics per role, and `ALL` over every scored position."""
    stats = {
        name: role_stats(source.kl_ab[source.role == i], source.kl_ba[source.role == i])
        for i, name in enumerate(ROLES)
    }
    stats[ALL] = role_stats(source.kl_ab, source.kl_ba)
    return stats


def set_stats(source: SourceKL, masks: Mapping[str, Tensor]) -> dict[str, RoleStats]:
    """Statistics over the scored positions inside each named (batch, pos) mask of the
    source's set: position sets the caller names instead of corpus roles."""
    out = {}
    for name, mask in masks.items():
        inside = mask[source.row, source.pos]
        out[name] = role_stats(source.kl_ab[inside], source.kl_ba[inside])
    return out


def pooled(sources: Mapping[str, SourceKL]) -> SourceKL:
    """Every source's positions in one (rows keep their own set's numbering)."""
    fields = [f.name for f in dataclasses.fields(SourceKL)]
    return SourceKL(**{f: torch.cat([getattr(s, f) for s in sources.values()]) for f in fields})


def headline(stats: dict[str, RoleStats]) -> dict[str, float]:
    """The few scalars a seed-null comparison reads (see `KLResult.headline`)."""
    out = {}
    for role in (*(r for r in ROLES if r != "other"), ALL):
        s = stats[role]
        out.update(
            {
                f"kl_ab_{role}": s.mean_ab,
                f"kl_ba_{role}": s.mean_ba,
                f"symmetric_{role}": s.mean_symmetric,
            }
        )
    return out


def compare_outputs(
    model_a,
    model_b,
    eval_sets: Mapping[str, EncodedSet],
    *,
    names: tuple[str, str] = ("a", "b"),
    batch_size: int = 16,
    next_tokens: int = 5,
) -> KLResult:
    """Per-token KL(a‖b) and KL(b‖a) of two models' next-token distributions on each
    evaluation set, summarised by role; pure (no files), for any two TaskGPTs sharing a
    tokenizer (a pair, or a model and its data-order twin)."""
    if not eval_sets or POOLED in eval_sets:
        raise UserError(f"compare_outputs needs evaluation sets, none named {POOLED!r}")
    sources = {
        name: source_kl(model_a, model_b, data, batch_size=batch_size, next_tokens=next_tokens)
        for name, data in eval_sets.items()
    }
    roles = {name: summarise_roles(source) for name, source in sources.items()}
    roles[POOLED] = summarise_roles(pooled(sources))
    return KLResult(names, sources, roles, headline(roles[POOLED]))


# ---------------------------------------------------------------------------- reading it


@dataclass
class TokenProb:
    """A next token and its probability under one model."""

    token: str
    p: float


@dataclass
class HighKL:
    """One of the positions where the models disagree most."""

    source: str
    task_id: int
    """The record's task id (its row in the set when it has none)."""
    pos: int
    role: str
    kl_ab: float
    kl_ba: float
    context: str
    """The last `window` input tokens, decoded, ending at the position."""
    next_token: str
    """The token that actually follows."""
    top_a: list[TokenProb]
    """Model a's most likely next tokens, most likely first."""
    top_b: list[TokenProb]


def top_positions(
    result: KLResult,
    eval_sets: Mapping[str, EncodedSet | TextSet],
    tokenizer,
    k: int,
    window: int,
) -> list[HighKL]:
    """The `k` positions of highest symmetric KL over all sources, readable."""
    ranked = sorted(
        (
            (float(value), name, i)
            for name, source in result.sources.items()
            for i, value in enumerate(source.symmetric.tolist())
        ),
        reverse=True,
    )[:k]
    out = []
    for _, name, i in ranked:
        source, data = result.sources[name], eval_sets[name]
        row, pos = int(source.row[i]), int(source.pos[i])
        ids = data.ids[row].tolist()

        def readable(top: Tensor, probs: Tensor) -> list[TokenProb]:
            return [
                TokenProb(tokenizer.decode_text([t]), float(p))
                for t, p in zip(top.tolist(), probs.tolist(), strict=True)
            ]

        out.append(
            HighKL(
                source=name,
                task_id=int(data.records[row].get("task_id", row)),
                pos=pos,
                role=ROLES[int(source.role[i])],
                kl_ab=float(source.kl_ab[i]),
                kl_ba=float(source.kl_ba[i]),
                context=tokenizer.decode_text(ids[max(0, pos - window + 1) : pos + 1]),
                next_token=tokenizer.decode_text([ids[pos + 1]]),
                top_a=readable(source.top_a[i], source.p_top_a[i]),
                top_b=readable(source.top_b[i], source.p_top_b[i]),
            )
        )
    return out


# ---------------------------------------------------------------------------- entry point


@dataclass
class KLRun:
    """What `run_kl` computed and wrote."""

    result: KLResult
    top: list[HighKL]
    n_tasks: dict[str, int]
    """Sequences evaluated per variant."""
    files: dict[str, Path] = field(default_factory=dict)


def run_kl(config: KLConfig) -> KLRun:
    """KL between the pair's next-token distributions on both variants' held-out
    sequences; writes kl.json and kl_by_role.png under `config.out`."""
    device = resolve_device(config.device)
    pair = load_pair(config.standard, config.adhd, device, config.same_variant)
    n_ctx = pair.standard.model.cfg.n_ctx
    sets: dict[str, EncodedSet] = {
        v: load_eval_set(config.corpus, pair.tokenizer, v, config.split, config.limit, n_ctx)
        for v in VARIANTS
    }
    result = compare_outputs(
        pair.standard.model,
        pair.adhd.model,
        sets,
        names=("standard", "adhd"),
        batch_size=config.batch_size,
        next_tokens=config.next_tokens,
    )
    top = top_positions(result, sets, pair.tokenizer, config.top_k, config.window)
    run = KLRun(result, top, {v: len(data) for v, data in sets.items()})
    blob = {
        "models": {"a": "standard", "b": "adhd"},
        "directions": {"kl_ab": "KL(standard‖adhd)", "kl_ba": "KL(adhd‖standard)"},
        "positions": "every position with a next token, by the role of the predicting "
        "position (see interpgpt.analysis.kl)",
        "n_tasks": run.n_tasks,
        "overall": {"kl_ab": result.headline["kl_ab_all"], "kl_ba": result.headline["kl_ba_all"]},
        "headline": result.headline,
        "roles": result.roles,
        "top_positions": top,
        "provenance": provenance(config),
    }
    run.files = {
        "kl": write_json(config.out / KL_JSON, blob),
        "kl_plot": plot_roles(result, config.out / KL_PLOT),
    }
    return run


def plot_roles(result: KLResult, path: Path) -> Path:
    """Mean KL per role, both directions, one panel per source."""
    a, b = result.names
    sources = [s for s in result.roles if s != POOLED]
    fig = Figure(figsize=(5.5 * len(sources), 4.0), layout="tight")
    axes = fig.subplots(1, len(sources), squeeze=False, sharey=True)[0]
    for ax, source in zip(axes, sources, strict=True):
        stats = result.roles[source]
        shown = [r for r in ROLES if stats[r].count]
        x = np.arange(len(shown))
        ax.bar(x - 0.2, [stats[r].mean_ab for r in shown], 0.4, label=f"KL({a}‖{b})")
        ax.bar(x + 0.2, [stats[r].mean_ba for r in shown], 0.4, label=f"KL({b}‖{a})")
        ax.set_xticks(x, [r.replace("_", "\n") for r in shown], fontsize=8)
        ax.set_title(f"{source} sequences")
        ax.set_ylabel("mean KL (nats)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: KLConfig) -> StageOutput:
    run = run_kl(
        dataclasses.replace(
            config,
            standard=ws.export("standard"),
            adhd=ws.export("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("kl"),
        )
    )
    summary = {
        "names": list(run.result.names),
        "headline": run.result.headline,
        "roles": to_jsonable(run.result.roles[POOLED]),
        "n_tasks": run.n_tasks,
    }
    return StageOutput(list(run.files.values()), summary)


def section(summary: Summary, outputs: list[str]) -> Section:
    head, roles = summary.get("headline", {}), summary.get("roles", {})
    a, b = summary.get("names", ["standard", "adhd"])
    scored = {r: s for r, s in roles.items() if r not in (ALL, "other") and s["count"]}
    table = [["role", "positions", f"KL({a}‖{b})", "median", f"KL({b}‖{a})", "median"]]
    for role, s in roles.items():
        if s["count"]:
            table.append(
                [
                    role,
                    str(s["count"]),
                    fmt(s["mean_ab"]),
                    fmt(s["median_ab"]),
                    fmt(s["mean_ba"]),
                    fmt(s["median_ba"]),
                ]
            )
    most = max(scored, key=lambda r: scored[r]["mean_symmetric"], default="n/a")
    finding = (
        f"Over all held-out positions of both variants, KL({a}‖{b}) is "
        f"{fmt(head.get('kl_ab_all'))} and KL({b}‖{a}) {fmt(head.get('kl_ba_all'))} nats; the "
        f"models disagree most at {most.replace('_', ' ')} positions "
        f"(symmetric {fmt((scored.get(most) or {}).get('mean_symmetric'))}), and at step-onset "
        f"predictors the symmetric KL is {fmt(head.get('symmetric_onset_predictor'))}."
    )
    return Section("Where the outputs differ (KL)", finding, table=table, figures=figures(outputs))


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistics: the symmetric KL between the two models' next-token
    distributions at onset predictors (where a break is decided) and over all positions."""
    head = summary["headline"]
    return {
        "onset": Statistic(
            "symmetric KL at onset predictors (nats)", head["symmetric_onset_predictor"]
        ),
        "all": Statistic("symmetric KL over all positions (nats)", head["symmetric_all"]),
    }


ANALYSIS = Analysis(
    name="kl",
    description="per-token KL between the pair's next-token distributions, by token role",
    config=KLConfig,
    stage=stage,
    section=section,
    after=("export",),
    statistics=statistics,
)
