"""The speedrun benchmark (bench/speedrun.py) end to end on a tiny corpus and model: a run
calibrates, trains in segments, evaluates with the behaviour stage's metrics, resumes, and
the report writes the table and the curves."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from interpgpt.analysis.behaviour.run import held_out

BENCH = Path(__file__).resolve().parents[1] / "bench" / "speedrun.py"


@pytest.fixture(scope="module")
def speedrun():
    spec = importlib.util.spec_from_file_location("speedrun", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["speedrun"] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCH.parent))  # for bench/common.py, as when run as a script
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH.parent))
    del sys.modules["speedrun"]


def test_targets_are_judged_per_model(speedrun):
    good = {
        s: {
            "on_topic_rate": 1.0,
            "object_mention_rate": 0.9,
            "parse_rate": 1.0,
            "spearman_complexity_steps": 0.9,
            "regulating_outputs": 0.0,
            "auroc": {"model": 0.80, "bayes": 0.82},
        }
        for s in ("seen", "unseen")
    }
    assert all(speedrun.check_targets("standard", good).values())
    assert all(speedrun.check_targets("adhd", good).values())
    assert "never regulates (seen)" not in speedrun.check_targets("adhd", good)
    regulating = {**good, "seen": {**good["seen"], "regulating_outputs": 0.02}}
    assert not speedrun.check_targets("standard", regulating)["never regulates (seen)"]
    far = {**good, "unseen": {**good["unseen"], "auroc": {"model": 0.70, "bayes": 0.82}}}
    assert not speedrun.check_targets("adhd", far)["unseen AUROC gap <= 0.05"]
    missing = {**good, "unseen": {**good["unseen"], "spearman_complexity_steps": None}}
    assert not speedrun.check_targets("standard", missing)["unseen Spearman >= 0.8"]


def test_a_curve_run_evaluates_resumes_and_reports(
    speedrun, tiny_corpus, tiny_tokenizer_path, tmp_path
):
    data = speedrun.Data(tiny_corpus, tiny_tokenizer_path, held_out(tiny_corpus, 6, 6))
    common = dict(
        kind="curve",
        recipe="muon-wsd",
        variant="adhd",
        seed=0,
        minutes=1.0,
        every=0.5,
        root=tmp_path,
        preset="tiny",
        eval_batch=8,
        steps=8,
    )
    record = speedrun.speedrun(data, **common)
    assert record["done"] and not record["reached"]  # a tiny model meets no target
    assert [e["step"] for e in record["evals"]] == [4, 8]
    last = record["evals"][-1]
    assert set(last["behaviour"]) == {"seen", "unseen"}
    assert set(last["targets"]) == {t.words for t in speedrun.TARGETS if "adhd" in t.variants}
    assert record["settings"]["optimizer"] == "muon" and record["seconds_per_step"] > 0
    saved = json.loads((tmp_path / "curve" / "muon-wsd-adhd-s0" / "speedrun.json").read_text())
    assert saved == record
    assert speedrun.speedrun(data, **common) == record  # a finished run is not rerun

    results, plot = tmp_path / "results.md", tmp_path / "speedrun.png"
    results.write_text("# Benchmark results\n\n| kept | row |\n")
    speedrun.write_report(tmp_path, results, plot)
    speedrun.write_report(tmp_path, results, plot)  # the section is replaced, not repeated
    text = results.read_text()
    assert "| kept | row |" in text and text.count(speedrun.BEGIN) == 1
    numerics = record["numerics"]  # bf16 autocast where this CPU runs bf16 natively
    assert numerics in speedrun.NUMERICS.values()
    assert f"| muon-wsd | adhd | 0 | curve | {numerics} | cap 1.0 | 8 |" in text
    assert plot.stat().st_size > 0


def test_the_throughput_rows_read_the_measurement(speedrun, tmp_path):
    # Two 1-thread processes at 0.45 s a step against one 2-thread process at 0.26: the
    # pair trains 2 x 0.26 / 0.45 = 1.16x as fast side by side (not half that).
    assert speedrun.pair_speedup(0.26, [0.45, 0.45]) == pytest.approx(2 * 0.26 / 0.45)
    row = {
        "threads": 2,
        "seconds_per_step": 0.26,
        "bf16_native": True,
        "adamw_fp32": 0.41,
        "adamw_bf16": 0.29,
        "side_by_side_1_thread": [0.45, 0.45],
        "side_by_side_speedup": speedrun.pair_speedup(0.26, [0.45, 0.45]),
        "pad_share": 0.06,
    }
    record = {"machine": "m", "recipe": "muon-cosine", "measured": "now"}
    speedrun.write_record(tmp_path, {**record, "standard": row, "adhd": row}, "throughput.json")
    text = "\n".join(speedrun.throughput_table(tmp_path))
    assert "| bf16 autocast, native here (AdamW) | standard | 0.290 vs fp32 0.410 |" in text
    assert "bf16 1.41x faster" in text
    assert "1.16x the throughput" in text
    assert "at most 1.064x, not built" in text
