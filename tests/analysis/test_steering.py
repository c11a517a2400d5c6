"""Steering with a feature direction against random-direction nulls; config validation,
the CLI, and the study stage with its report section."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from interpgpt.analysis.sae_features import encode_features, onset_feature_stats
from interpgpt.analysis.steering.config import SteeringConfig
from interpgpt.analysis.steering.run import (
    ANALYSIS,
    RULE,
    STEERING_JSON,
    STEERING_PLOT,
    VARIANTS,
    BoundaryTokens,
    Delta,
    OnsetReader,
    SteeringStudyConfig,
    add_vector,
    compare_to_null,
    feature_magnitude,
    generated_regulation_rate,
    onset_p_regulation,
    paired_delta,
    random_directions,
    remove_feature,
    resolve_feature,
    section,
    stage,
    steer,
    upstream_hook_name,
)
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.corpus.regulation import REGULATION_ACTIONS
from interpgpt.corpus.tokenizer import SPECIAL_TOKENS, regulation_first_tokens
from interpgpt.errors import UserError
from interpgpt.io import write_json
from interpgpt.sae.topk import TopKSAE, TopKSAEConfig
from interpgpt.settings import SettingError
from interpgpt.study.workspace import Workspace

HAS_GENERATE = importlib.util.find_spec("interpgpt.model.generate") is not None
LAST = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def world(tiny_corpus, tiny_tokenizer, tiny_pair, tiny_run_dirs, tmp_path_factory) -> dict:
    """The shared tiny trained pair (conftest) and a random SAE on its layer-1 residual."""
    root = tmp_path_factory.mktemp("steer")
    models = {variant: loaded.model for variant, loaded in tiny_pair.items()}
    sae = TopKSAE(
        TopKSAEConfig(d_in=32, d_sae=32, k=8, layer=1, model_name="adhd"),
        generator=torch.Generator().manual_seed(0),
    )
    few = load_eval_set(tiny_corpus, tiny_tokenizer, "adhd", limit=3, max_len=256)
    stats = onset_feature_stats(models["adhd"], sae, few, sae.cfg.hook_name)
    return {
        "root": root,
        "corpus": tiny_corpus,
        "tok": tiny_tokenizer,
        "models": models,
        "sae": sae,
        "feature": int(stats.fire_count.argmax()),  # fires at the first tasks' onsets
        "eset": load_eval_set(tiny_corpus, tiny_tokenizer, "adhd", limit=6, max_len=256),
        "std_dir": tiny_run_dirs["standard"],
        "adhd_dir": tiny_run_dirs["adhd"],
        "sae_dir": sae.save(root / "sae"),
    }


def test_regulation_ids_are_first_tokens(world):
    tok = world["tok"]
    ids = sorted(regulation_first_tokens(tok))
    assert ids == sorted({tok.encode_text(a)[0] for a in REGULATION_ACTIONS})
    assert min(ids) >= len(SPECIAL_TOKENS)  # never a special token


def test_zero_magnitude_injection_changes_nothing(world):
    model, eset = world["models"]["standard"], world["eset"]
    reg = sorted(regulation_first_tokens(world["tok"]))
    clean, rows = onset_p_regulation(model, eset, reg, batch_size=4)
    zero, _ = onset_p_regulation(model, eset, reg, LAST, add_vector(torch.zeros(32)), 4)
    delta = paired_delta(clean, zero, rows)
    assert delta.delta == 0.0
    assert delta.n_positions == int(eset.onset_predictor_mask().sum())
    assert delta.n_tasks == len(eset)


def test_unembedding_regulation_direction_raises_p_regulation(world):
    """Adding the regulation tokens' unembedding direction (mean regulation embedding minus
    mean embedding, through the final norm's gain) at the last layer gives the ADHD model
    a higher P(regulation) than adding the opposite direction. (Any large vector added
    before the final norm also shrinks the model's own logits, so the change from the
    clean run can go either way in a tiny model; the contrast cannot.)"""
    model, eset = world["models"]["adhd"], world["eset"]
    reg = sorted(regulation_first_tokens(world["tok"]))
    emb = model.embed.weight.detach()
    direction = model.ln_final.weight.detach() * (emb[reg].mean(0) - emb.mean(0))
    direction = 20.0 * direction / direction.norm()
    up, rows = onset_p_regulation(model, eset, reg, LAST, add_vector(direction), 4)
    down, _ = onset_p_regulation(model, eset, reg, LAST, add_vector(-direction), 4)
    effect = paired_delta(down, up, rows)  # up minus down, paired by position
    assert effect.delta > 0 and effect.delta > 10 * effect.sem


def reference_p_regulation(model, eset, reg_ids, hook_name=None, factory=None, batch_size=4):
    """The straightforward computation `OnsetReader` must equal: a full forward of every
    batch under the hook, a softmax at every position, read at the onset predictors."""
    values, rows = [], []
    starts = range(0, len(eset), batch_size)
    for start, batch in zip(starts, eset.batches(batch_size), strict=True):
        mask = batch.onset_predictor_mask()
        hooks = [] if factory is None else [(hook_name, factory(lambda mask=mask: mask))]
        logits = model.run_with_hooks(batch.ids, fwd_hooks=hooks)
        values.append(logits.float().softmax(-1)[..., reg_ids].sum(-1)[mask].double())
        rows.append(mask.nonzero()[:, 0] + start)
    return torch.cat(values), torch.cat(rows)


TOL = {"rtol": 1e-5, "atol": 1e-6}
"""Float rounding: the reader unembeds fewer rows and attends over shorter batches."""

# Each hook, and a hook whose runs must differ from its own (a layer mix-up fails).
HOOKS = {
    "hook_embed": "blocks.0.hook_resid_post",
    "blocks.0.hook_resid_pre": "blocks.0.hook_resid_post",
    "blocks.0.hook_resid_post": LAST,
    "blocks.1.hook_resid_mid": LAST,
    LAST: "blocks.0.hook_resid_post",
}


@torch.no_grad()
def test_reader_equals_the_full_forward_under_the_hook(world):
    """Known answer: one reader (cached residual streams, batches cut after their last
    onset predictor, only onset predictors unembedded), serving every hook and direction
    in turn as a steering run does, gives the full forward's numbers for the SAE feature's
    vector, a random direction of its norm, and zero-ablating the feature."""
    model, eset, sae, feature = (world[k] for k in ("models", "eset", "sae", "feature"))
    model = model["adhd"]
    reg = sorted(regulation_first_tokens(world["tok"]))
    vector = feature_magnitude(model, sae, eset, feature, 4) * sae.W_dec[feature].detach()
    factories = {
        "feature": add_vector(vector),
        "random": add_vector(random_directions(1, 32, seed=3)[0] * vector.norm()),
        "zero-ablate": remove_feature(sae, feature, sae.W_dec[feature].detach()),
    }
    reader = OnsetReader(model, eset, reg, batch_size=4)
    ref_clean, ref_rows = reference_p_regulation(model, eset, reg)
    clean, rows = reader.p_regulation()
    assert torch.equal(rows, ref_rows) and len(rows) == int(eset.onset_predictor_mask().sum())
    torch.testing.assert_close(clean, ref_clean, **TOL)
    for hook_name, other in HOOKS.items():
        for name, factory in factories.items():
            fast, _ = reader.p_regulation(hook_name, factory)
            ref, _ = reference_p_regulation(model, eset, reg, hook_name, factory)
            torch.testing.assert_close(fast, ref, **TOL, msg=f"{hook_name} {name}")
            if name != "zero-ablate" or hook_name == sae.cfg.hook_name:
                # The same tolerance tells the run apart from no run and from another hook's.
                elsewhere, _ = reference_p_regulation(model, eset, reg, other, factory)
                assert not torch.allclose(ref, ref_clean, **TOL), (hook_name, name)
                assert not torch.allclose(ref, elsewhere, **TOL), (hook_name, name)
    torch.testing.assert_close(reader.p_regulation()[0], clean, rtol=0, atol=0)  # cache intact


def test_compare_to_null_rule():
    null = [0.01, -0.01, 0.02, -0.02, 0.0]
    std = torch.tensor(null).std().item()
    far = compare_to_null(Delta(0.2, 0.01, 10, 5), null, "P")
    assert far.outside_null and far.z == pytest.approx(0.2 / std, rel=1e-5)
    assert far.verdict.startswith("effect")
    near = compare_to_null(Delta(0.03, 0.01, 10, 5), null, "P")
    assert not near.outside_null and near.verdict.startswith("null result")
    # A large SEM alone keeps an effect inside the band.
    noisy = compare_to_null(Delta(0.2, 0.2, 10, 5), null, "P")
    assert not noisy.outside_null


def test_add_vector_acts_only_at_the_masked_positions(world):
    """add_vector acts only at onset predictors: other positions' logits are unchanged."""
    model, eset = world["models"]["adhd"], world["eset"]
    mask = eset.onset_predictor_mask()
    hook = add_vector(torch.ones(32))(lambda: mask)
    clean = model(eset.ids)
    steered = model.run_with_hooks(eset.ids, fwd_hooks=[(LAST, hook)])
    same = ~mask & eset.valid
    torch.testing.assert_close(clean[same], steered[same])
    assert not torch.allclose(clean[mask], steered[mask])


