"""Training: matched-pair init, data order, loss targets, resume, DDP, run dir, bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from interpgpt.artifacts.load import load_model, load_safetensors
from interpgpt.artifacts.names import (
    CHECKPOINT,
    LOSS_PLOT,
    METRICS,
    MODEL_WEIGHTS,
    RUN_CONFIG,
    TOKENIZER_FILE,
)
from interpgpt.cli import app, main
from interpgpt.corpus.build import load_split
from interpgpt.errors import UserError
from interpgpt.settings import SettingError
from interpgpt.train.batches import (
    IGNORE_INDEX,
    SampledBatches,
    count_targets,
    encode_training_set,
    grouped_indices,
    make_batch,
    next_token_batch,
    sample_indices,
)
from interpgpt.train.config import TrainConfig
from interpgpt.train.distributed import DistInfo
from interpgpt.train.loop import train
from interpgpt.train.recipe import initial_model, lr_at, make_optimizer, state_sha256
from interpgpt.train.step import Muon, MuonAdamW


def _config(corpus, tokenizer, out, **overrides) -> TrainConfig:
    base = dict(
        corpus=corpus,
        tokenizer=tokenizer,
        out=out,
        variant="standard",
        preset="tiny",
        steps=6,
        batch_size=4,
        n_samples=0,
        progress=False,
        eval_batches=1,
    )
    return TrainConfig(**(base | overrides))


def _state_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(run_dir / MODEL_WEIGHTS)


# ----------------------------------------------------------------------------- recipe


def test_both_variants_start_from_identical_weights(tmp_path):
    std = _config("c", "t.json", tmp_path, variant="standard")
    adhd = _config("c", "t.json", tmp_path, variant="adhd")
    assert _state_hash(initial_model(std)) == _state_hash(initial_model(adhd))
    other_seed = dataclasses.replace(std, seed=1)
    assert _state_hash(initial_model(std)) != _state_hash(initial_model(other_seed))


def test_data_order_is_a_pure_function_of_seed_and_step():
    n, batch = 10, 4
    first = [sample_indices(0, step, batch, n) for step in range(5)]
    assert first == [sample_indices(0, step, batch, n) for step in range(5)]
    flat = [i for step in first for i in step]
    assert sorted(flat[:n]) == list(range(n))  # each epoch visits every example once
    assert sorted(flat[n : 2 * n]) == list(range(n))
    assert flat[:n] != flat[n : 2 * n]  # and reshuffles
    assert first != [sample_indices(1, step, batch, n) for step in range(5)]


def test_length_grouping_redeals_each_window_by_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=50).tolist()
    n, batch, group = len(lengths), 4, 5
    plain = [sample_indices(0, step, batch, n) for step in range(2 * group)]
    grouped = [grouped_indices(0, step, batch, lengths, group) for step in range(2 * group)]
    assert grouped == [grouped_indices(0, step, batch, lengths, group) for step in range(10)]
    for window in (0, 1):  # the same examples per window, re-dealt
        span = slice(window * group, (window + 1) * group)
        flat = [sorted(k for b in batches[span] for k in b) for batches in (plain, grouped)]
        assert flat[0] == flat[1]

    # each grouped batch spans a narrow length range: padding far below random batches
    def pad(batches):
        return sum(batch * max(lengths[k] for k in b) - sum(lengths[k] for k in b) for b in batches)

    assert pad(grouped) < 0.5 * pad(plain)
    assert [grouped_indices(0, s, batch, lengths, 1) for s in range(3)] == plain[:3]
    assert grouped != [grouped_indices(1, step, batch, lengths, group) for step in range(10)]


def test_fast_encoding_equals_encode_example(tiny_corpus, tiny_tokenizer):
    from interpgpt.corpus.build import load_split

    records = load_split(tiny_corpus, "adhd", "val")[:200]
    data = encode_training_set(tiny_tokenizer, records)
    assert len(data) == len(records)
    for k, record in enumerate(records):
        assert data.example(k) == tiny_tokenizer.encode_example(record.task, record.steps)


def test_loss_targets_cover_task_through_end_and_skip_pad(tiny_corpus, tiny_tokenizer):
    from interpgpt.corpus.build import load_split

    tok = tiny_tokenizer
    data = encode_training_set(tok, load_split(tiny_corpus, "standard", "val")[:8])
    indices = list(range(8))
    whole = max(len(data.example(k)) for k in indices)  # a context no example overflows
    batch = make_batch(data, indices, tok.pad_id, n_ctx=whole)
    assert batch.n_tokens == count_targets(data, indices, whole)
    for row, k in enumerate(indices):
        ids = data.example(k)
        targets = batch.targets[row].tolist()
        real = [t for t in targets if t != IGNORE_INDEX]
        assert real == ids[1:]  # task text, <|steps|>, steps, <|sep|>, ..., <|end|>
        assert real[-1] == tok.end_id and tok.task_id not in real
        assert all(t == IGNORE_INDEX for t in targets[len(real) :])
        assert (batch.input_ids[row, len(ids) :] == tok.pad_id).all()
    truncated = make_batch(data, indices, tok.pad_id, n_ctx=5)
    assert truncated.input_ids.shape[1] == 5
    assert truncated.n_tokens == count_targets(data, indices, 5) == 5 * len(indices)


def test_batch_sources_share_the_loss_target_rule(tiny_corpus, tiny_tokenizer):
    """Right-padded rows (the IOI stream's form) give the same batch as `make_batch`, and
    the ranks' slices of a sampled global batch together hold its targets."""
    from interpgpt.corpus.build import load_split

    tok = tiny_tokenizer
    data = encode_training_set(tok, load_split(tiny_corpus, "standard", "val")[:8])
    indices = list(range(8))
    whole = max(len(data.example(k)) for k in indices)  # a context no example overflows
    batch = make_batch(data, indices, tok.pad_id, n_ctx=whole)
    examples = [data.example(k) for k in indices]
    ids = torch.full((8, max(map(len, examples))), tok.pad_id, dtype=torch.long)
    for row, example in enumerate(examples):
        ids[row, : len(example)] = torch.tensor(example)
    padded = next_token_batch(ids, tok.pad_id)
    assert torch.equal(padded.input_ids, batch.input_ids)
    assert torch.equal(padded.targets, batch.targets) and padded.n_tokens == batch.n_tokens
    source = SampledBatches(data, seed=0, batch_size=4, pad_id=tok.pad_id, n_ctx=whole)
    cpu = torch.device("cpu")
    whole, total = source.batch(3, DistInfo(0, 1, cpu))
    assert total == whole.n_tokens == source.global_batch(3).n_tokens
    halves = [source.batch(3, DistInfo(rank, 2, cpu)) for rank in (0, 1)]
    assert [t for _, t in halves] == [total, total]
    assert sum(b.n_tokens for b, _ in halves) == total


def test_lr_schedule_warms_up_then_decays_to_floor(tmp_path):
    config = _config("c", "t.json", tmp_path, steps=100, lr=1e-3).resolved()
    lrs = [lr_at(step, config) for step in range(100)]
    warmup = round(config.warmup_fraction * 100)
    assert lrs[:warmup] == sorted(lrs[:warmup]) and lrs[warmup - 1] == pytest.approx(1e-3)
    assert lrs[warmup:] == sorted(lrs[warmup:], reverse=True)
    assert lr_at(100, config) == pytest.approx(config.min_lr_ratio * 1e-3)


def test_wsd_schedule_holds_the_peak_then_decays_linearly_to_floor(tmp_path):
    config = _config(
        "c", "t.json", tmp_path, steps=100, lr=1e-3, schedule="wsd", cooldown_fraction=0.2
    ).resolved()
    lrs = [lr_at(step, config) for step in range(100)]
    warmup = round(config.warmup_fraction * 100)
    assert lrs[warmup - 1 : 80] == [pytest.approx(1e-3)] * (81 - warmup)
    decay = lrs[80:]
    steps = [a - b for a, b in itertools.pairwise(decay)]
    assert all(d == pytest.approx(steps[0]) for d in steps) and steps[0] > 0
    assert lrs[99] == pytest.approx(config.min_lr_ratio * 1e-3)


def test_muon_takes_the_block_matrices_and_adamw_the_rest(tmp_path):
    config = _config("c", "t.json", tmp_path, optimizer="muon").resolved()
    model = initial_model(config)
    optimizer = make_optimizer(model, config)
    assert isinstance(optimizer, MuonAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]]
    adam = [names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]]
    assert sorted(muon + adam) == sorted(names.values())
    assert all(n.startswith("blocks.") and n.endswith("proj.weight") for n in muon)
    assert "embed.weight" in adam and all(n == "embed.weight" or "ln" in n for n in adam)
    for group in optimizer.param_groups:  # the schedule sets both halves' rate
        group["lr"] = 0.5
    assert {g["lr"] for g in optimizer.muon.param_groups + optimizer.adamw.param_groups} == {0.5}


