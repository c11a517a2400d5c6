"""The behaviour stage: both models of a trained pair on the corpus's held-out test tasks,
per subset of seen and unseen families.

Held-out test tasks come in two subsets: *seen* families (the family has tasks in the
train split, only this task is new) and *unseen* families (`family_held_out` in the
corpus's tasks.jsonl, `read_tasks`: no task of the family was trained on). A model that
only memorised its families' step lists writes fluent but off-topic steps for the unseen
ones, so every metric (`metrics`) is reported per subset. Decoding is greedy by default,
as a plain Hugging Face `generate` on the exports decodes (their generation_config sets
`do_sample` false); a temperature samples instead, seeded. It is KV-cached
(`model.generate`, prompt `<|task|> task <|steps|>`); the AUROC is taken on the
ADHD test records, whose `p_break` gives the Bayes-optimal ceiling.

These are the quality targets of training and the baseline every causal analysis
compares against (a head ablation, `analysis.ablation`, is read as a change of the same
Spearman correlation). In the study this stage runs right after training, and its
report section, "Models and their behaviour", also shows each training run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from interpgpt.analysis.behaviour.config import BehaviourConfig
from interpgpt.analysis.behaviour.metrics import SubsetBehaviour, onset_auroc, summarise
from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.protocol import Analysis, Layout, Section, StageOutput, Summary, fmt
from interpgpt.artifacts.load import LoadedModel, load_model
from interpgpt.constants import VARIANTS
from interpgpt.corpus.build import TaskInfo, read_tasks
from interpgpt.corpus.evalset import load_records
from interpgpt.device import resolve_device
from interpgpt.io import provenance, to_jsonable, write_json
from interpgpt.model.config import GenerationConfig
from interpgpt.model.generate import sample_decompositions

BEHAVIOUR_JSON = "behaviour.json"
TRAINING_KEYS = ("val_loss", "steps", "tokens_per_second", "seconds")
"""What the behaviour stage copies from each training stage's summary for its section."""

Subset = Literal["seen", "unseen"]
SUBSETS: tuple[Subset, ...] = ("seen", "unseen")
"""Test tasks of families seen in training, and of families held out from it."""


# ----------------------------------------------------------------------------- the corpus


def split_by_family(
    records: list[dict[str, Any]], tasks: dict[int, TaskInfo], limit: int | None
) -> dict[Subset, list[dict[str, Any]]]:
    """`records` by subset, in their order, the first `limit` of each (a task missing from
    `tasks` counts as seen)."""
    subsets: dict[Subset, list[dict[str, Any]]] = {s: [] for s in SUBSETS}
    for record in records:
        info = tasks.get(record["task_id"])
        subsets["unseen" if info is not None and info.family_held_out else "seen"].append(record)
    return {s: rows[:limit] for s, rows in subsets.items()}


# ----------------------------------------------------------------------------- entry point


@dataclass
class BehaviourResult:
    """What `measure_behaviour` measured and wrote."""

    json_path: Path
    models: dict[str, dict[Subset, SubsetBehaviour]]
    """Model label -> subset -> its behaviour."""
    n_tasks: dict[Subset, int]
    """Held-out tasks sampled per subset, by each model."""

    @property
    def summary(self) -> dict[str, Any]:
        """The JSON-able numbers (what the stage records and the table is built from)."""
        return {"n_tasks": dict(self.n_tasks), "models": to_jsonable(self.models)}


@dataclass(frozen=True)
class HeldOut:
    """The held-out test records the behaviour metrics read, per subset."""

    sampled: dict[Subset, list[dict[str, Any]]]
    """Standard test records, one per task: each task is decomposed from its text."""
    forced: dict[Subset, list[dict[str, Any]]]
    """ADHD test records, teacher-forced for the P(regulation) AUROC."""

    @property
    def n_tasks(self) -> dict[Subset, int]:
        return {s: len(self.sampled[s]) for s in SUBSETS}


