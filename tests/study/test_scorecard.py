"""The scorecard of the diffing methods: each method's criterion read from its stage
summaries, its findings on the twin pairs counted as false positives; and its known
answer, a model against itself (the study's stages run on the tiny pair and on the ADHD
model in both roles), yields no finding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_pipeline import TINY_STUDY

from interpgpt.study.config import StudyConfig, load_study_config
from interpgpt.study.controls import TWIN_PAIRS, control_stages, pair_stage_name
from interpgpt.study.pipeline import study_stages
from interpgpt.study.scorecard import METHODS, is_regulation_token, scorecard, section
from interpgpt.study.stages import STAGES
from interpgpt.study.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")


def role(mean: float) -> dict[str, float]:
    return {"count": 10, "mean_symmetric": mean}


def summaries(found: bool) -> dict[str, dict[str, Any]]:
    """Every scored method's summary on a pair with a difference (`found`) or without."""
    return {
        "kl": {
            "roles": {
                "task": role(0.1),
                "regulation_step": role(2.0 if found else 0.05),
                "all": role(9.0),
                "other": role(9.0),
            }
        },
        "diff-lens": {
            "promoted": [" sip", " the"] if found else [" the", " sip"],
            "norms": {"onset_predictor": [0.5, 2.0], "all": [0.1, 0.4]},
            "layer": 1,
        },
        "feature-diff": {
            "n_selected": 3 if found else 0,
            "top": [{"feature": 7, "adhd_rate": 0.8, "std_rate": 0.0}] if found else [],
        },
        "logit-lens": {
            "curves": {
                "standard": {"p_next_regulation": [0.0, 1e-5]},
                "adhd": {"p_next_regulation": [0.0, 0.8 if found else 2e-5]},
            }
        },
        "crosscoder": {
            "pair": {
                "n_std_only_confirmed": 0,
                "n_adhd_only_confirmed": 2 * found,
                "top_adhd": {
                    "latent": 3,
                    "class": "shared",
                    "rel_norm": 0.7,
                    "context": "report<|sep|>close eyes ⟦eyes⟧" if found else "<|sep|>Call ⟦Call⟧",
                },
            }
        },
        "headswap": {"moved": [{"label": "L0H1"}] if found else []},
        "patching": {"clean_metric": 2.0 if found else -9.0, "corrupted_metric": -3.0},
        "ablation": {
            "target_label": "L0H1",
            "median_delta": {"L0H1": -0.1, "L0H0": -0.01},
            "comparisons": {"layer": {"n_null": 1, "rank": 1}},
        },
        "weights": {"layers": [{"layer": 0, "perm": [1, 0] if found else [0, 1]}]},
    }


def records(pair: bool, twins: bool) -> dict[str, dict[str, Any]]:
    out = {name: {"summary": s} for name, s in summaries(pair).items()}
    for twin in ("standard-twin", "adhd-twin"):
        out |= {f"{name}@{twin}": {"summary": s} for name, s in summaries(twins).items()}
    return out


def test_a_planted_difference_is_pointed_at_and_twins_report_nothing() -> None:
    rows = {r["method"]: r for r in scorecard(records(pair=True, twins=False))}
    assert list(rows) == [m.label for m in METHODS]
    for method in ("KL", "difference lens", "logit lens", "SAE feature diff", "crosscoder",
                   "activation patching", "ablation"):  # fmt: skip
        assert rows[method]["points"] is True, method
    assert rows["SAE feature diff"]["points"] and rows["SAE feature diff"]["findings"] == 3
    assert rows["head-swap"]["points"] is None and rows["head-swap"]["findings"] == 1
    for row in rows.values():
        assert row["twin_pairs"] == {"standard-twin": 0, "adhd-twin": 0}, row
    table = section({"methods": list(rows.values())}, []).table
    assert table is not None and len(table) == 1 + len(rows)


def test_summaries_that_find_nothing_read_as_no_findings() -> None:
    """Summaries of pairs with nothing found: nothing pointed at, nothing counted (the real
    runs of a model against itself are `test_a_model_against_itself_yields_no_findings`)."""
    rows = scorecard(records(pair=False, twins=False))
    assert not any(r["points"] for r in rows)
    assert not any(r["findings"] for r in rows)
    # and findings on a twin pair are counted as false positives
    noisy = {r["method"]: r["twin_pairs"] for r in scorecard(records(pair=True, twins=True))}
    assert noisy["SAE feature diff"] == {"standard-twin": 3, "adhd-twin": 3}
    assert noisy["KL"] == {"standard-twin": 1, "adhd-twin": 1}


def test_missing_runs_are_left_out_or_unknown() -> None:
    only_main = {k: v for k, v in records(pair=True, twins=False).items() if "@" not in k}
    rows = scorecard(only_main)
    assert all(r["twin_pairs"] == {"standard-twin": None, "adhd-twin": None} for r in rows)
    assert scorecard({}) == []


