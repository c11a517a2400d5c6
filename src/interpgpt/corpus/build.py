"""Paired corpus: one task pool, written twice — a standard and an ADHD decomposition.

The two models of the study differ only in their training data, so the two corpora
must differ only in *how* a task is decomposed, never in *which* tasks appear. Every
example of either variant is drawn from the same task (`task_id`), and the split into
train/val/test is made over tasks, so no held-out task leaks into either training file.

Standard variant: 3-10 concise steps; the count grows with the task's complexity
(`taskpool.STEP_COUNTS`). ADHD variant: the same phases broken into micro steps, with
micro-regulation actions (`REGULATION_ACTIONS`) placed between content steps — never
first, never last, never two in a row — so that about `regulation_rate` of its steps
are regulation.

Speed: each task's phrasings are JSON-escaped once (`_TaskSampler`); sampling an
example then only picks pre-escaped strings and joins them, which gives byte-identical
output to `json.dumps(record, ensure_ascii=False)` (tested) at a fraction of the cost.
Each task has its own `random.Random` seeded from (seed, task id), so a task's examples
do not depend on which other tasks were selected.

Reading: `iter_split` (`load_split` as a list) is the one reader of split files; the
tokenizer, training, the evaluation sets and the SAEs all read through it, so a bad
line is always the same one-line error naming file:line.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from interpgpt.constants import SPLITS, VARIANTS, Split, Variant
from interpgpt.corpus.taskpool import STEP_COUNTS, Phase, TaskSpec, plan, task_pool
from interpgpt.errors import UserError
from interpgpt.io import atomic_path, provenance, read_json, write_json
from interpgpt.settings import SettingError, at_least, in_range, inputs, settings_values

REGULATION_ACTIONS: tuple[str, ...] = (
    "sip water",
    "deep breath",
    "close eyes briefly",
    "quick stretch",
    "pause",
)
"""Micro-regulation steps of the ADHD variant; always lowercase, never content."""

_REGULATION_SET = frozenset(REGULATION_ACTIONS)

TASKS_FILE = "tasks.jsonl"
STATS_FILE = "stats.json"


def is_regulation(step: str) -> bool:
    """True if `step` is one of the micro-regulation actions (ignoring case and spaces)."""
    return step.strip().lower() in _REGULATION_SET


def split_path(corpus_dir: str | Path, variant: str, split: str) -> Path:
    """Where one variant's split lives: DIR/{variant}/{split}.jsonl."""
    return Path(corpus_dir) / variant / f"{split}.jsonl"


@dataclass(frozen=True)
class CorpusConfig:
    """How to build the paired corpus (`interpgpt corpus`, study `[corpus]`)."""

    out: Path = inputs.option()
    """Directory to write the corpus into."""
    seed: int = 0
    """Seed for task selection, the split and every sampled phrasing."""
    n_tasks: int = 2400
    """Distinct tasks drawn from the pool, balanced over complexity levels."""
    examples_per_task: int = 40
    """Examples per task and variant (different phrasings and step counts)."""
    regulation_rate: float = 0.3
    """Target fraction of ADHD steps that are regulation actions (0 to below 0.5)."""
    val_fraction: float = 0.1
    """Fraction of tasks held out for validation."""
    test_fraction: float = 0.1
    """Fraction of tasks held out for testing."""

    def __post_init__(self) -> None:
        in_range(self, "n_tasks", 3, len(task_pool()))
        at_least(self, examples_per_task=1, seed=0, val_fraction=0, test_fraction=0)
        # One regulation action per gap between content steps caps the rate below 1/2.
        if not 0.0 <= self.regulation_rate < 0.5:
            raise SettingError(
                "regulation_rate", f"must be at least 0 and below 0.5 (got {self.regulation_rate})"
            )
        if self.val_fraction + self.test_fraction >= 1:
            raise SettingError(
                "test_fraction",
                f"val_fraction + test_fraction must be below 1 "
                f"(got {self.val_fraction} + {self.test_fraction})",
            )


@dataclass(frozen=True)
class CorpusRecord:
    """One example as stored in a split file."""

    task_id: int
    """Id shared by the task's examples in both variants."""
    task: str
    """The task text."""
    steps: tuple[str, ...]
    """The decomposition, in order."""
    complexity: int
    """Task complexity 1-5."""


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


# ---------------------------------------------------------------------------- sampling


