"""Behaviour of a trained pair: the summary's rules, the `behaviour` command, and the
study stage whose section also shows the training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from interpgpt.analysis.behaviour import (
    BEHAVIOUR_JSON,
    BehaviourConfig,
    section,
    stage,
    summarise,
)
from interpgpt.analysis.protocol import Workspace, fmt
from interpgpt.commands import behaviour
from interpgpt.model.generate import Decomposition
from interpgpt.settings import SettingError

TINY = ["--limit", "5", "--max-new-tokens", "24", "--device", "cpu"]


def command_app() -> typer.Typer:
    """An app holding only the `behaviour` command (a group: it is invoked by name)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    behaviour.register(app)
    return app


def decomposition(steps: list[str], parsed: bool = True) -> Decomposition:
    return Decomposition("task", tuple(steps), parsed, (), 0)


def test_summarise_counts_parsed_outputs_and_regulation():
    outputs = [
        decomposition(["Open box", "sip water", "Read label"]),
        decomposition(["Open box"]),
        decomposition(["Open box", "Read label", "pause", "Close box"]),
        decomposition(["half a step"], parsed=False),
    ]
    result = summarise(outputs, [2, 1, 3, 5], shown=1)
    assert result.n == 4 and result.parse_rate == pytest.approx(0.75)
    assert result.regulating_outputs == pytest.approx(2 / 3)
    assert result.regulation_step_share == pytest.approx(2 / 8)
    assert result.mean_steps == pytest.approx(8 / 3)
    assert result.spearman_complexity_steps == pytest.approx(1.0)
    assert result.examples == [{"task": "task", "steps": ["Open box", "sip water", "Read label"]}]


def test_config_rejects_bad_values():
    for field, value in [("limit", 0), ("temperature", -1.0), ("top_k", 0)]:
        with pytest.raises(SettingError) as err:
            BehaviourConfig(**{field: value})
        assert err.value.field == field


def test_behaviour_command(tiny_run_dirs, tiny_corpus, tmp_path: Path):
    out = tmp_path / "out"
    models = [str(tiny_run_dirs["standard"]), str(tiny_run_dirs["adhd"])]
    args = ["behaviour", *models, "--corpus", str(tiny_corpus), "--out", str(out), *TINY]
    result = CliRunner().invoke(command_app(), args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "parse rate" in result.output and "behaviour on 5 held-out tasks" in result.output
    blob = json.loads((out / BEHAVIOUR_JSON).read_text())
    assert blob["n_tasks"] == 5 and blob["provenance"]["config"]["limit"] == 5
    assert set(blob["models"]) == {"standard", "adhd"}
    for model in blob["models"].values():
        assert model["n"] == 5 and 0.0 <= model["parse_rate"] <= 1.0


def test_stage_summary_builds_the_section(tiny_run_dirs, tiny_corpus, tmp_path: Path):
    """The stage runs on a study layout and copies the training numbers, so the section
    shows both the training runs and the behaviour table."""
    (tmp_path / "runs").mkdir()
    for variant, path in tiny_run_dirs.items():
        (tmp_path / "runs" / variant).symlink_to(path)
    (tmp_path / "corpus").symlink_to(tiny_corpus)
    trained = {"val_loss": 1.25, "steps": 40, "tokens_per_second": 12345.6, "seconds": 90.0}
    records = {
        f"train-{variant}": {"summary": {**trained, "samples": []}}
        for variant in ("standard", "adhd")
    }
    ws = Workspace(tmp_path, records)
    output = stage(ws, BehaviourConfig(limit=4, max_new_tokens=24, device="cpu"))
    assert output.outputs == [tmp_path / "analysis" / "behaviour" / BEHAVIOUR_JSON]
    summary = json.loads(json.dumps(output.summary))  # as the stage record stores it
    assert summary["training"]["adhd"] == trained
    built = section(summary, [str(p) for p in output.outputs])
    assert built.title == "Models and their behaviour"
    assert built.rows[:2] == [
        ("standard model", "val loss 1.250 after 40 steps, 12,346 tokens/s, 1.5 min"),
        ("adhd model", "val loss 1.250 after 40 steps, 12,346 tokens/s, 1.5 min"),
    ]
    assert [row[0] for row in built.table] == ["model", "standard", "adhd"]
    std, adhd = summary["models"]["standard"], summary["models"]["adhd"]
    assert built.finding.startswith(
        f"Both models decompose held-out tasks ({fmt(std['parse_rate'])} / "
        f"{fmt(adhd['parse_rate'])} of samples parse)"
    )
    assert section({"models": {}, "training": {}}, []).finding == (
        "Training ran; behaviour was not measured."
    )