@pytest.mark.parametrize("shape", [(24, 8), (8, 24)], ids=["tall", "wide"])
def test_our_muon_in_bf16_is_torchs_and_in_fp32_close_to_it(shape):
    def run(make) -> list[torch.Tensor]:
        torch.manual_seed(0)
        weight = torch.nn.Parameter(torch.randn(shape))
        optimizer = make([weight])
        for k in range(3):
            weight.grad = torch.randn(shape, generator=torch.Generator().manual_seed(k))
            optimizer.step()
        return [weight.detach().clone(), optimizer.state[weight]["momentum_buffer"]]

    kwargs = dict(lr=0.02, weight_decay=0.1)
    torchs = run(lambda p: torch.optim.Muon(p, adjust_lr_fn="match_rms_adamw", **kwargs))
    ours = run(lambda p: Muon(p, ns_dtype=torch.bfloat16, **kwargs))
    assert all(torch.equal(a, b) for a, b in zip(torchs, ours, strict=True))
    fp32 = run(lambda p: Muon(p, ns_dtype=torch.float32, **kwargs))
    assert not torch.equal(fp32[0], torchs[0])
    assert torch.allclose(fp32[0], torchs[0], atol=0.02)  # bf16 rounding of the update


def test_weight_decay_applies_to_matrices_only(tmp_path):
    config = _config("c", "t.json", tmp_path, optimizer="adamw").resolved()
    model = initial_model(config)
    optimizer = make_optimizer(model, config)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] > 0 and plain["weight_decay"] == 0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"]) and plain["params"]
    assert sum(p.numel() for g in (decayed, plain) for p in g["params"]) == sum(
        p.numel() for p in model.parameters()
    )