def test_no_difference_has_no_top_finding() -> None:
    """KL 0 at every role and a zero residual difference (a model against itself) name no
    role and no token: a tie at 0 is not a largest KL, and a zero vector promotes no token
    (its logits tie, so the lens lists tokens by id)."""
    flat = summaries(found=True)
    flat["kl"]["roles"] = {r: role(0.0) for r in ("task", "onset_predictor", "regulation_step")}
    flat["diff-lens"]["norms"]["onset_predictor"][1] = 0.0
    flat["diff-lens"]["promoted"] = [" sip"]  # the first id of a tie, a regulation word
    rows = {r["method"]: r for r in scorecard({n: {"summary": s} for n, s in flat.items()})}
    assert rows["KL"]["top"] == "no KL at any position" and rows["KL"]["points"] is False
    assert rows["difference lens"]["top"] == "no residual difference"
    assert rows["difference lens"]["points"] is False


def test_regulation_tokens() -> None:
    assert is_regulation_token(" sip") and is_regulation_token("Deep")
    assert is_regulation_token(" pause")
    assert not is_regulation_token(" the") and not is_regulation_token(" p")


def test_every_method_reads_a_stage_the_study_runs() -> None:
    """A method whose stage name is not a study stage would never get a row: the report
    would drop it without a word (as the difference lens and the feature diff once were)."""
    names = {stage.name for stage in study_stages(StudyConfig())}
    assert {m.stage for m in METHODS} <= names
    assert {
        f"{m.stage}@{twin}" for m in METHODS for twin in ("standard-twin", "adhd-twin")
    } <= names


# ------------------------------------------------------------------ on the tiny pair

SELF = "self"
"""A control pair whose two roles the ADHD model plays: a model against itself."""
FAST = [
    "sae.std_layers=",  # the feature diff reads the ADHD role's SAE only
    "sae.eval_tokens=1000",
    "sae.buffer_tokens=4096",
    "diff_lens.steer_tasks=0",
    "weights.points=3",
]
"""Beyond the pipeline test's tiny budget: what the scorecard does not read, left out."""


@pytest.fixture(scope="module")
def runs(tiny_corpus, tiny_run_dirs, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Every stage the scorecard reads (and the SAEs the feature diff reads), run as the
    study runs them: on the session's tiny pair, and on the control pair `SELF` through
    the seed controls' own repetition (`control_stages`: the pair's workspace, its
    settings, `same_variant`). Stage name -> its record."""
    root = tmp_path_factory.mktemp("scorecard")
    (root / "corpus").symlink_to(tiny_corpus)
    for folder in ("runs", "export"):
        for variant, run_dir in tiny_run_dirs.items():
            (root / folder).mkdir(exist_ok=True)
            (root / folder / variant).symlink_to(run_dir)
    config = load_study_config(None, [*TINY_STUDY, *FAST], "tiny")
    scored = {m.stage for m in METHODS}
    stages = [s for s in STAGES if s.name in scored | {"sae"}]
    assert {s.name for s in stages} == scored | {"sae"}
    ws = Workspace(root)
    for stage in [*stages, *control_stages(stages, {SELF: {"standard": "adhd", "adhd": "adhd"}})]:
        output = stage.stage(ws, config.section(stage.settings_key))
        summary = json.loads(json.dumps(output.summary))  # as the stage record stores it
        ws.records[stage.name] = {"summary": summary, "outputs": [str(p) for p in output.outputs]}
    return ws.records


def as_matched(runs: dict[str, dict[str, Any]], pair: str) -> dict[str, dict[str, Any]]:
    """The records a study would hold with pair `pair`'s runs ("": the tiny pair's) as the
    matched pair's, and a model against itself (`SELF`) as each twin pair."""
    out = {m.stage: runs[pair_stage_name(m.stage, pair) if pair else m.stage] for m in METHODS}
    for twin in TWIN_PAIRS:
        out |= {pair_stage_name(m.stage, twin): runs[pair_stage_name(m.stage, SELF)]
                for m in METHODS}  # fmt: skip
    return out


@pytest.mark.slow(seconds=30)
def test_a_model_against_itself_yields_no_findings(runs) -> None:
    """The known answer of a diff: a model against itself, run by the study's own stages,
    has no top finding (no role, token or feature named), no finding counted, no false
    positive."""
    rows = scorecard(as_matched(runs, SELF))
    assert [r["method"] for r in rows] == [m.label for m in METHODS]  # every method read
    for row in rows:
        assert row["top"] is None or row["top"].startswith("no "), row
        assert row["points"] in (False, None), row
        assert row["findings"] in (0, None), row
        assert row["twin_pairs"] == dict.fromkeys(TWIN_PAIRS, 0), row
    table = section({"methods": rows}, []).table
    assert table is not None and len(table) == 1 + len(METHODS)


@pytest.mark.slow(seconds=30)
def test_the_tiny_pair_has_findings_where_itself_has_none(runs) -> None:
    """The same scorecard on the tiny pair is not empty (so the test above can fail): the
    largest KL is at regulation steps, and the ADHD SAE has features that fire at ADHD step
    onsets only; its false positives are read from the twin pairs' runs."""
    rows = {r["method"]: r for r in scorecard(as_matched(runs, ""))}
    assert list(rows) == [m.label for m in METHODS]
    assert rows["KL"]["points"] is True
    assert rows["SAE feature diff"]["points"] is True and rows["SAE feature diff"]["findings"] > 0
    assert all(r["twin_pairs"] == dict.fromkeys(TWIN_PAIRS, 0) for r in rows.values())
