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
    encode_texts,
    load_lm,
    resolve_layer,
    save_tl_bundle,
)
from interpgpt.cli import main
from interpgpt.diff.saes import SAEDiffSettings, train_text_sae
from interpgpt.errors import UserError
from interpgpt.model.taskgpt import GPTConfig, TaskGPT
from interpgpt.sae.topk import TopKSAE, TopKSAEConfig

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


# ---------------------------------------------------------------------- dictionaries and weights
#
# The dictionaries' known answer is a planted neuron rather than the fine-tune: a crosscoder
# or SAE finds a component that only b writes; the fine-tune moves b's residual stream
# everywhere (|δ| ≈ |resid| at every position), and no latent is then b's alone.

NEURON = 0


def with_neuron(model: HookedTransformer, out: float = 0.0) -> HookedTransformer:
    """`model` whose block-0 MLP neuron NEURON detects the trigger token (its input reads
    the direction separating trigger positions from the rest of the training texts) and
    writes `out` x the planted token's unembedding direction; `out` 0: a dead neuron."""
    model = copy.deepcopy(model)
    records = planted_texts(64, seed=1)
    ids = torch.tensor([[int(w[1:]) for w in r["text"].split()] for r in records])
    trigger = ids == int(TRIGGER[1:])
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=["blocks.0.ln2.hook_normalized"])
        x = cache["blocks.0.ln2.hook_normalized"]
        u = x[trigger].mean(0) - x[~trigger].mean(0)
        u /= u.norm()
        cut = ((x[trigger] @ u).min() + (x[~trigger] @ u).max()) / 2
        v = model.W_U[:, int(PLANTED[1:])] - model.W_U[:, int(PLANTED[1:])].mean()
        mlp = model.blocks[0].mlp
        mlp.W_in[:, NEURON] = 4 * u
        mlp.b_in[NEURON] = -4 * cut
        mlp.W_out[NEURON] = out * v / v.norm()
    return model.eval()


@pytest.fixture(scope="module")
def neuron_pair(tmp_path_factory, bundles) -> dict[str, Path]:
    """TL bundles: a (the planted neuron dead), b (alive), a's copy and twin, and SAEs."""
    root = tmp_path_factory.mktemp("neuron")
    tok = bundles["a"] / "tokenizer.json"
    torch.manual_seed(0)
    a = with_neuron(tiny_ht())
    models_ = {
        "a": a,
        "b": with_neuron(a, out=4.0),
        "copy": copy.deepcopy(a),
        "twin": noisy_twin(a),
    }
    return {name: save_tl_bundle(m, root / name, tok) for name, m in models_.items()}


DICTIONARIES = ["--sae-train", "--crosscoder", "--dictionary-tokens", "8000", "--layer", "0"]