def held_out(corpus: Path, limit: int | None, auroc_tasks: int | None) -> HeldOut:
    """The first `limit` test tasks (and `auroc_tasks` ADHD records) of each subset."""
    tasks = read_tasks(corpus)
    return HeldOut(
        sampled=split_by_family(load_records(corpus, "standard", "test"), tasks, limit),
        forced=split_by_family(load_records(corpus, "adhd", "test"), tasks, auroc_tasks),
    )


def behaviour_of(
    loaded: LoadedModel, held: HeldOut, generation: GenerationConfig, shown: int
) -> dict[Subset, SubsetBehaviour]:
    """One model's behaviour on each subset: one decomposition per task (all subsets in
    one call, so batches are the same whichever model decodes), and the onset AUROC."""
    prompts = [r["task"] for s in SUBSETS for r in held.sampled[s]]
    outputs = sample_decompositions(loaded.model, loaded.tokenizer, prompts, generation)
    found: dict[Subset, SubsetBehaviour] = {}
    start = 0
    for subset in SUBSETS:
        rows = held.sampled[subset]
        found[subset] = summarise(
            outputs[start : start + len(rows)], [int(r["complexity"]) for r in rows], shown
        )
        found[subset].auroc = onset_auroc(loaded, held.forced[subset], generation.batch_size)
        start += len(rows)
    return found


def measure_behaviour(config: BehaviourConfig) -> BehaviourResult:
    """Sample one decomposition per held-out task of each subset from each model, score
    P(regulation) at step onsets on the ADHD test records, and write behaviour.json."""
    held = held_out(config.corpus, config.limit, config.auroc_tasks)
    generation = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_k=config.top_k,
        seed=config.seed,
        batch_size=config.batch_size,
    )
    device = resolve_device(config.device)
    models: dict[str, dict[Subset, SubsetBehaviour]] = {}
    for name, path in config.models.items():
        loaded = load_model(path)
        loaded.model.to(device).eval()
        models[name] = behaviour_of(loaded, held, generation, config.examples_shown)
    json_path = write_json(
        Path(config.out) / BEHAVIOUR_JSON,
        {"provenance": provenance(config), "n_tasks": held.n_tasks, "models": models},
    )
    return BehaviourResult(json_path, models, held.n_tasks)


# ---------------------------------------------------------------------------- the table

TABLE_HEADER = (
    "model",
    "subset",
    "tasks",
    "parse",
    "on-topic",
    "object mention",
    "Spearman(complexity, steps)",
    "regulation outputs",
    "regulation step share",
    "AUROC (model / Bayes)",
)


