"""Causal head ablation with a behavioural metric and nulls: does a head matter for *what
the model writes*?

Attention profiles (the head-swap analysis) say what a head looks at; ablation asks
whether the behaviour depends on it. The behaviour here is the one the seed model card
reports: how well the number of generated steps tracks the task's complexity,
Spearman(task complexity, generated step count) over the held-out tasks (the card: ADHD
model 0.83 -> 0.78 with L3H5 ablated, median delta -0.055 over 5 seeds).

Protocol, for each of `seeds` sampling seeds:
1. sample one decomposition of every held-out task with the unablated model (the
   baseline), with the target heads ablated, and with every null head set — all
   conditions in one batched, KV-cached call of `generate.sample_decompositions_masked`,
   one row per (condition, task), each row's heads scaled by its own mask
   (`decode.HeadMask`: zero ablation z_h := 0, mean ablation z_h := the head's mean over
   the split's real positions), so generation stays on its hook-free decoder;
2. score each run by `scipy.stats.spearmanr(complexity, step count)` over the outputs
   that parse (ended with `<|end|>`, non-empty steps; see `generate.Decomposition`).
   Outputs that do not parse are not counted, and their number is reported per run.

Common random numbers: every condition's row of task i samples with the same Gumbel
noise as the baseline's row of task i at that seed (`generate.StreamSampler`), so the
ablated and baseline runs differ by their heads, not their draws, and per-seed deltas
carry less sampling noise than independent runs would.

Nulls: a large delta only means something relative to what ablating *some* head does.
Layer nulls ablate, one at a time, every other head of the target's layer(s); random
nulls ablate random head sets of the target's size drawn from all other heads. For
each null the median delta over seeds is compared with the target's: the target's rank
(1 = the largest drop), the percentage of nulls whose drop is at least as large, and the
one-sided empirical p-value (1 + #nulls at or below) / (1 + #nulls) (Phipson & Smyth
2010). With 7 layer nulls the smallest attainable p is 1/8, so the rank is the honest
summary; more random nulls (`null_random`) sharpen it at linear cost.

In the study (stage "ablation", after the head-swap inventory) the ADHD export is
ablated and `heads = "auto"` names the ADHD partner of the strongest moved head the
head-swap stage found: the head whose attention profile moved is the one whose use is
tested.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from torch import Tensor

from interpgpt.analysis.ablation.config import AUTO_HEADS, AblationConfig
from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.interventions import Head, head_means, parse_heads
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
from interpgpt.artifacts.load import load_model
from interpgpt.constants import Variant
from interpgpt.corpus.evalset import encode_eval_set, load_records
from interpgpt.device import resolve_device
from interpgpt.io import provenance, write_json
from interpgpt.model.config import GenerationConfig
from interpgpt.model.generate import sample_decompositions_masked

RESULT_FILE = "causal_nulls_per_seed.json"
FIGURE_FILE = "causal_nulls.png"


@dataclass
class Condition:
    """One head set that is ablated: the target or a null."""

    kind: Literal["target", "layer", "random"]
    heads: list[Head]

    @property
    def label(self) -> str:
        return "+".join(str(h) for h in self.heads)


@dataclass
class RunScore:
    """The behavioural metric of one generation run."""

    spearman: float
    """Spearman(task complexity, step count) over parsed outputs (NaN if undefined)."""
    n_parsed: int
    """Outputs that parsed (only these are counted)."""
    mean_steps: float
    """Mean step count of the parsed outputs."""


@dataclass
class NullComparison:
    """Where the target's median delta falls among the nulls' median deltas."""

    n_null: int
    rank: int
    """1 + number of nulls with a strictly larger drop (1: the target drops most)."""
    percent_at_or_below: float
    """Percentage of nulls whose median delta is <= the target's (their drop at least as big)."""
    p_empirical: float
    """(1 + #nulls with delta <= target's) / (1 + #nulls), one-sided."""


@dataclass
class AblationResult:
    """What `run_ablation` computed and wrote."""

    json_path: Path
    figure_path: Path
    target: Condition
    baseline: list[RunScore]
    """Per seed."""
    ablated: dict[str, list[RunScore]]
    """Per condition label, per seed."""
    median_delta: dict[str, float]
    """Per condition label: median over seeds of ablated - baseline Spearman."""
    comparisons: dict[str, NullComparison] = field(default_factory=dict)
    """Against "layer", "random" and "all" nulls (where there are any)."""


def conditions_for(target: list[Head], n_layer: int, n_head: int, config) -> list[Condition]:
    """The target, its layer nulls and `config.null_random` random nulls of equal size."""
    conditions = [Condition("target", list(target))]
    if config.layer_null:
        for layer in sorted({h.layer for h in target}):
            for index in range(n_head):
                if Head(layer, index) not in target:
                    conditions.append(Condition("layer", [Head(layer, index)]))
    others = [Head(lay, h) for lay in range(n_layer) for h in range(n_head)]
    others = [h for h in others if h not in target]
    rng = random.Random(config.null_seed)
    seen = {tuple(sorted(c.heads)) for c in conditions}
    for _ in range(50 * max(config.null_random, 1)):
        if sum(c.kind == "random" for c in conditions) >= config.null_random:
            break
        draw = tuple(sorted(rng.sample(others, min(len(target), len(others)))))
        if draw not in seen:
            seen.add(draw)
            conditions.append(Condition("random", list(draw)))
    return conditions