def test_data_seed_defaults_to_seed():
    assert TrainConfig(seed=3).resolved().data_seed == 3
    assert TrainConfig(seed=3, data_seed=0).resolved().data_seed == 0


def test_state_sha256_changes_with_any_weight():
    model = initial_model(TrainConfig(preset="tiny"))
    before = state_sha256(model)
    assert before == state_sha256(initial_model(TrainConfig(preset="tiny", data_seed=9)))
    with torch.no_grad():
        next(model.parameters()).view(-1)[-1] += 1e-3
    assert state_sha256(model) != before


# ----------------------------------------------------------------------------- run dir


def test_run_dir_is_complete_and_loads(tiny_run_dirs, tiny_tokenizer_path):
    for variant, run_dir in tiny_run_dirs.items():
        config = json.loads((run_dir / RUN_CONFIG).read_text())
        assert config["variant"] == variant
        assert config["train"]["variant"] == variant and config["train"]["preset"] == "tiny"
        assert (
            config["tokenizer_sha256"]
            == hashlib.sha256(tiny_tokenizer_path.read_bytes()).hexdigest()
        )
        assert "versions" in config["provenance"]
        assert config["torch_threads"] == 1  # conftest trains on one thread
        # Trained: well below the loss of a uniform guess over the vocabulary.
        assert config["val_loss"] < 0.8 * math.log(config["model"]["vocab_size"])
        loaded = load_model(run_dir)
        assert loaded.variant == variant and loaded.model.cfg.n_layer == 2
        records = [json.loads(line) for line in (run_dir / METRICS).open()]
        losses = [r["loss"] for r in records if "loss" in r]
        assert losses[-1] < losses[0]
        assert any("val_loss" in r for r in records)
        assert (run_dir / LOSS_PLOT).read_bytes()[:4] == b"\x89PNG"
        assert (run_dir / TOKENIZER_FILE).read_bytes() == tiny_tokenizer_path.read_bytes()