def test_remove_feature_subtracts_its_reconstruction(world):
    sae = world["sae"]
    x = torch.randn(2, 5, 32)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2:] = False
    feature = int(encode_features(sae, x).sum((0, 1)).argmax())
    out = remove_feature(sae, feature, sae.W_dec[feature].detach())(lambda: mask)(x, None)
    f = encode_features(sae, x)[..., feature]
    expected = x - (f * mask)[..., None] * sae.W_dec[feature].detach()
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[1, 2:], x[1, 2:])


def test_boundary_tokens_track_steps_and_sep(world):
    model, eset, tok = world["models"]["standard"], world["eset"], world["tok"]
    gate = BoundaryTokens(model, [tok.steps_id, tok.sep_id])
    model.run_with_hooks(eset.ids, fwd_hooks=[("hook_embed", gate.hook)])
    expected = (eset.ids == tok.steps_id) | (eset.ids == tok.sep_id)
    assert torch.equal(gate(), expected)
    # Every onset predictor is a boundary token (the converse fails only before <|end|>).
    assert (gate()[eset.onset_predictor_mask()]).all()


def test_upstream_hook():
    assert upstream_hook_name("blocks.2.hook_resid_post") == "blocks.1.hook_resid_post"
    assert upstream_hook_name("blocks.0.hook_resid_post") == "blocks.0.hook_resid_pre"
    assert upstream_hook_name("blocks.3.hook_resid_post", 0) == "blocks.0.hook_resid_post"


