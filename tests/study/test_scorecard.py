"""The scorecard of the diffing methods: each method's criterion read from its stage
summaries, its findings on the twin pairs counted as false positives."""

from __future__ import annotations

from typing import Any

from interpgpt.study.config import StudyConfig
from interpgpt.study.pipeline import study_stages
from interpgpt.study.scorecard import METHODS, is_regulation_token, scorecard, section


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
        "diff-lens": {"promoted": [" sip", " the"] if found else [" the", " sip"]},
        "feature-diff": {
            "n_selected": 3 if found else 0,
            "top": [{"feature": 7, "adhd_rate": 0.8, "std_rate": 0.0}] if found else [],
        },
        "crosscoder": {"pair": {"n_std_only_confirmed": 0, "n_adhd_only_confirmed": 2 * found}},
        "headswap": {"moved": [{"label": "L0H1"}] if found else []},
        "weights": {"layers": [{"layer": 0, "perm": [1, 0] if found else [0, 1]}]},
    }


def records(pair: bool, twins: bool) -> dict[str, dict[str, Any]]:
    out = {name: {"summary": s} for name, s in summaries(pair).items()}
    for twin in ("standard-twin", "adhd-twin"):
        out |= {f"{name}@{twin}": {"summary": s} for name, s in summaries(twins).items()}
    return out


def test_a_planted_difference_is_pointed_at_and_twins_report_nothing() -> None:
    rows = {r["method"]: r for r in scorecard(records(pair=True, twins=False))}
    assert set(rows) == {"KL", "difference lens", "SAE feature diff", "crosscoder", "head-swap",
                         "weights"}  # fmt: skip
    assert rows["KL"]["points"] and rows["difference lens"]["points"]
    assert rows["SAE feature diff"]["points"] and rows["SAE feature diff"]["findings"] == 3
    assert rows["head-swap"]["points"] is None and rows["head-swap"]["findings"] == 1
    for row in rows.values():
        assert row["twin_pairs"] == {"standard-twin": 0, "adhd-twin": 0}, row
    table = section({"methods": list(rows.values())}, []).table
    assert table is not None and len(table) == 1 + len(rows)


def test_a_pair_of_one_model_yields_no_scorecard_findings() -> None:
    """Every run reads as a model against itself does: nothing pointed at, nothing found."""
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
