"""Per-stage times of the study: `interpgpt study` (`run_study`) on one fixed pair, each
stage's wall seconds and peak RSS as the pipeline records them (`stages/<stage>.json`),
beside the previous commit's on the same machine.

The pair is the release's when release/MANIFEST.json exists (the study copies the training
and SAE stages from it); otherwise the benchmark trains one at the study's training budget
(the preset's `train.steps`, or `--set train.steps=N`), once, and keeps it in the work dir
(`--out`) for later runs. Every run forces the stages after training (`--stages` names fewer),
so they are timed afresh on an unchanged pair; twins are on, as in a default study.

The table goes to the `bench-study` section of bench/results.md; each run's numbers go to
bench/study-times.json under its commit, machine and settings, so the next run (at another
commit) shows them as `previous`. Start it on an idle machine: the load average at start
and end is printed with the table.

    python bench/bench_study.py                                  # small preset, twins on
    python bench/bench_study.py --preset tiny --set train.steps=40 --replicates 2

`--from-study DIR` records a study that already ran (e.g. `make study` into runs/study on a
fresh clone, timed with /usr/bin/time -v) instead of running one: its stage records, the
wall seconds and load averages given on the command line, and the commit it ran at. It is
labelled by its preset and replicates alone, as a run without `--set` is: record studies
that ran with the default settings.

    python bench/bench_study.py --from-study runs/study --commit c59233b --wall 4200 \
        --load-start 0.04,0.67,1.20 --load-end 2.0,2.0,2.0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import BENCH_DIR, RESULTS, machine, now, write_section
from rich.console import Console

from interpgpt.artifacts.names import RELEASE_DIR
from interpgpt.artifacts.release import MANIFEST
from interpgpt.study.config import STUDY_FIELDS, StudyConfig, load_study_config
from interpgpt.study.pipeline import STAGE_RECORDS, run_study, study_stages

REPO = BENCH_DIR.parent
RECORD = BENCH_DIR / "study-times.json"
SECTION = "bench-study"  # its section of results.md, between <!-- bench-study:begin/end -->
UNTIMED = ("corpus", "tokenizer")
"""Stages upstream of the pair, never forced: forcing them would retrain it."""
IDLE_LOAD = 0.5
"""The 1-minute load average under which the machine counts as idle at the start."""


@dataclass(frozen=True)
class Options:
    preset: str
    sets: list[str]
    out: Path
    replicates: int
    stages: list[str] | None
    results: Path
    record: Path
    from_study: Path | None = None
    commit: str | None = None
    wall: float | None = None
    load_start: list[float] | None = None
    load_end: list[float] | None = None
    against: str | None = None


# ----------------------------------------------------------------------------- the run


def release_dir() -> Path | None:
    """The repository's release, when it has been built."""
    release = REPO / RELEASE_DIR
    return release if (release / MANIFEST).is_file() else None


def study_config(options: Options) -> StudyConfig:
    """Twins on, the release when there is one (else train everything), then `--set`."""
    release = release_dir()
    overrides = [
        "twins=true",
        f"replicates={options.replicates}",
        f"release={release if release else 'off'}",
        *options.sets,
    ]
    return load_study_config(None, overrides, options.preset)


def forced(config: StudyConfig, names: list[str] | None) -> set[str]:
    """The stages this run times afresh: `names`, or every stage after training. The
    training and SAE stages (those the release can supply) are not forced, so they come
    from the release or run only because what they read ran."""
    stages = study_stages(config)
    if names is not None:
        return set(names)
    return {s.name for s in stages if s.name not in UNTIMED and s.from_release is None}


def stage_records(out: Path) -> dict[str, dict[str, Any]]:
    folder = out / STAGE_RECORDS
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def describe_pair(config: StudyConfig, out: Path) -> str:
    if config.release != "off":
        return f"the release's pair ({config.release}; training and SAE stages copied from it)"
    train = config.section("train").resolved()
    return (
        f"a pair trained by this benchmark ({config.preset} preset, {train.steps:,} training "
        f"steps of batch {train.batch_size} per model; kept in {out})"
    )


def git_commit() -> str:
    """HEAD's short hash, `-dirty` when tracked files differ from it."""
    git = ["git", "-C", str(REPO)]
    run = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    commit = run.stdout.strip() or "unknown"
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return f"{commit}-dirty" if changed else commit


def timed(record: dict[str, Any]) -> dict[str, Any]:
    """One stage's row of a run, from its stage record: how it was satisfied, its time."""
    return {
        "how": "release" if "release" in record else "ran",
        "seconds": round(record["seconds"], 2),
        "peak_rss_mb": record.get("peak_rss_mb"),
    }


