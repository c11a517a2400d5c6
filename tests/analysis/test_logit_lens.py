"""Regulation logit lens and DLA: exact decomposition, TransformerLens agreement, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from interpgpt.analysis.logit_lens.config import LogitLensConfig
from interpgpt.analysis.logit_lens.run import (
    dla_summary,
    largest_jump,
    layer_jump,
    lens_curve,
    onset_readout,
    regulation_direction,
    regulation_step_share,
    section,
)
from interpgpt.artifacts.convert import to_hooked_transformer
from interpgpt.commands import logit_lens
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.corpus.regulation import REGULATION_ACTIONS
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.settings import SettingError


@pytest.fixture(scope="module")
def setup(tiny_corpus, tiny_tokenizer, tiny_pair):
    """The shared corpus and tokenizer, the trained tiny ADHD model, its ADHD test set."""
    model = tiny_pair["adhd"].model.eval()
    data = load_eval_set(tiny_corpus, tiny_tokenizer, "adhd", max_len=model.cfg.n_ctx)
    return tiny_corpus, tiny_tokenizer, model, data


def test_regulation_tokens_are_the_onset_tokens(setup) -> None:
    _, tokenizer, _, data = setup
    reg = regulation_first_tokens(tokenizer)
    assert sorted(a for actions in reg.values() for a in actions) == sorted(REGULATION_ACTIONS)
    onset_tokens = {
        int(data.ids[row, onset])
        for row, roles in enumerate(data.roles)
        for onset, is_reg in zip(roles.step_onsets, roles.step_is_regulation, strict=True)
        if is_reg
    }
    assert onset_tokens and onset_tokens <= set(reg)


def test_dla_sums_to_regulation_logit_and_final_lens_is_the_output(setup) -> None:
    _, tokenizer, model, data = setup
    reg = list(regulation_first_tokens(tokenizer))
    readout = onset_readout(model, data, reg, batch_size=7)
    summary = dla_summary(readout)
    assert summary.max_abs_residual < 1e-4
    assert readout.dla_heads.abs().max() > 1e-2  # components are not trivially zero
    # The regulation logit really is mean_R logit − mean_V logit of the model output.
    mask = data.onset_predictor_mask()
    with torch.no_grad():
        logits = model(data.ids)[mask]
    expected = logits[:, reg].mean(-1) - logits.mean(-1)
    torch.testing.assert_close(readout.regulation_logit, expected, atol=1e-5, rtol=1e-5)
    # The last lens layer is the model's own next-token distribution.
    final = logits.softmax(-1)[:, reg].sum(-1)
    torch.testing.assert_close(readout.p_regulation[:, -1], final, atol=1e-6, rtol=1e-5)
    # Intermediate layers: the residual entering block l+1, read through the final norm.
    with torch.no_grad():
        resid = model(data.ids, stop_at_layer=1)[mask]
        lens0 = model.unembed(resid).softmax(-1)[:, reg].sum(-1)
    torch.testing.assert_close(readout.p_regulation[:, 1], lens0, atol=1e-6, rtol=1e-5)
    assert readout.next_is_regulation.any() and (~readout.next_is_regulation).any()


def test_head_dla_matches_transformerlens(setup) -> None:
    _, tokenizer, model, data = setup
    reg = list(regulation_first_tokens(tokenizer))
    small = data.subset(slice(0, 4))
    readout = onset_readout(model, small, reg)
    tl_model = to_hooked_transformer(model)
    tl_model.set_use_attn_result(True)
    with torch.no_grad():
        _, cache = tl_model.run_with_cache(small.ids)
        stack = cache.stack_head_results(layer=-1, apply_ln=True)  # (component, batch, pos, d)
    mask = small.onset_predictor_mask()
    direction = regulation_direction(model, reg)
    tl_dla = (stack[:, mask] @ direction).T.reshape(-1, model.cfg.n_layer, model.cfg.n_head)
    torch.testing.assert_close(readout.dla_heads, tl_dla, atol=1e-4, rtol=1e-4)


def test_curve_and_jump_known_answers() -> None:
    jump = largest_jump([-1, 0, 1, 2], [0.001, 0.014, 0.251, 0.3])
    assert (jump.from_layer, jump.to_layer) == (0, 1)
    assert jump.ratio == pytest.approx(0.251 / 0.014)
    assert largest_jump([0], [0.5]) is None
    records = [{"steps": ["Open box", "sip water", "Read label"]}, {"steps": ["pause", "Go"]}]
    assert regulation_step_share(records) == pytest.approx(2 / 5)


def test_lens_curve_layers_and_masks(setup) -> None:
    _, tokenizer, model, data = setup
    readout = onset_readout(model, data, list(regulation_first_tokens(tokenizer)))
    with_embed, without = lens_curve(readout, True), lens_curve(readout, False)
    assert with_embed.layers == [-1, 0, 1] and without.layers == [0, 1]
    assert with_embed.p_regulation[1:] == without.p_regulation
    share = readout.next_is_regulation.double().mean().item()
    mixed = [
        share * r + (1 - share) * c
        for r, c in zip(with_embed.p_next_regulation, with_embed.p_next_content, strict=True)
    ]
    np.testing.assert_allclose(mixed, with_embed.p_regulation, rtol=1e-6)


def command_app() -> typer.Typer:
    """An app holding only the `logit-lens` command (a group: it is invoked by name)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    logit_lens.register(app)
    return app


