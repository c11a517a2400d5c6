"""The intervention hooks (ablation, steering, projection) and the causal ablation study."""

from __future__ import annotations

import copy
import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from interpgpt.analysis.ablation.config import AblationConfig
from interpgpt.analysis.ablation.run import (
    Condition,
    compare_with_nulls,
    conditions_for,
    head_masks,
    run_ablation,
    score,
    section,
    study_heads,
)
from interpgpt.analysis.interventions import (
    Head,
    Hook,
    ablate_heads,
    add_direction,
    head_means,
    heads_zeroed,
    parse_heads,
    project_out,
)
from interpgpt.commands import ablate
from interpgpt.corpus.evalset import load_records
from interpgpt.errors import UserError
from interpgpt.model.config import GenerationConfig, preset
from interpgpt.model.fast.block import has_hooks
from interpgpt.model.generate import (
    Decomposition,
    generate_ids,
    sample_decompositions,
    sample_decompositions_masked,
)
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.settings import SettingError


@pytest.fixture(scope="module")
def model() -> TaskGPT:
    torch.manual_seed(0)
    return TaskGPT(preset("tiny", vocab_size=64, init_std=0.2)).eval()


def zero_o_proj_columns(model: TaskGPT, heads: list[Head]) -> TaskGPT:
    """A copy whose o_proj ignores the given heads' z: the weight-space zero ablation."""
    edited = copy.deepcopy(model)
    d_head = model.cfg.d_head
    with torch.no_grad():
        for head in heads:
            weight = edited.blocks[head.layer].attn.o_proj.weight  # (d_model, head * d_head)
            weight[:, head.head * d_head : (head.head + 1) * d_head] = 0.0
    return edited


# ------------------------------------------------------------------ interventions


def test_zero_ablation_equals_zeroed_o_proj_columns(model):
    ids = torch.randint(0, 64, (3, 11))
    heads = [Head(1, 2), Head(0, 1), Head(1, 0)]
    ablated = model.run_with_hooks(ids, fwd_hooks=ablate_heads(heads, "zero"))
    expected = zero_o_proj_columns(model, heads)(ids)
    torch.testing.assert_close(ablated, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ablated, model(ids), atol=1e-3)  # the ablation did something


def test_zero_ablation_acts_during_cached_generation(model):
    """Inside `model.hooks`, every incremental decoding step is ablated too."""
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    config = GenerationConfig(max_new_tokens=12, temperature=0.0)
    heads = [Head(1, 3)]
    with model.hooks(fwd_hooks=ablate_heads(heads, "zero")):
        hooked = generate_ids(model, prompts, config)
    edited = generate_ids(zero_o_proj_columns(model, heads), prompts, config)
    assert hooked == edited


def test_heads_zeroed_is_the_hooked_ablation_without_hooks(model):
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    config = GenerationConfig(max_new_tokens=12, temperature=0.0)
    heads = [Head(1, 3), Head(0, 0)]
    before = {name: p.clone() for name, p in model.named_parameters()}
    with model.hooks(fwd_hooks=ablate_heads(heads, "zero")):
        hooked = generate_ids(model, prompts, config)
    with heads_zeroed(model, heads):
        assert not has_hooks(model)  # generation runs the unhooked decoder
        edited = generate_ids(model, prompts, config)
    assert edited == hooked
    assert edited != generate_ids(model, prompts, config)  # the ablation did something
    with pytest.raises(RuntimeError), heads_zeroed(model, heads):
        raise RuntimeError("an error inside the block")
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name  # restored exactly, also after errors


def test_head_means_skip_padding(model):
    ids = torch.randint(0, 64, (2, 7))
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    means = head_means(model, ids, valid)
    _, cache = model.run_with_cache(ids)
    for layer in range(model.cfg.n_layer):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        expected = torch.cat([z[0], z[1, :4]]).mean(0)  # (head d_head)
        torch.testing.assert_close(means[layer], expected, atol=1e-6, rtol=1e-5)


