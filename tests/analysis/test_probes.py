"""Linear probes: fitting, the projection that removes them, the causal check, files, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import typer
from typer.testing import CliRunner

from interpgpt.analysis.probes.config import ProbesConfig
from interpgpt.analysis.probes.run import (
    INTERVENE,
    PROBE_NAMES,
    PROBES_JSON,
    PROBES_PLOT,
    BehaviourReader,
    apply_hooks,
    collect_positions,
    fit_probe,
    probe_sites,
    projection_hooks,
    random_subspace,
    run_probes,
    section,
    split_by_task,
    stage,
    statistics,
)
from interpgpt.commands import probes
from interpgpt.corpus.evalset import EncodedSet, load_eval_set
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.errors import UserError
from interpgpt.settings import SettingError


@pytest.fixture(scope="module")
def world(tiny_corpus, tiny_tokenizer, tiny_pair, tiny_run_dirs, tmp_path_factory) -> dict:
    """The shared tiny trained pair (conftest) and its corpus."""
    return {
        "root": tmp_path_factory.mktemp("probes"),
        "corpus": tiny_corpus,
        "tok": tiny_tokenizer,
        "model": tiny_pair["adhd"].model,
        "adhd_dir": tiny_run_dirs["adhd"],
        "std_dir": tiny_run_dirs["standard"],
    }


def blobs(n: int, n_classes: int, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian clusters around random centroids, plus a common offset."""
    gen = torch.Generator().manual_seed(seed)
    centroids = 3 * torch.randn(n_classes, d, generator=gen)
    y = torch.randint(0, n_classes, (n,), generator=gen)
    return centroids[y] + torch.randn(n, d, generator=gen) + 5.0, y


@pytest.mark.parametrize("n_classes", [2, 4])
def test_probe_fits_and_projection_removes_it(n_classes):
    x, y = blobs(400, n_classes)
    probe = fit_probe(x[:300], y[:300], n_classes)
    assert probe.accuracy(x[300:], y[300:]) > 0.9
    basis = probe.subspace()
    assert basis.shape == (16, n_classes - 1)
    torch.testing.assert_close(basis.T @ basis, torch.eye(n_classes - 1), atol=1e-5, rtol=0)
    projected = apply_hooks(projection_hooks("x", basis, probe.mean), x[300:])
    preds = probe.logits(projected).argmax(-1)
    assert len(preds.unique()) == 1  # nothing left to discriminate with
    freq = float((y[300:] == preds[0]).float().mean())
    assert probe.accuracy(projected, y[300:]) == pytest.approx(freq)
    # A random subspace of the same rank leaves the probe working.
    other = random_subspace(16, n_classes - 1, torch.Generator().manual_seed(1))
    kept = apply_hooks(projection_hooks("x", other, probe.mean), x[300:])
    assert probe.accuracy(kept, y[300:]) > freq


def test_projection_is_idempotent_and_keeps_the_mean():
    x, _ = blobs(50, 2)
    basis = random_subspace(16, 3, torch.Generator().manual_seed(0))
    mean = x.mean(0)
    once = apply_hooks(projection_hooks("x", basis, mean), x)
    twice = apply_hooks(projection_hooks("x", basis, mean), once)
    torch.testing.assert_close(once, twice, atol=1e-5, rtol=0)
    torch.testing.assert_close(once @ basis, (mean @ basis).expand(50, 3), atol=1e-5, rtol=0)
    # Outside the subspace nothing changes.
    rest = torch.eye(16) - basis @ basis.T
    torch.testing.assert_close(once @ rest, x @ rest, atol=1e-5, rtol=0)


def test_split_by_task_is_disjoint():
    task = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4])
    train = split_by_task(task, 0.6, seed=0)
    assert not set(task[train].tolist()) & set(task[~train].tolist())
    assert train.any() and (~train).any()
    with pytest.raises(UserError):
        split_by_task(torch.tensor([5, 5]), 0.5, seed=0)