def measure(options: Options) -> dict[str, Any]:
    """Run the study once into the work dir and return what this run measured."""
    config = study_config(options)
    force = forced(config, options.stages)
    before = stage_records(options.out)
    load_start = os.getloadavg()
    result = run_study(config, options.out, force=force, console=Console())
    load_end = os.getloadavg()
    after = stage_records(options.out)
    stages: dict[str, dict[str, Any]] = {}
    for stage in study_stages(config):
        record = after.get(stage.name)
        if record is None or record == before.get(stage.name):
            stages[stage.name] = {"how": "reused"}
            continue
        stages[stage.name] = timed(record)
    peaks = [s["peak_rss_mb"] for s in stages.values() if s.get("peak_rss_mb") is not None]
    return {
        "commit": git_commit(),
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "settings": settings_label(options),
        "pair": describe_pair(config, options.out),
        "date": now(),
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in load_end],
        "total_seconds": round(result.seconds, 1),
        "peak_rss_mb": max(peaks, default=None),
        "stages": stages,
    }


def recorded(options: Options) -> dict[str, Any]:
    """A study that already ran (`--from-study`): every stage it ran or copied from the
    release, as `measure` would have recorded it."""
    folder = options.from_study
    assert folder is not None
    if not (folder / STAGE_RECORDS).is_dir():
        raise SystemExit(f"error: --from-study {folder}: no {STAGE_RECORDS}/ in it; is it a study?")
    saved = json.loads((folder / "study_config.json").read_text())
    study_wide = [f"{k}={saved[k]}" for k in STUDY_FIELDS if k in saved and k != "preset"]
    config = load_study_config(None, [s.lower() for s in study_wide], saved.get("preset"))
    records = stage_records(folder)
    stages: dict[str, dict[str, Any]] = {}
    for stage in study_stages(config):
        record = records.get(stage.name)
        if record is None:
            stages[stage.name] = {"how": "missing"}
            continue
        stages[stage.name] = timed(record)
    peaks = [s["peak_rss_mb"] for s in stages.values() if s.get("peak_rss_mb") is not None]
    total = sum(s.get("seconds", 0.0) for s in stages.values())
    return {
        "commit": options.commit or git_commit(),
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "settings": f"preset {config.preset}, replicates {config.replicates}",
        "pair": describe_pair(config, folder),
        "date": now(),
        "load_start": options.load_start or [float("nan")] * 3,
        "load_end": options.load_end or [float("nan")] * 3,
        "total_seconds": round(options.wall if options.wall is not None else total, 1),
        "peak_rss_mb": max(peaks, default=None),
        "stages": stages,
    }


def settings_label(options: Options) -> str:
    """What makes two runs comparable besides the machine: the preset and the settings."""
    sets = " ".join(options.sets)
    return f"preset {options.preset}, replicates {options.replicates}" + (
        f", --set {sets}" if sets else ""
    )


# ----------------------------------------------------------------------------- the record


def run_key(run: dict[str, Any]) -> str:
    return f"{run['commit']} | {run['machine']} | {run['settings']}"