def test_dictionaries_and_weight_views_find_the_planted_neuron(
    neuron_pair, bundles, tmp_path, capsys
):
    out = tmp_path / "neuron"
    p = neuron_pair
    code, err = run_cli(
        ["diff", str(p["a"]), str(p["b"]), "--texts", str(bundles["texts"]), "--out", str(out),
         "--controls", str(p["twin"]), "--init", str(p["a"]), *DICTIONARIES],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    blob = json.loads((out / "diff.json").read_text())
    stats = blob["statistics"]
    # The SAE of b: features firing at b's trigger positions and never at a's, beyond the
    # twin's count; the first of them promotes the planted token.
    assert stats["sae/b_only/trigger"]["finding"], stats["sae/b_only/trigger"]
    top = blob["sae_features"]["top"]["b"]["trigger"][0]
    assert top["rate"] > 0.5 and top["other_rate"] == 0 and top["promoted"][0] == PLANTED
    # The crosscoder: the latent leaning most to b leans further than any of the twin's,
    # carries nothing of a (Latent Scaling), fires at the trigger and promotes the planted
    # token through b. (Whether it passes the exclusive margin varies with the few
    # hundred steps a CPU test trains: see CrosscoderSettings.exclusive_margin.)
    assert stats["crosscoder/b_lean"]["finding"], stats["crosscoder/b_lean"]
    latent = blob["crosscoder"]["top"]["b"][0]
    assert latent["rel_norm"] > 0.75 and abs(latent["nu_error"]) < 0.2
    assert latent["rates"]["trigger"] > 5 * latent["rates"]["all"]
    assert PLANTED in latent["promoted"][:2]
    # The weight views: b moved from the init (a) and a did not; no head moved.
    views = blob["weight_views"]
    assert views["moved"] == [] and views["change_from_init"]["a"]["total"] == 0
    assert stats["weights/change"]["finding"]
    html = (out / "report.html").read_text()
    assert "SAE feature diff" in html and "Crosscoder" in html and "Weight views" in html


def test_dictionaries_find_nothing_between_a_model_and_its_copy(
    neuron_pair, bundles, tmp_path, capsys
):
    out = tmp_path / "copy"
    p = neuron_pair
    code, err = run_cli(
        ["diff", str(p["a"]), str(p["copy"]), "--texts", str(bundles["texts"]), "--out",
         str(out), "--controls", str(p["twin"]), "--init", str(p["a"]), *DICTIONARIES],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    blob = json.loads((out / "diff.json").read_text())
    assert blob["findings"] == []
    for name, stat in blob["statistics"].items():
        if name.startswith(("sae/", "crosscoder/", "weights/")) and "_lean" not in name:
            assert stat["value"] == 0, (name, stat)
    # On identical activations no crosscoder latent leans to either model.
    assert blob["statistics"]["crosscoder/b_lean"]["value"] < 0.55


def test_given_saes_are_checked_against_the_models(neuron_pair, bundles, tmp_path, capsys):
    lms = {name: load_lm(neuron_pair[name], label=name) for name in ("a", "b", "twin")}
    records = [json.loads(line) for line in bundles["texts"].read_text().splitlines()]
    texts = encode_texts(lms["a"].tokenizer, records)
    settings = SAEDiffSettings(tokens=4000)
    dirs = {n: train_text_sae(m, texts, 0, settings).save(tmp_path / f"sae_{n}")
            for n, m in lms.items()}  # fmt: skip
    out = tmp_path / "given"
    code, err = run_cli(
        ["diff", str(neuron_pair["a"]), str(neuron_pair["b"]), "--texts", str(bundles["texts"]),
         "--out", str(out), "--sae-a", str(dirs["a"]), "--sae-b", str(dirs["b"])],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    blob = json.loads((out / "diff.json").read_text())
    assert blob["sae_features"]["hook_name"] == "blocks.0.hook_resid_post"
    assert blob["statistics"]["sae/b_only/trigger"]["value"] > 0
    # b's SAE given with a control but not the control's: refused in one line.
    code, err = run_cli(
        ["diff", str(neuron_pair["a"]), str(neuron_pair["b"]), "--texts",
         str(bundles["texts"]), "--out", str(tmp_path / "no"), "--sae-b", str(dirs["b"]),
         "--controls", str(neuron_pair["twin"])],
        capsys,
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "control" in err
    # An SAE whose hook the models have but whose width is not theirs: refused in one line.
    wide = tmp_path / "wide"
    TopKSAE(TopKSAEConfig(d_in=16, d_sae=32, k=4, layer=0)).save(wide)
    code, err = run_cli(
        ["diff", str(neuron_pair["a"]), str(neuron_pair["b"]), "--texts",
         str(bundles["texts"]), "--out", str(tmp_path / "no"), "--sae-b", str(wide)],
        capsys,
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "16-wide" in err
    assert not (tmp_path / "no").exists()


def test_weight_views_refuse_an_unknown_init(neuron_pair, bundles, tmp_path, capsys):
    code, err = run_cli(
        ["diff", str(neuron_pair["a"]), str(neuron_pair["b"]), "--texts",
         str(bundles["texts"]), "--out", str(tmp_path / "no"), "--weight-views"],
        capsys,
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--init" in lines[0]
