"""IOI sandbox: prompts and corruptions, the held-out split, the tiny IOI model, the pipeline.

The acceptance numbers of the full IOI model (held-out logit diff >= 2, every role swap
positive) take longer to train than the test budget allows; `make ioi-demo` checks them.
Here a tiny model trained for a few seconds carries the invariants.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from interpgpt.analysis.interventions import act_name, patch_from
from interpgpt.cli import app
from interpgpt.errors import UserError
from interpgpt.ioi.analysis import run_ioi
from interpgpt.ioi.attribution import MeanLogitDiff, direct_logit_attribution, patch
from interpgpt.ioi.baseline import baseline, encode_for, end_logit_diff
from interpgpt.ioi.config import MODEL_SUBDIR, IOIConfig, IOIDemoConfig, IOITrainConfig
from interpgpt.ioi.language import (
    IOISplit,
    IOITokenizer,
    build_ioi_tokenizer,
    template_words,
    training_batch,
)
from interpgpt.ioi.local_model import IOI_CONFIG, load_ioi_model
from interpgpt.ioi.prompts import (
    NAMES,
    TEMPLATES,
    IOIPrompt,
    corrupt,
    encode_prompts,
    logit_diff,
    normalised_metric,
    sample_prompts,
)
from interpgpt.ioi.scores import induction_scores, ioi_pattern_scores, repeated_random_tokens
from interpgpt.ioi.subjects import GPT2_HELP, subject_from_ioi_model
from interpgpt.ioi.train import train_ioi_model
from interpgpt.settings import SettingError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="session")
def tiny_subject(tiny_ioi_dir):
    return subject_from_ioi_model(load_ioi_model(tiny_ioi_dir, "cpu"))


@pytest.fixture(scope="module")
def tok() -> IOITokenizer:
    return IOITokenizer(build_ioi_tokenizer())


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("template", range(len(TEMPLATES)))
def test_role_positions_point_at_the_names(tok, template):
    prompts = [
        IOIPrompt(template, order, "Mary", "John", "store", "drink") for order in ("ABBA", "BABA")
    ]
    batch = encode_prompts(prompts, tok.encode, bos=tok.bos_id, pad=tok.pad_id)
    mary, john = tok.encode(" Mary")[0], tok.encode(" John")[0]
    for row, order in enumerate(("ABBA", "BABA")):
        ids = batch.tokens[row]
        assert ids[batch.io_pos[row]] == mary
        assert ids[batch.s1_pos[row]] == john and ids[batch.s2_pos[row]] == john
        assert (batch.io_pos[row] < batch.s1_pos[row]) == (order == "ABBA")
        assert batch.s2_pos[row] > max(batch.io_pos[row], batch.s1_pos[row])
        assert tok.decode([int(ids[batch.end_pos[row]])]) == "to"
        # Segment-wise encoding equals encoding the whole sentence.
        assert ids[1 : batch.end_pos[row] + 1].tolist() == tok.encode(prompts[row].text())


def test_corruptions_keep_alignment_and_change_only_names(tok):
    prompts = sample_prompts(40, seed=1)
    clean = encode_prompts(prompts, tok.encode, bos=tok.bos_id, pad=tok.pad_id)
    names = {tok.encode(" " + n)[0] for n in NAMES}
    for kind in ("flip_s2", "abc"):
        bad = corrupt(prompts, kind, seed=2)
        batch = encode_prompts(
            bad, tok.encode, bos=tok.bos_id, pad=tok.pad_id, answers_from=prompts
        )
        assert batch.tokens.shape == clean.tokens.shape
        assert torch.equal(batch.end_pos, clean.end_pos) and torch.equal(batch.s2_pos, clean.s2_pos)
        assert torch.equal(batch.io_token, clean.io_token)  # answers stay the clean ones
        changed = batch.tokens != clean.tokens
        assert all(int(t) in names for t in clean.tokens[changed])
        rows = torch.arange(len(prompts))
        if kind == "flip_s2":
            assert torch.equal(batch.tokens[rows, batch.s2_pos], clean.io_token)
            assert changed.sum(1).eq(1).all()
        else:
            slots = batch.tokens
            trio = torch.stack(
                [slots[rows, batch.io_pos], slots[rows, batch.s1_pos], slots[rows, batch.s2_pos]], 1
            )
            assert all(len(set(t.tolist())) == 3 for t in trio)
            assert not (trio == clean.io_token[:, None]).any()
            assert not (trio == clean.s_token[:, None]).any()


def test_unknown_corruption_is_rejected():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(sample_prompts(2, 0), "swap_everything", 0)  # type: ignore[arg-type]


def test_logit_diff_and_normalised_metric(tok):
    batch = encode_prompts(sample_prompts(3, 0), tok.encode, bos=tok.bos_id, pad=tok.pad_id)
    logits = torch.zeros(3, batch.tokens.shape[1], tok.vocab_size)
    rows = torch.arange(3)
    logits[rows, batch.end_pos, batch.io_token] = torch.tensor([2.0, 0.0, -1.0])
    logits[rows, batch.end_pos, batch.s_token] = 0.5
    assert torch.allclose(logit_diff(logits, batch), torch.tensor([1.5, -0.5, -1.5]))
    assert normalised_metric(3.0, 3.0, -1.0) == 1.0
    assert normalised_metric(-1.0, 3.0, -1.0) == 0.0


# --------------------------------------------------------------------------- split


def test_held_out_templates_use_only_training_words():
    split = IOISplit.make(0, 0.2)
    seen = {w for t in split.train_templates() for w in template_words(TEMPLATES[t])}
    for t in split.held_out_templates:
        assert set(template_words(TEMPLATES[t])) <= seen, TEMPLATES[t]


def test_training_stream_never_shows_held_out_pairs_or_templates(tok):
    split = IOISplit.make(0, 0.2)
    held_pairs = set(split.held_out_pairs)
    held_texts = {TEMPLATES[t].split("{A}")[0] for t in split.held_out_templates}
    train_texts = {TEMPLATES[t].split("{A}")[0] for t in split.train_templates()}
    assert held_pairs and all(tuple(sorted(p)) in held_pairs for p in split.eval_pairs())
    name_ids = {tok.encode(" " + n)[0]: n for n in NAMES}
    batch = training_batch(tok, split, 256, random.Random(0), 0.0, 64)
    for row in batch.tolist():
        names = sorted({name_ids[t] for t in row if t in name_ids})
        assert len(names) == 2 and tuple(names) not in held_pairs
        text = tok.decode(row)
        assert not any(
            text.startswith(f"<|bos|> {h}".strip()) for h in held_texts - train_texts if h
        )
    every_name = {n for p in split.train_pairs() for n in p}
    assert every_name == set(NAMES)  # each name still appears in training


def test_held_out_prompts_cover_both_role_assignments():
    split = IOISplit.make(3, 0.1)
    prompts = split.held_out_prompts(0)
    assigned = {(p.io, p.s) for p in prompts}
    for a, b in split.held_out_pairs:
        assert (a, b) in assigned and (b, a) in assigned
    assert {p.template for p in prompts} == set(split.held_out_templates)


# --------------------------------------------------------------------------- head scores


def test_pattern_scores_known_answer(tok):
    batch = encode_prompts(sample_prompts(4, 0), tok.encode, bos=tok.bos_id, pad=tok.pad_id)
    n, width = batch.tokens.shape
    pattern = torch.zeros(n, 3, width, width)
    for q in range(width):
        pattern[:, 1, q, max(q - 1, 0)] = 1.0  # head 1: previous token
        pattern[:, 0, q, 0] = 1.0
        pattern[:, 2, q, 0] = 1.0
    rows = torch.arange(n)
    pattern[rows, 0, batch.s2_pos] = 0.0
    pattern[rows, 0, batch.s2_pos, batch.s1_pos] = 1.0  # head 0: S2 -> S1
    pattern[rows, 2, batch.end_pos] = 0.0
    pattern[rows, 2, batch.end_pos, batch.io_pos] = 1.0  # head 2: END -> IO
    scores = ioi_pattern_scores([pattern], batch)
    assert scores["dup"][0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert scores["prev"][0, 1] == pytest.approx(1.0) and scores["prev"][0, 0] < 0.5
    assert scores["io"][0].tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert scores["s"][0, 2] == pytest.approx(0.0)


def test_induction_score_known_answer():
    half = 5
    tokens = repeated_random_tokens(list(range(10, 50)), 0, 2, half, seed=0)
    assert torch.equal(tokens[:, 1 : 1 + half], tokens[:, 1 + half :])
    width = tokens.shape[1]
    pattern = torch.zeros(2, 2, width, width)
    pattern[:, :, :, 0] = 1.0
    for q in range(1 + half, width):
        pattern[:, 0, q] = 0.0
        pattern[:, 0, q, q - half + 1] = 1.0
    scores = induction_scores([pattern], half, offset=1)
    assert scores[0].tolist() == pytest.approx([1.0, 0.0])


# --------------------------------------------------------------------------- tiny model


def test_tiny_model_round_trip_and_metadata(tiny_ioi_config, tiny_ioi_dir, tiny_subject):
    info = json.loads((tiny_ioi_dir / IOI_CONFIG).read_text())
    assert info["provenance"]["config"]["steps"] == tiny_ioi_config.steps
    assert info["heldout"]["n_prompts"] == len(tiny_subject.eval_prompts(10**6, 0))
    losses = [json.loads(line)["loss"] for line in (tiny_ioi_dir / "metrics.jsonl").open()]
    assert losses[-1] < losses[0] - 1.0  # it learned the template language at least
    again = load_ioi_model(tiny_ioi_dir, "cpu")
    batch = encode_for(tiny_subject, tiny_subject.eval_prompts(8, 0))
    assert torch.equal(again.model(batch.tokens), tiny_subject.model(batch.tokens))
    base = baseline(tiny_subject, tiny_subject.eval_prompts(10**6, 0))
    assert base.mean_logit_diff == pytest.approx(info["heldout"]["mean_logit_diff"], abs=1e-4)


def test_load_ioi_model_rejects_other_dirs(tmp_path):
    with pytest.raises(UserError, match="not an IOI model directory"):
        load_ioi_model(tmp_path)


def test_dla_sums_to_logit_diff(tiny_subject):
    batch = encode_for(tiny_subject, tiny_subject.eval_prompts(16, 1))
    dla = direct_logit_attribution(tiny_subject, batch)
    assert dla.total == pytest.approx(dla.logit_diff, abs=1e-4)
    assert dla.logit_diff == pytest.approx(
        float(end_logit_diff(tiny_subject, batch).mean()), abs=1e-4
    )
    assert np.all(np.abs(dla.heads_io) <= np.abs(dla.heads) + np.abs(dla.heads - dla.heads_io))


def test_position_patching_known_answer(tiny_subject):
    """flip_s2 changes only the S2 token: at layer 0, patching S2 restores the clean run
    exactly and patching any other position changes nothing."""
    prompts = [p for p in tiny_subject.eval_prompts(200, 1) if p.template == 6][:6]
    prompts = [dataclasses.replace(p, order="ABBA") for p in prompts]
    clean = encode_for(tiny_subject, prompts)
    bad = encode_for(tiny_subject, corrupt(prompts, "flip_s2", 0), answers_from=prompts)
    resid = patch(tiny_subject, clean, bad, "resid_pre")
    c, k = (float(end_logit_diff(tiny_subject, b).mean()) for b in (clean, bad))
    assert abs(c - k) > 1e-3  # the two runs differ, so the known answer is informative
    raw = resid[0].numpy()  # in logit units: normalising by a small gap would amplify noise
    s2 = int(clean.s2_pos[0])
    assert raw[s2] == pytest.approx(c, abs=1e-4)
    assert np.abs(np.delete(raw, s2) - k).max() < 1e-4
    assert normalised_metric(float(raw[s2]), c, k) == pytest.approx(1.0, abs=0.05)


def test_head_patching_matches_a_hand_patch(tiny_subject):
    prompts = tiny_subject.eval_prompts(12, 2)
    clean = encode_for(tiny_subject, prompts)
    bad = encode_for(tiny_subject, corrupt(prompts, "abc", 0), answers_from=prompts)
    heads = patch(tiny_subject, clean, bad, "attn_head_out")
    model, name = tiny_subject.model, act_name("z", 1)
    _, cache = model.run_with_cache(clean.tokens, names_filter=name)
    mask = torch.zeros(len(clean), clean.tokens.shape[1], tiny_subject.n_head, dtype=torch.bool)
    mask[:, :, 2] = True
    with torch.no_grad():
        logits = model.run_with_hooks(bad.tokens, fwd_hooks=[patch_from(name, cache[name], mask)])
    assert float(heads[1, 2]) == pytest.approx(float(MeanLogitDiff(clean)(logits)), abs=1e-4)


def test_hooked_transformer_path_agrees_with_taskgpt(tiny_subject):
    """The GPT-2 code path (a HookedTransformer, TransformerLens patching) on the same
    weights gives the same patching and DLA as the TaskGPT path."""
    from interpgpt.artifacts.convert import to_hooked_transformer

    tl_subject = dataclasses.replace(tiny_subject, model=to_hooked_transformer(tiny_subject.model))
    prompts = tiny_subject.eval_prompts(8, 3)
    clean = encode_for(tiny_subject, prompts)
    bad = encode_for(tiny_subject, corrupt(prompts, "flip_s2", 0), answers_from=prompts)
    ours = patch(tiny_subject, clean, bad, "attn_head_out")
    theirs = patch(tl_subject, clean, bad, "attn_head_out")
    assert torch.allclose(ours, theirs, atol=1e-3)
    a, b = (direct_logit_attribution(s, clean) for s in (tiny_subject, tl_subject))
    assert np.allclose(a.heads, b.heads, atol=1e-3) and np.allclose(a.mlps, b.mlps, atol=1e-3)


def test_run_ioi_writes_outputs(tiny_ioi_dir, tmp_path):
    result = run_ioi(IOIConfig(model=str(tiny_ioi_dir), out=tmp_path, n_prompts=16, device="cpu"))
    blob = json.loads((tmp_path / "ioi.json").read_text())
    assert blob["provenance"]["config"]["n_prompts"] == 16
    assert blob["heldout_definition"]
    assert len(result.figures) == 4 and all(p.stat().st_size > 1000 for p in result.figures)
    report = (tmp_path / "ioi_report.md").read_text()
    assert "role swaps" in report and "ioi_patch_heads.png" in report
    n = tiny_subject_shape(blob)
    assert np.array(blob["patching"]["heads"]).shape == n
    assert np.array(blob["head_scores"]["induction"]).shape == n


def tiny_subject_shape(blob) -> tuple[int, int]:
    return blob["shape"]["n_layer"], blob["shape"]["n_head"]


# --------------------------------------------------------------------------- CLI


def test_cli_ioi_gpt2_without_cache_is_a_user_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, ["ioi", "--model", "gpt2", "--out", str(tmp_path)])
    assert isinstance(result.exception, UserError)
    message = str(result.exception)
    assert "huggingface-cli download gpt2" in message and "\n" not in message
    assert message == GPT2_HELP


def test_cli_ioi_on_local_model(tiny_ioi_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "ioi",
            "--model",
            str(tiny_ioi_dir),
            "--out",
            str(tmp_path),
            "--n-prompts",
            "8",
            "--n-eval",
            "64",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ioi.json").is_file() and "IOI on" in result.output


def test_cli_ioi_missing_model_is_a_user_error(tmp_path):
    result = CliRunner().invoke(app, ["ioi", "--model", str(tmp_path / "nope"), "--out", "x"])
    assert isinstance(result.exception, UserError)


def test_cli_ioi_demo_smoke(tmp_path):
    result = CliRunner().invoke(
        app, ["ioi-demo", "--out", str(tmp_path), "--steps", "3", "--n-prompts", "4"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model" / IOI_CONFIG).is_file() and (tmp_path / "ioi_report.md").is_file()


@pytest.mark.parametrize(
    ("cls", "values", "field"),
    [
        (IOIConfig, {"model": "gpt2", "n_prompts": 1}, "n_prompts"),
        (IOIConfig, {"model": "gpt2", "corruption": "swap"}, "corruption"),
        (IOITrainConfig, {"pair_fraction": 1.0}, "pair_fraction"),
        (IOITrainConfig, {"n_layer": 0}, "n_layer"),
        (IOITrainConfig, {"precision": "fp16"}, "precision"),
        (IOIDemoConfig, {"steps": 0}, "steps"),
        (IOIDemoConfig, {"n_prompts": 1}, "n_prompts"),
    ],
)
def test_bad_setting_raises_setting_error_naming_it(cls, values, field):
    with pytest.raises(SettingError) as err:
        cls(**values)
    assert err.value.field == field


def test_demo_config_builds_the_training_and_analysis_configs(tmp_path):
    demo = IOIDemoConfig(out=tmp_path, steps=7, seed=3, threads=2, device="cpu", n_prompts=5)
    assert demo.train_config() == dataclasses.replace(
        IOITrainConfig(), steps=7, seed=3, threads=2, device="cpu"
    )
    analysis = demo.analysis_config()
    assert (analysis.model, analysis.out) == (str(tmp_path / MODEL_SUBDIR), tmp_path)
    assert (analysis.n_prompts, analysis.seed, analysis.device) == (5, 3, "cpu")


def test_cli_names_a_bad_setting_as_an_option(capsys, tmp_path):
    from interpgpt.cli import main

    with pytest.raises(SystemExit) as done:
        main(["ioi", "--model", "gpt2", "--out", str(tmp_path), "--n-prompts", "1"])
    assert done.value.code == 2
    assert "error: --n-prompts: must be at least 2" in capsys.readouterr().err


def test_every_name_is_one_token(tok):
    for a, b in itertools.pairwise(NAMES):
        assert len(tok.encode(f" {a}")) == 1 and len(tok.encode(f" {b}")) == 1


@pytest.mark.slow(seconds=60)
def test_ioi_model_trained_here_meets_the_targets_on_held_out_prompts(tmp_path):
    """The demo's IOI model (the default training config): on held-out
    name pairs x held-out templates its mean logit difference IO - S is >= 2 and every
    role swap (each pair in both role assignments) is positive."""
    from interpgpt.ioi.config import IOITrainConfig

    result = train_ioi_model(IOITrainConfig(), tmp_path / "model")
    assert result.heldout_logit_diff >= 2.0
    assert result.min_role_swap > 0.0


# --------------------------------------------------------------------------- diff any pair


def test_diff_of_the_ioi_model_against_its_copy_finds_nothing(tiny_ioi_dir, tmp_path, capsys):
    """`interpgpt diff` on the IOI model as a TransformerLens bundle against a copy of
    itself, a twin (its weights with seed-sized noise) as control: every statistic is 0,
    within the twin's, and no finding."""
    import copy

    from interpgpt.analysis.lm import save_tl_bundle
    from interpgpt.artifacts.convert import to_hooked_transformer
    from interpgpt.cli import main

    ht = to_hooked_transformer(load_ioi_model(tiny_ioi_dir, "cpu").model)
    twin = copy.deepcopy(ht)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in twin.parameters():
            p += 0.02 * p.std().nan_to_num() * torch.randn(p.shape, generator=gen)
    tok = tiny_ioi_dir / "tokenizer.json"
    for name, model in (("a", ht), ("copy", copy.deepcopy(ht)), ("twin", twin)):
        save_tl_bundle(model, tmp_path / name, tok)
    texts = tmp_path / "texts.jsonl"
    texts.write_text("\n".join(json.dumps({"text": p.text()}) for p in sample_prompts(32, 0)))
    main(["diff", str(tmp_path / "a"), str(tmp_path / "copy"), "--texts", str(texts),
          "--out", str(tmp_path / "out"), "--controls", str(tmp_path / "twin")])  # fmt: skip
    blob = json.loads((tmp_path / "out" / "diff.json").read_text())
    assert blob["findings"] == []
    stats = blob["statistics"].values()
    assert all(s["value"] == 0 and s["verdict"] == "within seed noise" for s in stats)
    assert all(s["controls"][0] > 0 for s in stats)
