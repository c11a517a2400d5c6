"""Per-token KL of the pair's next-token distributions: known answers, role partition, CLI,
study stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from interpgpt.analysis.kl.config import KLConfig
from interpgpt.analysis.kl.run import (
    ALL,
    ANALYSIS,
    KL_JSON,
    KL_PLOT,
    NOT_SCORED,
    POOLED,
    ROLES,
    compare_outputs,
    position_roles,
    run_kl,
    section,
    stage,
    top_positions,
)
from interpgpt.cli import main
from interpgpt.commands import kl as kl_command
from interpgpt.corpus.evalset import encode_eval_set, load_eval_set
from interpgpt.errors import UserError
from interpgpt.settings import SettingError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tiny_corpus, tiny_tokenizer, tiny_pair) -> dict:
    """The tiny pair and a few held-out sequences of each variant."""
    models = {v: loaded.model.eval() for v, loaded in tiny_pair.items()}
    sets = {
        v: load_eval_set(tiny_corpus, tiny_tokenizer, v, "test", limit=8, max_len=256)
        for v in ("standard", "adhd")
    }
    return {"models": models, "sets": sets, "tok": tiny_tokenizer, "corpus": tiny_corpus}


def test_kl_of_a_model_with_itself_is_zero(world) -> None:
    model = world["models"]["adhd"]
    result = compare_outputs(model, model, world["sets"], batch_size=3)
    for source in result.sources.values():
        assert source.kl_ab.abs().max() <= 1e-6 and source.kl_ba.abs().max() <= 1e-6
    assert all(abs(v) <= 1e-6 for v in result.headline.values())


def test_kl_between_the_pair_is_positive_and_matches_the_naive_sum(world) -> None:
    std, adhd = world["models"]["standard"], world["models"]["adhd"]
    result = compare_outputs(std, adhd, world["sets"], names=("standard", "adhd"), batch_size=3)
    assert result.headline["kl_ab_all"] > 0 and result.headline["kl_ba_all"] > 0
    assert result.headline["symmetric_all"] == pytest.approx(
        (result.headline["kl_ab_all"] + result.headline["kl_ba_all"]) / 2
    )
    # Reference: the whole set in one forward, KL summed by hand, at one scored position.
    data, source = world["sets"]["adhd"], result.sources["adhd"]
    i = int(source.symmetric.argmax())
    row, pos = int(source.row[i]), int(source.pos[i])
    with torch.no_grad():
        p = std(data.ids)[row, pos].double().softmax(-1)
        q = adhd(data.ids)[row, pos].double().softmax(-1)
    kl_pq, kl_qp = float((p * (p / q).log()).sum()), float((q * (q / p).log()).sum())
    assert float(source.kl_ab[i]) == pytest.approx(kl_pq, rel=1e-4, abs=1e-6)
    assert float(source.kl_ba[i]) == pytest.approx(kl_qp, rel=1e-4, abs=1e-6)
    # Batching does not change the numbers.
    whole = compare_outputs(std, adhd, {"adhd": data}, batch_size=64).sources["adhd"]
    torch.testing.assert_close(whole.kl_ab, source.kl_ab, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(whole.pos, source.pos)  # row-major whatever the batching


def test_roles_partition_the_scored_positions(world) -> None:
    std, adhd = world["models"]["standard"], world["models"]["adhd"]
    result = compare_outputs(std, adhd, world["sets"], batch_size=5)
    total = 0
    for name, data in world["sets"].items():
        n_scored = int((data.lengths - 1).sum())
        stats = result.roles[name]
        assert sum(stats[r].count for r in ROLES) == stats[ALL].count == n_scored
        assert stats["other"].count == 0  # corpus records have no empty step
        assert stats["onset_predictor"].count == sum(len(r.onset_predictors) for r in data.roles)
        assert stats["end_predictor"].count == len(data)
        total += n_scored
    assert result.roles[POOLED][ALL].count == total
    assert result.roles["adhd"]["regulation_step"].count > 0
    assert result.roles["standard"]["regulation_step"].count == 0


def test_position_roles_known_answer(world) -> None:
    """`<|task|> t t <|steps|> s s <|sep|> sip water <|sep|> s <|end|>`, role by role."""
    tok = world["tok"]
    record = {
        "task_id": 0,
        "task": "Clean the garage",
        "steps": ["Open door", "sip water", "Sweep"],
    }
    data = encode_eval_set(tok, [record])
    roles = [ROLES[r] if r != NOT_SCORED else None for r in position_roles(data)[0].tolist()]
    n_task = len(tok.encode_text("Clean the garage"))
    n_open, n_sip = len(tok.encode_text("Open door")), len(tok.encode_text("sip water"))
    n_sweep = len(tok.encode_text("Sweep"))
    expected = (
        ["task"] * (1 + n_task)
        + ["onset_predictor"]
        + ["step_content"] * n_open
        + ["onset_predictor"]
        + ["regulation_step"] * n_sip
        + ["onset_predictor"]
        + ["step_content"] * (n_sweep - 1)
        + ["end_predictor", None]
    )
    assert roles == expected


def test_top_positions_are_readable(world) -> None:
    std, adhd = world["models"]["standard"], world["models"]["adhd"]
    result = compare_outputs(std, adhd, world["sets"], next_tokens=3)
    top = top_positions(result, world["sets"], world["tok"], k=4, window=6)
    assert len(top) == 4
    sym = [(h.kl_ab + h.kl_ba) / 2 for h in top]
    assert sym == sorted(sym, reverse=True)
    assert sym[0] == pytest.approx(max(float(s.symmetric.max()) for s in result.sources.values()))
    assert all(len(h.top_a) == 3 and h.context and h.role in ROLES for h in top)


def command_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    kl_command.register(app)
    return app


def test_cli_kl_writes_its_files(world, tiny_run_dirs, tmp_path: Path) -> None:
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    out = tmp_path / "out"
    args = ["kl", str(std), str(adhd), "--corpus", str(world["corpus"]), "--out", str(out)]
    result = CliRunner().invoke(
        command_app(), [*args, "--device", "cpu", "--limit", "5"], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "highest symmetric KL" in result.output
    assert "…" not in result.output, "a cell cut at 80 columns"
    blob = json.loads((out / KL_JSON).read_text())
    assert blob["provenance"]["config"]["limit"] == 5
    assert set(blob["roles"]) == {"standard", "adhd", POOLED}
    assert blob["overall"]["kl_ab"] > 0 and len(blob["top_positions"]) == 20
    assert (out / KL_PLOT).stat().st_size > 0


def test_missing_model_is_one_line_naming_it(world, tiny_run_dirs, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-model"
    config = KLConfig(missing, tiny_run_dirs["adhd"], world["corpus"], tmp_path / "out")
    with pytest.raises(UserError) as err:
        run_kl(config)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SystemExit) as done:
        main(["kl", str(missing), str(tiny_run_dirs["adhd"]), "--corpus", str(world["corpus"]),
              "--out", str(tmp_path / "out")])  # fmt: skip
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {missing}: no such model directory or file"]


@pytest.mark.parametrize(("field", "value"), [("limit", 0), ("batch_size", 0), ("split", "dev")])
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(SettingError) as err:
        KLConfig(**{field: value})
    assert err.value.field == field


def test_stage_and_section(world, tiny_run_dirs, study_layout) -> None:
    exports = {("export", variant): path for variant, path in tiny_run_dirs.items()}
    ws = study_layout({**exports, "corpus": world["corpus"]})
    output = stage(ws, KLConfig(limit=4))
    assert output.outputs == [ws.analysis("kl") / KL_JSON, ws.analysis("kl") / KL_PLOT]
    summary = json.loads(json.dumps(output.summary))  # as the stage record stores it
    built = section(summary, [str(p) for p in output.outputs])
    assert built.finding.startswith("Over all held-out positions of both variants, KL(standard‖")
    assert built.table is not None and built.table[-1][0] == ALL
    assert built.figures == [ws.analysis("kl") / KL_PLOT]
    assert ANALYSIS.name == "kl" and ANALYSIS.after == ("export",)
