"""TopK SAEs: SAELens file compatibility, the sparse training step against the dense
reference, a planted-dictionary recovery, exact-SAE quality metrics, streaming, the
configs' validation, and the `sae train` / `sae train-all` CLI on the tiny pair."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from interpgpt.corpus.build import load_split
from interpgpt.errors import UserError
from interpgpt.sae.activations import (
    activation_stream,
    capture,
    cycle_sequences,
    encode_sequences,
    pad_batch,
)
from interpgpt.sae.config import SAETrainConfig, TrainAllConfig
from interpgpt.sae.hyperparams import SAE_EXPANSION, SAEHyperparams
from interpgpt.sae.quality import gate_failures, reconstruction_metrics, splice_cross_entropy
from interpgpt.sae.topk import (
    SAE_CFG_FILE,
    SAE_WEIGHTS_FILE,
    TopKCode,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainer,
    fold_input_scale,
    sae_dir_name,
    sae_hook_name,
)
from interpgpt.sae.training import QUALITY_FILE, seed_twin_name, train_sae
from interpgpt.settings import SettingError


def random_sae(d_in=16, d_sae=64, k=4, seed=0) -> TopKSAE:
    gen = torch.Generator().manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, layer=1, model_name="adhd"), gen)
    with torch.no_grad():
        sae.W_enc.normal_(generator=gen)
        sae.b_enc.normal_(generator=gen)
        sae.b_dec.normal_(generator=gen)
    return sae


def exact_sae(d_in: int, layer: int) -> TopKSAE:
    """W_enc = [I, -I], W_dec = [I; -I], k = d_in: TopK keeps relu(x) and relu(-x), so the
    reconstruction is exactly x (a known answer for every quality metric)."""
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=2 * d_in, k=d_in, layer=layer))
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_saelens_round_trip(tmp_path):
    from sae_lens import SAE

    sae = random_sae()
    sae.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {SAE_CFG_FILE, SAE_WEIGHTS_FILE}
    theirs = SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == "TopKSAE" and theirs.cfg.k == 4
    assert theirs.cfg.metadata.hook_name == sae_hook_name(1) == "blocks.1.hook_resid_post"
    x = torch.randn(3, 5, 16) * 3
    with torch.no_grad():
        f = sae.encode(x)
        assert (f > 0).sum(-1).max() <= 4
        torch.testing.assert_close(theirs.encode(x), f, atol=1e-5, rtol=0)
        torch.testing.assert_close(theirs.decode(f), sae.decode(f), atol=1e-5, rtol=0)
        torch.testing.assert_close(theirs(x), sae(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(sae.decode_topk(sae.encode_topk(x)), sae.decode(f))
    ours = TopKSAE.load(tmp_path)
    assert ours.cfg == sae.cfg
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(ours, name), getattr(sae, name))


def test_load_rejects_mismatched_files(tmp_path):
    random_sae().save(tmp_path)
    cfg = json.loads((tmp_path / SAE_CFG_FILE).read_text())
    (tmp_path / SAE_CFG_FILE).write_text(json.dumps({**cfg, "d_sae": 32}))
    with pytest.raises(UserError, match="W_enc"):
        TopKSAE.load(tmp_path)
    (tmp_path / SAE_CFG_FILE).write_text(json.dumps({**cfg, "architecture": "jumprelu"}))
    with pytest.raises(UserError, match="architecture"):
        TopKSAE.load(tmp_path)


def test_sparse_step_matches_dense_autograd():
    """The trainer's sparse encoder backward equals autograd through the dense encoder."""
    sae, ref = random_sae(d_in=8, d_sae=32, k=3), random_sae(d_in=8, d_sae=32, k=3)
    x = torch.randn(50, 8)
    g = torch.randn(50, 3)
    trainer = TopKTrainer(sae, lr=1e-3, total_steps=10, dead_tokens=10**9, autocast=False)
    pre = trainer._pre_activations(x)
    code = trainer._select(x, pre, pre.topk(3, dim=-1).indices)
    (code.values * g).sum().backward()
    dense_pre = (x - ref.b_dec) @ ref.W_enc + ref.b_enc
    (dense_pre.gather(-1, code.indices).relu() * g).sum().backward()
    for name in ("W_enc", "b_enc", "b_dec"):
        assert getattr(sae, name).grad.abs().sum() > 0
        torch.testing.assert_close(getattr(sae, name).grad, getattr(ref, name).grad)


