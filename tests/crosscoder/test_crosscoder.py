"""BatchTopK crosscoders: known answers on a planted two-model dictionary (exclusive sets
recovered, Complete Shrinkage exposed by Latent Scaling, nothing confirmed on noise), the
closed-form β against least squares, the fast selection and sparse backward against
their references, files, refusal of other models, determinism, and the `crosscoder`
commands and study stage on the tiny pair."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from interpgpt.analysis.crosscoder_diff.config import CrosscoderStudyConfig, DiffSettings
from interpgpt.analysis.crosscoder_diff.features import map_sae_features, mapped_summary
from interpgpt.analysis.crosscoder_diff.latents import PairDiff
from interpgpt.analysis.crosscoder_diff.run import (
    CROSSCODER_DASHBOARD,
    CROSSCODER_DIFF_JSON,
    section,
    stage,
)
from interpgpt.artifacts.load import load_model
from interpgpt.crosscoder.config import CrosscoderHyperparams
from interpgpt.crosscoder.diff import classify, latent_table
from interpgpt.crosscoder.model import (
    CROSSCODER_CFG_FILE,
    CROSSCODER_WEIGHTS_FILE,
    BatchTopKCrosscoder,
    CrosscoderConfig,
    ModelRecord,
    check_models,
    model_sha256,
)
from interpgpt.crosscoder.scaling import closed_form_beta, latent_scaling
from interpgpt.crosscoder.trainer import (
    BatchCode,
    CrosscoderTrainer,
    bag_decode,
    batch_topk,
    init_from_data,
)
from interpgpt.crosscoder.training import fit
from interpgpt.errors import UserError
from interpgpt.sae.topk import TopKSAE, TopKSAEConfig
from interpgpt.sae.training import QUALITY_FILE
from interpgpt.study.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")

D = 64
RECORDS = (ModelRecord("a", "synthetic-a", "0" * 64), ModelRecord("b", "synthetic-b", "1" * 64))
N_SHARED, N_EXCLUSIVE, N_SCALED = 24, 8, 8
SHARED = range(0, N_SHARED)
A_ONLY = range(N_SHARED, N_SHARED + N_EXCLUSIVE)
B_ONLY = range(N_SHARED + N_EXCLUSIVE, N_SHARED + 2 * N_EXCLUSIVE)
SCALED = range(N_SHARED + 2 * N_EXCLUSIVE, N_SHARED + 2 * N_EXCLUSIVE + N_SCALED)
"""Shared features that model a carries at a fifth of model b's scale."""
N_FEATURES = SCALED.stop
SCALE_DOWN = 0.2


def planted_atoms(seed: int = 123) -> torch.Tensor:
    atoms = torch.randn(N_FEATURES, D, generator=torch.Generator().manual_seed(seed))
    return atoms / atoms.norm(dim=-1, keepdim=True)


def planted_pair(n: int, atoms: torch.Tensor, gen: torch.Generator, k: int = 4) -> torch.Tensor:
    """(n, model, d): each feature active independently (k per token on average) with a
    coefficient in [0.5, 1.5], read by model a and model b through their own feature
    scales, plus a shared offset. Independent, so that one model's exclusive feature
    says nothing about the other model's activation at that token."""
    scale = torch.ones(2, N_FEATURES)
    scale[1, A_ONLY] = 0.0
    scale[0, B_ONLY] = 0.0
    scale[0, SCALED] = SCALE_DOWN
    active = torch.rand(n, N_FEATURES, generator=gen) < k / N_FEATURES
    coef = (torch.rand(n, N_FEATURES, generator=gen) + 0.5) * active
    return torch.einsum("nf,mf,fd->nmd", coef, scale, atoms) + 0.3


SMALL = CrosscoderHyperparams(
    d_latent=128, k=4, tokens=400 * 256, batch_size=256, lr=5e-3, dead_tokens=4096,
    autocast=False,
)  # fmt: skip


def train_on(source, hyper: CrosscoderHyperparams = SMALL) -> BatchTopKCrosscoder:
    """A crosscoder trained by the real loop (`training.fit`) on batches from `source`."""
    gen = torch.Generator().manual_seed(1)
    batches = iter(lambda: source(hyper.batch_size, gen), None)
    crosscoder, _ = fit(batches, RECORDS, 0, hyper)
    return crosscoder