def _jstr(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


@dataclass
class _Tally:
    """Per-variant statistics accumulated while sampling (plain lists: cheap appends)."""

    step_counts: list[int] = field(default_factory=list)
    complexities: list[int] = field(default_factory=list)
    step_words: list[int] = field(default_factory=list)
    regulation: list[int] = field(default_factory=list)
    """Index into REGULATION_ACTIONS of every regulation step (ADHD only)."""


_Option = tuple[str, int]
"""A phrasing as (JSON-escaped string, word count)."""
_PhaseOptions = tuple[tuple[_Option, ...], tuple[tuple[_Option, ...], ...]]
"""(standard phrasings, per ADHD micro step its phrasings)."""


def _options(texts: tuple[str, ...]) -> tuple[_Option, ...]:
    return tuple((_jstr(t), len(t.split())) for t in texts)


_REG_OPTIONS = _options(REGULATION_ACTIONS)


@cache
def _plans(phases: tuple[Phase, ...], complexity: int) -> tuple[tuple[_PhaseOptions, ...], ...]:
    """Per possible step count, the kept phases with pre-escaped phrasings.

    Tasks of one family and object share `phases`, so this runs once per combination.
    """
    return tuple(
        tuple((_options(p.standard), tuple(_options(m) for m in p.micro)) for p in plan(phases, n))
        for n in STEP_COUNTS[complexity]
    )


@dataclass(frozen=True)
class _TaskSampler:
    """One task with every phrasing pre-escaped; samples JSONL lines cheaply."""

    head: str
    """'{"task_id": .., "task": .., "steps": [' shared by both variants."""
    tail: str
    """'], "complexity": ..}' closing the record."""
    complexity: int
    plans: tuple[tuple[_PhaseOptions, ...], ...]
    """Per possible step count: the phases that plan keeps."""

    @classmethod
    def build(cls, spec: TaskSpec) -> _TaskSampler:
        head = f'{{"task_id": {spec.pool_index}, "task": {_jstr(spec.task)}, "steps": ['
        tail = f'], "complexity": {spec.complexity}}}\n'
        return cls(head, tail, spec.complexity, _plans(spec.phases, spec.complexity))

    def sample(
        self, rng: random.Random, reg_ratio: float, tallies: tuple[_Tally, _Tally]
    ) -> tuple[str, str]:
        """One (standard line, ADHD line) pair for this task."""
        # int(random() * n) instead of rng.choice: same distribution, a third of the cost.
        rand = rng.random
        plans = self.plans
        phases = plans[int(rand() * len(plans))]
        std = [o[int(rand() * len(o))] for o, _ in phases]
        content = [m[int(rand() * len(m))] for _, micro in phases for m in micro]
        t_std, t_adhd = tallies
        adhd = _interleave(content, rng, reg_ratio, t_adhd.regulation)
        for tally, steps in ((t_std, std), (t_adhd, adhd)):
            tally.step_counts.append(len(steps))
            tally.complexities.append(self.complexity)
            tally.step_words.extend([w for _, w in steps])
        return (
            self.head + ", ".join([s for s, _ in std]) + self.tail,
            self.head + ", ".join([s for s, _ in adhd]) + self.tail,
        )


def _interleave(
    content: list[_Option], rng: random.Random, reg_ratio: float, log: list[int]
) -> list[_Option]:
    """Insert regulation actions into gaps between content steps (one per gap at most).

    Gaps lie strictly between content steps, so a regulation step is never first, never
    last and never next to another; the action never repeats the previous one.
    """
    rand = rng.random
    expected = reg_ratio * len(content)
    need = min(int(expected) + (rand() < expected - int(expected)), len(content) - 1)
    if need <= 0:
        return content
    # Selection sampling (Knuth's Algorithm S): a uniform `need`-subset of the gaps in
    # one pass, cheaper than random.sample plus list inserts.
    n_actions = len(_REG_OPTIONS)
    last = n_actions  # no action yet
    gaps_left = len(content) - 1
    out = [content[0]]
    for step in content[1:]:
        if need and rand() * gaps_left < need:
            i = int(rand() * (n_actions - (last < n_actions)))
            i += i >= last
            out.append(_REG_OPTIONS[i])
            log.append(i)
            last = i
            need -= 1
        gaps_left -= 1
        out.append(step)
    return out


# ---------------------------------------------------------------------- selection / split


def select_tasks(config: CorpusConfig) -> list[TaskSpec]:
    """`n_tasks` tasks balanced over complexity: round-robin over shuffled levels."""
    rng = random.Random(config.seed)
    by_level: dict[int, list[TaskSpec]] = {c: [] for c in sorted(STEP_COUNTS)}
    for spec in task_pool():
        by_level[spec.complexity].append(spec)
    for specs in by_level.values():
        rng.shuffle(specs)
    chosen: list[TaskSpec] = []
    depth = 0
    while len(chosen) < config.n_tasks:
        for specs in by_level.values():
            if depth < len(specs) and len(chosen) < config.n_tasks:
                chosen.append(specs[depth])
        depth += 1
    return chosen


def assign_splits(specs: list[TaskSpec], config: CorpusConfig) -> dict[str, list[TaskSpec]]:
    """Split tasks (not examples) into train/val/test with a seeded shuffle."""
    order = specs[:]
    random.Random(config.seed + 1).shuffle(order)
    n_val = round(len(order) * config.val_fraction)
    n_test = round(len(order) * config.test_fraction)
    n_train = len(order) - n_val - n_test
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


# ----------------------------------------------------------------------------- building


def generate_split(
    specs: list[TaskSpec], config: CorpusConfig, tallies: tuple[_Tally, _Tally], split_seed: int
) -> tuple[list[str], list[str]]:
    """Standard and ADHD lines for one split, shuffled by one shared permutation.

    Sharing the permutation keeps line i of both files on the same task.
    """
    reg_ratio = config.regulation_rate / (1.0 - config.regulation_rate)
    std_lines: list[str] = []
    adhd_lines: list[str] = []
    for spec in specs:
        sampler = _TaskSampler.build(spec)
        rng = random.Random(config.seed * 1_000_003 + spec.pool_index)
        for _ in range(config.examples_per_task):
            s, a = sampler.sample(rng, reg_ratio, tallies)
            std_lines.append(s)
            adhd_lines.append(a)
    perm = np.random.default_rng([config.seed, split_seed]).permutation(len(std_lines))
    return [std_lines[i] for i in perm], [adhd_lines[i] for i in perm]


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(lines))


