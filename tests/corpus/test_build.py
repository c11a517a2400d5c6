"""Corpus invariants: determinism, generalisation splits, the break rule and its Bayes AUROC
as built, tasks.jsonl, the reader."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

from interpgpt.cli import app, main
from interpgpt.constants import VARIANTS, Variant
from interpgpt.corpus.build import (
    PHRASINGS,
    SPLITS,
    TASKS_FILE,
    TaskInfo,
    build_corpus,
    hold_out,
    load_split,
    micro_efforts,
    phrase,
    read_stats,
    read_tasks,
    select_tasks,
    split_path,
    swap_objects,
)
from interpgpt.corpus.config import CorpusConfig
from interpgpt.corpus.regulation import is_regulation
from interpgpt.corpus.taskpool import Phase, families, task_pool
from interpgpt.errors import UserError
from interpgpt.settings import SettingError

SMALL = CorpusConfig(seed=3, n_tasks=300, examples_per_task=6)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(dataclasses.replace(SMALL, out=out))
    return out


def _tasks(corpus: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (corpus / "tasks.jsonl").read_text().splitlines()]


def _all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes(small_corpus: Path, tmp_path: Path) -> None:
    build_corpus(dataclasses.replace(SMALL, out=tmp_path))
    files = _all_files(tmp_path)
    assert {"tasks.jsonl", "stats.json", "adhd/val.jsonl"} <= set(files)
    assert files == _all_files(small_corpus)


def test_other_seed_differs(small_corpus: Path, tmp_path: Path) -> None:
    build_corpus(dataclasses.replace(SMALL, out=tmp_path, seed=4))
    assert _all_files(tmp_path) != _all_files(small_corpus)


def test_fast_path_equals_json_dumps(small_corpus: Path) -> None:
    for variant, split in itertools.product(VARIANTS, ("train", "val")):
        for line in split_path(small_corpus, variant, split).read_text().splitlines()[:50]:
            assert json.dumps(json.loads(line), ensure_ascii=False) == line


# ------------------------------------------------------------------- layout and splits


def test_layout_and_stats(small_corpus: Path) -> None:
    stats = read_stats(small_corpus)
    assert stats["spearman"]["standard"] >= 0.8
    assert sum(stats["tasks"].values()) == SMALL.n_tasks
    assert stats["provenance"]["config"]["seed"] == SMALL.seed
    assert 0.2 <= stats["regulation"]["rate"] <= 0.36
    assert stats["families"]["total"] == len(families())
    assert stats["regulation"]["rule"]["budget"] == {"1": 6, "2": 5, "3": 4, "4": 3, "5": 2}
    tasks = _tasks(small_corpus)
    assert len(tasks) == SMALL.n_tasks
    assert list(tasks[0]) == [
        "task_id",
        "task",
        "family",
        "domain",
        "complexity",
        "split",
        "family_held_out",
        "object_held_out",
        "object",
        "object_swapped",
    ]
    pool = task_pool()
    plain = [t for t in tasks if not t["object_swapped"]]
    assert all(t["task"] == pool[t["task_id"]].task for t in plain)  # the plain form


def test_object_swap_rewrites_train_tasks_about_other_families_objects(
    small_corpus: Path,
) -> None:
    tasks = _tasks(small_corpus)
    pool = task_pool()
    swapped = [t for t in tasks if t["object_swapped"]]
    train = [t for t in tasks if t["split"] == "train"]
    assert all(t["split"] == "train" for t in swapped)  # val and test are never swapped
    assert 0.1 <= len(swapped) / len(train) <= 0.4  # object_swap 0.25
    assert read_stats(small_corpus)["object_swap"] == {"share": 0.25, "train_tasks": len(swapped)}
    fams = {f.name: f for f in families()}
    train_objects = {t["object"] for t in train if not t["object_swapped"]}
    train_objects |= {pool[t["task_id"]].obj for t in swapped}
    for t in swapped:
        original = pool[t["task_id"]]
        assert t["object"] not in fams[t["family"]].object_names
        assert t["object"] in train_objects  # never a held-out object
        assert t["task"] == original.frame.format(obj=t["object"])
        assert t["complexity"] == original.complexity
    records = {r.task_id: r for r in load_split(small_corpus, "standard", "train")}
    named = [t["object"] in " ".join(records[t["task_id"]].steps) for t in swapped]
    assert sum(named) >= 0.9 * len(named)  # the steps name the new object
    off = dataclasses.replace(SMALL, object_swap=0.0)
    specs = select_tasks(off)
    assert swap_objects(specs, off) == specs


def test_split_is_by_task(small_corpus: Path) -> None:
    ids = {
        (variant, split): {r.task_id for r in load_split(small_corpus, variant, split)}
        for variant in VARIANTS
        for split in SPLITS
    }
    train = ids["standard", "train"] | ids["adhd", "train"]
    for variant in VARIANTS:
        assert not train & ids[variant, "val"]
        assert not train & ids[variant, "test"]
        assert not ids[variant, "val"] & ids[variant, "test"]
    for split in SPLITS:  # paired: both variants cover the same tasks
        assert ids["standard", split] == ids["adhd", split]


def test_generalisation_splits(small_corpus: Path) -> None:
    stats = read_stats(small_corpus)
    tasks = _tasks(small_corpus)
    held_families = set(stats["families"]["held_out_names"])
    held_objects = stats["held_out_objects"]["by_family"]
    assert len(held_families) == math.ceil(0.1 * len(families()))
    for t in tasks:
        assert t["family_held_out"] == (t["family"] in held_families)
        assert t["object_held_out"] == (t["object"] in held_objects.get(t["family"], []))
        if t["split"] == "train":
            assert not t["family_held_out"] and not t["object_held_out"]
    for split in ("val", "test"):
        kinds = Counter(t["family_held_out"] for t in tasks if t["split"] == split)
        assert kinds[True] > 0 and kinds[False] > 0
        assert any(t["object_held_out"] for t in tasks if t["split"] == split)
    # the tasks that are not held out split by the fractions
    rest = Counter(t["split"] for t in tasks if not (t["family_held_out"] or t["object_held_out"]))
    n_rest = sum(rest.values())
    assert rest["val"] == round(n_rest * SMALL.val_fraction)
    assert rest["test"] == round(n_rest * SMALL.test_fraction)


def test_read_tasks_reads_tasks_jsonl(small_corpus: Path, tmp_path: Path) -> None:
    tasks = read_tasks(small_corpus)
    assert [dataclasses.asdict(t) for t in tasks.values()] == _tasks(small_corpus)
    assert set(tasks) == {t["task_id"] for t in _tasks(small_corpus)}
    old = tmp_path / TASKS_FILE  # written before families: every family seen
    old.write_text('{"task_id": 3, "task": "a", "domain": "d", "complexity": 1, "split": "test"}\n')
    assert read_tasks(tmp_path) == {
        3: TaskInfo(task_id=3, task="a", domain="d", complexity=1, split="test")
    }
    assert not read_tasks(tmp_path)[3].family_held_out
    old.write_text('{"task_id": 3, "task": "a", "domain": "d"}\n')
    with pytest.raises(UserError, match=r"tasks\.jsonl: task 3 lacks complexity, split"):
        read_tasks(tmp_path)


def test_hold_out_draw() -> None:
    fams = families()
    n_domains = len({f.domain for f in fams})
    for fraction in (0.05, 0.1, 0.3):
        held = hold_out(fams, dataclasses.replace(SMALL, held_out_families=fraction))
        assert len(held.families) == math.ceil(round(fraction * len(fams), 9))
        per_domain = Counter(f.domain for f in fams if f.name in held.families)
        assert max(per_domain.values()) <= math.ceil(len(held.families) / n_domains)
    held = hold_out(fams, dataclasses.replace(SMALL, held_out_objects=0.3))
    seen = [f for f in fams if f.name not in held.families]
    assert not set(held.objects) & set(held.families)
    n_objects = sum(len(f.objects) for f in seen)
    n_held = sum(len(v) for v in held.objects.values())
    assert abs(n_held / n_objects - 0.3) < 0.03
    for family in seen:  # every seen family keeps a seen object
        assert len(held.objects.get(family.name, ())) < len(family.objects)
    none = hold_out(fams, dataclasses.replace(SMALL, held_out_families=0, held_out_objects=0))
    assert none.families == () and none.objects == {}


def test_selection_balanced_and_spread() -> None:
    chosen = select_tasks(dataclasses.replace(SMALL, n_tasks=1200))
    assert len({t.pool_index for t in chosen}) == 1200
    assert set(Counter(t.complexity for t in chosen).values()) == {240}
    per_family = Counter(t.family for t in chosen)
    assert len(per_family) == len(families())
    assert max(per_family.values()) <= 3 * 1200 / len(families())


def test_phrasing_forms(small_corpus: Path) -> None:
    plain = {t["task_id"]: t["task"] for t in _tasks(small_corpus)}
    assert phrase("Renew my passport", 5) == "Can you help me renew my passport"
    assert phrase("Renew my passport", 1) == "renew my passport"
    forms: Counter[int] = Counter()
    std = load_split(small_corpus, "standard", "train")
    adhd = load_split(small_corpus, "adhd", "train")
    for s, a in zip(std, adhd, strict=True):
        assert (s.task_id, s.task) == (a.task_id, a.task)  # a pair shares its phrasing
        matches = [k for k in range(len(PHRASINGS)) if phrase(plain[s.task_id], k) == s.task]
        assert matches
        forms[matches[0]] += 1
    assert set(forms) == set(range(len(PHRASINGS)))


def test_adhd_steps_more_and_shorter(small_corpus: Path) -> None:
    def means(variant: Variant) -> tuple[float, float]:
        records = load_split(small_corpus, variant, "train")
        steps = [s for r in records for s in r.steps]
        return len(steps) / len(records), sum(len(s.split()) for s in steps) / len(steps)

    (std_count, std_len), (adhd_count, adhd_len) = means("standard"), means("adhd")
    assert adhd_count > std_count
    assert adhd_len < std_len


def test_several_phrasings_per_task(small_corpus: Path) -> None:
    by_task: dict[int, set[tuple[str, ...]]] = {}
    for record in load_split(small_corpus, "standard", "train"):
        by_task.setdefault(record.task_id, set()).add(record.steps)
    assert sum(len(v) > 1 for v in by_task.values()) > 0.8 * len(by_task)


# ---------------------------------------------------------------- the break rule, in the corpus


def _phase(rank: int, n_micro: int, effortful: bool) -> Phase:
    micro = tuple((f"Step {rank}.{i}",) for i in range(n_micro))
    return Phase(rank=rank, standard=(f"Phase {rank}",), micro=micro, effortful=effortful)


def test_micro_efforts_and_budget() -> None:
    phases = (_phase(0, 1, True), _phase(1, 2, False), _phase(2, 2, True), _phase(3, 2, False))
    assert micro_efforts(phases) == (2, 1, 1, 2, 2, 1, 1)
    config = CorpusConfig()
    assert config.budget(3) == 4
    # a heavier task has a smaller budget, so more breaks
    assert config.budget(5) == 2 and config.budget(1) == 6


def test_corpus_regulation_placement(small_corpus: Path) -> None:
    noise = SMALL.break_noise
    for split in SPLITS:
        for record in load_split(small_corpus, "adhd", split):
            flags = [is_regulation(s) for s in record.steps]
            assert not flags[0] and not flags[-1]
            assert not any(a and b for a, b in itertools.pairwise(flags))
            if split == "train":
                assert record.p_break is None
                continue
            assert record.p_break is not None and record.p_break[0] == 0.0
            for prev, p in zip(flags, record.p_break[1:], strict=False):
                assert p == 0.0 if prev else p in (noise, 1 - noise)
        for record in load_split(small_corpus, "standard", split):
            assert 3 <= len(record.steps) <= 10 and record.p_break is None
            assert not any(is_regulation(s) for s in record.steps)


def test_records_carry_the_rule_state(small_corpus: Path) -> None:
    """Val and test records carry the rule's variables before each step; on ADHD records
    they agree with the breaks placed and the posterior, on standard ones the load of the
    phases so far (no break resets it); train records carry none (its bytes never change)."""
    noise = SMALL.break_noise
    for split in SPLITS:
        adhd = load_split(small_corpus, "adhd", split)
        standard = load_split(small_corpus, "standard", split)
        if split == "train":
            assert all(r.rule is None for r in adhd + standard)
            continue
        for a, s in zip(adhd, standard, strict=True):
            assert a.task_id == s.task_id and a.rule is not None and a.p_break is not None
            budget = SMALL.budget(a.complexity)
            assert set(a.rule["budget"]) == {budget}
            flags = [is_regulation(x) for x in a.steps]
            prev_break = [True, *flags[:-1]]  # the first step behaves as if after a break
            for k, after_break in enumerate(prev_break):
                load, remaining = a.rule["load"][k], a.rule["remaining"][k]
                assert remaining == budget - load
                if after_break:
                    assert (load, a.rule["since_break"][k], a.rule["effort"][k]) == (0, 0, 0)
                    continue
                assert a.rule["effort"][k] in (1, 2) and a.rule["since_break"][k] >= 1
                assert a.p_break[k] == (1 - noise if remaining <= 0 else noise)
                if k + 1 < len(flags) and not flags[k]:  # a content step adds its effort
                    assert a.rule["load"][k + 1] in (0, load + a.rule["effort"][k + 1])
            assert s.rule is not None and set(s.rule["budget"]) == {budget}
            assert s.rule["since_break"] == tuple(range(len(s.steps)))
            assert s.rule["load"][0] == 0 and s.rule["effort"][0] == 0
            assert s.rule["load"][1:] == tuple(itertools.accumulate(s.rule["effort"][1:]))


def test_bayes_auroc_is_mann_whitney(small_corpus: Path) -> None:
    stats = read_stats(small_corpus)["regulation"]
    unseen = {t["task_id"] for t in _tasks(small_corpus) if t["family_held_out"]}
    for split in ("val", "test"):
        scores: dict[str, tuple[list[float], list[float]]] = {}
        for record in load_split(small_corpus, "adhd", split):
            assert record.p_break is not None
            group = f"{split}_unseen" if record.task_id in unseen else f"{split}_seen"
            for key in (split, group):
                pos, neg = scores.setdefault(key, ([], []))
                for step, p in zip(record.steps, record.p_break, strict=True):
                    (pos if is_regulation(step) else neg).append(p)
        assert set(scores) == {split, f"{split}_seen", f"{split}_unseen"}
        for key, (pos, neg) in scores.items():
            u = mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))
            assert stats["bayes_auroc"][key] == pytest.approx(u, abs=1e-6), key
    assert 0.9 < stats["bayes_auroc"]["train"] < 1.0
    assert abs(stats["flip_rate"] - SMALL.break_noise) < 0.02


def test_noise_free_rule(tmp_path: Path) -> None:
    build_corpus(CorpusConfig(out=tmp_path, n_tasks=60, examples_per_task=3, break_noise=0.0))
    stats = read_stats(tmp_path)["regulation"]
    assert stats["flip_rate"] == 0.0
    assert set(stats["bayes_auroc"].values()) <= {1.0, None}
    assert stats["bayes_auroc"]["train"] == 1.0


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_tasks": 1}, "n_tasks"),
        ({"break_noise": 0.5}, "break_noise"),
        ({"break_budget": 1}, "break_budget"),
        ({"held_out_families": 0.6}, "held_out_families"),
        ({"held_out_objects": -0.1}, "held_out_objects"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"examples_per_task": 0}, "examples_per_task"),
        ({"val_fraction": 0.95}, "test_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_config(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(SettingError) as info:
        CorpusConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_no_holdout_allows_no_test_split() -> None:
    config = CorpusConfig(held_out_families=0, held_out_objects=0, test_fraction=0)
    assert config.n_tasks >= 2000


def test_load_split_errors(tmp_path: Path) -> None:
    (tmp_path / "standard").mkdir()
    bad = tmp_path / "standard" / "train.jsonl"
    good = '{"task_id": 1, "task": "a", "steps": ["b"], "complexity": 1}'
    for line, message in [
        ("{nope", "malformed JSON"),
        ('{"task_id": 1, "task": " ", "steps": ["b"], "complexity": 1}', "empty or missing task"),
        ('{"task_id": 1, "task": "a", "steps": ["b", ""], "complexity": 1}', "step 1 is empty"),
        (
            '{"task_id": 1, "task": "a", "steps": ["b"], "complexity": 1, "p_break": [0, 1]}',
            "p_break must be one probability per step",
        ),
        (
            '{"task_id": 1, "task": "a", "steps": ["b"], "complexity": 1, "load": [0]}',
            "has load but not budget",
        ),
        (
            '{"task_id": 1, "task": "a", "steps": ["b"], "complexity": 1, "load": [0], '
            '"budget": [2], "remaining": [2], "since_break": [0], "effort": [0.5]}',
            "effort must be one integer per step",
        ),
    ]:
        bad.write_text(f"{good}\n{line}\n")
        with pytest.raises(UserError, match=rf"train\.jsonl:2: {message}"):
            load_split(tmp_path, "standard", "train")
    with pytest.raises(UserError, match="corpus directory not found"):
        load_split(tmp_path / "missing", "standard", "train")
    with pytest.raises(UserError, match=r"adhd/train\.jsonl: not found; .*no adhd variant"):
        load_split(tmp_path, "adhd", "train")


# ------------------------------------------------------------------------------- CLI


def test_cli_corpus_and_stats(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "c"
    args = ["corpus", "--out", str(out), "--n-tasks", "60", "--examples-per-task", "2"]
    result = runner.invoke(app, [*args, "--seed", "1", "--break-noise", "0.1"])
    assert result.exit_code == 0, result.output
    assert "Bayes AUROC" in result.output
    assert (out / "adhd" / "test.jsonl").is_file()
    result = runner.invoke(app, ["corpus-stats", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in (
        "Spearman",
        "adhd",
        "held out",
        "Bayes-optimal AUROC",
        "regulation rate",
        "object swap",
    ):
        assert text in result.output
    assert "0.1 (realised flip rate" in result.output


def test_cli_bad_setting_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["corpus", "--out", str(tmp_path / "c"), "--n-tasks", "1"])
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: --n-tasks: must be between 3 and ")
    assert not (tmp_path / "c").exists()


def test_cli_bad_input_exit_code(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "interpgpt", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    missing = run("corpus-stats", str(tmp_path / "missing"))
    assert missing.returncode == 2
    assert "missing" in missing.stderr and "Traceback" not in missing.stderr
    bad = run("corpus", "--out", str(tmp_path / "x"), "--break-noise", "0.7")
    assert bad.returncode == 2 and "--break-noise" in bad.stderr
    assert not (tmp_path / "x").exists()