@pytest.fixture(scope="module")
def planted() -> tuple[BatchTopKCrosscoder, torch.Tensor, torch.Tensor]:
    atoms = planted_atoms()
    crosscoder = train_on(lambda n, gen: planted_pair(n, atoms, gen))
    held_out = planted_pair(8000, atoms, torch.Generator().manual_seed(2))
    return crosscoder, atoms, held_out


def diff_of(crosscoder, held_out: torch.Tensor):
    x = crosscoder.normalise(held_out)
    table = latent_table(crosscoder, {"data": x}, {"data": torch.zeros(len(x), dtype=torch.bool)})
    return table, classify(table, DiffSettings().thresholds())


def matches(crosscoder, latents: list[int], atoms: torch.Tensor, model: int) -> torch.Tensor:
    """(len(latents), n_atoms) cosine of each latent's decoder row in `model` to each atom."""
    rows = torch.nn.functional.normalize(crosscoder.W_dec.detach()[latents, model], dim=-1)
    return rows @ atoms.T


def precision_recall(crosscoder, predicted: list[int], atoms, features: range, model: int):
    if not predicted:
        return 0.0, 0.0
    cos = matches(crosscoder, predicted, atoms[list(features)], model) >= 0.9
    return float(cos.any(1).float().mean()), float(cos.any(0).float().mean())


def test_planted_exclusive_sets_are_recovered_and_confirmed(planted):
    crosscoder, atoms, held_out = planted
    _, classes = diff_of(crosscoder, held_out)
    for label, features, model in (("std_only", A_ONLY, 0), ("adhd_only", B_ONLY, 1)):
        predicted = [j for j, c in enumerate(classes.labels) if c == label]
        precision, recall = precision_recall(crosscoder, predicted, atoms, features, model)
        assert precision >= 0.9 and recall >= 0.9, (label, precision, recall)
        confirmed = [j for j in predicted if classes.confirmed[j]]
        precision, recall = precision_recall(crosscoder, confirmed, atoms, features, model)
        assert precision >= 0.9 and recall >= 0.9, (label, "confirmed", precision, recall)
    # Shared features are shared: each matched by a latent with both decoder rows.
    shared = [j for j, c in enumerate(classes.labels) if c == "shared"]
    assert (matches(crosscoder, shared, atoms[list(SHARED)], 1) >= 0.9).any(0).all()


def test_latent_scaling_exposes_complete_shrinkage(planted):
    """Features model a carries at a fifth of model b's scale are no exclusive latents; and
    when their decoder rows in model a are zeroed (Complete Shrinkage, which the norms then
    call b-only), Latent Scaling finds ν^ε ≈ 0.2 in model a's error and refuses them."""
    crosscoder, atoms, held_out = planted
    table, classes = diff_of(crosscoder, held_out)
    cos = matches(crosscoder, list(range(crosscoder.cfg.d_latent)), atoms[list(SCALED)], 1)
    scaled = sorted({int(j) for j in cos.argmax(0)})
    assert (cos.max(0).values >= 0.9).all()
    assert not any(classes.confirmed[j] for j in scaled)
    assert all(classes.labels[j] == "shared" for j in scaled)

    shrunk = BatchTopKCrosscoder(crosscoder.cfg)
    shrunk.load_state_dict(crosscoder.state_dict())
    with torch.no_grad():
        shrunk.W_dec[scaled, 0] = 0.0
    table, classes = diff_of(shrunk, held_out)
    nu_error = table.scaling.nu("error")
    assert all(classes.labels[j] == "adhd_only" for j in scaled)
    assert not any(classes.confirmed[j] for j in scaled)
    assert nu_error[scaled].sub(SCALE_DOWN).abs().max() < 0.08, nu_error[scaled]
    b_only = [j for j, c in enumerate(classes.labels) if c == "adhd_only" and j not in scaled]
    assert sum(bool(classes.confirmed[j]) for j in b_only) >= 0.9 * len(b_only) > 0


def test_noise_gives_no_confirmed_exclusive_latents():
    """Pure Gaussian activations, independent in the two models: no structure for a latent
    to be exclusive to, so none is confirmed (nor, here, even exclusive by norm)."""

    def noise(n, gen):
        return torch.randn(n, 2, D, generator=gen)

    crosscoder = train_on(noise, dataclasses.replace(SMALL, tokens=200 * 256))
    _, classes = diff_of(crosscoder, noise(8000, torch.Generator().manual_seed(2)))
    counts = classes.counts()
    assert counts.n_live > 0
    assert counts.n_std_only_confirmed == counts.n_adhd_only_confirmed == 0


