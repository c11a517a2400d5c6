"""Known answers: ridge probes and their shuffled control, the interchange hook, and the
planted break rule found (and moved) in the tiny ADHD model, not in a model against
itself; files, stage, section and command."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from interpgpt.analysis.interventions import interchange
from interpgpt.analysis.known_answers.config import KnownAnswersConfig
from interpgpt.analysis.known_answers.interchange import BaseRuns, Pairs, sample_pairs
from interpgpt.analysis.known_answers.probing import (
    ALPHAS,
    VARIABLES,
    DecisionPoints,
    decision_labels,
    decision_points,
    fit_ridge,
    probe_variables,
    ridge_design,
    score,
    split_by_task,
)
from interpgpt.analysis.known_answers.run import (
    INTERCHANGE_PLOT,
    KNOWN_ANSWERS_JSON,
    PROBES_PLOT,
    known_answers,
    section,
    stage,
)
from interpgpt.cli import app
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.settings import SettingError

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow(seconds=30)]

SMALL = {"limit": 40, "n_pairs": 96, "n_random": 3, "batch_size": 64}
"""The tiny pair's settings: 40 test tasks give ~600 decision points."""


# ------------------------------------------------------------------------------- ridge


def test_ridge_finds_a_linear_variable_and_not_its_shuffle():
    """y = x w + noise is read back with R² near its ceiling; the shuffled labels, with
    the same probe, score near 0, so selectivity is the score; a class given by a
    direction is read with accuracy."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 24, generator=gen) * torch.linspace(0.1, 3.0, 24) + 4.0
    w = torch.randn(24, generator=gen)
    signal = x @ w
    y = signal + 0.3 * signal.std() * torch.randn(600, generator=gen)
    ceiling = 1 / (1 + 0.3**2)
    tr, te = slice(0, 400), slice(400, None)
    r2 = score(fit_ridge(x[tr], y[tr]), x[te], y[te])
    assert ceiling - 0.05 < r2 <= 1.0
    shuffled = y[torch.randperm(600, generator=gen)]
    control = score(fit_ridge(x[tr], shuffled[tr]), x[te], shuffled[te])
    assert abs(control) < 0.05
    labels = torch.where(signal > signal.median(), 2.0, 1.0)
    probe = fit_ridge(x[tr], labels[tr], categorical=True)
    assert probe.classes is not None and probe.classes.tolist() == [1.0, 2.0]
    assert score(probe, x[te], labels[te]) > 0.9
    # The probe's direction is the planted one.
    cos = torch.nn.functional.cosine_similarity(fit_ridge(x[tr], y[tr]).direction(), w, dim=0)
    assert cos > 0.95


def reference_ridge(x, y, groups, folds=5):
    """The straightforward computation: the normal equations (Xcᵀ Xc + λ I) w = Xcᵀ (y - ȳ)
    solved per penalty and per fold, the penalty of least cross-validated error refitted."""
    x, y = x.double(), y.double()[:, None]

    def solve(xs, ys, lam):
        mx, my = xs.mean(0), ys.mean(0)
        xc = xs - mx
        w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(x.shape[1], dtype=x.dtype),
                               xc.T @ (ys - my))  # fmt: skip
        return w, my - mx @ w

    scale = float(torch.linalg.svdvals(x - x.mean(0)).square().mean())
    lams = [a * scale for a in ALPHAS]
    ids = torch.unique(groups, return_inverse=True)[1] % folds
    errors = []
    for lam in lams:
        error = 0.0
        for fold in ids.unique():
            held = ids == fold
            w, b = solve(x[~held], y[~held], lam)
            error += float((y[held] - x[held] @ w - b).square().sum())
        errors.append(error)
    lam = lams[min(range(len(lams)), key=errors.__getitem__)]
    return (*solve(x, y, lam), lam)


def test_one_ridge_design_fits_every_target_as_the_normal_equations_do():
    """The shared factorisation (one SVD per fold for every target and penalty) gives the
    weights, bias and penalty of solving each fit on its own; a target with little signal
    picks a large penalty, one with much a small one, so the choice is exercised."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(300, 12, generator=gen) * torch.linspace(0.01, 2.0, 12) + 1.0
    groups = torch.randint(0, 40, (300,), generator=gen)
    w = torch.randn(12, generator=gen)
    targets = {
        "signal": x @ w + 0.05 * torch.randn(300, generator=gen),
        "noise": torch.randn(300, generator=gen),
    }
    design = ridge_design(x, groups)
    chosen = set()
    for y in targets.values():
        probe = design.fit(y)
        weight, bias, lam = reference_ridge(x, y, groups)
        assert probe.alpha == pytest.approx(lam, rel=1e-12)
        torch.testing.assert_close(probe.weight, weight, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(probe.bias, bias, rtol=1e-8, atol=1e-10)
        single = fit_ridge(x, y, groups=groups)
        torch.testing.assert_close(single.weight, probe.weight, rtol=1e-12, atol=1e-14)
        chosen.add(probe.alpha)
    assert len(chosen) == 2


def test_interchange_writes_the_coordinate_and_keeps_the_rest():
    gen = torch.Generator().manual_seed(1)
    act = torch.randn(2, 5, 8, generator=gen)
    u = torch.nn.functional.normalize(torch.randn(8, generator=gen), dim=0)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 3] = mask[1, 1] = True
    coords = torch.zeros(2, 5, 1)
    coords[0, 3, 0], coords[1, 1, 0] = 7.0, -2.0
    out = interchange("x", u[:, None], coords, mask).fn(act, None)
    assert torch.allclose(out[0, 3] @ u, torch.tensor(7.0), atol=1e-5)
    assert torch.allclose(out[1, 1] @ u, torch.tensor(-2.0), atol=1e-5)
    rest = out - (out @ u)[..., None] * u
    assert torch.allclose(rest, act - (act @ u)[..., None] * u, atol=1e-5)
    assert torch.equal(out[~mask], act[~mask])
    own = (act @ u)[..., None]  # writing a run's own coordinates changes nothing
    assert torch.allclose(interchange("x", u[:, None], own, mask).fn(act, None), act, atol=1e-6)