def score(complexity: list[float], decompositions) -> RunScore:
    """Spearman(complexity, step count) over the parsed decompositions."""
    pairs = [(c, len(d.steps)) for c, d in zip(complexity, decompositions, strict=True) if d.parsed]
    if not pairs:
        return RunScore(float("nan"), 0, float("nan"))
    xs, ys = zip(*pairs, strict=True)
    rho = float("nan")
    if len(pairs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
        rho = float(spearmanr(xs, ys).statistic)
    return RunScore(rho, len(pairs), float(np.mean(ys)))


def compare_with_nulls(target_delta: float, null_deltas: list[float]) -> NullComparison | None:
    """Rank and empirical percentile of the target's delta among finite null deltas."""
    nulls = [d for d in null_deltas if np.isfinite(d)]
    if not nulls or not np.isfinite(target_delta):
        return None
    at_or_below = sum(d <= target_delta for d in nulls)
    return NullComparison(
        n_null=len(nulls),
        rank=1 + sum(d < target_delta for d in nulls),
        percent_at_or_below=100.0 * at_or_below / len(nulls),
        p_empirical=(1 + at_or_below) / (1 + len(nulls)),
    )


def run_ablation(config: AblationConfig) -> AblationResult:
    """Sample with and without each head set for every seed; write the JSON and figure."""
    device = resolve_device(config.device)
    loaded = load_model(config.model)
    model, tokenizer = loaded.model.to(device).eval(), loaded.tokenizer
    n_layer, n_head = model.cfg.n_layer, model.cfg.n_head
    target = parse_heads(config.heads, n_layer, n_head)
    variant: Variant = "adhd" if loaded.variant == "adhd" else "standard"
    records = load_records(config.corpus, variant, config.split, config.limit)
    tasks = [r["task"] for r in records]
    complexity = [float(r["complexity"]) for r in records]
    fill = None
    if config.mode == "mean":
        encoded = encode_eval_set(tokenizer, records, max_len=model.cfg.n_ctx)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.dtype == "bfloat16"):
            fill = head_means(model, encoded.ids, encoded.valid)
    conditions = conditions_for(target, n_layer, n_head, config)
    keep = head_masks(conditions, n_layer, n_head)
    baseline: list[RunScore] = []
    ablated: dict[str, list[RunScore]] = {c.label: [] for c in conditions}
    for seed in range(config.seeds):
        generation = GenerationConfig(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_k=config.top_k,
            seed=seed,
            batch_size=config.batch_size,
            autocast=config.dtype == "bfloat16",
        )
        runs = sample_decompositions_masked(model, tokenizer, tasks, keep, generation, fill=fill)
        baseline.append(score(complexity, runs[0]))
        for condition, run in zip(conditions, runs[1:], strict=True):
            ablated[condition.label].append(score(complexity, run))
    return _finish(config, loaded.name, target, conditions, baseline, ablated, len(tasks))


def head_masks(conditions: list[Condition], n_layer: int, n_head: int) -> Tensor:
    """(1 + condition, layer, head) keep masks: row 0 the baseline (all ones), then one
    row per condition with its heads 0."""
    keep = torch.ones(1 + len(conditions), n_layer, n_head)
    for row, condition in enumerate(conditions, start=1):
        for head in condition.heads:
            keep[row, head.layer, head.head] = 0.0
    return keep


def _median_delta(baseline: list[RunScore], runs: list[RunScore]) -> float:
    deltas = [r.spearman - b.spearman for b, r in zip(baseline, runs, strict=True)]
    finite = [d for d in deltas if np.isfinite(d)]
    return float(np.median(finite)) if finite else float("nan")


def _finish(config, name, target, conditions, baseline, ablated, n_tasks) -> AblationResult:
    out_dir = Path(config.out)
    median = {c.label: _median_delta(baseline, ablated[c.label]) for c in conditions}
    target_condition = conditions[0]
    comparisons = {}
    for kind in ("layer", "random", "all"):
        nulls = [c for c in conditions[1:] if kind in ("all", c.kind)]
        found = compare_with_nulls(median[target_condition.label], [median[c.label] for c in nulls])
        if found is not None:
            comparisons[kind] = found
    result = AblationResult(
        out_dir / RESULT_FILE, out_dir / FIGURE_FILE, target_condition, baseline, ablated,
        median, comparisons,
    )  # fmt: skip
    write_json(result.json_path, _report(config, name, conditions, result, n_tasks))
    _plot(result, conditions)
    return result


