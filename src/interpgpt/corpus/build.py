"""Paired corpus: one task pool, written twice — a standard and an ADHD decomposition.

The two models of the study differ only in their training data, so the two corpora
must differ only in *how* a task is decomposed, never in *which* tasks appear. Every
example of either variant is drawn from the same task (`task_id`) and phrased the same
way (as written, lower case, "I need to ...", "Help me ...", ...: `PHRASINGS`, drawn per
example); the split into train/val/test is made over tasks.

Generalisation splits: whole families (`held_out_families`, drawn round-robin over
shuffled domains) and some objects of the other families (`held_out_objects`) are held
out; their tasks appear only in val and test, so each of val and test has seen-family and
unseen-family tasks. The remaining tasks split by `val_fraction` / `test_fraction`.

Standard variant: 3-10 concise steps; the count grows with the task's complexity
(`taskpool.STEP_COUNTS`). ADHD variant: the same phases as micro steps, with regulation
actions placed among them by the effort rule of `corpus.regulation`; val and test ADHD
records carry the rule's Bayes-optimal posterior per step (`p_break`), and stats.json
the AUROC it reaches.

Speed: each task's phrasings are JSON-escaped once (`_TaskSampler`); sampling an
example then only picks pre-escaped strings and joins them, which gives byte-identical
output to `json.dumps(record, ensure_ascii=False)` (tested). Each task has its own
`random.Random` seeded from (seed, task id), so a task's examples do not depend on which
other tasks were selected.

Reading: `iter_split` (`load_split` as a list) is the one reader of split files; the
tokenizer, training, the evaluation sets and the SAEs all read through it, so a bad
line is always the same one-line error naming file:line.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from interpgpt.constants import SPLITS, VARIANTS, Split, Variant
from interpgpt.corpus.config import CorpusConfig
from interpgpt.corpus.regulation import (
    EFFORT,
    REGULATION_ACTIONS,
    RULE_VARIABLES,
    Onsets,
    RuleState,
    interleave,
    rule_variables,
    trace_without_breaks,
)
from interpgpt.corpus.taskpool import (
    STEP_COUNTS,
    Family,
    Phase,
    TaskSpec,
    families,
    plan,
    task_pool,
)
from interpgpt.errors import UserError
from interpgpt.io import (
    atomic_path,
    faults,
    provenance,
    read_json,
    read_jsonl,
    refuse_existing,
    write_json,
)
from interpgpt.settings import settings_values

TASKS_FILE = "tasks.jsonl"
"""One line per task of the corpus (`TaskInfo`)."""
STATS_FILE = "stats.json"

PHRASINGS: tuple[tuple[str, bool], ...] = (
    ("", False),
    ("", True),
    ("I need to ", True),
    ("Help me ", True),
    ("I have to ", True),
    ("Can you help me ", True),
)
"""How an example writes its task: (prefix, lower the task's first letter)."""


def phrase(task: str, form: int) -> str:
    """`task` written in phrasing `form` of `PHRASINGS` ("Help me renew my passport")."""
    prefix, lower = PHRASINGS[form]
    if lower and not task[:2].isupper():  # keep "ID card ..." as written
        task = task[:1].lower() + task[1:]
    return prefix + task


def split_path(corpus_dir: str | Path, variant: str, split: str) -> Path:
    """Where one variant's split lives: DIR/{variant}/{split}.jsonl."""
    return Path(corpus_dir) / variant / f"{split}.jsonl"


@dataclass(frozen=True)
class CorpusRecord:
    """One example as stored in a split file."""

    task_id: int
    """Id shared by the task's examples in both variants."""
    task: str
    """The task as this example phrases it."""
    steps: tuple[str, ...]
    """The decomposition, in order."""
    complexity: int
    """Task complexity 1-5."""
    p_break: tuple[float, ...] | None = None
    """ADHD val/test only: per step, the Bayes-optimal P(it is a break | the steps before)."""
    rule: dict[str, tuple[int, ...]] | None = None
    """Val/test only: per `regulation.RULE_VARIABLES` name, its value before each step, as
    the break rule computed it (ADHD) or would read the steps (standard: no break, so the
    load is never reset)."""


@dataclass(frozen=True, kw_only=True)
class TaskInfo:
    """One line of DIR/tasks.jsonl: a task of the corpus, where it comes from and its split.

    Fields with a default are absent from corpora written before them.
    """

    task_id: int
    """Id shared by the task's examples in both variants."""
    task: str
    """The task as written in the pool."""
    family: str = ""
    """Its family (`taskpool.Family`)."""
    domain: str = ""
    """The family's domain."""
    complexity: int
    """Task complexity 1-5."""
    split: str
    """train, val or test."""
    family_held_out: bool = False
    """No task of its family is in train."""
    object_held_out: bool = False
    """Its object is held out of its family's training tasks."""
    object: str = ""
    """The object the task applies to."""
    object_swapped: bool = False
    """A train task rewritten about another family's object (`CorpusConfig.object_swap`)."""


@dataclass(frozen=True)
class CorpusSummary:
    """What `build_corpus` wrote."""

    out_dir: Path
    """The corpus directory."""
    tasks_file: Path
    """DIR/tasks.jsonl."""
    stats_file: Path
    """DIR/stats.json."""
    split_files: dict[str, dict[str, Path]]
    """variant -> split -> path."""
    n_tasks: dict[str, int]
    """Tasks per split."""
    n_examples: int
    """Examples per variant (all splits)."""
    spearman: float
    """Spearman(complexity, step count) of the standard variant."""
    regulation_rate: float
    """Observed fraction of ADHD steps that are regulation actions."""
    bayes_auroc: dict[str, float | None]
    """Bayes-optimal AUROC of "the next step is a break" per split and seen/unseen group."""


# ---------------------------------------------------------------------------- sampling


def _jstr(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


@dataclass
class _Tally:
    """Per-variant statistics accumulated while sampling (plain lists: cheap appends)."""

    step_counts: list[int] = field(default_factory=list)
    complexities: list[int] = field(default_factory=list)
    step_words: list[int] = field(default_factory=list)


_Option = tuple[str, int]
"""A phrasing as (JSON-escaped string, word count)."""
_Phrasings = tuple[tuple[_Option, ...], ...]
_Plan = tuple[_Phrasings, _Phrasings, tuple[int, ...], tuple[int, ...]]
"""(per kept phase its standard phrasings, per ADHD micro step its phrasings, the micro
steps' efforts, the kept phases' efforts)."""


def _options(texts: tuple[str, ...]) -> tuple[_Option, ...]:
    return tuple((_jstr(t), len(t.split())) for t in texts)


_REG_OPTIONS = _options(REGULATION_ACTIONS)


def phase_efforts(phases: Sequence[Phase]) -> tuple[int, ...]:
    """The weight of each phase of a plan, in order (`regulation.EFFORT`): of each standard
    step, and of each of the phase's ADHD micro steps."""
    return tuple(EFFORT["effortful" if p.effortful else "light"] for p in phases)


def micro_efforts(phases: Sequence[Phase]) -> tuple[int, ...]:
    """The weight of each ADHD content step of a plan, in order (`regulation.EFFORT`)."""
    return tuple(e for p, e in zip(phases, phase_efforts(phases), strict=True) for _ in p.micro)


def _variables_json(trace: Sequence[RuleState], budget: int) -> str:
    """`rule_variables` as the tail of a JSON record: ', "load": [..], ...' (json.dumps's
    spelling of lists of ints)."""
    values = rule_variables(trace, budget)
    return "".join(f', "{k}": [{", ".join(map(str, values[k]))}]' for k in RULE_VARIABLES)


@cache
def _plans(phases: tuple[Phase, ...], complexity: int) -> tuple[_Plan, ...]:
    """Per possible step count, the kept phases with pre-escaped phrasings.

    Tasks of one family and object share `phases`, so this runs once per combination.
    """
    out = []
    for n in STEP_COUNTS[complexity]:
        kept = plan(phases, n)
        standard = tuple(_options(p.standard) for p in kept)
        micro = tuple(_options(m) for p in kept for m in p.micro)
        out.append((standard, micro, micro_efforts(kept), phase_efforts(kept)))
    return tuple(out)


@dataclass(frozen=True)
class _TaskSampler:
    """One task with every phrasing pre-escaped; samples JSONL lines cheaply."""

    heads: tuple[str, ...]
    """Per phrasing form: '{"task_id": .., "task": .., "steps": [' (both variants)."""
    tail: str
    """'], "complexity": ..}' closing the record."""
    tail_open: str
    """'], "complexity": ..' before a held-out record's rule variables (and the ADHD
    posterior)."""
    complexity: int
    budget: int
    plans: tuple[_Plan, ...]
    """Per possible step count: the phases that plan keeps."""

    @classmethod
    def build(cls, spec: TaskSpec, config: CorpusConfig) -> _TaskSampler:
        heads = tuple(
            f'{{"task_id": {spec.pool_index}, "task": {_jstr(phrase(spec.task, form))}, "steps": ['
            for form in range(len(PHRASINGS))
        )
        tail = f'], "complexity": {spec.complexity}}}\n'
        tail_open = f'], "complexity": {spec.complexity}'
        plans = _plans(spec.phases, spec.complexity)
        return cls(heads, tail, tail_open, spec.complexity, config.budget(spec.complexity), plans)

    def sample(
        self,
        rng: random.Random,
        noise: float,
        tallies: tuple[_Tally, _Tally],
        by_action: list[int],
        onsets: Onsets,
        with_p: bool,
    ) -> tuple[str, str]:
        """One (standard line, ADHD line) pair for this task."""
        # int(random() * n) instead of rng.choice: same distribution, a third of the cost.
        rand = rng.random
        heads = self.heads
        head = heads[int(rand() * len(heads))]
        plans = self.plans
        standard, micro, efforts, std_efforts = plans[int(rand() * len(plans))]
        std = [o[int(rand() * len(o))] for o in standard]
        content = [m[int(rand() * len(m))] for m in micro]
        p_break: list[str] | None = [] if with_p else None
        trace: list[RuleState] | None = [] if with_p else None
        adhd = interleave(
            content, efforts, self.budget, noise, rng, _REG_OPTIONS, by_action, onsets, p_break,
            trace,
        )  # fmt: skip
        t_std, t_adhd = tallies
        for tally, steps in ((t_std, std), (t_adhd, adhd)):
            tally.step_counts.append(len(steps))
            tally.complexities.append(self.complexity)
            tally.step_words.extend([w for _, w in steps])
        std_tail = adhd_tail = self.tail
        if p_break is not None and trace is not None:
            std_vars = _variables_json(trace_without_breaks(std_efforts), self.budget)
            std_tail = self.tail_open + std_vars + "}\n"
            adhd_vars = _variables_json(trace, self.budget)
            adhd_tail = f'{self.tail_open}, "p_break": [{", ".join(p_break)}]{adhd_vars}}}\n'
        return (
            head + ", ".join([s for s, _ in std]) + std_tail,
            head + ", ".join([s for s, _ in adhd]) + adhd_tail,
        )


# ---------------------------------------------------------------------- selection / split


def _rng(config: CorpusConfig, purpose: str) -> random.Random:
    """One named random stream per draw, so changing one draw leaves the others alone."""
    return random.Random(f"{config.seed}:{purpose}")


@dataclass(frozen=True)
class HeldOut:
    """What the generalisation splits keep out of training."""

    families: tuple[str, ...]
    """Held-out family names, in draw order."""
    objects: dict[str, tuple[str, ...]]
    """Per other family, its held-out objects (families without any are absent)."""

    def family_held_out(self, spec: TaskSpec) -> bool:
        return spec.family in self.families

    def object_held_out(self, spec: TaskSpec) -> bool:
        return spec.obj in self.objects.get(spec.family, ())


def hold_out(fams: Sequence[Family], config: CorpusConfig) -> HeldOut:
    """Draw the held-out families (round-robin over shuffled domains) and objects."""
    rng = _rng(config, "held-out families")
    by_domain: dict[str, list[str]] = {}
    for family in fams:
        by_domain.setdefault(family.domain, []).append(family.name)
    domains = sorted(by_domain)
    rng.shuffle(domains)
    for domain in domains:
        rng.shuffle(by_domain[domain])
    depth = max(len(v) for v in by_domain.values())
    order = [by_domain[d][i] for i in range(depth) for d in domains if i < len(by_domain[d])]
    # round() first: 0.1 * 240 must give 24, not 25 from a float just above 24.
    held_families = tuple(order[: math.ceil(round(config.held_out_families * len(fams), 9))])
    rng = _rng(config, "held-out objects")
    objects: dict[str, tuple[str, ...]] = {}
    for family in fams:
        if family.name in held_families:
            continue
        names = family.object_names
        expected = config.held_out_objects * len(names)  # rounded at random: mean is exact
        k = min(int(expected) + (rng.random() < expected - int(expected)), len(names) - 1)
        if k > 0:
            chosen = set(rng.sample(names, k))
            objects[family.name] = tuple(o for o in names if o in chosen)
    return HeldOut(held_families, objects)


def select_tasks(config: CorpusConfig, pool: Sequence[TaskSpec] | None = None) -> list[TaskSpec]:
    """`n_tasks` tasks balanced over complexity and spread over families.

    Round-robin over complexity levels; within a level, round-robin over the families
    (shuffled) that have tasks there, so no family takes more than its turn.
    """
    rng = _rng(config, "select")
    by_level: dict[int, dict[str, list[TaskSpec]]] = {c: {} for c in sorted(STEP_COUNTS)}
    for spec in task_pool() if pool is None else pool:
        by_level[spec.complexity].setdefault(spec.family, []).append(spec)
    queues: list[list[TaskSpec]] = []
    for by_family in by_level.values():
        names = sorted(by_family)
        rng.shuffle(names)
        for name in names:
            rng.shuffle(by_family[name])
        depth = max((len(v) for v in by_family.values()), default=0)
        queues.append(
            [by_family[n][i] for i in range(depth) for n in names if i < len(by_family[n])]
        )
    chosen: list[TaskSpec] = []
    depth = 0
    while len(chosen) < config.n_tasks:
        for queue in queues:
            if depth < len(queue) and len(chosen) < config.n_tasks:
                chosen.append(queue[depth])
        depth += 1
    return chosen


def assign_splits(
    specs: list[TaskSpec], held: HeldOut, config: CorpusConfig
) -> dict[str, list[TaskSpec]]:
    """Split tasks (not examples): held-out ones to val and test, the rest by fractions."""
    rng = _rng(config, "split")
    unseen_family = [s for s in specs if held.family_held_out(s)]
    unseen_object = [s for s in specs if held.object_held_out(s) and not held.family_held_out(s)]
    held_ids = {s.pool_index for s in unseen_family + unseen_object}
    rest = [s for s in specs if s.pool_index not in held_ids]
    rng.shuffle(rest)
    n_val = round(len(rest) * config.val_fraction)
    n_test = round(len(rest) * config.test_fraction)
    n_train = len(rest) - n_val - n_test
    out = {
        "train": rest[:n_train],
        "val": rest[n_train : n_train + n_val],
        "test": rest[n_train + n_val :],
    }
    share = config.val_fraction / max(config.val_fraction + config.test_fraction, 1e-12)
    for group in (unseen_family, unseen_object):
        rng.shuffle(group)
        k = round(len(group) * share)
        if len(group) >= 2:  # both val and test get some of each kind
            k = min(max(k, 1), len(group) - 1)
        out["val"] += group[:k]
        out["test"] += group[k:]
    return out


def swap_objects(train: list[TaskSpec], config: CorpusConfig) -> list[TaskSpec]:
    """`train` with a share `object_swap` of its tasks (drawn at random) rewritten about an
    object of another family's train tasks (`TaskSpec.with_object`). Only train objects
    are drawn, so held-out objects and families stay unseen."""
    rng = _rng(config, "swap")
    by_name = {f.name: f for f in families()}
    objects = sorted({(s.obj, s.family) for s in train})
    out = []
    for spec in train:
        if rng.random() >= config.object_swap:
            out.append(spec)
            continue
        own = set(by_name[spec.family].object_names)
        while (pick := objects[int(rng.random() * len(objects))])[0] in own:
            pass
        out.append(spec.with_object(pick[0], by_name[spec.family]))
    return out


# ----------------------------------------------------------------------------- building


@dataclass
class _Accumulator:
    """Everything stats.json needs, gathered while the splits are written."""

    tallies: tuple[_Tally, _Tally] = field(default_factory=lambda: (_Tally(), _Tally()))
    by_action: list[int] = field(default_factory=lambda: [0] * len(REGULATION_ACTIONS))
    onsets: dict[str, Onsets] = field(default_factory=dict)
    """Per split, and per "<split>_seen" / "<split>_unseen" family group."""


def generate_split(
    specs: list[TaskSpec],
    config: CorpusConfig,
    held: HeldOut,
    acc: _Accumulator,
    split: str,
) -> tuple[list[str], list[str]]:
    """Standard and ADHD lines for one split, shuffled by one shared permutation.

    Sharing the permutation keeps line i of both files on the same task.
    """
    with_p = split != "train"
    groups = {False: Onsets(), True: Onsets()}  # by family held out
    std_lines: list[str] = []
    adhd_lines: list[str] = []
    for spec in specs:
        sampler = _TaskSampler.build(spec, config)
        rng = random.Random(config.seed * 1_000_003 + spec.pool_index)
        onsets = groups[held.family_held_out(spec)]
        for _ in range(config.examples_per_task):
            s, a = sampler.sample(
                rng, config.break_noise, acc.tallies, acc.by_action, onsets, with_p
            )
            std_lines.append(s)
            adhd_lines.append(a)
    total = Onsets()
    for onsets in groups.values():
        total.add(onsets)
    acc.onsets[split] = total
    if with_p:
        acc.onsets[f"{split}_seen"], acc.onsets[f"{split}_unseen"] = groups[False], groups[True]
    perm = np.random.default_rng([config.seed, SPLITS.index(split)]).permutation(len(std_lines))
    return [std_lines[i] for i in perm], [adhd_lines[i] for i in perm]


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(lines))


def _task_line(spec: TaskSpec, split: str, held: HeldOut) -> str:
    info = TaskInfo(
        task_id=spec.pool_index,
        task=spec.task,
        family=spec.family,
        domain=spec.domain,
        complexity=spec.complexity,
        split=split,
        family_held_out=held.family_held_out(spec),
        object_held_out=held.object_held_out(spec),
        object=spec.obj,
        object_swapped=spec.swapped,
    )
    return json.dumps(asdict(info), ensure_ascii=False) + "\n"


def build_corpus(config: CorpusConfig) -> CorpusSummary:
    """Build the paired corpus into `config.out`; every file is written atomically."""
    out_dir = config.out
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    if not config.force:
        refuse_existing(out_dir, "--out")
    held = hold_out(families(), config)
    splits = assign_splits(select_tasks(config), held, config)
    splits["train"] = swap_objects(splits["train"], config)
    acc = _Accumulator()
    lines: dict[str, dict[str, list[str]]] = {v: {} for v in VARIANTS}
    for split in SPLITS:
        std, adhd = generate_split(splits[split], config, held, acc, split)
        lines["standard"][split], lines["adhd"][split] = std, adhd
    split_files: dict[str, dict[str, Path]] = {v: {} for v in VARIANTS}
    for variant in VARIANTS:
        for split in SPLITS:
            split_files[variant][split] = path = split_path(out_dir, variant, split)
            _write_lines(path, lines[variant][split])
    task_lines = [
        _task_line(spec, split, held)
        for split in SPLITS
        for spec in sorted(splits[split], key=lambda s: s.pool_index)
    ]
    _write_lines(out_dir / TASKS_FILE, task_lines)
    stats = corpus_stats(config, splits, held, acc)
    write_json(out_dir / STATS_FILE, stats)
    return CorpusSummary(
        out_dir=out_dir,
        tasks_file=out_dir / TASKS_FILE,
        stats_file=out_dir / STATS_FILE,
        split_files=split_files,
        n_tasks={s: len(splits[s]) for s in SPLITS},
        n_examples=len(acc.tallies[0].step_counts),
        spearman=stats["spearman"]["standard"],
        regulation_rate=stats["regulation"]["rate"],
        bayes_auroc=stats["regulation"]["bayes_auroc"],
    )


# -------------------------------------------------------------------------------- stats


def _counts(values: list[int]) -> Counter[int]:
    hist = np.bincount(np.asarray(values, dtype=np.int64))
    return Counter({int(k): int(n) for k, n in enumerate(hist) if n})


def _distribution(counter: Counter[int]) -> dict[str, Any]:
    total = sum(counter.values())
    mean = sum(k * v for k, v in counter.items()) / max(total, 1)
    return {
        "mean": round(mean, 4),
        "min": min(counter, default=0),
        "max": max(counter, default=0),
        "histogram": {str(k): counter[k] for k in sorted(counter)},
    }


def _families_stats(
    all_specs: list[TaskSpec], held: HeldOut, splits: dict[str, list[TaskSpec]]
) -> dict[str, Any]:
    fams = families()
    per_domain: dict[str, dict[str, int]] = {}
    for family in fams:
        row = per_domain.setdefault(family.domain, {"total": 0, "held_out": 0})
        row["total"] += 1
        row["held_out"] += family.name in held.families
    per_family = Counter(s.family for s in all_specs)
    return {
        "total": len(fams),
        "held_out": len(held.families),
        "held_out_names": sorted(held.families),
        "per_domain": dict(sorted(per_domain.items())),
        "with_tasks": len(per_family),
        "max_tasks_per_family": max(per_family.values(), default=0),
        "tasks_held_out": {
            split: {
                "unseen_family": sum(held.family_held_out(s) for s in splits[split]),
                "unseen_object": sum(
                    held.object_held_out(s) and not held.family_held_out(s) for s in splits[split]
                ),
            }
            for split in SPLITS
        },
    }


def corpus_stats(
    config: CorpusConfig,
    splits: dict[str, list[TaskSpec]],
    held: HeldOut,
    acc: _Accumulator,
) -> dict[str, Any]:
    """The stats.json document: counts, distributions, held-out data, the break rule."""
    all_specs = [s for split in SPLITS for s in splits[split]]
    variants: dict[str, Any] = {}
    spearman: dict[str, float] = {}
    for variant, tally in zip(VARIANTS, acc.tallies, strict=True):
        counts = np.asarray(tally.step_counts)
        rho = spearmanr(np.asarray(tally.complexities), counts).statistic
        spearman[variant] = round(float(rho), 4) if np.isfinite(rho) else float("nan")
        variants[variant] = {
            "examples": {s: len(splits[s]) * config.examples_per_task for s in SPLITS},
            "steps_per_example": _distribution(_counts(tally.step_counts)),
            "words_per_step": _distribution(_counts(tally.step_words)),
        }
    adhd_steps = sum(acc.tallies[1].step_counts)
    n_reg = sum(acc.by_action)
    all_onsets = Onsets()
    for split in SPLITS:
        all_onsets.add(acc.onsets[split])
    return {
        "tasks": {s: len(splits[s]) for s in SPLITS},
        "domains": dict(sorted(Counter(s.domain for s in all_specs).items())),
        "complexity": {
            str(c): n for c, n in sorted(Counter(s.complexity for s in all_specs).items())
        },
        "families": _families_stats(all_specs, held, splits),
        "held_out_objects": {
            "total": sum(len(v) for v in held.objects.values()),
            "families": len(held.objects),
            "by_family": {k: list(v) for k, v in sorted(held.objects.items())},
        },
        "object_swap": {
            "share": config.object_swap,
            "train_tasks": sum(s.swapped for s in splits["train"]),
        },
        "variants": variants,
        "regulation": {
            "rule": {
                "break_budget": config.break_budget,
                "budget": {str(c): config.budget(c) for c in sorted(STEP_COUNTS)},
                "effort": EFFORT,
                "noise": config.break_noise,
                "actions": list(REGULATION_ACTIONS),
            },
            "rate": round(n_reg / max(adhd_steps, 1), 4),
            "flip_rate": all_onsets.flip_rate(),
            "by_action": dict(zip(REGULATION_ACTIONS, acc.by_action, strict=True)),
            "bayes_auroc": {k: v.auroc(config.break_noise) for k, v in acc.onsets.items()},
        },
        "spearman": spearman,
        # The settings only: the same corpus built into another directory has the same stats.
        "provenance": provenance(settings_values(config)),
    }


def read_stats(corpus_dir: str | Path) -> dict[str, Any]:
    """Load DIR/stats.json (UserError if the directory or file is missing)."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise UserError(f"{corpus_dir}: corpus directory not found")
    stats = read_json(corpus_dir / STATS_FILE)
    if not isinstance(stats, dict) or "variants" not in stats:
        raise UserError(f"{corpus_dir / STATS_FILE}: not a corpus stats file")
    return stats


# ------------------------------------------------------------------------------ reading


_TASK_FIELDS = frozenset(f.name for f in fields(TaskInfo))
_TASK_REQUIRED = tuple(f.name for f in fields(TaskInfo) if f.default is MISSING)


def read_tasks(corpus_dir: str | Path) -> dict[int, TaskInfo]:
    """task_id -> its line of DIR/tasks.jsonl (UserError if a line lacks a field)."""
    path = Path(corpus_dir) / TASKS_FILE
    tasks = {}
    for row in read_jsonl(path):
        missing = [k for k in _TASK_REQUIRED if k not in row]
        if missing:
            raise UserError(f"{path}: task {row.get('task_id')} lacks {', '.join(missing)}")
        info = TaskInfo(**{k: v for k, v in row.items() if k in _TASK_FIELDS})
        tasks[info.task_id] = info
    return tasks


def _check_record(raw: Any, where: str) -> CorpusRecord:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a JSON object per line")
    task, steps = raw.get("task"), raw.get("steps")
    if not isinstance(task, str) or not task.strip():
        raise UserError(f"{where}: empty or missing task")
    if not isinstance(steps, list) or not steps:
        raise UserError(f"{where}: empty or missing steps")
    for i, step in enumerate(steps):
        if not isinstance(step, str) or not step.strip():
            raise UserError(f"{where}: step {i} is empty or not a string")
    task_id, complexity = raw.get("task_id"), raw.get("complexity")
    if not isinstance(task_id, int) or not isinstance(complexity, int):
        raise UserError(f"{where}: task_id and complexity must be integers")
    p_break = raw.get("p_break")
    if p_break is not None:
        if (
            not isinstance(p_break, list)
            or len(p_break) != len(steps)
            or not all(isinstance(p, float | int) and 0 <= p <= 1 for p in p_break)
        ):
            raise UserError(f"{where}: p_break must be one probability per step")
        p_break = tuple(float(p) for p in p_break)
    rule = None
    present = [k for k in RULE_VARIABLES if k in raw]
    if present:
        if len(present) < len(RULE_VARIABLES):
            missing = ", ".join(k for k in RULE_VARIABLES if k not in raw)
            raise UserError(f"{where}: has {present[0]} but not {missing}")
        rule = {k: raw[k] for k in RULE_VARIABLES}
        for name, values in rule.items():
            if (
                not isinstance(values, list)
                or len(values) != len(steps)
                or not all(isinstance(v, int) for v in values)
            ):
                raise UserError(f"{where}: {name} must be one integer per step")
        rule = {k: tuple(v) for k, v in rule.items()}
    return CorpusRecord(task_id, task, tuple(steps), complexity, p_break, rule)


def iter_split(corpus_dir: str | Path, variant: Variant, split: Split) -> Iterator[CorpusRecord]:
    """Stream and validate one variant's split: the one reader of split files.

    A missing corpus directory or variant, or any bad line, is a UserError of one line
    naming the directory, the file, or file:line.
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise UserError(f"{corpus_dir}: corpus directory not found")
    path = split_path(corpus_dir, variant, split)
    if not path.is_file():
        raise UserError(
            f"{path}: not found; the corpus has no {variant} variant (or no {split} split "
            "of it): build it with `interpgpt corpus`"
        )
    with faults(path), path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
            yield _check_record(raw, f"{path}:{lineno}")


def load_split(corpus_dir: str | Path, variant: Variant, split: Split) -> list[CorpusRecord]:
    """All validated records of one variant's split (`iter_split`)."""
    return list(iter_split(corpus_dir, variant, split))