# ------------------------------------------------------------------ on the tiny pair


@pytest.fixture(scope="module")
def tiny_answers(tiny_corpus, tiny_tokenizer, tiny_pair):
    """The standard and ADHD models, and the ADHD model against a copy of itself."""
    eset = load_eval_set(tiny_corpus, tiny_tokenizer, "adhd", "test", SMALL["limit"], 256)
    reg_ids = sorted(regulation_first_tokens(tiny_tokenizer))
    adhd = tiny_pair["adhd"].model.eval()
    models = {
        "standard": tiny_pair["standard"].model.eval(),
        "adhd": adhd,
        "adhd-copy": copy.deepcopy(adhd),
    }
    answers = known_answers(
        models, eset, reg_ids, n_pairs=SMALL["n_pairs"], n_random=SMALL["n_random"]
    )
    return eset, answers


@torch.no_grad()
def reference_interchange(model, eset, points: DecisionPoints, pairs: Pairs, hook_name,
                           u, reg_ids, batch_size=16) -> torch.Tensor:  # fmt: skip
    """The straightforward computation: a full forward per batch of pairs (in pair order)
    under the interchange hook, every position unembedded, read at the bases."""
    coord = points.acts[hook_name].float() @ u
    out = []
    for start in range(0, len(pairs.base), batch_size):
        base = pairs.base[start : start + batch_size]
        source = pairs.source[start : start + batch_size]
        pos = points.pos[base]
        ids = eset.ids[points.row[base], : int(pos.max()) + 1]
        arange = torch.arange(len(base))
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        mask[arange, pos] = True
        coords = torch.zeros(*ids.shape, 1)
        coords[arange, pos, 0] = coord[source]
        logits = model.run_with_hooks(
            ids, fwd_hooks=[interchange(hook_name, u[:, None], coords, mask)]
        )
        out.append(logits[arange, pos].float().softmax(-1)[:, reg_ids].sum(-1))
    return torch.cat(out)


@pytest.mark.parametrize("hook_name", ["hook_embed", "blocks.0.hook_resid_post",
                                       "blocks.1.hook_resid_post"])  # fmt: skip
def test_base_runs_equal_the_full_forward(tiny_answers, tiny_pair, tiny_tokenizer, hook_name):
    """The interchange's fast path (the bases' residual at the site cached once, only the
    blocks after it run, only the decision points unembedded, pairs batched by position)
    gives the full forward's P(regulation next), at the first block's input, a middle site
    and the final residual stream; and the clean decision points read the full forward."""
    eset, _ = tiny_answers
    model = tiny_pair["adhd"].model
    reg_ids = sorted(regulation_first_tokens(tiny_tokenizer))
    points = decision_points(model, eset, reg_ids, batch_size=16)
    logits = model(eset.ids)
    clean = logits[points.row, points.pos].softmax(-1)[:, reg_ids].sum(-1)
    torch.testing.assert_close(points.p_regulation, clean, rtol=1e-5, atol=1e-7)
    gen = torch.Generator().manual_seed(0)
    pairs = sample_pairs(points, torch.ones(len(points), dtype=torch.bool), 40, gen)
    # Every decision point reads <|sep|>, so at the embedding a source's coordinate is its
    # base's own: move the sources' residuals so the interchange writes something new.
    moved = points.acts[hook_name] + torch.randn(points.acts[hook_name].shape, generator=gen)
    points = DecisionPoints(**{**points.__dict__, "acts": {**points.acts, hook_name: moved}})
    runs = BaseRuns(model, eset, points, pairs, batch_size=16)
    for _ in range(2):  # the second direction reuses the cached residual stream
        u = torch.nn.functional.normalize(torch.randn(model.cfg.d_model, generator=gen), dim=0)
        fast = runs.p_regulation(hook_name, 5 * u, reg_ids)
        full = reference_interchange(model, eset, points, pairs, hook_name, u, reg_ids)
        torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-7)
        assert (fast - points.p_regulation[pairs.base]).abs().max() > 1e-6  # it moved