# --------------------------------------------------------------------------- Latent Scaling


def test_closed_form_beta_is_least_squares():
    gen = torch.Generator().manual_seed(0)
    f = torch.rand(300, generator=gen) * (torch.rand(300, generator=gen) < 0.3)
    d = torch.randn(D, generator=gen)
    y = 0.7 * f[:, None] * d + torch.randn(300, D, generator=gen)
    design = (f[:, None] * d[None, :]).reshape(-1, 1).double().numpy()
    lstsq = np.linalg.lstsq(design, y.reshape(-1).double().numpy(), rcond=None)[0][0]
    assert closed_form_beta(f, d, y) == pytest.approx(lstsq, abs=1e-5)


def test_accumulated_betas_equal_the_closed_form_on_explicit_targets(planted):
    """`ScalingSums` computes all latents at once from sums; each β must equal the closed
    form on the target built literally: ε_j^m = x^m − x̂^m + f_j d_j^m, x̂^m − b^m, x^m − b^m."""
    crosscoder, _, held_out = planted
    x = crosscoder.normalise(held_out[:3000])
    scaling = latent_scaling(crosscoder, x, chunk=1000)  # chunks: the sums must add up
    with torch.no_grad():
        f = crosscoder.encode(x)
        recon = crosscoder.decode(f)
    for j in [int(i) for i in (f > 0).sum(0).argsort(descending=True)[:5]]:
        d = crosscoder.W_dec.detach()[j, scaling.own[j]]
        for m in (0, 1):
            targets = {
                "error": x[:, m] - recon[:, m] + f[:, j, None] * crosscoder.W_dec.detach()[j, m],
                "reconstruction": recon[:, m] - crosscoder.b_dec.detach()[m],
                "activation": x[:, m] - crosscoder.b_dec.detach()[m],
            }
            for name, y in targets.items():
                expected = closed_form_beta(f[:, j], d, y)
                assert float(scaling.beta[name][m, j]) == pytest.approx(expected, abs=1e-5)
    dead = scaling.n_active == 0
    if dead.any():
        assert torch.isnan(scaling.nu("error")[dead]).all()


# --------------------------------------------------------------------------- training step


def random_crosscoder(d_latent=64, k=4, seed=0) -> BatchTopKCrosscoder:
    gen = torch.Generator().manual_seed(seed)
    cc = BatchTopKCrosscoder(CrosscoderConfig(d_model=8, models=RECORDS, d_latent=d_latent, k=k))
    init_from_data(cc, torch.randn(256, 2, 8, generator=gen), gen)
    with torch.no_grad():
        cc.b_enc.normal_(generator=gen)
    return cc


@pytest.mark.parametrize("floor", [0.0, 0.1, 0.5, 5.0, 1e9])
def test_batch_topk_floor_changes_nothing(floor):
    scaled = torch.randn(50, 40, generator=torch.Generator().manual_seed(0)).relu()
    reference = set(scaled.flatten().topk(3 * 50).indices.tolist())
    selection = batch_topk(scaled, 3, floor)
    assert set((selection.rows * 40 + selection.cols).tolist()) == reference
    assert (selection.rows.diff() >= 0).all()


def test_sparse_step_matches_dense_autograd():
    """The trainer's sparse encoder backward and bag decoder equal autograd through the
    dense encoder and decoder, on the same selection."""
    cc, ref = random_crosscoder(), random_crosscoder()
    x = torch.randn(30, 2, 8, generator=torch.Generator().manual_seed(1))
    trainer = CrosscoderTrainer(cc, lr=1e-3, total_steps=10, dead_tokens=10**9, autocast=False)
    xf = x.flatten(1)
    pre = trainer._pre_activations(xf)
    sel = batch_topk(pre.relu() * cc.decoder_norms().sum(-1).detach(), 4)
    values = trainer._select(xf, pre, sel.rows, sel.cols).relu()
    recon = bag_decode(BatchCode(values, sel.rows, sel.cols), cc.W_dec.flatten(1), 30)
    recon.pow(2).sum().backward()
    mask = torch.zeros(30, 64, dtype=torch.bool)
    mask[sel.rows, sel.cols] = True
    dense = (ref.pre_activations(x).relu() * mask) @ ref.W_dec.flatten(1)
    dense.pow(2).sum().backward()
    for name in ("W_enc", "b_enc", "b_dec", "W_dec"):
        assert getattr(cc, name).grad.abs().sum() > 0
        torch.testing.assert_close(getattr(cc, name).grad, getattr(ref, name).grad)