def test_collect_positions_labels(world):
    eset = load_eval_set(world["corpus"], world["tok"], "adhd", limit=4, max_len=256)
    table = collect_positions(world["model"], eset, batch_size=2)
    n = int(eset.valid.sum())
    assert [name for _, name in probe_sites(2)] == list(table.acts)
    assert all(a.shape == (n, 32) for a in table.acts.values())
    assert int(table.is_onset_predictor.sum()) == int(eset.onset_predictor_mask().sum())
    assert int(table.next_is_regulation.sum()) == int(eset.regulation_next_mask().sum()) > 0
    steps = sum(len(r.onset_predictors) for r in eset.roles)
    assert int((table.step_index >= 0).sum()) == steps
    assert (table.step_index[~table.is_onset_predictor] == -1).all()
    # The residual at the embedding is the token embedding itself.
    torch.testing.assert_close(
        table.acts["hook_embed"], world["model"].embed.weight[eset.ids[eset.valid]].detach()
    )


@torch.no_grad()
def reference_behaviour(model, eset: EncodedSet, name, tokenizer, reg_ids, site=None,
                        basis=None, mean=None, batch_size=3) -> torch.Tensor:  # fmt: skip
    """The straightforward computation: a full forward per batch with the projection hooks
    on (at the probe's positions), every position unembedded, read at the behaviour's."""
    values = []
    for batch in eset.batches(batch_size):
        ids = batch.ids
        hooks = []
        if site is not None:
            everywhere = INTERVENE[name] == "all real positions"
            where = batch.valid if everywhere else batch.onset_predictor_mask()
            hooks = projection_hooks(site, basis, mean, where)
        logits = model.run_with_hooks(ids, fwd_hooks=hooks)
        if name == "regulation":
            mask = batch.onset_predictor_mask()
            values.append(logits[mask].float().softmax(-1)[:, reg_ids].sum(-1).double())
            continue
        if name == "onset":
            mask = batch.onset_predictor_mask()
        else:
            mask = torch.zeros_like(ids, dtype=torch.bool)
            mask[:, :-1] = (ids[:, 1:] == tokenizer.sep_id) | (ids[:, 1:] == tokenizer.end_id)
        loss = F.cross_entropy(logits[mask].float(), ids.roll(-1, dims=1)[mask], reduction="none")
        values.append(loss.double())
    return torch.cat(values)


@pytest.mark.parametrize("site", ["hook_embed", "blocks.0.hook_resid_post",
                                  "blocks.1.hook_resid_post"])  # fmt: skip