def test_decision_points_are_the_onsets_after_a_content_step(tiny_answers):
    eset, answers = tiny_answers
    where, labels = decision_labels(eset)
    assert answers.n_points == len(where) > 200
    assert set(labels) == set(VARIABLES)
    for (row, pos), effort in zip(where, labels["effort"], strict=True):
        roles = eset.roles[row]
        k = roles.onset_predictors.index(pos)
        assert k >= 1 and not roles.step_is_regulation[k - 1] and effort in (1.0, 2.0)
    assert all(r - b == lo for r, b, lo in zip(labels["remaining"], labels["budget"],
               [-x for x in labels["load"]], strict=True))  # fmt: skip


def test_the_tiny_adhd_model_has_not_learned_the_rule_and_nothing_moves(tiny_answers):
    """The known answer for the session's tiny pair (150 AdamW steps, val loss ~6 nats):
    it never puts P(regulation next) above 1/2, so its decisions agree with the rule only
    where the rule is quiet, no interchange flips a decision (flip-pair IIA 0) and
    `remaining` is barely readable. The ADHD model trained long enough to learn the rule
    (the study's) is where the probe and the interchange have something to find; the
    probe's and the hook's known answers on planted data are the two tests above."""
    _, answers = tiny_answers
    # Never deciding "break", each model agrees with the rule exactly at its quiet points.
    assert len({m.rule_agreement for m in answers.models}) == 1
    for m in answers.models:
        assert m.rule_agreement < 0.75
        assert all(x.probe.iia_flip == 0.0 for x in m.interchange if x.probe.n_flip_scored)
        assert all(abs(x.probe.mean_delta_up) < 0.05 for x in m.interchange)
        remaining = m.probes.get("remaining")
        assert max(remaining.selectivity) < 0.3


def test_a_model_against_itself_shows_no_difference(tiny_answers):
    _, answers = tiny_answers
    adhd, copy_ = answers.model("adhd"), answers.model("adhd-copy")
    assert adhd.rule_agreement == copy_.rule_agreement
    for a, b in zip(adhd.probes.scores, copy_.probes.scores, strict=True):
        assert a.score == b.score and a.selectivity == b.selectivity
    for a, b in zip(adhd.interchange, copy_.interchange, strict=True):
        assert a.probe == b.probe and a.random == b.random


def test_shuffled_labels_have_selectivity_near_zero(tiny_answers, tiny_pair, tiny_corpus,
                                                    tiny_tokenizer):  # fmt: skip
    """A variable that is noise (the real labels shuffled) scores like its control."""
    eset, _ = tiny_answers
    points = decision_points(tiny_pair["adhd"].model, eset, [0])
    gen = torch.Generator().manual_seed(3)
    noise = points.labels["remaining"][torch.randperm(len(points), generator=gen)]
    points = DecisionPoints(**{**points.__dict__, "labels": {"remaining": noise}})
    train = split_by_task(points.task, 0.7, 0)
    result = probe_variables(points, train, seed=0, variables=("remaining",)).get("remaining")
    assert max(abs(s) for s in result.selectivity) < 0.1
    assert max(result.score) < 0.1


# ------------------------------------------------------------------- files and command


def test_stage_writes_files_and_section_with_the_twin(study_layout, tiny_run_dirs, tiny_corpus):
    ws = study_layout(
        {
            "corpus": tiny_corpus,
            ("export", "standard"): tiny_run_dirs["standard"],
            ("export", "adhd"): tiny_run_dirs["adhd"],
            ("export", "adhd-twin"): tiny_run_dirs["adhd"],  # a twin that is the model itself
        }
    )
    config = KnownAnswersConfig(limit=12, n_pairs=8, n_random=1, interchange_at="best")
    out = stage(ws, config)
    names = {p.name for p in out.outputs}
    assert names == {KNOWN_ANSWERS_JSON, PROBES_PLOT, INTERCHANGE_PLOT}
    assert set(out.summary["models"]) == {"standard", "adhd", "adhd-twin"}
    blob = json.loads((ws.analysis("known_answers") / KNOWN_ANSWERS_JSON).read_text())
    assert set(blob["models"]["adhd"]["probes"]) == set(VARIABLES)
    assert len(blob["models"]["adhd"]["interchange"]) == 1
    sec = section(out.summary, [str(p) for p in out.outputs])
    assert sec.table is not None and len(sec.table) == 1 + 3 * len(VARIABLES)
    assert len(sec.figures) == 2 and "remaining" in sec.finding


def test_command_prints_the_tables(tiny_run_dirs, tiny_corpus, tmp_path):
    args = [
        "known-answers", str(tiny_run_dirs["standard"]), str(tiny_run_dirs["adhd"]),
        "--corpus", str(tiny_corpus), "--out", str(tmp_path), "--limit", "10",
        "--n-pairs", "4", "--n-random", "1", "--interchange-at", "best", "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "remaining" in result.output and "interchange" in result.output
    assert (tmp_path / KNOWN_ANSWERS_JSON).is_file()


def test_bad_settings():
    with pytest.raises(SettingError, match="split"):
        KnownAnswersConfig(split="train")
    with pytest.raises(SettingError, match="train_fraction"):
        KnownAnswersConfig(train_fraction=1.0)