def test_steer_writes_four_variants_with_nulls(world):
    out = world["root"] / "out"
    result = steer(SteeringConfig(
        world["sae_dir"], world["std_dir"], world["adhd_dir"], world["corpus"], out,
        feature=world["feature"], n_null=20, limit=4, generate_tasks=2 if HAS_GENERATE else 0,
        n_null_generate=2, max_new_tokens=12, device="cpu"))  # fmt: skip
    blob = json.loads((out / STEERING_JSON).read_text())
    assert list(blob["variants"]) == list(VARIANTS)
    assert blob["rule"] == RULE and "provenance" in blob
    assert blob["magnitude"] == pytest.approx(result.magnitude) and result.magnitude > 0
    for name, v in blob["variants"].items():
        cmp = v["p_regulation"]
        assert len(cmp["null_deltas"]) == 20, name
        assert cmp["verdict"].startswith(("effect", "null result"))
        assert cmp["outside_null"] == (
            abs(cmp["effect"]["delta"] - cmp["null_mean"])
            > 2 * max(cmp["effect"]["sem"], cmp["null_std"])
        )
        assert v["verdict"].startswith(cmp["verdict"])
        if HAS_GENERATE:
            assert len(v["generation"]["null_deltas"]) == 2
            assert 0 <= v["clean_generated_rate"] <= 1
    assert blob["variants"]["inject-upstream"]["hook_name"] == "blocks.0.hook_resid_post"
    assert (out / STEERING_PLOT).stat().st_size > 0