def test_step_keeps_decoder_rows_unit_norm():
    sae = random_sae()
    trainer = TopKTrainer(sae, lr=1e-2, total_steps=5, dead_tokens=1, autocast=True)
    before = sae.W_dec.detach().clone()
    for _ in range(3):
        stats = trainer.step(torch.randn(64, 16))
    assert stats.n_dead > 0 and stats.aux_loss > 0  # dead after 1 token: AuxK is exercised
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64))
    assert not torch.equal(before, sae.W_dec)


def test_auxk_is_normalised_by_the_error_and_reaches_negative_latents():
    """AuxK's known answer when the dead latents reconstruct nothing is SSE(e) / Var(e),
    the error's own variance (Gao et al.'s normalized_mse); and a dead latent whose
    pre-activation is negative on every token still gets a gradient (no ReLU)."""
    sae = random_sae(d_in=8, d_sae=32, k=3)
    trainer = TopKTrainer(sae, lr=1e-3, total_steps=10, dead_tokens=10**9, autocast=False)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[20:] = True
    x, error = torch.randn(50, 8), torch.randn(50, 8) * 0.1 + 0.05
    with torch.no_grad():
        sae.W_enc[:, 20:] = 0.0
        sae.b_enc[20:] = 0.0
    aux = trainer._aux_loss(x, trainer._pre_activations(x), error, dead)
    expected = error.pow(2).sum() / (error - error.mean(0)).pow(2).sum()
    torch.testing.assert_close(aux, expected)

    with torch.no_grad():
        sae.b_enc[20:] = -5.0  # dead latents: negative on every token
    pre = trainer._pre_activations(x)
    assert (pre[:, 20:] < 0).all()
    trainer._aux_loss(x, pre, error, dead).backward()
    assert (sae.b_enc.grad[20:] != 0).sum() >= 8 // 2  # each token's top-k_aux dead latents
    assert (sae.b_enc.grad[:20] == 0).all()  # live latents take no part in AuxK


def test_fold_input_scale_is_exact():
    sae = random_sae()
    x = torch.randn(20, 16)
    with torch.no_grad():
        scaled_code = sae.encode_topk(x * 3.0)
        scaled_recon = sae(x * 3.0)
        fold_input_scale(sae, 3.0)
        torch.testing.assert_close(sae(x), scaled_recon / 3.0, atol=1e-5, rtol=1e-5)
        code = sae.encode_topk(x)
        assert torch.equal(code.indices.sort(-1).values, scaled_code.indices.sort(-1).values)


