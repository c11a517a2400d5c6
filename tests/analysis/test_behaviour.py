"""Behaviour of a trained pair: content words, the summary's rules, the split
into seen and unseen families, the `behaviour` command, and the study stage whose section
also shows the training runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from interpgpt.analysis.behaviour.config import BehaviourConfig
from interpgpt.analysis.behaviour.metrics import (
    content_words,
    names_content,
    onset_auroc,
    summarise,
    word_forms,
)
from interpgpt.analysis.behaviour.run import (
    BEHAVIOUR_JSON,
    TABLE_HEADER,
    measure_behaviour,
    section,
    split_by_family,
    stage,
)
from interpgpt.analysis.protocol import fmt
from interpgpt.commands import behaviour
from interpgpt.corpus.build import read_tasks
from interpgpt.corpus.evalset import load_records
from interpgpt.corpus.regulation import is_regulation
from interpgpt.model.generate import Decomposition
from interpgpt.settings import SettingError

TINY = ["--limit", "5", "--auroc-tasks", "5", "--max-new-tokens", "24", "--device", "cpu"]
WIDE = {"COLUMNS": "240"}
"""A terminal wide enough that rich does not wrap the table's cells."""


def command_app() -> typer.Typer:
    """An app holding only the `behaviour` command (a group: it is invoked by name)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    behaviour.register(app)
    return app


def decomposition(task: str, steps: list[str], parsed: bool = True) -> Decomposition:
    return Decomposition(task, tuple(steps), parsed, (), 0)


# ----------------------------------------------------------------------------- content words


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("I need help to clean the garage before Friday", {"clean", "garage"}),
        (
            "Cook the pasta dinner for six people by tonight",
            {"cook", "pasta", "dinner", "six", "people"},
        ),
        ("Renew my driver's license this week", {"renew", "driver's", "license"}),
        (
            "Can you please have the kids' lunches ready by the end of the day",
            {"kids", "lunches", "ready"},
        ),
        ("Make sure to get it done by tomorrow morning", set()),
        (
            "Can you help me plan a stay with the family abroad before the holidays",
            {"plan", "stay", "family", "abroad"},
        ),
    ],
)
def test_content_words_known_answers(task: str, expected: set[str]) -> None:
    assert content_words(task) == expected


def test_word_forms_strip_one_plural_or_possessive_ending() -> None:
    assert word_forms("dishes") == {"dishes", "dishe", "dish"}
    assert word_forms("driver's") == {"driver's", "driver"}
    assert word_forms("box") == {"box"}
    assert word_forms("s") == {"s"}


@pytest.mark.parametrize(
    ("task", "step", "named"),
    [
        ("Clean the garage before Friday", "Sweep the GARAGE floor", True),
        ("Clean the garage before Friday", "Wait until Friday", False),  # a deadline word
        ("Wash the dishes", "Dry each dish", True),
        ("Wash the dishes", "Fill the sink", False),
        ("Bake the chocolate chip cookies", "Line the cookie tray", True),
        ("Bake the chocolate chip cookies", "Preheat the oven", False),
        ("Renew my driver's license", "Find the drivers form", True),
        ("Sort the glasses", "Wipe each glass", True),
        ("Pack the boxes", "Tape the box shut", True),
        ("Pack the boxes", "The end", False),
    ],
)
def test_names_content_known_answers(task: str, step: str, named: bool) -> None:
    assert names_content(step, content_words(task)) is named


# ----------------------------------------------------------------------------- the summary


def test_summarise_counts_parsed_outputs_topic_and_regulation() -> None:
    outputs = [
        decomposition("Clean the garage", ["Open the garage", "sip water", "Sweep the floor"]),
        decomposition("Wash the dishes", ["Fill the sink"]),
        decomposition("Pay the bills", ["Open each bill", "Read label", "pause", "Pay online"]),
        decomposition("Pay the bills", ["half a bill step"], parsed=False),
    ]
    result = summarise(outputs, [2, 1, 3, 5], shown=1)
    assert result.n == 4 and result.parse_rate == pytest.approx(0.75)
    assert result.on_topic_rate == pytest.approx(2 / 3)
    assert result.object_mention_rate == pytest.approx(3 / 6)  # of non-regulation steps
    assert result.regulating_outputs == pytest.approx(2 / 3)
    assert result.regulation_step_share == pytest.approx(2 / 8)
    assert result.mean_steps == pytest.approx(8 / 3)
    assert result.spearman_complexity_steps == pytest.approx(1.0)
    assert result.auroc is None
    assert result.examples == [
        {"task": "Clean the garage", "steps": ["Open the garage", "sip water", "Sweep the floor"]}
    ]


def test_summarise_leaves_what_was_not_counted_empty() -> None:
    empty = summarise([], [], shown=3)
    assert empty.n == 0 and empty.examples == []
    assert empty.parse_rate is None and empty.on_topic_rate is None
    unparsed = summarise([decomposition("Pay the bills", ["x"], parsed=False)], [1], shown=3)
    assert unparsed.parse_rate == 0.0 and unparsed.regulating_outputs is None
    constant = summarise([decomposition("Pay the bills", ["a", "b"])] * 3, [1, 2, 3], shown=0)
    assert constant.spearman_complexity_steps is None  # step count does not vary


def test_config_rejects_bad_values() -> None:
    bad: list[tuple[str, Any]] = [
        ("limit", 0),
        ("auroc_tasks", 0),
        ("temperature", -1.0),
        ("top_k", 0),
        ("batch_size", 0),
    ]
    for field, value in bad:
        with pytest.raises(SettingError) as err:
            BehaviourConfig(**{field: value})
        assert err.value.field == field


# ----------------------------------------------------------------------------- seen / unseen

SEEN = [
    (
        10,
        "Clean the garage",
        ["Open the garage", "sip water", "Sweep the garage", "pause", "Bin the trash"],
    ),
    (11, "Wash the dishes", ["Fill the sink", "Wash the dishes", "deep breath", "Dry the dishes"]),
]
UNSEEN = [
    (20, "Repot the fern", ["Buy a pot", "Water the fern", "quick stretch", "Move the fern"]),
    (21, "Tune the piano", ["Open the piano", "pause", "Tune each key"]),
]
"""Hand-built test tasks: (task_id, task, ADHD steps), of a seen and a held-out family."""


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def seen_p_break(steps: list[str]) -> list[float]:
    """A p_break that ranks the regulation steps perfectly (0 for the first step)."""
    return [0.0] + [0.9 if is_regulation(s) else 0.2 for s in steps[1:]]


def hand_built_corpus(root: Path, with_field: bool = True) -> Path:
    """tasks.jsonl plus both variants' test split; the seen ADHD records carry p_break,
    the unseen ones do not. A second phrasing per task follows the first."""
    tasks = []
    for held_out, rows in ((False, SEEN), (True, UNSEEN)):
        for task_id, task, _ in rows:
            row = {"task_id": task_id, "task": task, "family": "f", "domain": "d"}
            row |= {"complexity": 1 + task_id % 3, "split": "test", "object": task.split()[-1]}
            if with_field:
                row |= {"family_held_out": held_out, "object_held_out": False}
            tasks.append(row)
    tasks.append({"task_id": 1, "task": "Train task", "complexity": 1, "split": "train"})
    write_jsonl(root / "tasks.jsonl", tasks)
    standard, adhd = [], []
    for task_id, task, steps in SEEN + UNSEEN:
        content = [s for s in steps if not is_regulation(s)]
        for phrasing in (task, f"{task} today"):
            record = {"task_id": task_id, "task": phrasing, "complexity": 1 + task_id % 3}
            standard.append({**record, "steps": content})
            adhd.append({**record, "steps": steps})
            if task_id < 20:
                adhd[-1]["p_break"] = seen_p_break(steps)
    write_jsonl(root / "standard" / "test.jsonl", standard[::2] + standard[1::2])
    write_jsonl(root / "adhd" / "test.jsonl", adhd[::2] + adhd[1::2])
    return root


def test_family_held_out_splits_the_test_tasks(tmp_path: Path) -> None:
    corpus = hand_built_corpus(tmp_path / "corpus")
    tasks = read_tasks(corpus)
    held_out = {i: t.family_held_out for i, t in tasks.items()}
    assert held_out == {10: False, 11: False, 20: True, 21: True, 1: False}
    records = [{"task_id": i} for i in (20, 10, 21, 11, 99)]
    split = split_by_family(records, tasks, limit=None)
    assert split == {
        "seen": [{"task_id": 10}, {"task_id": 11}, {"task_id": 99}],
        "unseen": [{"task_id": 20}, {"task_id": 21}],
    }
    assert split_by_family(records, tasks, limit=1) == {
        "seen": [{"task_id": 10}],
        "unseen": [{"task_id": 20}],
    }
    old = hand_built_corpus(tmp_path / "old", with_field=False)
    assert not any(t.family_held_out for t in read_tasks(old).values())  # no field: all seen


def test_metrics_per_subset_on_a_hand_built_corpus(tiny_run_dirs, tmp_path: Path) -> None:
    corpus = hand_built_corpus(tmp_path / "corpus")
    config = BehaviourConfig(
        standard=tiny_run_dirs["standard"],
        adhd=tiny_run_dirs["adhd"],
        corpus=corpus,
        out=tmp_path / "out",
        limit=None,
        auroc_tasks=None,
        max_new_tokens=24,
        device="cpu",
    )
    result = measure_behaviour(config)
    assert result.n_tasks == {"seen": 2, "unseen": 2}
    n_steps = {"seen": sum(len(s) for *_, s in SEEN), "unseen": sum(len(s) for *_, s in UNSEEN)}
    n_reg = {
        "seen": sum(map(is_regulation, (x for *_, s in SEEN for x in s))),
        "unseen": sum(map(is_regulation, (x for *_, s in UNSEEN for x in s))),
    }
    tasks = {"seen": {t for _, t, _ in SEEN}, "unseen": {t for _, t, _ in UNSEEN}}
    for subsets in result.models.values():
        for subset, b in subsets.items():
            assert b.n == 2
            assert {e["task"] for e in b.examples} <= tasks[subset]
            assert b.auroc is not None
            assert b.auroc.n_sequences == 2  # one phrasing per task
            assert (b.auroc.n_positions, b.auroc.n_regulation) == (n_steps[subset], n_reg[subset])
            assert 0.0 <= b.auroc.model <= 1.0
        seen, unseen = subsets["seen"].auroc, subsets["unseen"].auroc
        assert seen is not None and seen.bayes == 1.0  # p_break ranks these perfectly
        assert unseen is not None and unseen.bayes is None  # these records carry none
    blob = json.loads((tmp_path / "out" / BEHAVIOUR_JSON).read_text())
    assert blob["n_tasks"] == {"seen": 2, "unseen": 2}
    assert blob["models"]["adhd"]["seen"]["auroc"]["bayes"] == 1.0


def test_onset_auroc_skips_records_longer_than_the_context(tiny_pair) -> None:
    loaded = tiny_pair["adhd"]
    long = {"task_id": 30, "task": "Tune the piano", "steps": ["Tune " * loaded.model.cfg.n_ctx]}
    assert onset_auroc(loaded, [long], batch_size=4) is None
    records = [{"task_id": i, "task": t, "steps": s} for i, t, s in SEEN]
    scored = onset_auroc(loaded, [*records, long], batch_size=1)
    assert scored is not None and scored.bayes is None  # no p_break given
    assert (scored.n_sequences, scored.n_positions) == (2, sum(len(s) for *_, s in SEEN))
    with_p = [{**r, "p_break": seen_p_break(r["steps"])} for r in records]
    scored = onset_auroc(loaded, [*with_p, long], batch_size=1)
    assert scored is not None and scored.bayes == 1.0  # the long record is dropped


def test_adhd_records_carry_their_p_break(tmp_path: Path) -> None:
    """The behaviour stage reads p_break with the records (`load_records`), once."""
    corpus = hand_built_corpus(tmp_path / "corpus")
    records = {r["task_id"]: r for r in load_records(corpus, "adhd", "test")}
    assert set(records) == {10, 11, 20, 21}
    for task_id, task, steps in SEEN:
        assert records[task_id]["task"] == task  # the first phrasing
        assert records[task_id]["p_break"] == seen_p_break(steps)
    assert all("p_break" not in records[task_id] for task_id, *_ in UNSEEN)
    assert all("p_break" not in r for r in load_records(corpus, "standard", "test"))


# ----------------------------------------------------------------------------- command, study


def expected_counts(corpus: Path, limit: int) -> dict[str, int]:
    """Test tasks per subset as tasks.jsonl lists them, at most `limit` each."""
    rows = [json.loads(line) for line in (corpus / "tasks.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["split"] == "test"]
    unseen = sum(bool(r.get("family_held_out")) for r in test)
    return {"seen": min(len(test) - unseen, limit), "unseen": min(unseen, limit)}


def test_behaviour_command(tiny_run_dirs, tiny_corpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    models = [str(tiny_run_dirs["standard"]), str(tiny_run_dirs["adhd"])]
    args = ["behaviour", *models, "--corpus", str(tiny_corpus), "--out", str(out), *TINY]
    result = CliRunner().invoke(command_app(), args, env=WIDE)
    assert result.exit_code == 0, result.output + repr(result.exception)
    n = expected_counts(tiny_corpus, 5)
    assert f"behaviour on {n['seen']} seen- and {n['unseen']} unseen-family tasks" in result.output
    assert all(column in result.output for column in TABLE_HEADER)
    blob = json.loads((out / BEHAVIOUR_JSON).read_text())
    assert blob["n_tasks"] == n and blob["provenance"]["config"]["limit"] == 5
    assert set(blob["models"]) == {"standard", "adhd"}
    for subsets in blob["models"].values():
        assert set(subsets) == {"seen", "unseen"}
        assert subsets["seen"]["n"] == n["seen"] and 0.0 <= subsets["seen"]["parse_rate"] <= 1.0


def test_stage_summary_builds_the_section(tiny_run_dirs, tiny_corpus, study_layout) -> None:
    """The stage runs on a study layout and copies the training numbers, so the section
    shows both the training runs and the behaviour table."""
    runs = {("runs", variant): path for variant, path in tiny_run_dirs.items()}
    trained = {"val_loss": 1.25, "steps": 40, "tokens_per_second": 12345.6, "seconds": 90.0}
    records = {
        f"train-{variant}": {"summary": {**trained, "samples": []}}
        for variant in ("standard", "adhd")
    }
    ws = study_layout({**runs, "corpus": tiny_corpus}, records)
    config = BehaviourConfig(limit=4, auroc_tasks=40, max_new_tokens=24, device="cpu")
    output = stage(ws, config)
    assert output.outputs == [ws.root / "analysis" / "behaviour" / BEHAVIOUR_JSON]
    summary = json.loads(json.dumps(output.summary))  # as the stage record stores it
    assert summary["training"]["adhd"] == trained
    assert summary["n_tasks"] == expected_counts(tiny_corpus, 4)
    built = section(summary, [str(p) for p in output.outputs])
    assert built.title == "Models and their behaviour"
    assert built.rows[:2] == [
        ("standard model", "val loss 1.250 after 40 steps, 12,346 tokens/s, 1.5 min"),
        ("adhd model", "val loss 1.250 after 40 steps, 12,346 tokens/s, 1.5 min"),
    ]
    assert built.table is not None and built.table[0] == list(TABLE_HEADER)
    assert [row[:2] for row in built.table[1:]] == [
        ["standard", "seen"],
        ["standard", "unseen"],
        ["adhd", "seen"],
        ["adhd", "unseen"],
    ]
    adhd_seen = summary["models"]["adhd"]["seen"]
    assert built.table[3][3] == fmt(adhd_seen["parse_rate"])
    onset = adhd_seen["auroc"]
    assert built.table[3][-1] == f"{fmt(onset['model'])} / {fmt(onset['bayes'])}"
    assert section({"models": {}, "training": {}}, []).finding == (
        "Training ran; behaviour was not measured."
    )


def subset_summary(on_topic: float, regulating: float, model_auc: float, bayes: float) -> dict:
    return {
        "n": 10,
        "parse_rate": 0.9,
        "on_topic_rate": on_topic,
        "object_mention_rate": 0.5,
        "regulating_outputs": regulating,
        "regulation_step_share": regulating / 4,
        "mean_steps": 6.0,
        "spearman_complexity_steps": 0.6,
        "auroc": {
            "n_sequences": 5,
            "n_positions": 40,
            "n_regulation": 9,
            "model": model_auc,
            "bayes": bayes,
        },
        "examples": [{"task": "Tune the piano", "steps": ["Open the piano", "Tune it"]}],
    }


def test_section_states_unseen_on_topic_and_auroc_against_bayes() -> None:
    summary: dict[str, Any] = {
        "n_tasks": {"seen": 10, "unseen": 7},
        "models": {
            "standard": {
                "seen": subset_summary(0.95, 0.0, 0.52, 0.81),
                "unseen": subset_summary(0.40, 0.1, 0.50, 0.79),
            },
            "adhd": {
                "seen": subset_summary(0.9, 0.8, 0.74, 0.81),
                "unseen": subset_summary(0.35, 0.7, 0.66, 0.79),
            },
        },
        "training": {},
    }
    built = section(summary, [])
    assert built.finding == (
        "On 7 tasks of families held out of training the standard and ADHD models stay on "
        "topic in 0.400 and 0.350 of their decompositions (seen families: 0.950 and 0.900); "
        "the ADHD model's P(regulation) at step onsets ranks regulation steps with AUROC "
        "0.740 / 0.660 (seen / unseen families) against a Bayes-optimal 0.810 / 0.790."
    )
    assert built.table is not None
    assert built.table[2] == [
        "standard",
        "unseen",
        "10",
        "0.900",
        "0.400",
        "0.500",
        "0.600",
        "0.100",
        "0.025",
        "0.500 / 0.790",
    ]
    assert built.status == "warn"  # the standard model regulates on unseen families
    assert ("standard model regulates", "in 0.100 of its outputs") in built.rows
    summary["models"]["standard"]["unseen"]["regulating_outputs"] = 0.0
    assert section(summary, []).status == "ok"
