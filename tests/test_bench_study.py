"""The per-stage study benchmark (bench/bench_study.py) on the tiny study: the stage table
lands between its markers in results.md, the record keeps the run, and a second run
(one stage forced) shows the first as `previous`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from study.test_pipeline import TINY_STUDY

pytestmark = pytest.mark.slow(seconds=90)

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_study.py"


@pytest.fixture(scope="module")
def bench_study():
    spec = importlib.util.spec_from_file_location("bench_study", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_study"] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCH.parent))  # for bench/common.py, as when run as a script
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH.parent))
    del sys.modules["bench_study"]


def test_two_runs_write_the_table_and_the_second_shows_the_first(bench_study, tmp_path):
    results, record = tmp_path / "results.md", tmp_path / "study-times.json"
    results.write_text("# Benchmark results\n\nthe table of make bench\n")
    sets = [arg for s in [*TINY_STUDY, "twins=false"] for arg in ("--set", s)]
    common = ["--preset", "tiny", "--out", str(tmp_path / "work"), *sets]
    common += ["--results", str(results), "--record", str(record)]

    first = bench_study.main(common)
    assert first["stages"]["train-standard"]["how"] == "ran"  # no release: trained here
    assert "trained by this benchmark" in first["pair"]
    text = results.read_text()
    assert "the table of make bench" in text
    assert "<!-- bench-study:begin -->" in text and "<!-- bench-study:end -->" in text
    assert "| headswap | ran | – |" in text
    assert "Previous: none on this machine" in text
    assert len(json.loads(record.read_text())) == 1

    second = bench_study.main([*common, "--stages", "weights"])
    assert second["stages"]["weights"]["how"] == "ran"
    assert second["stages"]["train-standard"] == {"how": "reused"}
    text = results.read_text()
    assert text.count("<!-- bench-study:begin -->") == 1  # replaced, not appended
    assert f"Previous: {first['commit']}, {first['date']}" in text
    weights = next(line for line in text.splitlines() if line.startswith("| weights |"))
    assert weights.split(" | ")[2] == f"{first['stages']['weights']['seconds']:,.1f}"
    assert len(json.loads(record.read_text())) == 1  # one entry per commit, machine, settings

    # a study that already ran is recorded as it ran, with the wall time given
    third = bench_study.main(
        ["--from-study", str(tmp_path / "work"), "--commit", "abc1234", "--wall", "12.5",
         "--load-start", "0.1,0.2,0.3", "--load-end", "1,2,3",
         "--results", str(results), "--record", str(record)]
    )  # fmt: skip
    assert third["commit"] == "abc1234" and third["total_seconds"] == 12.5
    assert third["stages"]["weights"]["seconds"] == second["stages"]["weights"]["seconds"]
    # labelled by preset and replicates alone, as a default `make bench-study` run is
    assert third["settings"] == "preset tiny, replicates 1"
    text = results.read_text()
    assert "Now: abc1234" in text and "0.10 / 0.20 / 0.30 → 1.00 / 2.00 / 3.00" in text
    with pytest.raises(SystemExit, match="no stages/"):
        bench_study.main(["--from-study", str(tmp_path), "--record", str(record)])
    # a later run compared with a chosen earlier commit, not the latest other one
    later = ["--from-study", str(tmp_path / "work"), "--commit", "def5678", "--wall", "9",
             "--results", str(results), "--record", str(record)]  # fmt: skip
    bench_study.main([*later, "--commit", "aaa0000"])
    bench_study.main([*later, "--against", "abc12"])
    assert "Previous: abc1234" in results.read_text()
    with pytest.raises(SystemExit, match="--against fff: no recorded run"):
        bench_study.main([*later, "--against", "fff"])
