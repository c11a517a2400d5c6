"""Activation difference lens: known answers on the tiny pair, the steering check against its
random null, CLI and study stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from interpgpt.analysis.diff_lens.config import DiffLensConfig
from interpgpt.analysis.diff_lens.run import (
    ANALYSIS,
    DIFF_LENS_JSON,
    DIFF_LENS_PLOT,
    DIFF_LENS_VECTORS,
    POSITION_SETS,
    closed_steps,
    difference_lens,
    random_directions,
    regulation_rate,
    run_diff_lens,
    section,
    stage,
    steering_check,
)
from interpgpt.cli import main
from interpgpt.commands import diff_lens as diff_lens_command
from interpgpt.corpus.evalset import load_eval_set, load_records
from interpgpt.corpus.regulation import is_regulation
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.errors import UserError
from interpgpt.model.config import GenerationConfig
from interpgpt.model.generate import Decomposition, sample_decompositions
from interpgpt.settings import SettingError

pytestmark = pytest.mark.usefixtures("one_thread")
SAMPLED = GenerationConfig(max_new_tokens=32, temperature=1.0, batch_size=8, seed=0)
"""The tiny models are barely trained: greedy decoding repeats one token and never closes a
step, while sampling at temperature 1 closes a few."""


@pytest.fixture(scope="module")
def world(tiny_corpus, tiny_tokenizer, tiny_pair) -> dict:
    models = {v: loaded.model.eval() for v, loaded in tiny_pair.items()}
    return {
        "models": models,
        "tok": tiny_tokenizer,
        "corpus": tiny_corpus,
        "data": load_eval_set(tiny_corpus, tiny_tokenizer, "standard", limit=8, max_len=256),
        "tasks": [r["task"] for r in load_records(tiny_corpus, "standard", "test", 6)],
        "reg": sorted(regulation_first_tokens(tiny_tokenizer)),
    }


def test_lens_of_a_model_with_itself_is_zero(world) -> None:
    model = world["models"]["adhd"]
    result = difference_lens(model, model, world["data"], batch_size=3)
    for s in POSITION_SETS:
        assert result.norms[s] == [0.0] * model.cfg.n_layer
        assert not result.means[s].any()
        assert all(r > 0 for r in result.resid_norms[s])
    assert result.n_positions["all"] == int(world["data"].lengths.sum())
    assert result.headline["max_norm_onset_predictor"] == 0.0


def test_lens_of_the_pair_matches_the_naive_mean(world) -> None:
    std, adhd = world["models"]["standard"], world["models"]["adhd"]
    data = world["data"]
    result = difference_lens(
        std, adhd, data, names=("standard", "adhd"), batch_size=3, regulation_ids=world["reg"]
    )
    assert all(n > 0 for s in POSITION_SETS for n in result.norms[s])
    mask = data.onset_predictor_mask()
    assert result.n_positions["onset_predictor"] == int(mask.sum())
    with torch.no_grad():
        for layer in range(std.cfg.n_layer):
            name = f"blocks.{layer}.hook_resid_post"
            _, a = std.run_with_cache(data.ids, names_filter=name)
            _, b = adhd.run_with_cache(data.ids, names_filter=name)
            naive = (b[name] - a[name])[mask].double().mean(0).float()
            torch.testing.assert_close(result.means["onset_predictor"][layer], naive)
            reading = result.readings["onset_predictor"][layer]["standard"]
            logits = std.unembed(naive)
            assert reading.promoted[0] == int(logits.argmax())
            assert reading.suppressed[0] == int(logits.argmin())
            best_reg = logits[world["reg"]].max()
            assert reading.regulation_rank == int((logits > best_reg).sum())
    layer = result.max_norm_layer()
    assert result.headline["max_norm_layer_onset_predictor"] == layer
    rank = result.readings["onset_predictor"][layer]["standard"].regulation_rank
    assert rank is not None and result.headline["regulation_rank_onset_predictor"] == rank


def test_zero_direction_leaves_the_regulation_rate_unchanged(world) -> None:
    model, tok = world["models"]["adhd"], world["tok"]
    zero = torch.zeros(model.cfg.d_model)
    plain = sample_decompositions(model, tok, world["tasks"], SAMPLED)
    steps = [s for d in plain for s in closed_steps(d, tok.end_id)]
    expected = sum(map(is_regulation, steps)) / len(steps)
    assert regulation_rate(model, tok, world["tasks"], zero, 1, SAMPLED) == (expected, len(steps))
    check = steering_check(model, tok, world["tasks"], zero, 0, n_random=2, generation=SAMPLED)
    assert check.steered_rate == check.baseline_rate == expected
    # A zero norm makes the random directions zero too: every condition ties, p = 1.
    assert check.random_rates == [expected, expected] and check.p_value == 1.0


def test_steering_check_against_random_directions(world) -> None:
    model, tok = world["models"]["standard"], world["tok"]
    lens = difference_lens(model, world["models"]["adhd"], world["data"])
    direction = lens.means["onset_predictor"][1]
    check = steering_check(
        model, tok, world["tasks"], direction, 1, n_random=3, seed=1, generation=SAMPLED
    )
    assert check.norm == pytest.approx(float(direction.norm()))
    assert check.hook_name == "blocks.1.hook_resid_post" and check.n_tasks == 6
    assert math.isfinite(check.steered_rate) and all(map(math.isfinite, check.random_rates))
    at_least = sum(r >= check.steered_rate for r in check.random_rates)
    assert check.p_value == pytest.approx((1 + at_least) / 4)
    assert set(check.n_steps) == {"baseline", "steered", "random_0", "random_1", "random_2"}
    with pytest.raises(UserError, match="--layer 2"):
        steering_check(model, tok, world["tasks"], direction, 2)


def test_random_directions_are_seeded_and_of_the_given_norm() -> None:
    like = torch.full((16,), 0.5)
    dirs = random_directions(4, like, seed=3)
    assert all(float(d.norm()) == pytest.approx(float(like.norm())) for d in dirs)
    assert all(torch.equal(x, y) for x, y in zip(dirs, random_directions(4, like, 3), strict=True))
    assert not torch.equal(dirs[0], dirs[1])


def test_closed_steps_drop_a_step_cut_off_by_the_budget(world) -> None:
    tok = world["tok"]
    prompt = tok.encode_prompt("Clean the garage")
    body = [*tok.encode_text("Open door"), tok.sep_id, *tok.encode_text("sip")]
    cut = Decomposition("t", ("Open door", "sip"), False, tuple(prompt + body), len(prompt))
    done = Decomposition("t", ("Open door", "sip"), True, (*prompt, *body, tok.end_id), len(prompt))
    assert closed_steps(cut, tok.end_id) == ("Open door",)
    assert closed_steps(done, tok.end_id) == ("Open door", "sip")


def command_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    diff_lens_command.register(app)
    return app


CHEAP = ["--limit", "5", "--steer-tasks", "4", "--n-random", "2", "--max-new-tokens", "16"]


def test_cli_diff_lens_writes_its_files(world, tiny_run_dirs, tmp_path: Path) -> None:
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    out = tmp_path / "out"
    args = ["diff-lens", str(std), str(adhd), "--corpus", str(world["corpus"]), "--out", str(out)]
    result = CliRunner().invoke(command_app(), [*args, "--device", "cpu", *CHEAP])
    assert result.exit_code == 0, result.output
    assert "empirical p" in result.output
    blob = json.loads((out / DIFF_LENS_JSON).read_text())
    assert blob["provenance"]["config"]["steer_tasks"] == 4
    assert len(blob["layers"]["onset_predictor"]) == 2
    promoted = blob["layers"]["all"][0]["read_by"]["adhd"]["promoted"]
    assert len(promoted) == 10 and isinstance(promoted[0]["token"], str)
    assert all(p["id"] < world["tok"].vocab_size for p in promoted)  # trained rows only
    steering = blob["steering"]
    assert steering["layer"] == int(blob["headline"]["max_norm_layer_onset_predictor"])
    assert len(steering["random_rates"]) == 2 and 1 / 3 <= steering["p_value"] <= 1
    vectors = load_file(str(out / DIFF_LENS_VECTORS))
    assert vectors["onset_predictor"].shape == (2, 32)
    norm = float(vectors["onset_predictor"][steering["layer"]].norm())
    assert steering["norm"] == pytest.approx(norm, rel=1e-5)
    assert (out / DIFF_LENS_PLOT).stat().st_size > 0


def test_bad_inputs_are_one_line_errors(world, tiny_run_dirs, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-model"
    adhd = tiny_run_dirs["adhd"]
    with pytest.raises(UserError) as err:
        run_diff_lens(DiffLensConfig(missing, adhd, world["corpus"], tmp_path / "out"))
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SystemExit) as done:
        main(["diff-lens", str(missing), str(adhd), "--corpus", str(world["corpus"]),
              "--out", str(tmp_path / "out")])  # fmt: skip
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {missing}: no such model directory or file"]
    config = DiffLensConfig(tiny_run_dirs["standard"], adhd, world["corpus"], tmp_path, layer=5)
    with pytest.raises(UserError, match="--layer 5"):
        run_diff_lens(config)


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_random", 0), ("steer_tasks", -1), ("layer", -1), ("sequences", "mixed")],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(SettingError) as err:
        DiffLensConfig(**{field: value})
    assert err.value.field == field


def test_stage_and_section(world, tiny_run_dirs, study_layout) -> None:
    exports = {("export", variant): path for variant, path in tiny_run_dirs.items()}
    ws = study_layout({**exports, "corpus": world["corpus"]})
    config = DiffLensConfig(limit=4, steer_tasks=3, n_random=2, max_new_tokens=12)
    output = stage(ws, config)
    where = ws.analysis("diff_lens")
    assert output.outputs == [where / DIFF_LENS_JSON, where / DIFF_LENS_VECTORS,
                              where / DIFF_LENS_PLOT]  # fmt: skip
    summary = json.loads(json.dumps(output.summary))  # as the stage record stores it
    assert len(summary["promoted"]) == 10 and summary["steering"]["n_tasks"] == 3
    built = section(summary, [str(p) for p in output.outputs])
    assert built.finding.startswith("The adhd − standard residual difference at step-onset")
    assert "random directions of the same norm" in built.finding
    assert built.table is not None and len(built.table) == 3
    assert built.figures == [where / DIFF_LENS_PLOT]
    skipped = section({**summary, "steering": None}, [])
    assert skipped.finding.endswith("the steering check was skipped.")
    assert not math.isnan(summary["headline"]["relative_norm_all"])
    assert ANALYSIS.name == "diff-lens" and ANALYSIS.after == ("export",)
