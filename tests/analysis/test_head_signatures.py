"""Head signatures: the fast similarities equal their definitions, the known answers (a
model against itself, a head-permuted copy) on a trained tiny model, and the adoption rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpgpt.analysis.headswap.signatures import (
    BASIS_FREE,
    SIGNATURES,
    adopt,
    circuit_similarity,
    cka_similarity,
    compare_signatures,
    output_similarity,
    planted_permutation,
    z_moments,
)
from interpgpt.analysis.lm import as_lm
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT

pytestmark = pytest.mark.usefixtures("one_thread")


def random_model(seed: int) -> TaskGPT:
    torch.manual_seed(seed)
    model = TaskGPT(preset("tiny", vocab_size=40, n_ctx=32, init_std=0.3)).eval()
    with torch.no_grad():  # gains away from 1, so folding ln1 into the circuits matters
        for block in model.blocks:
            block.ln1.weight.uniform_(0.5, 1.5)
    return model


def test_fast_signatures_equal_their_definitions() -> None:
    """OV/QK cosines from the factors equal the cosines of the formed d_model x d_model
    circuits; output correlation and CKA from the moments equal the naive ones from the
    cached activations of every real position."""
    a, b = random_model(0), random_model(1)
    ids = torch.randint(0, 40, (5, 12))
    lengths = torch.tensor([12, 7, 12, 3, 9])
    real = torch.arange(12)[None] < lengths[:, None]

    def circuits(model: TaskGPT, kind: str) -> torch.Tensor:
        out = []
        for block in model.blocks:
            q, k, v = block.attn.qkv_proj.weight.detach().double().view(3, 4, 8, 32)
            g = block.ln1.weight.detach().double()
            if kind == "ov":
                out.append(torch.einsum("hdm,hdn->hmn", v * g, block.attn.W_O.detach().double()))
            else:
                out.append(torch.einsum("hdm,hdn->hmn", q * g, k * g))
        return torch.stack(out).flatten(2)  # (layer, head, d_model·d_model)

    for kind in ("ov", "qk"):
        x, y = (torch.nn.functional.normalize(circuits(m, kind), dim=-1) for m in (a, b))
        naive = (x @ y.mT).numpy()
        np.testing.assert_allclose(circuit_similarity(a, b, kind), naive, atol=1e-10)

    moments = z_moments([a, b], ids, lengths, batch_size=2)
    assert moments.positions == int(lengths.sum())
    with torch.no_grad():
        caches = [m.run_with_cache(ids)[1] for m in (a, b)]
    for layer in range(2):
        z = [c[f"blocks.{layer}.attn.hook_z"][real].double() for c in caches]  # (pos, head, d)
        out = [c[f"blocks.{layer}.attn.hook_result"][real].double() for c in caches]
        w_o = tuple(as_lm(m).head_weights()[:, 3] for m in (a, b))
        for h in range(4):
            for g in range(4):
                xa, xb = z[0][:, h] - z[0][:, h].mean(0), z[1][:, g] - z[1][:, g].mean(0)
                cka = (xa.T @ xb).norm() ** 2 / ((xa.T @ xa).norm() * (xb.T @ xb).norm())
                assert cka_similarity(moments, 0, 1)[layer, h, g] == pytest.approx(
                    float(cka), abs=1e-5
                )
                ra, rb = out[0][:, h] - out[0][:, h].mean(0), out[1][:, g] - out[1][:, g].mean(0)
                corr = (ra * rb).sum() / (ra.pow(2).sum() * rb.pow(2).sum()).sqrt()
                fast = output_similarity(moments, 0, 1, w_o)[layer, h, g]
                assert fast == pytest.approx(float(corr), abs=1e-5)


@pytest.fixture(scope="module")
def heldout(tiny_corpus, tiny_tokenizer):
    return load_eval_set(tiny_corpus, tiny_tokenizer, "adhd", "test", 12, max_len=256)


def test_known_answers_on_a_trained_model(tiny_pair, heldout) -> None:
    """A trained model against itself pairs every head with itself under every signature,
    and its head-permuted copy is undone (hit rate 1.0), so whichever one is adopted is."""
    model = tiny_pair["adhd"].model
    data = (heldout.ids, heldout.lengths, heldout.special_mask())
    own = compare_signatures(model, model, *data, batch_size=8, seed=3)
    assert own.same_index == dict.fromkeys(SIGNATURES, 1.0)
    assert own.planted == dict.fromkeys(SIGNATURES, 1.0)
    assert any(p != list(range(4)) for p in own.permutation)
    # Against the standard model (same init, another corpus): the planted copy is still
    # undone, and the pair's own matchings are permutations of each layer's heads.
    pair = compare_signatures(model, tiny_pair["standard"].model, *data, batch_size=8)
    assert pair.planted == dict.fromkeys(SIGNATURES, 1.0)
    for partners in pair.partners.values():
        assert (np.sort(partners, axis=1) == np.arange(4)).all()


def test_other_inits_do_not_give_the_identity(heldout) -> None:
    """The identity hit rate is earned: between two models of different inits the
    residual-basis signatures find no one-to-one identity (a check that can fail)."""
    vocab = int(heldout.ids.max()) + 1
    torch.manual_seed(5)
    a, b = (TaskGPT(preset("tiny", vocab_size=vocab, init_std=0.3)).eval() for _ in range(2))
    data = (heldout.ids[:6], heldout.lengths[:6], heldout.special_mask()[:6])
    result = compare_signatures(a, b, *data, batch_size=6)
    assert result.planted == dict.fromkeys(SIGNATURES, 1.0)
    assert min(result.same_index[s] for s in ("ov", "qk", "output")) < 1.0


def test_planted_permutation_moves_heads() -> None:
    perms = planted_permutation(6, 8, seed=0)
    assert all(sorted(p) == list(range(8)) and p != list(range(8)) for p in perms)
    assert perms == planted_permutation(6, 8, seed=0) != planted_permutation(6, 8, seed=1)


def test_adoption_needs_a_basis_free_signature_that_beats_the_profile() -> None:
    planted = dict.fromkeys(SIGNATURES, 1.0)
    identity = {"profile": 0.1, "ov": 1.0, "qk": 0.9, "output": 0.95, "cka": 0.5}
    choice = adopt(identity, planted)
    assert choice.adopted == "cka" and "cka" in BASIS_FREE  # ov is higher, but basis-bound
    assert choice.identity == identity and "10%" in choice.reason
    assert adopt({**identity, "cka": 0.1}, planted).adopted == "profile"  # a tie keeps it
    assert adopt(identity, {**planted, "cka": 0.75}).adopted == "profile"  # planted missed
    assert "no basis-free" in adopt({**identity, "cka": 0.0}, planted).reason