def test_trained_pair_differs_only_through_data(tiny_run_dirs):
    std, adhd = (_weights(tiny_run_dirs[v]) for v in ("standard", "adhd"))
    assert std.keys() == adhd.keys()
    assert any(not torch.equal(std[k], adhd[k]) for k in std)


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "recipe",
    [dict(optimizer="adamw", schedule="cosine"), dict(optimizer="muon", schedule="wsd")],
    ids=["adamw-cosine", "muon-wsd"],
)
def test_resume_after_kill_is_bit_identical(tiny_corpus, tiny_tokenizer_path, tmp_path, recipe):
    common = dict(steps=12, checkpoint_every=4, eval_every=6, n_samples=1, **recipe)
    whole = train(_config(tiny_corpus, tiny_tokenizer_path, tmp_path / "whole", **common))
    killed = _config(tiny_corpus, tiny_tokenizer_path, tmp_path / "cut", **common)
    first = train(dataclasses.replace(killed, stop_after_steps=10))  # "killed" after step 10
    assert not first.finished and not (tmp_path / "cut" / MODEL_WEIGHTS).exists()
    second = train(dataclasses.replace(killed, resume=True))
    assert second.finished and second.resumed_from == 8  # the last checkpoint before the kill
    assert second.tokens_seen == whole.tokens_seen
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / METRICS).open()]
    whole_steps = [json.loads(line)["step"] for line in (tmp_path / "whole" / METRICS).open()]
    assert steps == whole_steps  # metrics of the lost steps 9-10 are not duplicated


def test_existing_run_needs_resume_and_matching_settings(
    tiny_corpus, tiny_tokenizer_path, tmp_path
):
    config = _config(tiny_corpus, tiny_tokenizer_path, tmp_path / "run", steps=2)
    train(config)
    with pytest.raises(UserError, match="--resume"):
        train(config)
    with pytest.raises(UserError, match=r"different settings.*seed"):
        train(dataclasses.replace(config, resume=True, seed=5))


# ----------------------------------------------------------------------------- seed twin


def _run_config(run_dir: Path) -> dict:
    return json.loads((run_dir / RUN_CONFIG).read_text())


