"""Activation patching equals TransformerLens's; attribution patching is the true gradient
approximation; the corpus pairs and the `patch` command."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from transformer_lens import patching as tl_patching
from typer.testing import CliRunner

from interpgpt.analysis.interventions import Head, ablate_heads, act_name, patch_sites
from interpgpt.analysis.patching import run as patching
from interpgpt.analysis.patching.config import PatchingConfig
from interpgpt.analysis.patching.pairs import RULE_FIRES
from interpgpt.analysis.patching.run import (
    SITES,
    RegulationLogitDiff,
    activation_patch,
    attribution_patch,
    build_pairs,
    reference_patch,
    section,
)
from interpgpt.artifacts.convert import to_hooked_transformer
from interpgpt.commands import patch
from interpgpt.corpus.build import iter_split
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.settings import SettingError

TL_FUNCTIONS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_head_out": tl_patching.get_act_patch_attn_head_out_all_pos,
    "attn_head_out_by_pos": tl_patching.get_act_patch_attn_head_out_by_pos,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
}
HOOK_OF = {"resid_pre": "resid_pre", "mlp_out": "mlp_out"}


@pytest.fixture(scope="module")
def toy():
    """A random tiny model with large weights (patch effects far from zero) and its TL twin."""
    torch.manual_seed(0)
    model = TaskGPT(preset("tiny", vocab_size=64, init_std=0.2)).eval()
    clean = torch.randint(0, 64, (2, 7))
    corrupted = torch.randint(0, 64, (2, 7))
    return model, to_hooked_transformer(model), clean, corrupted


def several_positions(logits: torch.Tensor) -> torch.Tensor:
    """A metric reading three positions, so causal-prefix reuse is exercised."""
    return logits[:, -1, 3].mean() - logits[:, -1, 5].mean() + 0.5 * logits[:, 3, 7].mean()


def final_position(logits: torch.Tensor) -> torch.Tensor:
    final = logits[:, -1]
    return (final[:, :4].logsumexp(-1) - final[:, 4:20].logsumexp(-1)).mean()


@pytest.mark.parametrize("site", SITES)
def test_exact_patching_equals_transformer_lens(toy, site):
    model, tl_model, clean, corrupted = toy
    _, clean_cache = tl_model.run_with_cache(clean)
    expected = TL_FUNCTIONS[site](tl_model, corrupted, clean_cache, several_positions)
    assert expected.std() > 1e-3  # the comparison is not between two constants
    default = activation_patch(model, clean, corrupted, several_positions, site)
    one_site_per_forward = activation_patch(
        model, clean, corrupted, several_positions, site, max_chunk_mb=0
    )
    read_only = activation_patch(
        model, clean, corrupted, several_positions, site, metric_positions=[3, -1]
    )
    for ours in (default, one_site_per_forward, read_only):
        assert ours.shape == expected.shape
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_final_position_fast_path_equals_transformer_lens(toy):
    model, tl_model, clean, corrupted = toy
    _, clean_cache = tl_model.run_with_cache(clean)
    for site in ("resid_pre", "attn_head_out_by_pos"):
        expected = TL_FUNCTIONS[site](tl_model, corrupted, clean_cache, final_position)
        ours = activation_patch(
            model, clean, corrupted, final_position, site, metric_positions=[-1]
        )
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def first_and_last(logits: torch.Tensor) -> torch.Tensor:
    """A metric reading the first and the last position (valid for any prompt length)."""
    return logits[:, -1, 3].mean() - logits[:, -1, 5].mean() + 0.5 * logits[:, 0, 7].mean()


@pytest.mark.parametrize("n_pos", [1, 2, 5, 9])
def test_suffix_path_equals_full_recomputation_and_transformer_lens(toy, n_pos, monkeypatch):
    """The packed suffix/prefix path (causal prefix from the corrupted KV cache, rows joining
    at their layer, last block only at read positions) equals one full forward per site
    (`reference_patch`) and TransformerLens, for several prompt lengths, with inputs that
    share a first token (those patches are skipped as no-ops), in one pass or split into
    many small passes and scoring groups."""
    model, tl_model, _, _ = toy
    generator = torch.Generator().manual_seed(n_pos)
    clean = torch.randint(0, 64, (3, n_pos), generator=generator)
    corrupted = torch.randint(0, 64, (3, n_pos), generator=generator)
    corrupted[:, 0] = clean[:, 0]
    _, tl_cache = tl_model.run_with_cache(clean)
    _, cache = model.run_with_cache(clean)
    for site in SITES:
        expected = TL_FUNCTIONS[site](tl_model, corrupted, tl_cache, first_and_last)
        if n_pos > 1:
            assert expected.std() > 1e-3
        full = reference_patch(model, corrupted, first_and_last, site, cache)
        torch.testing.assert_close(full, expected, atol=1e-4, rtol=1e-4)
        runs = [
            activation_patch(model, clean, corrupted, first_and_last, site),
            activation_patch(model, clean, corrupted, first_and_last, site, clean_cache=cache),
            activation_patch(
                model, clean, corrupted, first_and_last, site, metric_positions=[0, -1]
            ),
        ]
        monkeypatch.setattr(patching, "PASS_TOKENS", 7)
        monkeypatch.setattr(patching, "SCORE_ROWS", 2)
        runs.append(
            activation_patch(
                model, clean, corrupted, first_and_last, site, metric_positions=[-1, 0]
            )
        )
        monkeypatch.undo()
        for ours in runs:
            torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_a_hooked_model_is_patched_with_its_hooks(toy):
    """With hooks attached (here a head ablation), every forward must run them, as under
    TransformerLens: the patching falls back to one hooked forward per site."""
    model, tl_model, clean, corrupted = toy
    ablate = ablate_heads([Head(0, 1)])
    with tl_model.hooks(fwd_hooks=ablate):
        _, tl_cache = tl_model.run_with_cache(clean)
        expected = tl_patching.get_act_patch_resid_pre(
            tl_model, corrupted, tl_cache, final_position
        )
    with model.hooks(fwd_hooks=ablate):
        ours = activation_patch(
            model, clean, corrupted, final_position, "resid_pre", metric_positions=[-1]
        )
    unhooked = activation_patch(model, clean, corrupted, final_position, "resid_pre")
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    assert (ours - unhooked).abs().max() > 1e-3  # the ablation mattered


def test_metric_reading_an_unpromised_position_is_nan(toy):
    model, _, clean, corrupted = toy
    out = activation_patch(
        model, clean, corrupted, several_positions, "resid_pre", metric_positions=[-1]
    )
    # position 3 is read but not promised: every patch that can change it gives NaN
    assert torch.isnan(out[:, :4]).all()


def test_patch_sites_gives_each_block_of_the_batch_its_own_patch():
    act = torch.zeros(3 * 2, 4, 5)  # (site * batch, pos, d_model)
    clean = torch.ones(2, 4, 5)
    site_mask = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    out = patch_sites("x", clean, site_mask).fn(act).view(3, 2, 4, 5)
    assert out[0, :, 0].eq(1).all() and out[0, :, 1:].eq(0).all()
    assert out[1, :, 2].eq(1).all() and out[1].sum() == 2 * 5
    assert out[2].eq(0).all()


@pytest.mark.parametrize("site", SITES)
def test_attribution_is_the_derivative_of_exact_patching(toy, site):
    """attribution = d/da metric(patch corrupted + a (clean - corrupted)) at a = 0, checked
    by a central difference of exact patching on interpolated activations."""
    model, _, clean, corrupted = toy
    hook = HOOK_OF.get(site, "z")
    names = [act_name(hook, layer) for layer in range(model.cfg.n_layer)]
    keep = lambda name: name in names  # noqa: E731
    _, clean_cache = model.run_with_cache(clean, names_filter=keep)
    _, corrupted_cache = model.run_with_cache(corrupted, names_filter=keep)
    eps = 1e-2

    def patched_at(alpha: float) -> torch.Tensor:
        mixed = {
            n: corrupted_cache[n] + alpha * (clean_cache[n] - corrupted_cache[n]) for n in names
        }
        return activation_patch(model, clean, corrupted, several_positions, site, clean_cache=mixed)

    derivative = (patched_at(eps) - patched_at(-eps)) / (2 * eps)
    attribution = attribution_patch(model, clean, corrupted, several_positions, [site])[site]
    assert attribution.shape == derivative.shape
    assert derivative.abs().max() > 1e-2
    torch.testing.assert_close(attribution, derivative, atol=2e-3, rtol=2e-2)


def test_attribution_leaves_no_parameter_gradients(toy):
    model, _, clean, corrupted = toy
    attribution_patch(model, clean, corrupted, final_position, ["resid_pre"])
    assert all(p.grad is None for p in model.parameters())


def test_pairs_from_the_corpus(tiny_corpus, tiny_tokenizer):
    """Clean: an ADHD prefix where the break rule fires and a break follows; corrupted:
    another ADHD decomposition of the same text where the rule is quiet; one length."""
    pairs = build_pairs(tiny_corpus, tiny_tokenizer, n_pairs=6)
    tok = tiny_tokenizer
    assert pairs.clean.shape == pairs.corrupted.shape and len(pairs.task_ids) >= 1
    assert set(pairs.regulation_tokens).isdisjoint(pairs.content_tokens)
    # every prefix of every held-out ADHD record, with the rule's posterior and whether a
    # break follows
    cuts = {}
    for record in iter_split(tiny_corpus, "adhd", "test"):
        ids = tok.encode_example(record.task, list(record.steps))
        roles = tok.roles(ids)
        for pos, is_reg, p in zip(
            roles.onset_predictors, roles.step_is_regulation, record.p_break, strict=True
        ):
            cuts.setdefault(tuple(ids[: pos + 1]), set()).add((is_reg, p))
    for clean, corrupted in zip(pairs.clean.tolist(), pairs.corrupted.tolist(), strict=True):
        header = clean.index(tok.steps_id) + 1
        assert clean[:header] == corrupted[:header] and clean[0] == tok.task_id
        assert clean != corrupted
        assert any(is_reg and p >= RULE_FIRES for is_reg, p in cuts[tuple(clean)])
        assert any(not is_reg and 0 < p < RULE_FIRES for is_reg, p in cuts[tuple(corrupted)])


def test_regulation_logit_diff_is_a_log_odds():
    logits = torch.zeros(2, 3, 10)
    logits[:, -1, 1] = 2.0
    metric = RegulationLogitDiff(regulation=[1, 2], content=[5])
    expected = torch.logsumexp(torch.tensor([2.0, 0.0]), 0)
    torch.testing.assert_close(metric(logits), expected)


def test_config_rejects_bad_values():
    for field, value in [("site", "attn_out"), ("n_pairs", 0), ("phrasings", 0)]:
        with pytest.raises(SettingError) as err:
            PatchingConfig(**{field: value})
        assert err.value.field == field
    assert PatchingConfig(site="mlp_out").sites == ("mlp_out",)
    assert PatchingConfig().sites == SITES


def test_section_from_a_stage_summary():
    summary = {
        "clean_metric": 1.5,
        "corrupted_metric": -0.25,
        "correlation": {"resid_pre": 0.91, "mlp_out": 0.5},
    }
    built = section(summary, ["p/patching.json", "p/patching_resid_pre.png"])
    assert built.title == "Activation patching"
    assert built.finding.endswith(
        "Regulation logit difference: clean 1.500, corrupted -0.250; attribution patching "
        "vs exact: resid_pre 0.910, mlp_out 0.500."
    )
    assert [f.name for f in built.figures] == ["patching_resid_pre.png"]


def command_app() -> typer.Typer:
    """An app holding only the `patch` command (a group: it is invoked by name)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    patch.register(app)
    return app


def test_patch_command_writes_results(tiny_run_dirs, tiny_corpus, tmp_path):
    out = tmp_path / "patch"
    result = CliRunner().invoke(
        command_app(),
        ["patch", str(tiny_run_dirs["adhd"]), "--corpus", str(tiny_corpus), "--out", str(out),
         "--n-pairs", "4", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((out / "patching.json").read_text())
    n_layer, n_head = 2, 4
    length = report["pairs"]["length"]
    assert report["pairs"]["n"] >= 1 and "provenance" in report
    shapes = {
        "resid_pre": [n_layer, length],
        "attn_head_out": [n_layer, n_head],
        "attn_head_out_by_pos": [n_layer, length, n_head],
        "mlp_out": [n_layer, length],
    }
    for site, shape in shapes.items():
        entry = report["sites"][site]
        assert list(torch.tensor(entry["exact"]).shape) == shape
        assert list(torch.tensor(entry["attribution"]).shape) == shape
        assert (out / f"patching_{site}.png").stat().st_size > 0
    # both inputs start with the same task header, so patching its first token is a no-op
    unchanged = report["sites"]["resid_pre"]["exact"][0][0]
    assert unchanged == pytest.approx(report["metric"]["corrupted"], abs=1e-5)