def test_mean_ablation_writes_the_mean_head_output(model):
    """z_h := m is the same as removing head h and adding the constant m @ W_O[h]."""
    ids = torch.randint(0, 64, (2, 9))
    means = head_means(model, ids, torch.ones_like(ids, dtype=torch.bool))
    head = Head(1, 1)
    ablated = model.run_with_hooks(ids, fwd_hooks=ablate_heads([head], "mean", means))
    edited = zero_o_proj_columns(model, [head])
    constant = means[head.layer, head.head] @ model.blocks[head.layer].attn.W_O[head.head]
    add = add_direction(f"blocks.{head.layer}.hook_attn_out", constant)
    torch.testing.assert_close(ablated, edited.run_with_hooks(ids, fwd_hooks=[add]), atol=1e-5,
                               rtol=1e-5)  # fmt: skip


def test_add_direction_only_at_given_positions(model):
    ids = torch.randint(0, 64, (2, 6))
    direction = torch.randn(model.cfg.d_model)
    name = "blocks.1.hook_resid_pre"
    _, base = model.run_with_cache(ids, names_filter=name)
    seen = {}
    capture = Hook(name, lambda act, hook: seen.setdefault("act", act.clone()))
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 2] = mask[1, 5] = True
    for positions in (mask, [2, 5]):
        seen.clear()
        model.run_with_hooks(
            ids, fwd_hooks=[add_direction(name, direction, 2.0, positions), capture]
        )
        delta = seen["act"] - base[name]
        changed = delta.abs().sum(-1) > 0
        expected = mask if positions is mask else torch.tensor([[0, 0, 1, 0, 0, 1]] * 2).bool()
        assert torch.equal(changed, expected)
        torch.testing.assert_close(delta[changed], (2.0 * direction).expand(int(changed.sum()), -1))