def test_twin_shares_the_init_and_reads_another_order(
    tiny_corpus, tiny_tokenizer_path, tmp_path, monkeypatch
):
    """A twin (same seed, other data_seed) starts from the same weights, draws its training
    batches in the data_seed order (its validation subset stays the seed's) and ends
    elsewhere; the same config twice gives the same bytes, and data_seed = seed is the
    default run."""
    drawn: list[tuple[str, int]] = []  # (which split, seed) of every batch drawn
    train_batch, val_batch = SampledBatches.batch, SampledBatches.global_batch

    def recording_train(self, step, dist):
        drawn.append(("train", self.seed))
        return train_batch(self, step, dist)

    def recording_val(self, step):
        drawn.append(("val", self.seed))
        return val_batch(self, step)

    monkeypatch.setattr(SampledBatches, "batch", recording_train)
    monkeypatch.setattr(SampledBatches, "global_batch", recording_val)
    base = _config(tiny_corpus, tiny_tokenizer_path, tmp_path / "base", steps=3)
    runs = {
        "base": base,
        "again": dataclasses.replace(base, out=tmp_path / "again"),
        "explicit": dataclasses.replace(base, out=tmp_path / "explicit", data_seed=0),
        "twin": dataclasses.replace(base, out=tmp_path / "twin", data_seed=1),
    }
    seeds_drawn = {}
    for name, config in runs.items():
        drawn.clear()
        train(config)
        seeds_drawn[name] = set(drawn)
    assert seeds_drawn["base"] == {("train", 0), ("val", 0)}
    assert seeds_drawn["twin"] == {("train", 1), ("val", 0)}
    n_train = len(load_split(tiny_corpus, "standard", "train"))
    assert sample_indices(0, 0, 4, n_train) != sample_indices(1, 0, 4, n_train)  # first batch

    meta = {name: _run_config(config.out) for name, config in runs.items()}
    init = state_sha256(initial_model(base))
    assert {m["init_sha256"] for m in meta.values()} == {init}
    assert [meta[n]["data_seed"] for n in runs] == [0, 0, 0, 1]
    weights = {name: (config.out / MODEL_WEIGHTS).read_bytes() for name, config in runs.items()}
    assert weights["base"] == weights["again"] == weights["explicit"]
    assert weights["twin"] != weights["base"]
    other_init = _config(tiny_corpus, tiny_tokenizer_path, tmp_path / "seed1", seed=1, steps=1)
    assert _run_config(train(other_init).run_dir)["init_sha256"] != init


def test_resume_checks_the_data_seed(tiny_corpus, tiny_tokenizer_path, tmp_path):
    """A checkpoint resumes only under its own data order; one written before data_seed
    existed (no data_seed in its fingerprint) had the seed's order."""
    config = _config(tiny_corpus, tiny_tokenizer_path, tmp_path / "run", steps=2)
    init = _run_config(train(config).run_dir)["init_sha256"]
    with pytest.raises(UserError, match=r"different settings \(data_seed\)"):
        train(dataclasses.replace(config, resume=True, data_seed=1))
    path = tmp_path / "run" / CHECKPOINT
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    legacy = json.loads(meta["fingerprint"])
    del legacy["data_seed"]
    meta["fingerprint"] = json.dumps(legacy)
    save_file(load_safetensors(path), str(path), metadata=meta)
    resumed = train(dataclasses.replace(config, resume=True))
    assert resumed.finished and resumed.resumed_from == 2
    assert _run_config(config.out)["init_sha256"] == init  # the initial weights, not step 2's
    with pytest.raises(UserError, match=r"different settings \(data_seed\)"):
        train(dataclasses.replace(config, resume=True, data_seed=1))


# ----------------------------------------------------------------------------- DDP


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_ddp_two_ranks_match_single_process(tiny_corpus, tiny_tokenizer_path, tmp_path, optimizer):
    """Two ranks' averaged gradients give the single process's weights. AdamW matches to
    float rounding. Muon's Newton-Schulz runs in bf16 where the CPU has native bf16
    (`step.Muon`), which turns the ranks' different summation order into differences of
    about 1% of the update (measured 1.2% after 3 steps on an AVX-512 BF16 EPYC); ranks
    that did not average their gradients differ by the order of the update itself."""
    args = [
        "train", "--corpus", str(tiny_corpus), "--tokenizer", str(tiny_tokenizer_path),
        "--variant", "adhd", "--preset", "tiny", "--steps", "3", "--batch-size", "6",
        "--device", "cpu", "--no-autocast", "--no-progress", "--optimizer", optimizer,
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, "-m", "interpgpt", *args, "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    single = dataclasses.replace(
        _config(tiny_corpus, tiny_tokenizer_path, tmp_path / "one", variant="adhd"),
        steps=3, batch_size=6, autocast=False, device="cpu", optimizer=optimizer,
    )  # fmt: skip
    train(single)
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    init = initial_model(single).state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)
    for name in a:
        if optimizer == "adamw":
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)
        else:
            update = (b[name] - init[name]).norm()
            assert (a[name] - b[name]).norm() <= 0.05 * update + 1e-6, name