def read_runs(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else {}


def previous_run(
    runs: dict[str, dict[str, Any]], run: dict[str, Any], against: str | None = None
) -> dict[str, Any] | None:
    """The latest run on the same machine and settings at another commit (at commit
    `against`, a prefix, when given); else this commit's last run."""
    same = [
        r
        for r in runs.values()
        if r["machine"] == run["machine"] and r["settings"] == run["settings"]
    ]
    if against is not None:
        same = [r for r in same if r["commit"].startswith(against)]
        if not same:
            raise SystemExit(f"--against {against}: no recorded run of that commit on this "
                             "machine with these settings")  # fmt: skip
    others = [r for r in same if r["commit"] != run["commit"]]
    found = sorted(others or same, key=lambda r: r["date"])
    return found[-1] if found else None


def write_runs(path: Path, runs: dict[str, dict[str, Any]], run: dict[str, Any]) -> None:
    runs = {**runs, run_key(run): run}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------- the table


def _seconds(stage: dict[str, Any] | None) -> str:
    if not stage or "seconds" not in stage:
        return "–"
    return f"{stage['seconds']:,.1f}"


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _ratio(previous: dict[str, Any] | None, current: dict[str, Any]) -> str:
    if not previous or "seconds" not in previous or "seconds" not in current:
        return "–"
    return f"{previous['seconds'] / max(current['seconds'], 1e-9):.2f}"


def _load(run: dict[str, Any]) -> str:
    return (
        " / ".join(f"{x:.2f}" for x in run["load_start"])
        + " → "
        + (" / ".join(f"{x:.2f}" for x in run["load_end"]))
    )


def table(run: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    """The section of results.md: one row a stage, previous vs now, then the totals."""
    before = previous["stages"] if previous else {}
    idle = run["load_start"][0] < IDLE_LOAD
    lines = [
        "## Study stages: seconds and peak RSS per stage",
        "",
        "Generated by `make bench-study` (bench/bench_study.py): `run_study` with twins on, "
        "each stage's wall seconds and peak RSS as its stage record holds them. "
        "`ran`: timed now; `release`: copied from the release; `reused`: current in the "
        "work dir, not rerun (its `now` is blank). Ratio = previous / now seconds "
        "(above 1: faster now).",
        "",
        f"Pair: {run['pair']}  ",
        f"Settings: {run['settings']}  ",
        f"Machine: {run['machine']}, {run['threads']} torch threads  ",
        f"Load average (1 / 5 / 15 min) at start → end: {_load(run)}; "
        f"{'idle' if idle else 'NOT idle'} at the start (1-min load under {IDLE_LOAD})  ",
        f"Now: {run['commit']}, {run['date']}  ",
        "Previous: "
        + (f"{previous['commit']}, {previous['date']}" if previous else "none on this machine"),
        "",
        "| stage | how | previous s | now s | ratio | previous peak RSS MiB | now peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, stage in run["stages"].items():
        old = before.get(name)
        cells = [
            name,
            stage["how"],
            _seconds(old),
            _seconds(stage),
            _ratio(old, stage),
            _mib(old.get("peak_rss_mb") if old else None),
            _mib(stage.get("peak_rss_mb")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    timed = [n for n, s in run["stages"].items() if "seconds" in s]
    total_now = sum(run["stages"][n]["seconds"] for n in timed)
    total_before = sum(before[n]["seconds"] for n in timed if "seconds" in before.get(n, {}))
    both = all("seconds" in before.get(n, {}) for n in timed) and previous is not None
    ratio = f"{total_before / max(total_now, 1e-9):.2f}" if both and timed else "–"
    lines += [
        f"| **stages timed now** | | {f'{total_before:,.1f}' if both else '–'} | "
        f"{total_now:,.1f} | {ratio} | | |",
        f"| **whole run (wall)** | | {previous['total_seconds'] if previous else '–'} | "
        f"{run['total_seconds']} | | {_mib(previous['peak_rss_mb']) if previous else '–'} | "
        f"{_mib(run['peak_rss_mb'])} |",
    ]
    return lines


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=StudyConfig().preset, help="model preset")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a study setting, as `interpgpt study --set` (repeatable; applied last)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="work dir (default runs/bench-study/<preset>)"
    )
    parser.add_argument("--replicates", type=int, default=1, help="the study's replicates")
    parser.add_argument(
        "--stages",
        default=None,
        help="comma-separated stages to time afresh (and what reads them); default: every "
        "stage after training",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="the markdown to update")
    parser.add_argument("--record", type=Path, default=RECORD, help="the runs' JSON record")
    parser.add_argument(
        "--from-study", type=Path, default=None, help="record this finished study dir instead"
    )
    parser.add_argument("--commit", default=None, help="with --from-study: the commit it ran")
    parser.add_argument(
        "--wall", type=float, default=None, help="with --from-study: its wall seconds"
    )
    parser.add_argument(
        "--load-start", default=None, help="with --from-study: load averages at start, a,b,c"
    )
    parser.add_argument("--load-end", default=None, help="with --from-study: at the end, a,b,c")
    parser.add_argument(
        "--against",
        default=None,
        help="compare with the recorded run of this commit (default: the latest other one)",
    )
    args = parser.parse_args(argv)

    def loads(text: str | None) -> list[float] | None:
        return [float(x) for x in text.split(",")] if text else None

    return Options(
        preset=args.preset,
        sets=args.sets,
        out=args.out or REPO / "runs" / "bench-study" / args.preset,
        replicates=args.replicates,
        stages=args.stages.split(",") if args.stages else None,
        results=args.results,
        record=args.record,
        from_study=args.from_study,
        commit=args.commit,
        wall=args.wall,
        load_start=loads(args.load_start),
        load_end=loads(args.load_end),
        against=args.against,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_args(argv)
    run = recorded(options) if options.from_study else measure(options)
    runs = read_runs(options.record)
    lines = table(run, previous_run(runs, run, options.against))
    write_section(SECTION, lines, options.results)
    write_runs(options.record, runs, run)
    print("\n".join(lines))
    print(f"wrote {options.results} and {options.record}")
    return run


if __name__ == "__main__":
    main()