def test_training_keeps_decoder_norm_sums_and_sets_a_threshold():
    cc = random_crosscoder()
    trainer = CrosscoderTrainer(cc, lr=1e-2, total_steps=10, dead_tokens=64, autocast=True)
    gen = torch.Generator().manual_seed(3)
    for _ in range(10):
        stats = trainer.step(torch.randn(64, 2, 8, generator=gen))
    assert stats.n_dead > 0 and stats.aux_loss > 0  # AuxK is exercised
    torch.testing.assert_close(cc.decoder_norms().sum(-1), torch.ones(64))
    trainer.finish()
    assert float(cc.threshold) > 0
    with torch.no_grad():  # at inference the threshold gives about k latents per token
        l0 = (cc.encode(torch.randn(2000, 2, 8, generator=gen)) > 0).sum(-1).float().mean()
    assert 1 < float(l0) < 3 * cc.cfg.k


def test_same_seed_same_bytes(tmp_path):
    atoms = planted_atoms()
    hyper = dataclasses.replace(SMALL, tokens=30 * 256, autocast=True)
    for run in ("one", "two"):
        train_on(lambda n, gen: planted_pair(n, atoms, gen), hyper).save(tmp_path / run)
    for name in (CROSSCODER_CFG_FILE, CROSSCODER_WEIGHTS_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


# --------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path, planted):
    crosscoder, _, held_out = planted
    crosscoder.save(tmp_path, {"note": "test"})
    assert {p.name for p in tmp_path.iterdir()} == {CROSSCODER_CFG_FILE, CROSSCODER_WEIGHTS_FILE}
    cfg = json.loads((tmp_path / CROSSCODER_CFG_FILE).read_text())
    assert cfg["architecture"] == "batchtopk_crosscoder" and cfg["models"][1]["name"] == "b"
    assert cfg["normalisation"]["scales"] == list(crosscoder.cfg.scales)
    loaded = BatchTopKCrosscoder.load(tmp_path)
    assert loaded.cfg == crosscoder.cfg
    for name, tensor in crosscoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with torch.no_grad():
        torch.testing.assert_close(loaded.reconstruct(held_out), crosscoder.reconstruct(held_out))
    (tmp_path / CROSSCODER_CFG_FILE).write_text(json.dumps({**cfg, "d_latent": 64}))
    with pytest.raises(UserError, match="W_enc"):
        BatchTopKCrosscoder.load(tmp_path)
    (tmp_path / CROSSCODER_CFG_FILE).write_text(json.dumps({**cfg, "architecture": "topk"}))
    with pytest.raises(UserError, match="architecture"):
        BatchTopKCrosscoder.load(tmp_path)


def test_refuses_other_models(tiny_pair):
    std, adhd = tiny_pair["standard"].model, tiny_pair["adhd"].model
    records = tuple(
        ModelRecord(n, n, model_sha256(m)) for n, m in (("standard", std), ("adhd", adhd))
    )
    cc = BatchTopKCrosscoder(CrosscoderConfig(d_model=std.cfg.d_model, models=records, layer=1))
    check_models(cc, [std, adhd], ["std", "adhd"])
    with pytest.raises(UserError) as err:
        check_models(cc, [adhd, std], ["adhd-dir", "std-dir"], "cc-dir")
    message = str(err.value)
    assert "\n" not in message and "cc-dir" in message and "adhd-dir" in message


# --------------------------------------------------------------------------- CLI and study


def run_cli(args):
    from interpgpt.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


TINY = ["--d-latent", 64, "--k", 4, "--tokens", 4096, "--batch-size", 512, "--eval-tokens",
        1000, "--buffer-tokens", 4096, "--seq-batch", 16, "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def cli_run(tiny_run_dirs, tiny_corpus, tmp_path_factory) -> dict:
    """`crosscoder train` and `crosscoder diff` on the tiny pair, through the CLI."""
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    tmp_path = tmp_path_factory.mktemp("crosscoder-cli")
    out = tmp_path / "cc"
    trained = run_cli(["crosscoder", "train", std, adhd, "--layer", 1, "--corpus", tiny_corpus,
                       "--out", out, *TINY])  # fmt: skip
    diffs = tmp_path / "diff"  # beside the crosscoder: an --out holding it is refused
    diff_args = ["crosscoder", "diff", out, "--corpus", tiny_corpus, "--out", diffs,
                 "--limit", 20, "--top-n", 2, "--device", "cpu"]  # fmt: skip
    diffed = run_cli([*diff_args, "--std", std, "--adhd", adhd])
    return {"std": std, "adhd": adhd, "out": out, "dir": diffs, "diff_args": diff_args,
            "trained": trained, "diffed": diffed}  # fmt: skip


def test_cli_train_and_diff(cli_run):
    std, adhd, out, tmp_path = cli_run["std"], cli_run["adhd"], cli_run["out"], cli_run["dir"]
    diff_args = cli_run["diff_args"]
    result = cli_run["trained"]
    assert result.exit_code == 0, result.output
    quality = json.loads((out / QUALITY_FILE).read_text())
    assert quality["model_names"] == ["standard", "adhd"]
    assert [m["name"] for m in quality["models"]] == ["standard", "adhd"]
    assert quality["provenance"]["config"]["layer"] == 1 and quality["n_eval_tokens"] > 0
    cfg = json.loads((out / CROSSCODER_CFG_FILE).read_text())
    assert cfg["hook_name"] == "blocks.1.hook_resid_post"
    hashes = [model_sha256(load_model(p).model) for p in (std, adhd)]
    assert [m["weights_sha256"] for m in cfg["models"]] == hashes

    result = cli_run["diffed"]
    assert result.exit_code == 0, result.output
    blob = json.loads((tmp_path / CROSSCODER_DIFF_JSON).read_text())
    counts = blob["counts"]
    assert counts["n_live"] + counts["n_dead"] == counts["n_latents"] == 64
    assert counts["n_shared"] + counts["n_std_only"] + counts["n_adhd_only"] == counts["n_live"]
    assert len(blob["latents"]) == 64 and blob["models"] == {"std": "standard", "adhd": "adhd"}
    assert {"nu_error", "nu_reconstruction", "freq", "onset_freq", "beta"} <= set(
        blob["latents"][0]
    )
    assert blob["quality"]["models"][0]["name"] == "standard"
    assert 1 <= len(blob["cards"]) <= 4
    card = blob["cards"][0]
    assert set(card["promoted"]) == {"standard", "adhd"} and card["activations"]
    assert card["contexts"] and {"tokens", "activations", "focus", "label"} <= set(
        card["contexts"][0]
    )
    assert blob["provenance"]["config"]["limit"] == 20
    # The dashboard: a card per shown latent, a sortable table row per latent.
    page = (tmp_path / CROSSCODER_DASHBOARD).read_text()
    assert page.count('<section class="card"') == len(blob["cards"])
    assert page.count("<tr data-latent=") == 64 and 'src="http' not in page

    from interpgpt.cli import main

    with pytest.raises(SystemExit) as done:  # the models swapped: refused in one line
        main([str(a) for a in [*diff_args, "--std", adhd, "--adhd", std]])
    assert done.value.code == 2


def test_cli_dashboard_renders_with_images_in_chromium(cli_run, chromium):
    """The `crosscoder diff` page as a browser shows it: every card's histogram image
    loads, and the latent table sorts."""
    assert cli_run["diffed"].exit_code == 0, cli_run["diffed"].output
    page = cli_run["dir"] / CROSSCODER_DASHBOARD
    cards = json.loads((cli_run["dir"] / CROSSCODER_DIFF_JSON).read_text())["cards"]
    sort = (
        "const th = [...document.querySelectorAll('#latents th')].find("
        "h => h.textContent === 'latent'); th.click(); th.click();"
        " document.body.dataset.first = document.querySelector('#latents tbody tr')"
        ".dataset.latent;"
    )
    dom = chromium.dom_after_load(page, chromium.IMAGES_LOADED + " " + sort)
    n_images = sum(1 for card in cards if card["activations"])
    assert n_images >= 1 and f'data-images="{n_images}:{n_images}"' in dom, dom[-500:]
    assert 'data-first="63"' in dom  # sorted by latent, descending after the second click
    assert chromium.screenshot(page, cli_run["dir"] / "shot.png").stat().st_size > 10_000


def test_stage_reports_a_missing_twin_and_runs_the_twin_null(tiny_run_dirs, tiny_corpus, tmp_path):
    root = tmp_path / "study"
    (root / "export").mkdir(parents=True)
    os.symlink(tiny_corpus, root / "corpus")
    for name, target in (("standard", "standard"), ("adhd", "adhd")):
        os.symlink(tiny_run_dirs[target], root / "export" / name)
    ws = Workspace(root)
    config = CrosscoderStudyConfig(
        layer=1, d_latent=64, k=4, tokens=2048, batch_size=512, eval_tokens=500,
        buffer_tokens=2048, seq_batch=16, limit=10, top_n=1, device="cpu",
    )  # fmt: skip
    output = stage(ws, config)
    assert output.summary["twin"] is None and output.summary["pair"]["n_latents"] == 64
    assert output.summary["pair"]["sae_features"] is None  # no feature diff in this study
    report = section(output.summary, [str(p) for p in output.outputs])
    assert "twin null is missing" in report.finding and report.status == "warn"
    top = output.summary["pair"]["top_adhd"]
    assert top["rel_norm"] == max(
        r["rel_norm"]
        for r in json.loads(Path(output.outputs[0]).read_text())["latents"]
        if r["class"] != "dead" and (r["confirmed"] or not top["confirmed"])
    )
    assert f"The latent leaning most to the ADHD model, {top['latent']}" in report.finding

    # The "twin" here is the standard model itself: the exact null, nothing confirmed.
    os.symlink(tiny_run_dirs["standard"], root / "export" / "standard-twin")
    output = stage(ws, config)
    twin = output.summary["twin"]
    assert twin["models"] == ["standard", "standard-twin"]
    assert twin["n_std_only_confirmed"] == twin["n_adhd_only_confirmed"] == 0
    assert Path(twin["diff_file"]).is_file() and len(output.outputs) == 4
    assert all(Path(p).is_file() for p in output.outputs)  # both diffs and both dashboards
    report = section(output.summary, [str(p) for p in output.outputs])
    assert "data-order twin" in report.finding and len(report.table) == 3
    assert [label for label, _ in report.pages] == ["pair dashboard", "twin dashboard"]
    assert [label for label, _ in report.rows] == ["pair diff", "twin diff"]
    # In a control pair's workspace the stage does not repeat its own twin null.
    pair = ws.for_pair("standard-twin", {"standard": "standard-twin", "adhd": "standard"})
    control = dataclasses.replace(config, same_variant=True)  # as the seed controls set it
    assert stage(pair, control).summary["twin"] is None


def test_sae_features_map_to_the_latent_whose_decoder_they_copy(planted, tmp_path):
    """An SAE whose features are copies of chosen crosscoder decoder rows of model "b"
    (one scaled, so only the direction counts): each maps to exactly that latent at cosine
    1, with the latent's class; and the study summary counts them."""
    crosscoder, _, held_out = planted
    table, classes = diff_of(crosscoder, held_out)
    diff = PairDiff(table, classes, classes.counts(), {})
    chosen = [int(j) for j in torch.nonzero(torch.as_tensor(table.live)).flatten()[[0, 5, 9]]]
    d_model = crosscoder.cfg.d_model
    sae = TopKSAE(TopKSAEConfig(d_in=d_model, d_sae=16, k=2, layer=0, model_name="b"))
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(16, d_model))
        for feature, latent in zip((3, 7, 11), chosen, strict=True):
            sae.W_dec[feature] = crosscoder.W_dec[latent, 1] * (2.5 if feature == 7 else 1.0)
    sae.save(tmp_path / "sae")
    blob = {"sae": {"dir": str(tmp_path / "sae"), "layer": 0}, "features": [
        {"feature": f} for f in (3, 7, 11)]}  # fmt: skip
    (tmp_path / "feature_diff.json").write_text(json.dumps(blob))
    mapped = map_sae_features(tmp_path / "feature_diff.json", crosscoder, diff)
    assert [(m["feature"], m["latent"], m["model"]) for m in mapped] == [
        (f, j, "b") for f, j in zip((3, 7, 11), chosen, strict=True)
    ]
    assert all(m["cosine"] == pytest.approx(1.0, abs=1e-5) for m in mapped)
    assert [m["class"] for m in mapped] == [classes.labels[j] for j in chosen]
    summary = mapped_summary(mapped)
    assert summary["n_features"] == summary["n_matched"] == 3
    assert summary["n_to_exclusive"] == sum(classes.labels[j] != "shared" for j in chosen)
    assert mapped_summary(None) is None