def planted(n: int, atoms: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Sums of <= k random atoms with positive coefficients, plus a shared offset."""
    idx = torch.rand(n, atoms.shape[0], generator=gen).argsort(-1)[:, :k]
    coef = (torch.rand(n, k, generator=gen) + 0.5) * (torch.rand(n, k, generator=gen) < 0.8)
    return torch.einsum("nk,nkd->nd", coef, atoms[idx]) + 0.3


def test_planted_dictionary_is_recovered():
    gen = torch.Generator().manual_seed(0)
    atoms = torch.randn(64, 32, generator=gen)
    atoms /= atoms.norm(dim=-1, keepdim=True)
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=128, k=4), generator=gen)
    trainer = TopKTrainer(sae, lr=1e-2, total_steps=250, dead_tokens=4096, autocast=False)
    for _ in range(250):
        trainer.step(planted(256, atoms, 4, gen))
    best_cos = (atoms @ sae.W_dec.detach().T).max(dim=1).values
    assert (best_cos > 0.9).float().mean() >= 0.9

    held_out = planted(4000, atoms, 4, gen)
    metrics = reconstruction_metrics(sae, held_out)
    with torch.no_grad():
        recon, f = sae(held_out), sae.encode(held_out)
    naive_fve = 1 - ((recon - held_out) ** 2).sum() / ((held_out - held_out.mean(0)) ** 2).sum()
    assert metrics.fve == pytest.approx(float(naive_fve), abs=1e-4)
    assert metrics.fve > 0.9
    assert metrics.l0 == pytest.approx(float((f > 0).sum(-1).float().mean()))
    assert metrics.dead_features == int(((f > 0).sum(0) == 0).sum())
    # 128 latents for 64 atoms: roughly half never fire, so the dead gate must fail.
    quality = type("Q", (), {"fve": metrics.fve, "dead_fraction": metrics.dead_features / 128})
    failures = gate_failures(quality, SAEHyperparams())
    assert metrics.dead_features > 2 and len(failures) == 1 and "dead" in failures[0]


def test_auxk_revives_latents_that_start_dead():
    """Half the latents start with a bias that keeps them out of every TopK; AuxK must
    bring them back so that they fire on held-out data."""
    gen = torch.Generator().manual_seed(0)
    atoms = torch.randn(64, 32, generator=gen)
    atoms /= atoms.norm(dim=-1, keepdim=True)
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4), generator=gen)
    with torch.no_grad():
        sae.b_enc[32:] = -10.0
    trainer = TopKTrainer(sae, lr=1e-2, total_steps=200, dead_tokens=1024, autocast=False)
    for _ in range(200):
        trainer.step(planted(256, atoms, 4, gen))
    assert reconstruction_metrics(sae, planted(4000, atoms, 4, gen)).dead_features <= 2


def test_exact_sae_has_perfect_quality(tiny_pair, tiny_corpus):
    loaded = tiny_pair["standard"]
    model, tok = loaded.model, loaded.tokenizer
    sae = exact_sae(model.cfg.d_model, layer=0)
    records = load_split(tiny_corpus, "standard", "val")
    seqs = encode_sequences(tok, records, model.cfg.n_ctx)[:16]
    ids, lengths = pad_batch(seqs, tok.pad_id)
    acts = capture(model, ids, lengths, [sae.cfg.hook_name])[sae.cfg.hook_name]
    assert acts.shape[0] == sum(len(s) for s in seqs)
    metrics = reconstruction_metrics(sae, acts)
    assert metrics.fve == pytest.approx(1.0, abs=1e-6) and metrics.dead_features == 0
    ce = splice_cross_entropy(model, sae, seqs, tok.pad_id)
    assert ce["spliced"] == pytest.approx(ce["clean"], abs=1e-4)
    assert ce["zero"] > ce["clean"] + 0.1


def test_shared_baselines_give_a_fresh_calls_values(tiny_pair, tiny_corpus):
    """SAEs of one model share the clean CE and, per hook, the zero-ablated CE: with one
    `known` dict every SAE gets exactly the values of its own fresh call."""
    loaded = tiny_pair["standard"]
    model, tok = loaded.model, loaded.tokenizer
    seqs = encode_sequences(tok, load_split(tiny_corpus, "standard", "val"), model.cfg.n_ctx)[:8]
    torch.manual_seed(0)
    saes = [exact_sae(model.cfg.d_model, layer=layer) for layer in (0, 1, 0)]
    with torch.no_grad():
        saes[2].W_dec.mul_(0.5)  # a second SAE of layer 0 that reconstructs badly
    known: dict[str, float] = {}
    shared = [splice_cross_entropy(model, sae, seqs, tok.pad_id, known=known) for sae in saes]
    fresh = [splice_cross_entropy(model, sae, seqs, tok.pad_id) for sae in saes]
    assert shared == fresh
    assert set(known) == {"clean", "zero:blocks.0.hook_resid_post", "zero:blocks.1.hook_resid_post"}
    assert fresh[2]["spliced"] > fresh[0]["spliced"] + 0.01


def test_stream_is_token_aligned_across_hooks(tiny_pair, tiny_corpus):
    """blocks.0.hook_resid_post and blocks.1.hook_resid_pre are the same tensor, so a
    shared stream must hand out identical rows for both."""
    loaded = tiny_pair["adhd"]
    tok = loaded.tokenizer
    records = load_split(tiny_corpus, "adhd", "val")
    seqs = encode_sequences(tok, records, loaded.model.cfg.n_ctx)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"]
    stream = activation_stream(
        loaded.model, cycle_sequences(seqs, 0), hooks, pad_id=tok.pad_id,
        batch_size=256, buffer_tokens=2048, seq_batch=8, autocast=False,
    )  # fmt: skip
    batches = [next(stream) for _ in range(6)]
    for batch in batches:
        assert batch[hooks[0]].shape == (256, loaded.model.cfg.d_model)
        assert torch.equal(batch[hooks[0]], batch[hooks[1]])
    assert not torch.equal(batches[0][hooks[0]], batches[1][hooks[0]])


def run_cli(args):
    from interpgpt.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})


SMALL = ["--k", 4, "--d-sae", 64, "--tokens", 4096, "--batch-size", 1024, "--eval-tokens", 2000,
         "--buffer-tokens", 4096]  # fmt: skip


def test_cli_sae_train_writes_saelens_dir(tiny_run_dirs, tiny_corpus, tmp_path):
    from sae_lens import SAE

    result = run_cli(
        ["sae", "train", tiny_run_dirs["adhd"], "--layer", 1, "--corpus", tiny_corpus,
         "--out", tmp_path, *SMALL]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, "a cell of the quality table cut at 80 columns"
    out = tmp_path / sae_dir_name("adhd", 1)
    assert {SAE_CFG_FILE, SAE_WEIGHTS_FILE, QUALITY_FILE} <= {p.name for p in out.iterdir()}
    quality = json.loads((out / QUALITY_FILE).read_text())
    assert quality["hook_name"] == "blocks.1.hook_resid_post" and quality["k"] == 4
    assert 0 < quality["l0"] <= 4 and quality["n_eval_tokens"] > 0
    assert quality["provenance"]["config"]["layer"] == 1
    assert quality["passed"] == (not quality["failures"])
    assert SAE.load_from_disk(out).cfg.d_sae == 64
    assert isinstance(TopKSAE.load(out).encode_topk(torch.zeros(2, 32)), TopKCode)


def test_cli_strict_fails_when_gates_fail(tiny_run_dirs, tiny_corpus, tmp_path):
    result = run_cli(
        ["sae", "train", tiny_run_dirs["standard"], "--layer", 0, "--corpus", tiny_corpus,
         "--out", tmp_path, "--k", 2, "--d-sae", 512, "--tokens", 1024, "--batch-size", 1024,
         "--eval-tokens", 500, "--buffer-tokens", 2048, "--strict"]
    )  # fmt: skip
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)
    assert "quality gates failed" in str(result.exception)
    assert (tmp_path / sae_dir_name("standard", 0) / QUALITY_FILE).is_file()


def test_cli_train_all_trains_each_models_layers(tiny_run_dirs, tiny_corpus, tmp_path):
    result = run_cli(
        ["sae", "train-all", "--standard", tiny_run_dirs["standard"],
         "--adhd", tiny_run_dirs["adhd"], "--std-layers", "0,1", "--adhd-layers", "1",
         "--corpus", tiny_corpus, "--out", tmp_path, *SMALL]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, "a cell of the quality table cut at 80 columns"
    summary = json.loads((tmp_path / "sae_summary.json").read_text())
    assert [(r["model"], r["layer"]) for r in summary["saes"]] == [
        ("standard", 0), ("standard", 1), ("adhd", 1)
    ]  # fmt: skip
    hooks = {TopKSAE.load(tmp_path / sae_dir_name(m, la)).cfg.hook_name for m, la in
             [("standard", 0), ("standard", 1), ("adhd", 1)]}  # fmt: skip
    assert hooks == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    bad = run_cli(["sae", "train-all", "--corpus", tiny_corpus, "--out", tmp_path])
    assert isinstance(bad.exception, UserError)


def test_seed_twins_are_a_second_sae_per_adhd_layer_from_another_seed(
    tiny_run_dirs, tiny_corpus, tmp_path
):
    """`--seed-twins`: each ADHD layer gets a second SAE on the same activations from
    another seed, saved under `<model>-seed1`; the standard model's layers do not."""
    result = run_cli(
        ["sae", "train-all", "--standard", tiny_run_dirs["standard"],
         "--adhd", tiny_run_dirs["adhd"], "--std-layers", "0", "--adhd-layers", "1",
         "--seed-twins", "--corpus", tiny_corpus, "--out", tmp_path, *SMALL]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, "a cell of the quality table cut at 80 columns"
    summary = json.loads((tmp_path / "sae_summary.json").read_text())
    names = [(r["model"], r["layer"]) for r in summary["saes"]]
    assert names == [("standard", 0), ("adhd", 1), (seed_twin_name("adhd"), 1)]
    partner = TopKSAE.load(tmp_path / sae_dir_name("adhd", 1))
    twin = TopKSAE.load(tmp_path / sae_dir_name(seed_twin_name("adhd"), 1))
    assert twin.cfg.hook_name == partner.cfg.hook_name
    assert not torch.equal(twin.W_dec, partner.W_dec)  # another init


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("cls", "values", "field"),
    [
        (SAEHyperparams, {"k": 0}, "k"),
        (SAEHyperparams, {"k": 65, "d_sae": 64}, "k"),
        (SAEHyperparams, {"tokens": 100, "batch_size": 512}, "tokens"),
        (SAEHyperparams, {"lr": 0.0}, "lr"),
        (SAEHyperparams, {"max_dead_fraction": 1.5}, "max_dead_fraction"),
        (SAEHyperparams, {"data": "neither"}, "data"),
        (SAETrainConfig, {"layer": -1}, "layer"),
        (TrainAllConfig, {"adhd_layers": (1, -2)}, "adhd_layers"),
    ],
)
def test_bad_setting_raises_setting_error_naming_it(cls, values, field):
    with pytest.raises(SettingError) as err:
        cls(**values)
    assert err.value.field == field


def test_train_all_config_defaults_build_without_inputs():
    """The study builds `[sae]` from defaults and fills the paths in later."""
    config = TrainAllConfig()
    assert config.standard is None and config.adhd is None and config.d_sae is None
    assert config.dictionary_size(512) == SAE_EXPANSION * 512 == 4096
    assert TrainAllConfig(d_sae=100).dictionary_size(512) == 100


def test_cli_names_a_bad_setting_as_an_option(capsys, tmp_path):
    from interpgpt.cli import main

    with pytest.raises(SystemExit) as done:
        main(["sae", "train", str(tmp_path / "m"), "--corpus", str(tmp_path / "c"),
              "--out", str(tmp_path / "o"), "--layer", "0", "--k", "0"])  # fmt: skip
    assert done.value.code == 2
    assert "error: --k: must be at least 1" in capsys.readouterr().err


def test_unset_d_sae_is_eight_times_d_model(tiny_run_dirs, tiny_corpus, tmp_path):
    config = SAETrainConfig(
        model=tiny_run_dirs["adhd"], layer=0, corpus=tiny_corpus, out=tmp_path, k=4,
        tokens=1024, batch_size=1024, eval_tokens=500, buffer_tokens=2048, device="cpu",
    )  # fmt: skip
    result = train_sae(config)
    d_model = result.sae.cfg.d_in
    assert result.sae.cfg.d_sae == SAE_EXPANSION * d_model
    quality = json.loads((result.path / QUALITY_FILE).read_text())
    assert quality["d_sae"] == quality["provenance"]["config"]["d_sae"] == SAE_EXPANSION * d_model