def test_cli_logit_lens(setup, tiny_run_dirs, tmp_path: Path) -> None:
    corpus = setup[0]
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    out = tmp_path / "out"
    args = ["logit-lens", str(std), str(adhd), "--corpus", str(corpus)]
    options = ["--out", str(out), "--device", "cpu", "--limit", "6"]
    result = CliRunner().invoke(command_app(), [*args, *options])
    assert result.exit_code == 0, result.output
    assert "largest jump" in result.output
    lens = json.loads((out / "logit_lens.json").read_text())
    assert 1 <= lens["n_tasks"] <= 6 and lens["provenance"]["config"]["limit"] == 6
    assert lens["models"]["adhd"]["layers"] == [-1, 0, 1]
    assert 0 < lens["regulation_step_share"] < 0.5
    dla = json.loads((out / "dla.json").read_text())
    assert np.array(dla["models"]["standard"]["heads"]).shape == (2, 4)
    assert dla["models"]["adhd"]["max_abs_residual"] < 1e-4
    for name in ("logit_lens.png", "dla_heatmap.png"):
        assert (out / name).stat().st_size > 0
    with pytest.raises(SettingError, match="dtype"):
        LogitLensConfig(std, adhd, corpus, out, dtype="float16")


@pytest.mark.parametrize(
    ("field", "value"),
    [("dtype", "float16"), ("sequences", "mixed"), ("limit", 0), ("batch_size", 0)],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(SettingError) as err:
        LogitLensConfig(**{field: value})
    assert err.value.field == field


def test_section_reports_the_jump_between_transformer_layers() -> None:
    """The embedding -> L0 ratio is larger but excluded, as the seed card counts layers."""
    assert layer_jump([-1, 0, 1, 2], [0.001, 0.1, 0.014, 0.251]) == {
        "from_layer": 1,
        "to_layer": 2,
        "p_from": 0.014,
        "p_to": 0.251,
        "ratio": pytest.approx(0.251 / 0.014),
    }
    assert layer_jump([-1, 0], [0.1, 0.2]) == {}
    curve = {"layers": [-1, 0, 1, 2], "p_regulation": [0.001, 0.1, 0.014, 0.251]}
    summary = {
        "curves": {"standard": {**curve, "p_regulation": [0.001, 0.002, 0.004, 0.003]},
                   "adhd": curve},
        "regulation_step_share": 0.24,
        "n_positions": 10,
    }  # fmt: skip
    built = section(summary, ["out/logit_lens.png", "out/logit_lens.json"])
    assert built.title == "Regulation logit lens"
    assert built.finding == (
        "ADHD P(regulation) at step-onset predictors jumps 17.93× between layers 1 and 2 "
        "(0.014 → 0.251); final layer 0.251 vs 0.240 regulation steps in the ADHD test set; "
        "the standard model peaks at 0.004."
    )
    assert built.table[0] == ["layer", "-1", "0", "1", "2"] and len(built.table) == 3
    assert [f.name for f in built.figures] == ["logit_lens.png"]
