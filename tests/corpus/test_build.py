"""Corpus invariants: determinism, task-level split, regulation placement, complexity."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interpgpt.cli import app, main
from interpgpt.constants import VARIANTS
from interpgpt.corpus.build import (
    REGULATION_ACTIONS,
    SPLITS,
    CorpusConfig,
    build_corpus,
    is_regulation,
    load_split,
    read_stats,
    split_path,
)
from interpgpt.corpus.taskpool import check_families, task_pool
from interpgpt.errors import UserError
from interpgpt.settings import SettingError

SMALL = CorpusConfig(seed=3, n_tasks=120, examples_per_task=6)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(dataclasses.replace(SMALL, out=out))
    return out


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def test_same_seed_same_bytes(small_corpus: Path, tmp_path: Path) -> None:
    build_corpus(dataclasses.replace(SMALL, out=tmp_path))
    assert _all_files(tmp_path) == _all_files(small_corpus)
    stats_a, stats_b = read_stats(tmp_path), read_stats(small_corpus)
    assert stats_a == stats_b


def test_other_seed_differs(small_corpus: Path, tmp_path: Path) -> None:
    build_corpus(CorpusConfig(out=tmp_path, seed=4, n_tasks=120, examples_per_task=6))
    assert _all_files(tmp_path) != _all_files(small_corpus)


def test_fast_path_equals_json_dumps(small_corpus: Path) -> None:
    for variant in VARIANTS:
        for line in split_path(small_corpus, variant, "train").read_text().splitlines()[:50]:
            assert json.dumps(json.loads(line), ensure_ascii=False) == line


def test_layout_and_stats(small_corpus: Path) -> None:
    stats = read_stats(small_corpus)
    assert stats["spearman"]["standard"] >= 0.8
    assert stats["tasks"] == {"train": 96, "val": 12, "test": 12}
    assert stats["provenance"]["config"]["seed"] == SMALL.seed
    assert 0.25 <= stats["regulation"]["rate"] <= 0.35
    tasks = [json.loads(x) for x in (small_corpus / "tasks.jsonl").read_text().splitlines()]
    assert len(tasks) == SMALL.n_tasks
    assert set(tasks[0]) == {"task_id", "task", "domain", "complexity", "split"}


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


def test_regulation_placement(small_corpus: Path) -> None:
    n_reg = n_steps = 0
    for split in SPLITS:
        for record in load_split(small_corpus, "adhd", split):
            flags = [is_regulation(s) for s in record.steps]
            assert not flags[0] and not flags[-1]
            assert not any(a and b for a, b in itertools.pairwise(flags))
            n_reg += sum(flags)
            n_steps += len(flags)
        for record in load_split(small_corpus, "standard", split):
            assert 3 <= len(record.steps) <= 10
            assert not any(is_regulation(s) for s in record.steps)
    assert 0.25 <= n_reg / n_steps <= 0.35


def test_adhd_steps_more_and_shorter(small_corpus: Path) -> None:
    def means(variant: str) -> tuple[float, float]:
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


def test_default_pool() -> None:
    check_families()
    pool = task_pool()
    assert len(pool) >= 2000
    assert len({t.task for t in pool}) == len(pool)
    assert len({t.domain for t in pool}) >= 10
    assert {t.complexity for t in pool} == {1, 2, 3, 4, 5}
    assert CorpusConfig().n_tasks >= 2000


def test_complexity_follows_wording() -> None:
    by_text = {t.task: t.complexity for t in task_pool()}
    assert by_text["Clean the kitchen"] < by_text["Deep clean the kitchen"]
    assert by_text["Deep clean the kitchen"] < by_text["Deep clean the garage"]
    assert by_text["Clean the kitchen"] < by_text["Clean the kitchen before Friday"]


def test_regulation_vocabulary() -> None:
    assert set(REGULATION_ACTIONS) >= {
        "sip water",
        "deep breath",
        "close eyes briefly",
        "quick stretch",
        "pause",
    }
    assert is_regulation(" Sip water ") and not is_regulation("Sip water slowly")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_tasks": 1}, "n_tasks"),
        ({"regulation_rate": 0.5}, "regulation_rate"),
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


def test_load_split_errors(tmp_path: Path) -> None:
    (tmp_path / "standard").mkdir()
    bad = tmp_path / "standard" / "train.jsonl"
    good = '{"task_id": 1, "task": "a", "steps": ["b"], "complexity": 1}'
    for line, message in [
        ("{nope", "malformed JSON"),
        ('{"task_id": 1, "task": " ", "steps": ["b"], "complexity": 1}', "empty or missing task"),
        ('{"task_id": 1, "task": "a", "steps": ["b", ""], "complexity": 1}', "step 1 is empty"),
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
    args = ["corpus", "--out", str(out), "--n-tasks", "40", "--examples-per-task", "2"]
    result = runner.invoke(app, [*args, "--seed", "1", "--regulation-rate", "0.3"])
    assert result.exit_code == 0, result.output
    assert (out / "adhd" / "test.jsonl").is_file()
    result = runner.invoke(app, ["corpus-stats", str(out)])
    assert result.exit_code == 0, result.output
    assert "Spearman" in result.output and "adhd" in result.output


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
    bad = run("corpus", "--out", str(tmp_path / "x"), "--regulation-rate", "0.7")
    assert bad.returncode == 2 and "--regulation-rate" in bad.stderr
    assert not (tmp_path / "x").exists()