def _report(config, name, conditions, result: AblationResult, n_tasks: int) -> dict[str, Any]:
    per_seed = []
    for seed, base in enumerate(result.baseline):
        entry: dict[str, Any] = {"seed": seed, "baseline": base, "conditions": []}
        for condition in conditions:
            run = result.ablated[condition.label][seed]
            entry["conditions"].append({
                "kind": condition.kind,
                "heads": [str(h) for h in condition.heads],
                "ablated": run,
                "delta": run.spearman - base.spearman,
            })  # fmt: skip
        per_seed.append(entry)
    return {
        "model": name,
        "metric": "spearman(task complexity, generated step count) over parsed outputs",
        "mode": config.mode,
        "n_tasks": n_tasks,
        "target": [str(h) for h in result.target.heads],
        "per_seed": per_seed,
        "median_delta": result.median_delta,
        "baseline_median": float(np.nanmedian([b.spearman for b in result.baseline])),
        "target_ablated_median": float(
            np.nanmedian([r.spearman for r in result.ablated[result.target.label]])
        ),
        "null_comparison": result.comparisons,
        "provenance": provenance(config),
    }


def _plot(result: AblationResult, conditions: list[Condition]) -> Path:
    """Per-seed deltas of every condition (dots) and their median (bar), target in red."""
    fig = Figure(figsize=(max(6.0, 0.5 * len(conditions) + 2), 4.0), layout="tight")
    ax = fig.subplots()
    colours = {"target": "tab:red", "layer": "tab:blue", "random": "tab:gray"}
    for x, condition in enumerate(conditions):
        runs = result.ablated[condition.label]
        deltas = [r.spearman - b.spearman for b, r in zip(result.baseline, runs, strict=True)]
        colour = colours[condition.kind]
        ax.scatter([x] * len(deltas), deltas, color=colour, alpha=0.6, s=18)
        ax.hlines(result.median_delta[condition.label], x - 0.3, x + 0.3, color=colour, lw=2)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(conditions)), [c.label for c in conditions], rotation=60, fontsize=7)
    ax.set_ylabel("Δ Spearman(complexity, step count)")
    ax.set_title("head ablation: target (red), layer nulls (blue), random nulls (gray)")
    return save_figure(fig, result.figure_path)


# ---------------------------------------------------------------------------- in the study


def study_heads(heads: str, headswap: Summary) -> str:
    """The configured heads, or for auto the ADHD partner of the strongest moved head of
    the head-swap stage's summary."""
    if heads != AUTO_HEADS:
        return heads
    layer, head = headswap["strongest"]["adhd"]
    return f"L{layer}H{head}"


def stage(ws: Layout, config: AblationConfig) -> StageOutput:
    heads = study_heads(config.heads, ws.summary("headswap"))
    result = run_ablation(
        dataclasses.replace(
            config,
            model=ws.export("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("ablation"),
            heads=heads,
        )
    )
    summary = {
        "heads": heads,
        "baseline": [s.spearman for s in result.baseline],
        "target": [s.spearman for s in result.ablated[result.target.label]],
        "median_delta": result.median_delta,
        "target_label": result.target.label,
        "comparisons": {k: dataclasses.asdict(v) for k, v in result.comparisons.items()},
    }
    return StageOutput([result.json_path, result.figure_path], summary)


def section(summary: Summary, outputs: list[str]) -> Section:
    delta = summary["median_delta"].get(summary["target_label"])
    nulls = {k: v for k, v in summary["median_delta"].items() if k != summary["target_label"]}
    comparisons = summary.get("comparisons", {})
    overall: dict[str, Any] = comparisons.get("all") or next(iter(comparisons.values()), {})
    finding = (
        f"Ablating {summary['heads']} in the ADHD model changes Spearman(complexity, steps) by a "
        f"median {fmt(delta)} over {len(summary['baseline'])} seeds; it ranks "
        f"{overall.get('rank', 'n/a')} of {overall.get('n_null', 0) + 1} against null heads "
        f"(one-sided p {fmt(overall.get('p_empirical'))})."
    )
    rows = [
        ("baseline Spearman per seed", ", ".join(fmt(v) for v in summary["baseline"])),
        ("ablated Spearman per seed", ", ".join(fmt(v) for v in summary["target"])),
    ]
    rows += [(f"null {k}", fmt(v)) for k, v in list(nulls.items())[:12]]
    return Section("Causal head ablation", finding, rows=rows, figures=figures(outputs))


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistic: the target head's ablation effect (the median change
    of Spearman(complexity, steps)), a property of the ablated model; the target is chosen
    the same way in every pair (`study_heads`)."""
    target = summary["target_label"]
    return {
        "target effect": Statistic(
            "median change of Spearman(complexity, steps) when the target head is ablated",
            summary["median_delta"][target],
            of="model",
            named=[target],
            named_in="adhd",
        )
    }


ANALYSIS = Analysis(
    name="ablation",
    description="causal head ablation with nulls",
    config=AblationConfig,
    stage=stage,
    section=section,
    after=("headswap",),
    statistics=statistics,
)
