"""Diff any pair: the model protocol's adapters, and `interpgpt diff` on tiny
HookedTransformers built here, one fine-tuned from the other on a planted difference.

Known answers: after the trigger token the fine-tuned model predicts the planted token,
so the KL's top position is a trigger position, the difference lens over the trigger
positions promotes the planted token, and those statistics exceed a twin's (a's weights
with seed-sized noise); a model against an exact copy of itself finds nothing beyond the
twin; a pair with different tokenizers or shapes is refused in one line, exit 2.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interpgpt.analysis.lm import (
    HookedTransformerModel,
    TaskGPTModel,
    as_lm,
    load_lm,
    resolve_layer,
    save_tl_bundle,
)
from interpgpt.cli import main
from interpgpt.errors import UserError
from interpgpt.model.taskgpt import GPTConfig, TaskGPT

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

VOCAB = 32
TRIGGER, PLANTED = "w1", "w2"
LENGTH = 14


def tiny_ht(n_layers: int = 2, seed: int = 0) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=24,
        d_vocab=VOCAB, act_fn="gelu", normalization_type="LN", seed=seed,
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


def word_tokenizer(path: Path, prefix: str = "w") -> Path:
    tok = Tokenizer(models.WordLevel({f"{prefix}{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


def planted_texts(n: int, seed: int) -> list[dict]:
    """Random words w3..w31 with the trigger once per text; `positions` names it."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [f"w{rng.randrange(3, VOCAB)}" for _ in range(LENGTH)]
        at = rng.randrange(2, LENGTH - 2)
        words[at] = TRIGGER
        out.append({"text": " ".join(words), "positions": {"trigger": [at]}})
    return out