def test_project_out_is_an_orthogonal_projection():
    torch.manual_seed(1)
    act = torch.randn(2, 5, 16)
    directions = torch.randn(3, 16)
    hook = project_out("x", directions)
    once = hook.fn(act)
    torch.testing.assert_close(hook.fn(once), once, atol=1e-5, rtol=1e-5)  # idempotent
    torch.testing.assert_close(once @ directions.T, torch.zeros(2, 5, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(act - once + once, act)
    orthogonal = torch.linalg.qr(directions.T).Q  # a different basis of the same span
    torch.testing.assert_close(project_out("x", orthogonal.T).fn(act), once, atol=1e-5, rtol=1e-5)


def test_parse_heads():
    assert parse_heads("L3H5, l1h0,L3H5", 6, 8) == [Head(3, 5), Head(1, 0)]
    assert str(Head(3, 5)) == "L3H5"
    for bad in ("L3", "L6H0", "L0H8", ""):
        with pytest.raises(UserError):
            parse_heads(bad, 6, 8)


# ------------------------------------------------------------------ study pieces


def test_conditions_are_the_layer_and_size_matched_random_nulls():
    config = SimpleNamespace(layer_null=True, null_random=4, null_seed=0)
    target = [Head(1, 2)]
    conditions = conditions_for(target, 2, 4, config)
    assert conditions[0] == Condition("target", target)
    layer = [c.heads for c in conditions if c.kind == "layer"]
    assert layer == [[Head(1, 0)], [Head(1, 1)], [Head(1, 3)]]
    random = [c.heads for c in conditions if c.kind == "random"]
    assert len(random) == 4 and all(len(h) == 1 and h[0] not in target for h in random)
    assert len({tuple(h) for h in layer + random}) == len(layer + random)
    pair = conditions_for([Head(0, 0), Head(1, 1)], 2, 4, config)
    assert all(len(c.heads) == 2 for c in pair if c.kind == "random")
    assert conditions_for(target, 2, 4, config) == conditions  # seeded


def test_head_masks_zero_each_conditions_heads_after_the_baseline():
    conditions = [Condition("target", [Head(1, 2), Head(0, 3)]), Condition("layer", [Head(1, 0)])]
    keep = head_masks(conditions, 2, 4)
    assert keep.shape == (3, 2, 4) and bool((keep[0] == 1).all())
    assert [(r, lay, h) for r, lay, h in (keep == 0).nonzero().tolist()] == [
        (1, 0, 3), (1, 1, 2), (2, 1, 0)
    ]  # fmt: skip


NULLS = SimpleNamespace(layer_null=True, null_random=2, null_seed=0)


def test_one_masked_call_decodes_each_condition_as_its_own_call(tiny_pair, tiny_corpus):
    """Known answer: greedy, the one batched call with a head mask per row decodes every
    condition exactly as a call of its own with the heads' `o_proj` columns zeroed
    (`heads_zeroed`), the baseline as the plain model; sampling, an all-ones condition
    reproduces the baseline's rows (common random numbers)."""
    model, tok = tiny_pair["adhd"].model, tiny_pair["adhd"].tokenizer
    tasks = [r["task"] for r in load_records(tiny_corpus, "adhd", "test", 10)]
    conditions = conditions_for([Head(1, 2)], 2, 4, NULLS)
    keep = head_masks(conditions, 2, 4)
    greedy = GenerationConfig(max_new_tokens=40, temperature=0.0)
    runs = sample_decompositions_masked(model, tok, tasks, keep, greedy)
    assert runs[0] == sample_decompositions(model, tok, tasks, greedy)
    for condition, run in zip(conditions, runs[1:], strict=True):
        with heads_zeroed(model, condition.heads):
            assert run == sample_decompositions(model, tok, tasks, greedy), condition.label
    assert any(run != runs[0] for run in runs[1:])  # some ablation changes what it writes
    sampled = dataclasses.replace(greedy, temperature=1.0, seed=3)
    with_ones = torch.cat([keep, torch.ones(1, 2, 4)])
    runs = sample_decompositions_masked(model, tok, tasks, with_ones, sampled)
    assert runs[-1] == runs[0] and runs[1] != runs[0]


def test_run_ablation_scores_every_condition_of_one_masked_call_per_seed(
    tiny_run_dirs, tiny_pair, tiny_corpus, tmp_path
):
    """run_ablation's scores per seed and condition are those of one masked call per seed:
    the conditions map to their rows of the batch and back, the seeds to the draws."""
    config = AblationConfig(
        model=tiny_run_dirs["adhd"], corpus=tiny_corpus, out=tmp_path, heads="L1H2", seeds=2,
        limit=12, null_random=2, max_new_tokens=96, device="cpu",
    )  # fmt: skip
    result = run_ablation(config)
    model, tok = tiny_pair["adhd"].model, tiny_pair["adhd"].tokenizer
    records = load_records(tiny_corpus, "adhd", "test", 12)
    tasks, complexity = [r["task"] for r in records], [float(r["complexity"]) for r in records]
    conditions = conditions_for([Head(1, 2)], 2, 4, NULLS)
    keep = head_masks(conditions, 2, 4)
    for seed in range(2):
        generation = GenerationConfig(max_new_tokens=96, seed=seed, batch_size=12 * len(keep))
        runs = sample_decompositions_masked(model, tok, tasks, keep, generation)
        expected = [score(complexity, run) for run in runs]
        got = [result.baseline[seed]] + [result.ablated[c.label][seed] for c in conditions]
        np.testing.assert_equal([dataclasses.astuple(s) for s in got],
                                [dataclasses.astuple(s) for s in expected])  # fmt: skip
        assert got[0].n_parsed > 0  # the scores are not all undefined


def decomposition(n_steps: int, parsed: bool = True) -> Decomposition:
    return Decomposition("t", tuple(f"s{i}" for i in range(n_steps)), parsed, (), 0)


def test_score_counts_only_parsed_outputs():
    runs = [decomposition(n) for n in (3, 4, 6, 9)] + [decomposition(1, parsed=False)]
    result = score([1, 2, 3, 4, 5], runs)
    assert result.spearman == pytest.approx(1.0)
    assert result.n_parsed == 4 and result.mean_steps == pytest.approx(5.5)
    flat = score([1, 2, 3], [decomposition(4)] * 3)
    assert flat.spearman != flat.spearman  # NaN: undefined for a constant step count


def test_compare_with_nulls_ranks_the_target():
    found = compare_with_nulls(-0.05, [0.01, -0.01, -0.06, 0.0])
    assert found.rank == 2 and found.n_null == 4
    assert found.percent_at_or_below == pytest.approx(25.0)
    assert found.p_empirical == pytest.approx(2 / 5)
    assert compare_with_nulls(float("nan"), [0.1]) is None


def test_config_rejects_bad_values():
    for field, value in [("seeds", 0), ("mode", "half"), ("heads", "L3"), ("null_random", -1)]:
        with pytest.raises(SettingError) as err:
            AblationConfig(**{field: value})
        assert err.value.field == field
    assert AblationConfig(heads="auto").heads == "auto"  # the study resolves it


def test_study_heads_auto_is_the_partner_of_the_strongest_moved_head():
    headswap = {"strongest": {"label": "std L3H1 ~ adhd L3H5", "std": [3, 1], "adhd": [3, 5]}}
    assert study_heads("auto", headswap) == "L3H5"
    assert study_heads("L1H0,L1H2", headswap) == "L1H0,L1H2"


def test_section_from_a_stage_summary():
    summary = {
        "heads": "L1H2",
        "baseline": [0.8, 0.82],
        "target": [0.7, 0.75],
        "median_delta": {"L1H2": -0.085, "L1H0": 0.01, "L0H3": -0.02},
        "target_label": "L1H2",
        "comparisons": {"all": {"n_null": 2, "rank": 1, "p_empirical": 1 / 3}},
    }
    built = section(summary, ["a/causal_nulls_per_seed.json", "a/causal_nulls.png"])
    assert built.finding == (
        "Ablating L1H2 in the ADHD model changes Spearman(complexity, steps) by a median "
        "-0.085 over 2 seeds; it ranks 1 of 3 against null heads (one-sided p 0.333)."
    )
    assert built.rows[0] == ("baseline Spearman per seed", "0.800, 0.820")
    assert built.rows[2:] == [("null L1H0", "0.010"), ("null L0H3", "-0.020")]
    assert [f.name for f in built.figures] == ["causal_nulls.png"]


def command_app() -> typer.Typer:
    """An app holding only the `ablate` command (a group: it is invoked by name)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    ablate.register(app)
    return app


def test_ablate_command_writes_causal_nulls(tiny_run_dirs, tiny_corpus, tmp_path):
    out = tmp_path / "ablate"
    result = CliRunner().invoke(
        command_app(),
        ["ablate", str(tiny_run_dirs["adhd"]), "--heads", "L1H2", "--corpus", str(tiny_corpus),
         "--seeds", "2", "--out", str(out), "--limit", "8", "--null-random", "1",
         "--max-new-tokens", "24", "--mode", "mean", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((out / "causal_nulls_per_seed.json").read_text())
    assert report["target"] == ["L1H2"] and report["mode"] == "mean"
    assert len(report["per_seed"]) == 2
    kinds = [c["kind"] for c in report["per_seed"][0]["conditions"]]
    assert kinds == ["target", "layer", "layer", "layer", "random"]
    for entry in report["per_seed"]:
        for condition in entry["conditions"]:
            ablated, base = condition["ablated"]["spearman"], entry["baseline"]["spearman"]
            if ablated == ablated and base == base:  # both defined
                assert condition["delta"] == pytest.approx(ablated - base)
    assert set(report["median_delta"]) >= {"L1H2", "L1H0"}
    assert "provenance" in report and (out / "causal_nulls.png").stat().st_size > 0


def test_ablate_rejects_a_head_the_model_lacks(tiny_run_dirs, tiny_corpus, tmp_path):
    result = CliRunner().invoke(
        command_app(),
        ["ablate", str(tiny_run_dirs["adhd"]), "--heads", "L5H0", "--corpus", str(tiny_corpus),
         "--out", str(tmp_path / "x"), "--device", "cpu"],
    )  # fmt: skip
    assert isinstance(result.exception, UserError) and "L5H0" in str(result.exception)


def test_ablate_command_rejects_auto(tiny_run_dirs, tiny_corpus, tmp_path):
    """auto needs a study's head-swap summary; the command says so instead of guessing."""
    result = CliRunner().invoke(
        command_app(),
        ["ablate", str(tiny_run_dirs["adhd"]), "--heads", "auto", "--corpus", str(tiny_corpus),
         "--out", str(tmp_path / "x"), "--device", "cpu"],
    )  # fmt: skip
    assert isinstance(result.exception, UserError)
    assert "--heads auto" in str(result.exception) and "study" in str(result.exception)
    assert not (tmp_path / "x").exists()
