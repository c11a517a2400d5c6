"""Cross-model SAE feature diff: statistics, a planted known-answer feature, files, CLI,
config validation and the study stage with its report section."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from interpgpt.analysis.controls import MATCH_THRESHOLD
from interpgpt.analysis.feature_diff.config import FeatureDiffConfig
from interpgpt.analysis.feature_diff.run import (
    ANALYSIS,
    FEATURE_DIFF_DASHBOARD,
    FEATURE_DIFF_JSON,
    FEATURE_DIFF_MD,
    FeatureDiffStudyConfig,
    feature_diff,
    section,
    stage,
)
from interpgpt.analysis.protocol import fmt
from interpgpt.analysis.sae_features import onset_feature_stats
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.errors import UserError
from interpgpt.io import write_json
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.sae.topk import TopKSAE, TopKSAEConfig
from interpgpt.settings import SettingError

PLANTED = 7
"""The SAE feature whose encoder reads the direction planted in the ADHD model only."""
PLANT_SIZE = 2.0


def save_run_dir(model: TaskGPT, tokenizer: TaskTokenizer, variant: str, out: Path) -> Path:
    """A run dir as `interpgpt train` writes it (the parts `load_model` reads)."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors")
    )
    write_json(out / "config.json", {"model": model.cfg.to_dict(), "variant": variant})
    tokenizer.save(out / "tokenizer.json")
    return out


def planted_direction(d_model: int) -> torch.Tensor:
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(123))
    return v / v.norm()


