"""Weight space: the rebuilt init, change from init, head matching (a head-permuted copy is
matched back), linear mode connectivity, the headswap comparison, CLI and study stage."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from interpgpt.analysis.headswap.config import HeadswapConfig
from interpgpt.analysis.headswap.inventory import run_headswap
from interpgpt.analysis.weights.compare import (
    HEAD_MATRICES,
    compare_weights,
    heldout_batches,
    heldout_loss,
    interpolation_losses,
    loss_barrier,
    match_heads,
    matching_agreement,
    permute_heads,
    weight_deltas,
)
from interpgpt.analysis.weights.config import WeightsConfig
from interpgpt.analysis.weights.run import (
    ANALYSIS,
    WEIGHTS_JSON,
    read_headswap,
    rebuild_init,
    run_weights,
    section,
    shared_init,
    stage,
)
from interpgpt.artifacts.names import EXPORT_INFO, RUN_CONFIG
from interpgpt.cli import app
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.errors import UserError
from interpgpt.io import read_json, write_json
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.settings import SettingError
from interpgpt.train.config import TrainConfig
from interpgpt.train.recipe import initial_model, state_sha256

pytestmark = pytest.mark.usefixtures("one_thread")

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def models(tiny_pair) -> dict[str, TaskGPT]:
    return {name: loaded.model.eval() for name, loaded in tiny_pair.items()}


@pytest.fixture(scope="module")
def eval_sets(tiny_corpus, tiny_tokenizer, models):
    """Eight held-out tasks of each variant as loss batches."""
    n_ctx = models["standard"].cfg.n_ctx
    return {
        variant: heldout_batches(
            load_eval_set(tiny_corpus, tiny_tokenizer, variant, "test", 8, n_ctx),
            tiny_tokenizer.pad_id,
            batch_size=5,
        )
        for variant in ("standard", "adhd")
    }


@pytest.fixture(scope="module")
def init(tiny_run_dirs) -> TaskGPT:
    return rebuild_init(tiny_run_dirs["standard"]).model


def random_perms(n_layer: int, n_head: int, seed: int = 0) -> list[list[int]]:
    """A random permutation per layer, none of them the identity."""
    rng = np.random.default_rng(seed)
    perms = []
    for _ in range(n_layer):
        perm = list(range(n_head))
        while perm == list(range(n_head)):
            perm = rng.permutation(n_head).tolist()
        perms.append(perm)
    return perms


# ------------------------------------------------------------------ the shared init


def test_rebuilt_init_matches_the_recorded_hash(tiny_run_dirs) -> None:
    for path in tiny_run_dirs.values():
        rebuilt = rebuild_init(path)
        assert rebuilt.sha256 == read_json(path / RUN_CONFIG)["init_sha256"]
        assert (rebuilt.preset, rebuilt.seed) == ("tiny", 0)
    both = shared_init(tiny_run_dirs)
    assert both.data_seeds == {"standard": 0, "adhd": 0}
    # Rebuilding leaves the caller's random state alone.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    rebuild_init(tiny_run_dirs["adhd"])
    assert torch.equal(torch.rand(3), expected)


def test_rebuilt_init_keeps_the_width_overrides(tiny_run_dirs, tmp_path) -> None:
    """A run trained at `--d-model`/`--d-mlp` other than the preset's rebuilds the init it
    recorded, at its own widths."""
    widths = {"d_model": 16, "d_mlp": 24}
    with torch.random.fork_rng(devices=[]):
        expected = state_sha256(initial_model(TrainConfig(preset="tiny", seed=0, **widths)))
    run = tmp_path / "narrow"
    run.mkdir()
    blob = read_json(tiny_run_dirs["adhd"] / RUN_CONFIG)
    train = {**blob["train"], **widths}
    write_json(run / RUN_CONFIG, {**blob, "train": train, "init_sha256": expected})
    rebuilt = rebuild_init(run)
    assert rebuilt.sha256 == expected
    assert (rebuilt.model.cfg.d_model, rebuilt.model.cfg.d_mlp) == (16, 24)


def test_relative_change(models, init) -> None:
    zero = weight_deltas(copy.deepcopy(init), init)
    assert zero.total == 0 and zero.embed == 0 and zero.ln_final == 0
    assert not zero.heads.any() and not zero.mlp.any()
    assert all(not m.any() for m in [*zero.head_matrices.values(), *zero.norms.values()])
    # Known answer: doubling one head's W_Q changes that slice by exactly its own norm.
    doubled = copy.deepcopy(init)
    cfg = init.cfg
    with torch.no_grad():
        doubled.blocks[1].attn.qkv_proj.weight[2 * cfg.d_head : 3 * cfg.d_head] *= 2
    one = weight_deltas(doubled, init)
    expected = np.zeros((cfg.n_layer, cfg.n_head))
    expected[1, 2] = 1.0
    np.testing.assert_allclose(one.head_matrices["W_Q"], expected, atol=1e-7)
    for name in HEAD_MATRICES[1:]:
        assert not one.head_matrices[name].any()
    assert 0 < one.heads[1, 2] < 1 and one.heads.sum() == one.heads[1, 2]
    trained = weight_deltas(models["adhd"], init)
    assert trained.total > 0 and (trained.heads > 0).all() and (trained.mlp > 0).all()


# ------------------------------------------------------------------ head matching


def test_permuted_copy_is_the_same_function_and_is_matched_back(models, eval_sets) -> None:
    model = models["standard"]
    perms = random_perms(model.cfg.n_layer, model.cfg.n_head)
    permuted = permute_heads(model, perms)
    ids = eval_sets["standard"][0].input_ids
    with torch.no_grad():
        torch.testing.assert_close(permuted(ids), model(ids), atol=1e-5, rtol=1e-5)
    assert not torch.equal(
        permuted.blocks[0].attn.qkv_proj.weight, model.blocks[0].attn.qkv_proj.weight
    )
    # The copy's head i is the model's head perms[i]: matching it to the model finds perms.
    assert match_heads(permuted, model).perms == perms
    back = match_heads(model, permuted)
    assert back.perms == [np.argsort(p).tolist() for p in perms]
    assert back.off_diagonal == sum(i != j for p in perms for i, j in enumerate(p))
    np.testing.assert_allclose(back.matched_mean, 1.0, atol=1e-6)
    assert max(back.same_index_mean) < 0.9
    aligned = permute_heads(permuted, back.perms)
    for name, tensor in model.state_dict().items():
        assert torch.equal(aligned.state_dict()[name], tensor), name
    assert match_heads(model, model).off_diagonal == 0


def test_permuted_copy_has_no_barrier_after_alignment(models, eval_sets) -> None:
    model = models["adhd"]
    permuted = permute_heads(model, random_perms(model.cfg.n_layer, model.cfg.n_head, seed=1))
    result = compare_weights(
        model, permuted, eval_sets=eval_sets, alphas=ALPHAS, names=("model", "copy")
    )
    head = result.headline
    assert head["head_distance_after"] == 0 and head["head_distance_before"] > 0.5
    assert abs(head["barrier_after"]) < 1e-5
    after = result.interpolation["after"].loss
    np.testing.assert_allclose(after, after[0], atol=1e-5)
    assert head["barrier_before"] > 0.01  # the unaligned line leaves the basin
    assert head["relative_change_model"] is None  # no init given


def test_a_model_interpolated_with_itself_is_flat(models, eval_sets) -> None:
    model = models["standard"]
    line = interpolation_losses(model, model, eval_sets, ALPHAS)
    assert line.loss == [line.loss[0]] * len(ALPHAS) and line.barrier == 0
    for name, losses in line.by_set.items():
        assert losses == [heldout_loss(model, eval_sets[name]).mean] * len(ALPHAS)
    assert loss_barrier([0, 0.5, 1], [1.0, 3.0, 2.0]) == pytest.approx(1.5)
    with pytest.raises(UserError, match="alphas must rise from 0 to 1"):
        interpolation_losses(model, model, eval_sets, [0.5, 1.0])


def test_pair_line_ends_at_each_model(models, eval_sets, init) -> None:
    result = compare_weights(
        models["standard"],
        models["adhd"],
        init=init,
        eval_sets=eval_sets,
        alphas=ALPHAS,
        names=("standard", "adhd"),
    )
    before = result.interpolation["before"]
    for end, name in ((0, "standard"), (-1, "adhd")):
        for variant, batches in eval_sets.items():
            expected = heldout_loss(models[name], batches).mean
            assert before.by_set[variant][end] == pytest.approx(expected, abs=1e-6)
    head = result.headline
    assert set(head) == {
        "relative_change_standard",
        "relative_change_adhd",
        "mean_head_change_standard",
        "mean_head_change_adhd",
        "off_diagonal_heads",
        "head_distance_before",
        "head_distance_after",
        "barrier_before",
        "barrier_after",
    }
    assert head["head_distance_after"] <= head["head_distance_before"]
    assert head["barrier_before"] >= 0 and head["barrier_after"] >= 0


def test_agreement_with_another_matching(models) -> None:
    model = models["standard"]
    perms = random_perms(model.cfg.n_layer, model.cfg.n_head, seed=2)
    matching = match_heads(model, permute_heads(model, perms))
    same = matching_agreement(matching, matching.perms, moved={(0, 0)})
    assert same.share == 1.0 and all(h.agree for h in same.heads)
    assert len(same.heads) == matching.off_diagonal
    identity = [list(range(model.cfg.n_head))] * model.cfg.n_layer
    none = matching_agreement(matching, identity)
    n_heads = model.cfg.n_layer * model.cfg.n_head
    assert none.share == 1 - matching.off_diagonal / n_heads
    assert none.moved_agreeing == [] and not any(h.agree for h in none.heads)


# ------------------------------------------------------------------ files, CLI, study


@pytest.fixture(scope="module")
def headswap_json(tiny_run_dirs, tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("headswap")
    config = HeadswapConfig(
        tiny_run_dirs["standard"],
        tiny_run_dirs["adhd"],
        tiny_corpus,
        out,
        limit=6,
        null_samples=0,
        bootstrap_samples=0,
        device="cpu",
    )
    return run_headswap(config).files["headswap"]


def test_cli_writes_weights_json(tiny_run_dirs, tiny_corpus, headswap_json, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["weights", str(tiny_run_dirs["standard"]), str(tiny_run_dirs["adhd"])]
    args += ["--out", str(out), "--corpus", str(tiny_corpus), "--headswap", str(headswap_json)]
    result = CliRunner().invoke(app, [*args, "--limit", "4", "--points", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "weight matching" in result.output
    blob = json.loads((out / WEIGHTS_JSON).read_text())
    assert blob["init"]["sha256"] == read_json(tiny_run_dirs["adhd"] / RUN_CONFIG)["init_sha256"]
    assert blob["interpolation"]["alphas"] == [0.0, 0.5, 1.0]
    n_tasks = blob["interpolation"]["n_tasks"]  # an ADHD task too long for the context is left out
    assert n_tasks["standard"] == 4 and 1 <= n_tasks["adhd"] <= 4
    assert np.array(blob["relative_change"]["adhd"]["heads"]).shape == (2, 4)
    assert np.array(blob["matching"]["similarity_matrix"]).shape == (2, 4, 4)
    assert 0 <= blob["headline"]["headswap_agreement"] <= 1
    assert blob["provenance"]["config"]["points"] == 3
    inventory = read_headswap(headswap_json, 2, 4)
    flagged = {f"L{layer}H{head}" for layer, head in inventory.moved}
    assert set(blob["headswap"]["moved_agreeing"]) <= flagged
    for name in ("weight_change.png", "interpolation.png"):
        assert (out / name).stat().st_size > 0


def test_stage_and_section(tiny_run_dirs, tiny_corpus, headswap_json, study_layout) -> None:
    runs = {("runs", variant): path for variant, path in tiny_run_dirs.items()}
    inventory = {("analysis", "headswap", "headswap.json"): headswap_json}
    ws = study_layout({**runs, "corpus": tiny_corpus, **inventory})
    output = stage(ws, WeightsConfig(limit=3, points=3, device="cpu"))
    out = ws.analysis("weights")
    assert output.outputs == [
        out / "weights.json",
        out / "weight_change.png",
        out / "interpolation.png",
    ]
    summary = json.loads(json.dumps(output.summary))  # as the stage record stores it
    assert summary["headline"]["headswap_agreement"] is not None
    built = section(summary, [str(p) for p in output.outputs])
    assert built.title == "Weight space"
    assert built.finding.startswith("From their shared init the standard model moved")
    assert "barrier" in built.finding and "head-swap inventory" in built.finding
    assert built.table is not None and len(built.table) == 3  # header + 2 layers
    assert built.figures == [out / "weight_change.png", out / "interpolation.png"]
    assert ANALYSIS.name == "weights" and ANALYSIS.after == ("export", "headswap")


def test_bad_inputs(tiny_run_dirs, tmp_path) -> None:
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    missing = tmp_path / "missing"
    for bad, needle in (
        (WeightsConfig(missing, adhd, tmp_path / "o"), str(missing)),
        (WeightsConfig(std, adhd, tmp_path / "o", headswap=missing / "hs.json"), "hs.json"),
    ):
        with pytest.raises(UserError) as err:
            run_weights(bad)
        assert needle in str(err.value) and "\n" not in str(err.value)
    # A run whose recorded init does not match its preset and seed.
    tampered = tmp_path / "tampered"
    shutil.copytree(adhd, tampered)
    blob = read_json(tampered / RUN_CONFIG)
    write_json(tampered / RUN_CONFIG, {**blob, "train": {**blob["train"], "seed": 1}})
    with pytest.raises(
        UserError, match=r"config.json: the init rebuilt from preset 'tiny' and seed 1"
    ):
        rebuild_init(tampered)
    write_json(tampered / RUN_CONFIG, {**blob, "init_sha256": "0" * 64})
    with pytest.raises(UserError, match="do not share an init"):
        shared_init({"standard": std, "adhd": tampered})
    # An export dir keeps no init hash: refused, naming the run dir it came from.
    export = tmp_path / "export"
    export.mkdir()
    write_json(export / EXPORT_INFO, {"variant": "adhd", "source": str(adhd)})
    with pytest.raises(UserError, match=f"export dir .* \\({adhd}\\)"):
        shared_init({"standard": std, "adhd": export})
    with pytest.raises(SettingError) as setting:
        WeightsConfig(points=1)
    assert setting.value.field == "points"