@pytest.mark.parametrize("name", PROBE_NAMES)
def test_behaviour_reader_equals_the_full_forward(world, name, site):
    """The causal check's fast path (the residual at the site cached once, only the blocks
    after it run, only the read positions unembedded, sequences batched by their last read
    position and cut there) gives the full forward's values, clean and projected, at the
    first block's input, a middle site and the final residual stream."""
    model, tok = world["model"], world["tok"]
    eset = load_eval_set(world["corpus"], tok, "adhd", limit=8, max_len=256)
    reg_ids = sorted(regulation_first_tokens(tok))
    reader = BehaviourReader(model, eset, name, tok, reg_ids, batch_size=3)
    clean = reader.values()
    full = reference_behaviour(model, eset, name, tok, reg_ids)
    torch.testing.assert_close(clean, full, rtol=1e-5, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(model.cfg.d_model, generator=gen)
    for rank in (1, 3):
        basis = random_subspace(model.cfg.d_model, rank, gen)
        fast = reader.values(site, basis, mean)
        full = reference_behaviour(model, eset, name, tok, reg_ids, site, basis, mean)
        torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
        assert (fast - clean).abs().max() > 1e-4  # the projection changed what is read
    assert len(clean) == len(fast) > 0


def test_run_probes_writes_accuracies_and_causal_checks(world):
    out = world["root"] / "out"
    result = run_probes(
        ProbesConfig(world["adhd_dir"], world["corpus"], out, limit=8, max_iter=50, device="cpu")
    )
    blob = json.loads((out / PROBES_JSON).read_text())
    assert blob["layers"] == ["embed", "L0", "L1"] and blob["variant"] == "adhd"
    assert "provenance" in blob and (out / PROBES_PLOT).stat().st_size > 0
    assert set(blob["probes"]) == set(PROBE_NAMES)
    for name, probe in blob["probes"].items():
        assert probe["skipped"] is None, name
        assert len(probe["accuracy"]) == 3
        assert all(0.0 <= a <= 1.0 for a in probe["accuracy"]) and 0 <= probe["baseline"] <= 1
        (check,) = probe["causal"]
        assert len(check["random_deltas"]) == 10
        assert check["layer"] in blob["layers"]
        assert check["accuracy_after_projection"] <= max(probe["accuracy"]) + 1e-6
    # An onset predictor is a <|steps|>/<|sep|> token: linearly readable from the embedding.
    assert result.probe("onset").accuracy[0] > result.probe("onset").baseline
    assert blob["split"]["train_tasks"] > 0 and blob["split"]["test_tasks"] > 0


def test_onset_projection_drops_the_probe_to_chance(world):
    result = run_probes(
        ProbesConfig(
            world["adhd_dir"],
            world["corpus"],
            world["root"] / "o2",
            limit=8,
            max_iter=50,
            n_random=2,
            device="cpu",
        )
    )
    onset = result.probe("onset")
    (check,) = onset.causal
    assert check.layer == "embed"  # perfectly separable at the embedding already
    # After projection the probe predicts one class: at most the larger class's share.
    assert check.accuracy_after_projection <= max(onset.baseline, 1 - onset.baseline) + 1e-6
    assert check.accuracy_after_projection < onset.accuracy[0]


def test_standard_model_skips_the_regulation_probe(world):
    result = run_probes(
        ProbesConfig(
            world["std_dir"],
            world["corpus"],
            world["root"] / "s",
            limit=6,
            max_iter=20,
            n_random=2,
            device="cpu",
        )
    )
    assert result.probe("regulation").skipped  # no regulation step in the standard corpus
    assert not result.probe("onset").skipped


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("train_fraction", 1.0),
        ("causal_layers", "some"),
        ("variant", "both"),
        ("max_step_index", 1),
        ("n_random", 1),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(SettingError) as err:
        ProbesConfig(**{field: value})
    assert err.value.field == field


def test_section_from_a_stage_summary():
    probe = {"name": "onset", "accuracy": [0.9, 0.97, 0.95], "baseline": 0.8}
    summary = {
        "standard": [{**probe, "causal": [{"z": -4.123}]}, {"name": "regulation", "skipped": "x"}],
        "adhd": [{**probe, "name": "regulation", "causal": []}],
    }
    built = section(summary, ["p/three_probes.json", "p/probes.png"])
    assert built.title == "Three probes"
    assert built.table == [
        ["model", "probe", "best layer", "held-out acc", "baseline", "causal z"],
        ["standard", "onset", "1", "0.970", "0.800", "-4.12"],
        ["adhd", "regulation", "1", "0.970", "0.800", "n/a"],
    ]
    assert [f.name for f in built.figures] == ["probes.png"]


def test_study_probes_both_models_on_the_same_sequences(world, study_layout):
    """The stage probes both models of a pair on one sequence set, so the seed controls'
    accuracy gap is the models'. A model against itself has no gap in any of the three
    probes, and the matched pair's regulation gap is defined. (With each model on its own
    variant's sequences, a model against itself differs in step-index accuracy by the
    data alone, and the standard role has no regulation probe: a NaN gap.)"""
    unused = Path("unused")
    config = ProbesConfig(unused, unused, unused, limit=8, max_iter=20, n_random=2, device="cpu")

    def gaps(std: Path, adhd: Path) -> list[float]:
        links = {"corpus": world["corpus"], ("export", "standard"): std, ("export", "adhd"): adhd}
        ws = study_layout(links)
        output = stage(ws, config)
        for variant in ("standard", "adhd"):
            blob = json.loads((ws.analysis(f"probes_{variant}") / PROBES_JSON).read_text())
            assert blob["variant"] == "adhd"
        return statistics(output.summary, [str(p) for p in output.outputs])["accuracy gap"].value

    assert gaps(world["adhd_dir"], world["adhd_dir"]) == [0.0, 0.0, 0.0]
    pair = gaps(world["std_dir"], world["adhd_dir"])
    assert len(pair) == 3 and all(math.isfinite(g) for g in pair)


def command_app() -> typer.Typer:
    """An app holding only the `probes` command (a group: it is invoked by name)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    probes.register(app)
    return app


def test_cli_probes(world, tmp_path):
    app = command_app()
    args = [
        "probes",
        str(world["adhd_dir"]),
        "--corpus",
        str(world["corpus"]),
        "--out",
        str(tmp_path),
        "--limit",
        "6",
        "--n-random",
        "2",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (tmp_path / PROBES_JSON).is_file()
    assert "held-out probe accuracy" in result.output
    bad = CliRunner().invoke(app, [*args, "--causal-layers", "some"])
    assert bad.exit_code == 2 and "--causal-layers" in bad.output  # a usage error