@pytest.fixture(scope="module")
def world(tiny_corpus, tiny_tokenizer, tmp_path_factory) -> dict:
    """A tiny corpus and tokenizer; a random standard model; an ADHD model that is the same
    model with `PLANT_SIZE * v` added to the <|steps|>/<|sep|> embeddings (so v sits in
    the residual at every onset predictor); an SAE whose feature PLANTED reads v."""
    root = tmp_path_factory.mktemp("diff")
    tok = tiny_tokenizer
    torch.manual_seed(0)
    std = TaskGPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=256)).eval()
    adhd = TaskGPT(std.cfg).eval()
    adhd.load_state_dict(std.state_dict())
    v = planted_direction(std.cfg.d_model)
    with torch.no_grad():
        adhd.embed.weight[[tok.steps_id, tok.sep_id]] += PLANT_SIZE * v
    sae = TopKSAE(
        TopKSAEConfig(d_in=std.cfg.d_model, d_sae=48, k=6, layer=1, model_name="adhd"),
        generator=torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        others = sae.W_enc - torch.outer(v, v @ sae.W_enc)  # other features blind to v
        sae.W_enc.copy_(others)
        sae.W_enc[:, PLANTED] = v
        sae.W_dec[PLANTED] = v
        sae.b_enc[PLANTED] = -PLANT_SIZE / 2  # fires only when the v component is large
    return {
        "root": root,
        "corpus": tiny_corpus,
        "tok": tok,
        "std": std,
        "adhd": adhd,
        "sae": sae,
        "std_dir": save_run_dir(std, tok, "standard", root / "std"),
        "adhd_dir": save_run_dir(adhd, tok, "adhd", root / "adhd"),
        "sae_dir": sae.save(root / "sae"),
    }


def test_onset_stats_count_onset_predictors(world):
    eset = load_eval_set(world["corpus"], world["tok"], "adhd", limit=6, max_len=256)
    stats = onset_feature_stats(world["adhd"], world["sae"], eset, "blocks.1.hook_resid_post", 4)
    assert stats.n_positions == int(eset.onset_predictor_mask().sum()) > 0
    assert ((stats.onset_rate >= 0) & (stats.onset_rate <= 1)).all()
    # TopK: each position has at most k active latents.
    assert stats.fire_count.sum() <= world["sae"].cfg.k * stats.n_positions
    assert stats.onset_rate[PLANTED] == 1.0
    assert (stats.mean_when_firing[stats.fire_count > 0] > 0).all()


def test_planted_feature_is_found(world):
    out = world["root"] / "out"
    result = feature_diff(FeatureDiffConfig(
        world["sae_dir"], world["std_dir"], world["adhd_dir"], world["corpus"], out,
        limit=8, top_n=3, device="cpu"))  # fmt: skip
    assert PLANTED in result.selected
    assert float(result.adhd.onset_rate[PLANTED]) == 1.0
    assert float(result.standard.onset_rate[PLANTED]) == 0.0
    blob = json.loads((out / FEATURE_DIFF_JSON).read_text())
    assert blob["thresholds"] == {"adhd_min_rate": 0.05, "standard_max_rate": 0.005}
    assert "provenance" in blob and blob["n_selected"] == len(result.selected)
    row = next(r for r in blob["features"] if r["feature"] == PLANTED)
    assert row["asymmetry"] == pytest.approx((1 + 1e-4) / 1e-4)
    for r in blob["features"]:
        assert r["adhd_rate"] >= 0.05 and r["standard_rate"] <= 0.005
    # Ranked by asymmetry, strongest first.
    ratios = [r["asymmetry"] for r in blob["features"]]
    assert ratios == sorted(ratios, reverse=True)
    page = (out / FEATURE_DIFF_MD).read_text()
    assert f"## Feature {blob['features'][0]['feature']}" in page
    # The dashboard: a card and a table row per shown feature, the planted one among them,
    # its contexts outlining the boundary token it fires on.
    assert result.dashboard_path == out / FEATURE_DIFF_DASHBOARD
    dash = result.dashboard_path.read_text()
    shown = result.selected[:3]
    assert [int(f) for f in re.findall(r'<section class="card" id="latent-(\d+)"', dash)] == shown
    assert [int(f) for f in re.findall(r'<tr data-latent="(\d+)"', dash)] == shown
    planted = dash[dash.index(f'id="latent-{PLANTED}"') :].split("</section>")[0]
    assert planted.count("data:image/png;base64,") == 1 and 'src="http' not in dash
    focus = re.findall(r'class="tok focus"[^>]*>([^<]*)</span>', planted)
    assert focus and set(focus) <= {"&lt;|steps|&gt;", "&lt;|sep|&gt;"}
    assert "<th colspan='4'>standard</th>" in planted and "<th colspan='4'>adhd</th>" in planted


def test_planted_contexts_end_on_boundary_tokens(world):
    out = world["root"] / "ctx"
    feature_diff(FeatureDiffConfig(
        world["sae_dir"], world["std_dir"], world["adhd_dir"], world["corpus"], out,
        limit=8, adhd_min_rate=1.0, standard_max_rate=0.0, device="cpu"))  # fmt: skip
    blob = json.loads((out / FEATURE_DIFF_JSON).read_text())
    contexts = blob["top_contexts"][str(PLANTED)]
    assert contexts
    for ctx in contexts:
        assert ctx["tokens"][-1] in ("<|steps|>", "<|sep|>")
        assert ctx["activations"][-1] == pytest.approx(ctx["activation"], abs=1e-4)


def test_swapped_models_are_refused_naming_both(world):
    """The diff is directional, so a pair given in the wrong roles is refused in one line
    naming both models (their exports record their variants)."""
    with pytest.raises(UserError, match="the standard model goes in the standard role") as err:
        feature_diff(FeatureDiffConfig(
            world["sae_dir"], world["adhd_dir"], world["std_dir"], world["corpus"],
            world["root"] / "swap", limit=8, sequences="adhd", device="cpu"))  # fmt: skip
    assert str(world["adhd_dir"]) in str(err.value) and str(world["std_dir"]) in str(err.value)


def test_bad_config_is_an_error_naming_the_setting(world):
    with pytest.raises(SettingError) as err:
        FeatureDiffConfig(Path(), Path(), Path(), Path(), Path(), adhd_min_rate=0.001)
    assert err.value.field == "standard_max_rate" and "adhd_min_rate" in err.value.message
    with pytest.raises(UserError, match="not found"):
        feature_diff(
            FeatureDiffConfig(
                world["root"] / "nope",
                world["std_dir"],
                world["adhd_dir"],
                world["corpus"],
                world["root"] / "x",
                device="cpu",
            )
        )


def test_cli_sae_diff(world):
    from interpgpt.cli import app

    out = world["root"] / "cli"
    result = CliRunner().invoke(app, [
        "sae", "diff", str(world["sae_dir"]), "--standard", str(world["std_dir"]),
        "--adhd", str(world["adhd_dir"]), "--corpus", str(world["corpus"]), "--out", str(out),
        "--limit", "6", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (out / FEATURE_DIFF_JSON).is_file() and (out / FEATURE_DIFF_MD).is_file()
    assert "ADHD-specific features" in result.output


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epsilon", 0.0),
        ("sequences", "both"),
        ("adhd_min_rate", 1.5),
        ("limit", 0),
        ("batch_size", 0),
        ("layer", -1),
    ],
)
def test_post_init_rejects_a_bad_value_naming_its_field(field, value):
    with pytest.raises(SettingError) as err:
        FeatureDiffStudyConfig(**{field: value})
    assert err.value.field == field


def test_cli_reports_a_bad_setting_as_its_option(world):
    from interpgpt.cli import app

    result = CliRunner().invoke(app, [
        "sae", "diff", str(world["sae_dir"]), "--standard", str(world["std_dir"]),
        "--adhd", str(world["adhd_dir"]), "--corpus", str(world["corpus"]),
        "--out", str(world["root"] / "bad"), "--epsilon", "0"])  # fmt: skip
    assert isinstance(result.exception, UserError)
    assert str(result.exception).startswith("--epsilon: must be positive")


def test_study_stage_and_section(world, study_layout):
    """The stage diffs the ADHD SAE at `layer` from the study's layout, records the SAE
    and diff file for steering, and its summary builds the report section."""
    layout = {
        ("corpus",): world["corpus"],
        ("export", "standard"): world["std_dir"],
        ("export", "adhd"): world["adhd_dir"],
        ("sae", "adhd_L1_hook_resid_post"): world["sae_dir"],
    }
    ws = study_layout(layout)
    config = FeatureDiffStudyConfig(layer=1, limit=8, top_n=3, device="cpu")
    output = stage(ws, config)
    summary = json.loads(json.dumps(output.summary))  # as the stage record stores it
    assert summary["sae_dir"] == str(ws.sae("adhd", 1))
    assert summary["diff_file"] == str(ws.analysis("feature_diff") / FEATURE_DIFF_JSON)
    assert [Path(p).name for p in output.outputs] == [
        FEATURE_DIFF_JSON,
        FEATURE_DIFF_MD,
        FEATURE_DIFF_DASHBOARD,
    ]
    assert {"feature": PLANTED, "adhd_rate": 1.0, "std_rate": 0.0} in summary["top"]
    top = summary["top"][0]
    found = section(summary, [str(p) for p in output.outputs])
    assert found.title == "Cross-model feature diff"
    assert summary["sequences"] == "adhd"
    blob = json.loads((ws.analysis("feature_diff") / FEATURE_DIFF_JSON).read_text())
    assert blob["sequences"] == "adhd"  # both models read the same sequences
    assert found.finding == (
        f"{summary['n_selected']} SAE features fire at the ADHD model's step onsets and "
        "almost never at the standard model's, both reading the adhd held-out sequences; "
        f"the top one, {top['feature']}, fires at {fmt(top['adhd_rate'])} vs "
        f"{fmt(top['std_rate'])}."
    )
    assert found.table is not None and len(found.table) == len(summary["top"]) + 1
    assert [str(PLANTED), fmt(1.0), fmt(0.0)] in found.table
    assert found.rows == [("contexts", str(output.outputs[1]))]
    assert found.pages == [("feature dashboards", Path(output.outputs[2]))]
    empty = section({"n_selected": 0, "top": []}, [])
    assert empty.finding.startswith("No SAE feature is specific")
    assert ANALYSIS.config is FeatureDiffStudyConfig and ANALYSIS.after == ("sae",)


def test_the_study_setting_finds_nothing_between_a_model_and_itself(world):
    """With the study's setting both roles read the same sequences, so a model against
    itself, the limit of a seed null, has no ADHD-only feature."""
    config = FeatureDiffStudyConfig(layer=1, limit=8, device="cpu")
    result = feature_diff(dataclasses.replace(
        config, sae_dir=world["sae_dir"], standard=world["adhd_dir"], adhd=world["adhd_dir"],
        corpus=world["corpus"], out=world["root"] / "itself", same_variant=True))  # fmt: skip
    assert result.selected == []
    assert torch.equal(result.standard.onset_rate, result.adhd.onset_rate)


def test_a_feature_must_be_stable_across_sae_seeds(world):
    """Against the same dictionary every latent is matched and the planted feature stays;
    against a dictionary that lacks its direction (another seed that did not learn it), it
    is dropped as unstable."""
    same = feature_diff(FeatureDiffConfig(
        world["sae_dir"], world["std_dir"], world["adhd_dir"], world["corpus"],
        world["root"] / "stable", limit=8, top_n=3, device="cpu",
        stability_sae=world["sae_dir"]))  # fmt: skip
    assert PLANTED in same.selected
    assert same.seed_stability["share_matched"] == 1.0 and same.seed_stability["unstable"] == []
    other = TopKSAE.load(world["sae_dir"])
    with torch.no_grad():
        lost = torch.randn(other.W_dec.shape[1], generator=torch.Generator().manual_seed(5))
        other.W_dec[PLANTED] = lost / lost.norm()
    other_dir = other.save(world["root"] / "other_seed")
    dropped = feature_diff(FeatureDiffConfig(
        world["sae_dir"], world["std_dir"], world["adhd_dir"], world["corpus"],
        world["root"] / "unstable", limit=8, top_n=3, device="cpu",
        stability_sae=other_dir))  # fmt: skip
    assert PLANTED not in dropped.selected and PLANTED in dropped.seed_stability["unstable"]
    blob = json.loads((world["root"] / "unstable" / FEATURE_DIFF_JSON).read_text())
    assert blob["seed_stability"]["threshold"] == MATCH_THRESHOLD
    assert blob["n_selected"] == len(same.selected) - 1