def test_the_study_setting_reads_the_same_text_in_both_roles(world, tmp_path):
    """A model in both roles: with the study's sequences its clean P(regulation) is the same
    whichever role an intervention acts on; with each role on its own variant (the
    command's default) the two baselines differ by the text alone."""
    common = dict(feature=world["feature"], n_null=2, limit=4, generate_tasks=0, device="cpu")
    clean = {}
    for sequences in ("adhd", "own"):
        result = steer(SteeringConfig(
            world["sae_dir"], world["adhd_dir"], world["adhd_dir"], world["corpus"],
            tmp_path / sequences, sequences=sequences, same_variant=True, **common))  # fmt: skip
        by_name = {v.name: v.clean_p_regulation for v in result.variants}
        clean[sequences] = (by_name["inject-std"], by_name["subtract-adhd"])
        blob = json.loads((tmp_path / sequences / STEERING_JSON).read_text())
        assert blob["sequences"] == sequences
    assert clean["adhd"][0] == clean["adhd"][1]
    assert clean["own"][0] != clean["own"][1]
    assert clean["own"][1] == clean["adhd"][1]  # the ADHD role reads ADHD text either way
    assert SteeringStudyConfig().sequences == "adhd" and SteeringConfig().sequences == "own"


def test_auto_feature_needs_a_diff_with_features(world, tmp_path):
    write_json(tmp_path / "d.json", {"features": []})
    config = SteeringConfig(
        world["sae_dir"],
        world["std_dir"],
        world["adhd_dir"],
        world["corpus"],
        tmp_path,
        diff_file=tmp_path / "d.json",
        generate_tasks=0,
        device="cpu",
    )
    with pytest.raises(UserError, match="no ADHD-specific feature"):
        steer(config)
    with pytest.raises(UserError):  # neither a feature nor a diff file to take one from
        resolve_feature(SteeringConfig(diff_file=tmp_path / "missing.json"), d_sae=32)
    with pytest.raises(UserError, match="pass --feature N, or --diff-file"):
        resolve_feature(SteeringConfig(), d_sae=32)
    assert resolve_feature(SteeringConfig(feature=5), d_sae=32) == 5  # no diff file needed


def test_cli_steer(world, tmp_path):
    from interpgpt.cli import app

    write_json(tmp_path / "d.json", {"features": [{"feature": world["feature"]}]})
    args = [
        "steer",
        str(world["sae_dir"]),
        "--standard",
        str(world["std_dir"]),
        "--adhd",
        str(world["adhd_dir"]),
        "--corpus",
        str(world["corpus"]),
        "--out",
        str(tmp_path / "o"),
        "--diff-file",
        str(tmp_path / "d.json"),
        "--n-null",
        "3",
        "--limit",
        "3",
        "--generate-tasks",
        "0",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, [*args, "--feature", "x"])
    assert result.exit_code == 2 and "--feature" in result.output  # not a feature index
    result = CliRunner().invoke(app, [*args, "--n-null", "1"])
    assert isinstance(result.exception, UserError)
    assert str(result.exception).startswith("--n-null: must be at least 2")
    result = CliRunner().invoke(app, args)  # no --feature: the diff file's top feature
    assert result.exit_code == 0, result.output + repr(result.exception)
    blob = json.loads((tmp_path / "o" / STEERING_JSON).read_text())
    assert blob["feature"] == world["feature"]
    i = args.index("--diff-file")  # a named feature needs no diff file
    feature = str(world["feature"])
    no_diff = [*args[:i], *args[i + 2 :], "--feature", feature, "--out", str(tmp_path / "o2")]
    result = CliRunner().invoke(app, no_diff)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((tmp_path / "o2" / STEERING_JSON).read_text())["feature"] == world["feature"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_null", 1),
        ("feature", -1),
        ("limit", 0),
        ("upstream_layer", -1),
        ("generate_tasks", -1),
        ("n_null_generate", -1),
        ("batch_size", 0),
    ],
)
def test_post_init_rejects_a_bad_value_naming_its_field(field, value):
    with pytest.raises(SettingError) as err:
        SteeringConfig(**{field: value})
    assert err.value.field == field