# ----------------------------------------------------------------------------- bad input


def test_tokenizer_too_big_for_preset(tiny_corpus, tiny_tokenizer, tmp_path):
    from tokenizers import Tokenizer

    # A copy with more tokens than the tiny preset's embedding has rows.
    big = Tokenizer.from_str(tiny_tokenizer.tokenizer.to_str())
    big.add_tokens([f"zz{i}" for i in range(8200)])
    big.save(str(tmp_path / "big.json"))
    with pytest.raises(UserError, match="do not fit preset"):
        train(_config(tiny_corpus, tmp_path / "big.json", tmp_path / "run"))


def test_corpus_without_variant(tiny_corpus, tiny_tokenizer_path, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    shutil.rmtree(corpus / "adhd")
    with pytest.raises(UserError, match="no adhd variant"):
        train(_config(corpus, tiny_tokenizer_path, tmp_path / "run", variant="adhd"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_corpus, tiny_tokenizer_path, tmp_path):
    config = _config(
        tiny_corpus, tiny_tokenizer_path, tmp_path / "run", steps=20, lr=1e30,
        checkpoint_every=1, warmup_fraction=0.0, grad_clip=0.0, autocast=False,
    )  # fmt: skip
    with pytest.raises(UserError, match=r"NaN.*last good checkpoint"):
        train(config)
    ckpt = load_safetensors(tmp_path / "run" / CHECKPOINT)
    assert all(t.isfinite().all() for k, t in ckpt.items() if k.startswith("model."))
    assert not (tmp_path / "run" / MODEL_WEIGHTS).exists()


def test_config_rejects_bad_values(tmp_path):
    bads = ({"variant": "other"}, {"preset": "huge"}, {"steps": 0}, {"lr": -1.0}, {"data_seed": -1})
    for bad in bads:
        with pytest.raises(SettingError) as info:
            _config("c", "t.json", tmp_path, **bad)
        assert info.value.field == next(iter(bad))


def test_a_bad_setting_fails_at_construction():
    with pytest.raises(SettingError) as info:
        TrainConfig(steps=-5)
    assert info.value.field == "steps" and "-5" in info.value.message
    TrainConfig()  # every setting has a valid default (the study builds it so)


# ----------------------------------------------------------------------------- CLI


def test_cli_train_and_generate(tiny_corpus, tiny_tokenizer_path, tiny_run_dirs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["train", "--corpus", str(tiny_corpus), "--tokenizer", str(tiny_tokenizer_path),
            "--variant", "standard", "--preset", "tiny", "--steps", "2", "--batch-size", "2",
            "--out", str(out), "--no-progress", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "val loss" in result.output and (out / MODEL_WEIGHTS).is_file()
    gen = runner.invoke(
        app, ["generate", str(tiny_run_dirs["adhd"]), "--task", "Clean the kitchen", "--n", "2",
              "--temperature", "0", "--max-new-tokens", "40", "--device", "cpu"],
    )  # fmt: skip
    assert gen.exit_code == 0, gen.output
    assert "Clean the kitchen" in gen.output and "1." in gen.output
    bad = runner.invoke(app, [*args[:-5], "--out", str(out), "--variant", "neither"])
    assert bad.exit_code == 2 and "neither" in bad.output


def test_cli_bad_setting_names_the_option(tmp_path, capsys):
    args = ["train", "--corpus", "c", "--tokenizer", "t.json", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as done:
        main([*args, "--steps", "0"])
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "error: --steps: must be at least 1 (got 0)"
    assert not (tmp_path / "run").exists()