def table_rows(models: dict[str, Any]) -> list[list[str]]:
    """One row per model and subset, from a summary's `models` (the section and the
    command print the same table)."""
    rows = []
    for name, subsets in models.items():
        for subset, b in subsets.items():
            onset = b.get("auroc") or {}
            rows.append(
                [
                    name,
                    subset,
                    str(b["n"]),
                    fmt(b["parse_rate"]),
                    fmt(b["on_topic_rate"]),
                    fmt(b["object_mention_rate"]),
                    fmt(b["spearman_complexity_steps"]),
                    fmt(b["regulating_outputs"]),
                    fmt(b["regulation_step_share"]),
                    f"{fmt(onset.get('model'))} / {fmt(onset.get('bayes'))}",
                ]
            )
    return rows


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: BehaviourConfig) -> StageOutput:
    """Both trained models (run dirs) on the corpus's test tasks; the summary also carries
    each training run's headline numbers, which the section shows."""
    result = measure_behaviour(
        dataclasses.replace(
            config,
            standard=ws.run("standard"),
            adhd=ws.run("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("behaviour"),
        )
    )
    training = {}
    for variant in VARIANTS:
        trained = ws.summary(f"train-{variant}")
        if trained:
            training[variant] = {key: trained.get(key) for key in TRAINING_KEYS}
    return StageOutput([result.json_path], {**result.summary, "training": training})


def _per_subset(models: dict[str, Any], name: str, value: Any) -> str:
    """`value(subset summary)` for the seen and the unseen subset of one model."""
    subsets = models.get(name, {})
    return " / ".join(fmt(value(subsets.get(s) or {})) for s in SUBSETS)


def finding(summary: Summary) -> str:
    """One sentence: on-topic rates on unseen families, the ADHD AUROC against Bayes."""
    models = summary.get("models", {})
    if not models:
        return "Training ran; behaviour was not measured."
    n_unseen = summary.get("n_tasks", {}).get("unseen", 0)

    def on_topic(name: str, subset: Subset) -> str:
        return fmt(models.get(name, {}).get(subset, {}).get("on_topic_rate"))

    if n_unseen:
        topic = (
            f"On {n_unseen} tasks of families held out of training the standard and ADHD "
            f"models stay on topic in {on_topic('standard', 'unseen')} and "
            f"{on_topic('adhd', 'unseen')} of their decompositions (seen families: "
            f"{on_topic('standard', 'seen')} and {on_topic('adhd', 'seen')})"
        )
    else:
        topic = (
            "The test split holds no task of a held-out family; on seen families the "
            f"standard and ADHD models stay on topic in {on_topic('standard', 'seen')} and "
            f"{on_topic('adhd', 'seen')} of their decompositions"
        )
    model_auc = _per_subset(models, "adhd", lambda b: (b.get("auroc") or {}).get("model"))
    bayes_auc = _per_subset(models, "adhd", lambda b: (b.get("auroc") or {}).get("bayes"))
    return (
        f"{topic}; the ADHD model's P(regulation) at step onsets ranks regulation steps "
        f"with AUROC {model_auc} (seen / unseen families) against a Bayes-optimal "
        f"{bayes_auc}."
    )


def section(summary: Summary, outputs: list[str]) -> Section:
    rows = []
    for variant, s in summary.get("training", {}).items():
        rows.append(
            (
                f"{variant} model",
                f"val loss {fmt(s['val_loss'])} after {s['steps']} steps, "
                f"{s['tokens_per_second']:,.0f} tokens/s, {s['seconds'] / 60:.1f} min",
            )
        )
    models = summary.get("models", {})
    for name, subsets in models.items():
        for subset, b in subsets.items():
            for example in b.get("examples", [])[:1]:
                rows.append((f"{name} ({subset}): {example['task']}", " | ".join(example["steps"])))
    standard = models.get("standard", {}).values()
    regulating = [b["regulating_outputs"] for b in standard if b.get("regulating_outputs")]
    if regulating:
        rows.append(("standard model regulates", f"in {fmt(max(regulating))} of its outputs"))
    table = [list(TABLE_HEADER), *table_rows(models)] if models else None
    return Section(
        "Models and their behaviour",
        finding(summary),
        rows=rows,
        table=table,
        status="warn" if regulating else "ok",
    )


CONTROL_METRICS = (
    ("regulation_step_share", "seen", "regulation share of generated steps"),
    ("on_topic_rate", "unseen", "on-topic rate, unseen families"),
    ("object_mention_rate", "unseen", "object-mention rate, unseen families"),
    ("spearman_complexity_steps", "seen", "Spearman(complexity, step count), seen families"),
    ("parse_rate", "seen", "parse rate, seen families"),
)
"""(metric, subset, words) of the behaviour metrics the seed controls compare."""


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistics: per behaviour metric, |ADHD-role - standard-role|."""
    models = summary["models"]

    def value(role: str, metric: str, subset: str) -> float:
        got = (models.get(role, {}).get(subset) or {}).get(metric)
        return float("nan") if got is None else float(got)

    return {
        metric: Statistic(
            f"|difference| in {words}",
            abs(value("adhd", metric, subset) - value("standard", metric, subset)),
        )
        for metric, subset, words in CONTROL_METRICS
    }


ANALYSIS = Analysis(
    name="behaviour",
    description="sampled decompositions of held-out tasks, seen and unseen families",
    config=BehaviourConfig,
    stage=stage,
    section=section,
    after=("train-standard", "train-adhd"),
    statistics=statistics,
)