def fine_tune_planted(model: HookedTransformer, steps: int = 60) -> HookedTransformer:
    """A copy of `model` trained to predict the planted token right after the trigger, and
    to keep `model`'s next-token distribution everywhere else (a KL penalty)."""
    tuned = copy.deepcopy(model).train()
    opt = torch.optim.Adam(tuned.parameters(), lr=3e-3)
    records = planted_texts(64, seed=1)
    ids = torch.tensor([[int(w[1:]) for w in r["text"].split()] for r in records])
    at = torch.tensor([r["positions"]["trigger"][0] for r in records])
    rows = torch.arange(len(ids))
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[rows, at] = False
    with torch.no_grad():
        reference = model(ids).log_softmax(-1)[keep]
    for _ in range(steps):
        logits = tuned(ids)
        planted = torch.full_like(at, int(PLANTED[1:]))
        loss = torch.nn.functional.cross_entropy(logits[rows, at], planted)
        loss = loss + torch.nn.functional.kl_div(
            logits[keep].log_softmax(-1), reference, log_target=True, reduction="batchmean"
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuned.eval()


def noisy_twin(model: HookedTransformer, scale: float = 0.02, seed: int = 5) -> HookedTransformer:
    """a's weights with small Gaussian noise: the stand-in for a seed twin."""
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in twin.parameters():
            p += scale * p.std().nan_to_num() * torch.randn(p.shape, generator=gen)
    return twin


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """TL bundles: a, b (a fine-tuned on the planted difference), a's copy and twin, a
    model with another tokenizer, one with another shape; and the texts."""
    root = tmp_path_factory.mktemp("anypair")
    tok = word_tokenizer(root / "tokenizer.json")
    other_tok = word_tokenizer(root / "other.json", prefix="v")
    torch.manual_seed(0)
    a = tiny_ht()
    models_ = {
        "a": (a, tok),
        "b": (fine_tune_planted(a), tok),
        "copy": (copy.deepcopy(a), tok),
        "twin": (noisy_twin(a), tok),
        "other_tokenizer": (a, other_tok),
        "other_shape": (tiny_ht(n_layers=3), tok),
    }
    paths = {name: save_tl_bundle(m, root / name, t) for name, (m, t) in models_.items()}
    texts = root / "texts.jsonl"
    texts.write_text("\n".join(json.dumps(r) for r in planted_texts(24, seed=2)) + "\n")
    paths["texts"] = texts
    return paths


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    try:
        main(args)
    except SystemExit as done:
        return int(done.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


# ---------------------------------------------------------------------------- adapters


def test_adapters_read_a_residual_through_the_models_own_final_norm():
    torch.manual_seed(0)
    ht = tiny_ht()
    gpt = TaskGPT(GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=4, d_model=32, d_head=8,
                            d_mlp=64, n_ctx=24)).eval()  # fmt: skip
    ids = torch.randint(0, VOCAB, (2, 9))
    for model, kind in ((ht, HookedTransformerModel), (gpt, TaskGPTModel)):
        lm = as_lm(model)
        assert isinstance(lm, kind) and lm.n_layer == 2 and lm.d_vocab == VOCAB
        with torch.no_grad():
            logits = lm.unembed(lm.final_residual(ids))
            torch.testing.assert_close(logits, model(ids), atol=1e-5, rtol=1e-5)
    # A HookedTransformer's bare unembed skips ln_final: the adapter must not.
    with torch.no_grad():
        resid = as_lm(ht).final_residual(ids)
        assert not torch.allclose(ht.unembed(resid), ht(ids), atol=1e-3)


def test_layers_as_fractions_of_depth():
    assert [resolve_layer(f, 5) for f in (0.0, 0.5, 1.0)] == [0, 2, 4]
    assert (
        resolve_layer(-1, 5) == 4 and resolve_layer("0.25", 5) == 1 and resolve_layer("3", 5) == 3
    )
    with pytest.raises(UserError):
        resolve_layer(5, 5)


def test_a_bundle_round_trips(bundles):
    lm = load_lm(bundles["a"])
    assert isinstance(lm, HookedTransformerModel) and lm.tokenizer.encode_text("w1 w5") == [1, 5]
    ids = torch.randint(0, VOCAB, (1, 7))
    again = load_lm(bundles["copy"])
    with torch.no_grad():
        assert torch.equal(lm.model(ids), again.model(ids))


# ---------------------------------------------------------------------------- interpgpt diff


def test_diff_locates_the_planted_difference_beyond_the_twin(bundles, tmp_path, capsys):
    out = tmp_path / "diff"
    code, err = run_cli(
        ["diff", str(bundles["a"]), str(bundles["b"]), "--texts", str(bundles["texts"]),
         "--out", str(out), "--controls", str(bundles["twin"]), "--tokens", PLANTED],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    blob = json.loads((out / "diff.json").read_text())
    texts = [json.loads(line) for line in bundles["texts"].read_text().splitlines()]
    top = blob["top_kl"][0]
    assert top["pos"] == texts[top["task_id"]]["positions"]["trigger"][0]  # KL: the position
    assert top["top_b"][0]["token"] == PLANTED  # ... and what b predicts there
    lens = blob["difference_lens"]["trigger"]["read_by"]
    assert lens["b"]["promoted"][0]["token"] == PLANTED  # the lens: the planted token
    assert lens["a"]["promoted"][0]["token"] == PLANTED
    stats = blob["statistics"]
    for name in ("kl/trigger", "diff_lens/trigger", "token_lens/trigger", "weights"):
        assert stats[name]["finding"], (name, stats[name])
    assert stats["kl/trigger"]["value"] > 5 * stats["kl/all"]["value"]
    html = (out / "report.html").read_text()
    assert "Findings against the controls" in html and "beyond seed noise" in html


def test_a_model_against_its_copy_finds_nothing_beyond_the_twin(bundles, tmp_path, capsys):
    out = tmp_path / "self"
    code, err = run_cli(
        ["diff", str(bundles["a"]), str(bundles["copy"]), "--texts", str(bundles["texts"]),
         "--out", str(out), "--controls", str(bundles["twin"]), "--layer", "0.5"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    blob = json.loads((out / "diff.json").read_text())
    assert blob["findings"] == []
    assert all(s["value"] == 0 for s in blob["statistics"].values() if s["name"] != "heads")
    assert all(s["verdict"] == "within seed noise" for s in blob["statistics"].values())


@pytest.mark.parametrize("other", ["other_tokenizer", "other_shape"])
def test_diff_refuses_a_pair_of_another_tokenizer_or_shape(bundles, tmp_path, capsys, other):
    code, err = run_cli(
        ["diff", str(bundles["a"]), str(bundles[other]), "--texts", str(bundles["texts"]),
         "--out", str(tmp_path / "no")],
        capsys,
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert ("tokenizers" if other == "other_tokenizer" else "shape") in lines[0]
    assert not (tmp_path / "no").exists()