def _task_line(spec: TaskSpec, split: str) -> str:
    record = {
        "task_id": spec.pool_index,
        "task": spec.task,
        "domain": spec.domain,
        "complexity": spec.complexity,
        "split": split,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def build_corpus(config: CorpusConfig) -> CorpusSummary:
    """Build the paired corpus into `config.out`; every file is written atomically."""
    out_dir = config.out
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    splits = assign_splits(select_tasks(config), config)
    tallies = (_Tally(), _Tally())
    lines: dict[str, dict[str, list[str]]] = {v: {} for v in VARIANTS}
    for split_seed, split in enumerate(SPLITS):
        std, adhd = generate_split(splits[split], config, tallies, split_seed)
        lines["standard"][split], lines["adhd"][split] = std, adhd
    split_files: dict[str, dict[str, Path]] = {v: {} for v in VARIANTS}
    for variant in VARIANTS:
        for split in SPLITS:
            split_files[variant][split] = path = split_path(out_dir, variant, split)
            _write_lines(path, lines[variant][split])
    task_lines = [
        _task_line(spec, split)
        for split in SPLITS
        for spec in sorted(splits[split], key=lambda s: s.pool_index)
    ]
    _write_lines(out_dir / TASKS_FILE, task_lines)
    stats = corpus_stats(config, splits, tallies)
    write_json(out_dir / STATS_FILE, stats)
    return CorpusSummary(
        out_dir=out_dir,
        tasks_file=out_dir / TASKS_FILE,
        stats_file=out_dir / STATS_FILE,
        split_files=split_files,
        n_tasks={s: len(splits[s]) for s in SPLITS},
        n_examples=len(tallies[0].step_counts),
        spearman=stats["spearman"]["standard"],
        regulation_rate=stats["regulation"]["rate"],
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


def corpus_stats(
    config: CorpusConfig, splits: dict[str, list[TaskSpec]], tallies: tuple[_Tally, _Tally]
) -> dict[str, Any]:
    """The stats.json document: counts, distributions, regulation rate, Spearman."""
    all_specs = [s for split in SPLITS for s in splits[split]]
    variants: dict[str, Any] = {}
    spearman: dict[str, float] = {}
    for variant, tally in zip(VARIANTS, tallies, strict=True):
        counts = np.asarray(tally.step_counts)
        rho = spearmanr(np.asarray(tally.complexities), counts).statistic
        spearman[variant] = round(float(rho), 4) if np.isfinite(rho) else float("nan")
        variants[variant] = {
            "examples": {s: len(splits[s]) * config.examples_per_task for s in SPLITS},
            "steps_per_example": _distribution(_counts(tally.step_counts)),
            "words_per_step": _distribution(_counts(tally.step_words)),
        }
    adhd_steps = sum(tallies[1].step_counts)
    reg = np.bincount(
        np.asarray(tallies[1].regulation, dtype=np.int64), minlength=len(REGULATION_ACTIONS)
    )
    n_reg = int(reg.sum())
    by_action = {a: int(n) for a, n in zip(REGULATION_ACTIONS, reg, strict=True)}
    return {
        "tasks": {s: len(splits[s]) for s in SPLITS},
        "domains": dict(sorted(Counter(s.domain for s in all_specs).items())),
        "complexity": {
            str(c): n for c, n in sorted(Counter(s.complexity for s in all_specs).items())
        },
        "variants": variants,
        "regulation": {
            "rate": round(n_reg / max(adhd_steps, 1), 4),
            "target": config.regulation_rate,
            "by_action": by_action,
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
    return CorpusRecord(task_id, task, tuple(steps), complexity)


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
    with path.open(encoding="utf-8") as handle:
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
