"""Head-swap inventory: notebook equivalence, known-answer permutation, statistics, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from seed_notebook import NBINS, PAIRED, SeedNotebook, cache_attn, profile
from tokenizers import Tokenizer
from typer.testing import CliRunner

from interpgpt.analysis.controls import benjamini_hochberg
from interpgpt.analysis.headswap.config import HeadswapConfig
from interpgpt.analysis.headswap.inventory import (
    attention_profile_sums,
    build_inventory,
    cosine_matrix,
    head_alignment,
    permutation_null,
    query_bins,
    run_headswap,
)
from interpgpt.artifacts.convert import to_hooked_transformer
from interpgpt.cli import app
from interpgpt.corpus.evalset import encode_eval_set, load_eval_set
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.errors import UserError
from interpgpt.io import write_json
from interpgpt.model.config import preset
from interpgpt.model.fast import onednn
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.settings import SettingError

STANDARD = [pair["standard"] for pair in PAIRED]  # the notebook's prompts: standard variants

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tiny_corpus, tiny_tokenizer_path) -> tuple[Path, Path]:
    """The shared session corpus and tokenizer (tests/conftest.py)."""
    return tiny_corpus, tiny_tokenizer_path


def distinct_model(vocab_size: int, seed: int) -> TaskGPT:
    """Random init with a large std: attention far from uniform, so heads differ."""
    torch.manual_seed(seed)
    return TaskGPT(preset("tiny", vocab_size=vocab_size, n_ctx=256, init_std=0.3)).eval()


def save_run_dir(model: TaskGPT, tokenizer_path: Path, out: Path, variant: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    write_json(out / "config.json", {"model": model.cfg.to_dict(), "variant": variant})
    (out / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    return out


def permute_heads(model: TaskGPT, perms: list[list[int]]) -> TaskGPT:
    """A copy whose head i of layer l is the original's head perms[l][i]: Q, K, V rows of
    qkv_proj and the matching o_proj columns move together, so the function is unchanged."""
    cfg = model.cfg
    copy = TaskGPT(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    inner = cfg.n_head * cfg.d_head
    for layer, perm in enumerate(perms):
        head_rows = torch.cat([torch.arange(h * cfg.d_head, (h + 1) * cfg.d_head) for h in perm])
        qkv = state[f"blocks.{layer}.attn.qkv_proj.weight"]
        rows = torch.cat([head_rows + part * inner for part in range(3)])
        state[f"blocks.{layer}.attn.qkv_proj.weight"] = qkv[rows]
        o_proj = state[f"blocks.{layer}.attn.o_proj.weight"]
        state[f"blocks.{layer}.attn.o_proj.weight"] = o_proj[:, head_rows]
    copy.load_state_dict(state)
    return copy.eval()


# ------------------------------------------------------------------ the notebook


def notebook_profiles(tl_model, tok: Tokenizer) -> tuple[np.ndarray, list[list[int]]]:
    """The seed notebook's profiles of every head on its 12 standard prompts, with its
    encode_example / token_roles / cache_attn / profile, run on a HookedTransformer."""
    nb = SeedNotebook(tok)
    records = []
    for ex in STANDARD:
        ids = nb.encode_example(ex)
        records.append(
            {"ids": ids, "roles": nb.token_roles(ids), "std_attn": cache_attn(tl_model, ids)}
        )
    n_layer, n_head = tl_model.cfg.n_layers, tl_model.cfg.n_heads
    out = np.array([[profile(records, i, h, "std") for h in range(n_head)] for i in range(n_layer)])
    return out, [r["ids"] for r in records]


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("path", ["taskgpt", "hooked_transformer"])
def test_profiles_equal_notebook(corpus_and_tokenizer, path) -> None:
    """Both ways of computing the mass equal the notebook: a TaskGPT's fused special-mass
    forward (on oneDNN), and pattern hooks on a HookedTransformer."""
    _, tok_path = corpus_and_tokenizer
    tokenizer = TaskTokenizer.from_file(tok_path)
    model = distinct_model(tokenizer.vocab_size, seed=0)
    tl_model = to_hooked_transformer(model)
    expected, notebook_ids = notebook_profiles(tl_model, Tokenizer.from_file(str(tok_path)))
    data = encode_eval_set(tokenizer, STANDARD)
    for row, ids in enumerate(notebook_ids):
        assert data.ids[row, : data.lengths[row]].tolist() == ids
    # batch_size 5: batches of unequal lengths, so right padding is exercised; and each
    # batch has enough tokens that the TaskGPT's linears run on oneDNN.
    with torch.no_grad():
        assert onednn.usable(model.embed(data.ids[:5]), model.blocks[0].attn.qkv_proj.weight)
    sums = attention_profile_sums(
        model if path == "taskgpt" else tl_model,
        data.ids,
        data.lengths,
        data.special_mask(),
        n_bins=NBINS,
        batch_size=5,
    )
    got = sums.profiles().numpy()
    assert got.shape == expected.shape == (2, 4, NBINS)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert np.abs(expected).max() > 0.05  # the comparison is not between near-zero arrays


def test_query_bins_match_notebook_rule() -> None:
    lengths = torch.tensor([7, 23, 40])
    onehot = query_bins(lengths, 40, NBINS)
    for row, length in enumerate(lengths.tolist()):
        assert onehot[row].sum() == length - 1  # every query but q = 0, no padding
        for q in range(1, length):
            assert onehot[row, q].argmax() == min(int(q / length * NBINS), NBINS - 1)
        assert onehot[row, 0].sum() == 0 and onehot[row, length:].sum() == 0


def test_permuted_copy_is_matched_back(corpus_and_tokenizer) -> None:
    corpus, tok_path = corpus_and_tokenizer
    tokenizer = TaskTokenizer.from_file(tok_path)
    model = distinct_model(tokenizer.vocab_size, seed=1)
    perms = [[2, 0, 3, 1], [3, 2, 1, 0]]
    permuted = permute_heads(model, perms)
    data = load_eval_set(corpus, tokenizer, "standard", max_len=model.cfg.n_ctx)
    with torch.no_grad():
        torch.testing.assert_close(permuted(data.ids), model(data.ids), atol=1e-5, rtol=1e-5)
    special = data.special_mask()
    sums = {
        name: attention_profile_sums(m, data.ids, data.lengths, special, batch_size=8)
        for name, m in (("standard", model), ("adhd", permuted))
    }
    config = HeadswapConfig(
        Path(), Path(), Path(), Path(), null_samples=100, bootstrap_samples=50, move_margin=0.001
    )
    inv = build_inventory(sums, config)
    # The test can fail: different heads of one layer must have clearly different profiles.
    for layer in range(2):
        own = cosine_matrix(inv.profiles["a"][layer], inv.profiles["a"][layer])
        assert own[~np.eye(4, dtype=bool)].max() < 0.995
    inverse = [np.argsort(p).tolist() for p in perms]
    for match in inv.within_layer:
        layer, head = match.a
        assert match.b == (layer, inverse[layer][head])
        assert match.cosine == pytest.approx(1.0, abs=1e-6)
        assert match.stability == 1.0
        assert match.moved == (inverse[layer][head] != head)
    assert [m.b for m in inv.global_matching] == [m.b for m in inv.within_layer]
    for entry in inv.best_partners["a"]:
        assert entry["cosine"] == pytest.approx(1.0, abs=1e-6)
    for stats in inv.layers:
        assert stats.matched_mean == pytest.approx(1.0, abs=1e-6)
        assert stats.gap > 0.005 and stats.gap_ci[0] > 0
        assert stats.p_matched == pytest.approx(1 / 24)  # exhaustive: only the true permutation
        # every layer has p = 1/24: Benjamini-Hochberg leaves equal p-values as they are
        assert stats.q_matched == pytest.approx(1 / 24)
    q = benjamini_hochberg([s.p_same_index for s in inv.layers])
    assert [s.q_same_index for s in inv.layers] == pytest.approx(q.tolist())


def test_permutation_null_and_cosine_invariants() -> None:
    rng = np.random.default_rng(0)
    block = rng.random((4, 4))
    null, exact = permutation_null(block, 1000, rng)
    assert exact and len(null) == math.factorial(4)
    assert null.mean() == pytest.approx(block.mean())  # each cell is in 1/4 of assignments
    sampled, exact = permutation_null(rng.random((9, 9)), 500, rng)
    assert not exact and len(sampled) == 500
    a = rng.random((3, 5))
    cos = cosine_matrix(a, np.vstack([a * 2.5, np.zeros(5)]))
    np.testing.assert_allclose(np.diag(cos[:, :3]), 1.0)
    assert (cos[:, 3] == 0).all()  # a zero profile has cosine 0, as in the notebook


def test_run_headswap_and_cli(corpus_and_tokenizer, tiny_run_dirs, tmp_path: Path) -> None:
    corpus, _ = corpus_and_tokenizer
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    out = tmp_path / "out"
    args = ["headswap", str(std), str(adhd), "--corpus", str(corpus), "--out", str(out)]
    options = ["--bins", "10", "--device", "cpu", "--limit", "9", "--bootstrap-samples", "200"]
    result = CliRunner().invoke(app, [*args, *options])
    assert result.exit_code == 0, result.output
    assert "head-swap inventory" in result.output
    blob = json.loads((out / "headswap.json").read_text())
    assert 1 <= blob["n_tasks"] <= 9
    assert np.array(blob["cosine_matrix"]).shape == (8, 8)
    assert np.array(blob["profiles"]["adhd"]).shape == (2, 4, 10)
    assert blob["provenance"]["config"]["bins"] == 10
    assert len(blob["matching"]["within_layer"]) == len(blob["matching"]["global"]) == 8
    for name in ("migration_map.md", "swap_heatmap.png", "profile_pair.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "migration_map.md").read_text().startswith("# Head migration map")
    # Same config through the Python entry point gives the same numbers.
    config = HeadswapConfig(
        std, adhd, corpus, tmp_path / "py", bins=10, limit=9, bootstrap_samples=200, device="cpu"
    )
    direct = run_headswap(config)
    np.testing.assert_allclose(direct.inventory.cosine.reshape(8, 8), blob["cosine_matrix"])
    # Every head signature's matching, and the planted permutation each one undoes.
    signatures = blob["signatures"]
    assert signatures["planted"] == dict.fromkeys(signatures["signatures"], 1.0)
    assert np.array(signatures["within_layer"]["cka"]).shape == (2, 4)
    outputs = [str(out / "headswap.json")]
    assert head_alignment(outputs) == {
        f"L{m['adhd'][0]}H{m['adhd'][1]}": f"L{m['std'][0]}H{m['std'][1]}"
        for m in blob["matching"]["within_layer"]
    }
    by_cka = head_alignment(outputs, "cka")
    assert (
        sorted(by_cka) == sorted(by_cka.values()) == [f"L{i}H{h}" for i in (0, 1) for h in range(4)]
    )


def test_bad_inputs(corpus_and_tokenizer, tmp_path: Path) -> None:
    corpus, tok_path = corpus_and_tokenizer
    with pytest.raises(SettingError, match="bins: must be at least 1") as bins:
        HeadswapConfig(bins=0)
    assert bins.value.field == "bins"
    with pytest.raises(SettingError, match="sequences") as sequences:
        HeadswapConfig(sequences="mixed")  # type: ignore[arg-type]
    assert sequences.value.field == "sequences"
    vocab = TaskTokenizer.from_file(tok_path).vocab_size
    std = save_run_dir(distinct_model(vocab, 2), tok_path, tmp_path / "std", "standard")
    args = ["headswap", str(std), str(tmp_path / "missing"), "--corpus", str(corpus)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, UserError)
    assert "missing" in str(result.exception)