def test_study_stage_and_section(world, tmp_path, study_layout):
    """The stage steers with the SAE and diff file the feature-diff stage recorded, and
    its summary builds the report section."""
    links = {"corpus": world["corpus"], ("export", "standard"): world["std_dir"],
             ("export", "adhd"): world["adhd_dir"]}  # fmt: skip
    diff_file = write_json(tmp_path / "d.json", {"features": [{"feature": world["feature"]}]})
    config = SteeringStudyConfig(n_null=3, limit=3, generate_tasks=0, device="cpu")
    with pytest.raises(UserError, match="feature-diff"):
        stage(study_layout(links), config)  # the diff stage has not recorded its files
    recorded = {"sae_dir": str(world["sae_dir"]), "diff_file": str(diff_file)}
    ws = study_layout(links, {"feature-diff": {"summary": recorded}})
    output = stage(ws, config)
    summary = json.loads(json.dumps(output.summary))  # as the stage record stores it
    assert summary["feature"] == world["feature"] and summary["magnitude"] > 0
    assert summary["sequences"] == "adhd"  # the study's setting: both models, the same text
    assert [v["name"] for v in summary["variants"]] == list(VARIANTS)
    assert output.outputs == [ws.analysis("steering") / STEERING_JSON,
                              ws.analysis("steering") / STEERING_PLOT]  # fmt: skip
    found = section(summary, [str(p) for p in output.outputs])
    n_out = sum(v["p_regulation"]["outside_null"] for v in summary["variants"])
    assert found.finding.startswith(
        f"Steering feature {world['feature']}: {n_out} of 4 interventions move "
        "P(regulation) outside ±2 SEM of the random-direction null"
    )
    verdict = " — a null result, as the seed card reports." if n_out == 0 else "null."
    assert found.finding.endswith(
        f"{verdict} Measured on the adhd held-out sequences in both models."
    )
    assert found.table is not None and [row[0] for row in found.table[1:]] == list(VARIANTS)
    assert all(row[-1] == "n/a" for row in found.table[1:])  # generation skipped
    assert found.figures == [ws.analysis("steering") / STEERING_PLOT]
    assert ANALYSIS.after == ("feature-diff",) and ANALYSIS.config is SteeringStudyConfig


@pytest.mark.skipif(not HAS_GENERATE, reason="interpgpt.model.generate not installed")
def test_generation_hook_sees_every_boundary_token(world):
    """Under KV-cached sampling the hook is active exactly at the fed <|steps|>/<|sep|>
    tokens, and a zero vector leaves the samples unchanged."""
    from interpgpt.model.config import GenerationConfig
    from interpgpt.model.generate import sample_decompositions

    model, tok = world["models"]["adhd"], world["tok"]
    tasks = [r["task"] for r in world["eset"].records[:3]]
    config = GenerationConfig(max_new_tokens=24, seed=0, batch_size=3)
    gate = BoundaryTokens(model, [tok.steps_id, tok.sep_id])
    seen = []

    def counting(act, hook):
        seen.append(int(gate().sum()))
        return add_vector(torch.zeros(32))(gate)(act, hook)

    with model.hooks(fwd_hooks=[("hook_embed", gate.hook), (LAST, counting)]):
        hooked = sample_decompositions(model, tok, tasks, config)
    clean = sample_decompositions(model, tok, tasks, config)
    assert [d.ids for d in hooked] == [d.ids for d in clean]
    fed = [d.ids[:-1] for d in hooked]  # the last sampled token is never fed back
    assert sum(seen) == sum(t in (tok.steps_id, tok.sep_id) for ids in fed for t in ids)
    rates = generated_regulation_rate(model, tok, tasks, config, LAST, add_vector(torch.zeros(32)))
    assert rates.shape == (3,)


def test_study_stage_with_no_adhd_feature_steers_nothing_and_says_so(tmp_path):
    diff_file = write_json(tmp_path / "feature_diff.json", {"features": []})
    records = {"feature-diff": {"summary": {"sae_dir": str(tmp_path), "diff_file": str(diff_file)}}}
    output = stage(Workspace(tmp_path, records), SteeringConfig())
    assert output.outputs == [diff_file] and "skipped" in output.summary
    built = section(output.summary, [str(p) for p in output.outputs])
    assert built.status == "warn" and built.finding.startswith("Nothing was steered")
    with pytest.raises(UserError, match="lists no ADHD-specific feature"):
        resolve_feature(SteeringConfig(diff_file=diff_file), d_sae=8)  # the command still refuses
