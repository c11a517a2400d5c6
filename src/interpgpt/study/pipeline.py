"""`interpgpt study`: the whole matched-pair study as a resumable pipeline of stages.

The stages (`study_stages`: `interpgpt.study.stages.STAGES`, with the data-order twins'
training when the study's `twins` is on) run in order, each writing its artifacts
under the study directory and a record `stages/<name>.json` holding the hash of what
produced them: the settings of its own section (not the whole study config, so
changing one analysis's setting reruns that analysis only) and the hashes of the
stages it reads. A stage whose record matches and whose outputs all exist is skipped,
so a killed study resumes where it stopped. A stage that runs makes every stage that
reads it run too (its outputs may have changed), so `--force STAGE` reruns that stage
and everything downstream. The report is rebuilt every run from
the records.

A training or SAE stage that must run is first looked up in the release (the study's
`release` setting; `interpgpt.artifacts.release`): when the release ran it on the same
basis (settings and upstream hashes) and on byte-identical corpus and tokenizer, its
files are copied in and the record says `release`; otherwise one line says which stage
retrains and why.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.protocol import Analysis, Section, StageOutput
from interpgpt.artifacts.release import Basis, Release, why_differs
from interpgpt.constants import VARIANTS
from interpgpt.errors import UserError
from interpgpt.io import (
    check_writable,
    config_hash,
    exclusive_lock,
    package_versions,
    read_json,
    to_jsonable,
    write_json,
)
from interpgpt.study.config import StudyConfig, check_study_config, open_release
from interpgpt.study.controls import (
    TWIN_PAIRS,
    alignment_stages,
    control_stages,
    controls_analysis,
    headline_verdicts,
    replicate_pairs,
    twin_pairs,
)
from interpgpt.study.report import Report, write_report
from interpgpt.study.scorecard import scorecard_analysis
from interpgpt.study.stages import (
    STAGES,
    TWIN_STAGES,
    TWINS_TITLE,
    replicate_stages,
    train_stage_name,
    twins_section,
)
from interpgpt.study.workspace import Workspace

STAGE_RECORDS = "stages"
REPORT = "report"
LOCK = ".study.lock"
"""Held (flock) by the study running in the directory; the OS drops it when it dies."""


@dataclass
class StudyResult:
    out: Path
    records: dict[str, dict[str, Any]]
    seconds: float


def study_stages(config: StudyConfig) -> list[Analysis[Any]]:
    """The stages this study runs: `STAGES` as they are when `twins` is off (so a study dir
    keeps its hashes). With it on: the twins' training (and each replicate pair's) after
    the two models', an export that reads (and exports) them too, every pair-dependent
    analysis again on each control pair (`interpgpt.study.controls`; with
    `replicate_twins`, each replicate pair's twins and control pairs too), the head-swap
    inventory between each model and its replicate (heads aligned across inits), the
    `controls` stage that puts each statistic beside its seed null, and the `scorecard`
    of the diffing methods on the known difference (`interpgpt.study.scorecard`)."""
    if not config.twins:
        return list(STAGES)
    extra = [*TWIN_STAGES, *replicate_stages(config.replicates, config.replicate_twins)]
    stages: list[Analysis[Any]] = []
    for stage in STAGES:
        if stage.name == "export":
            stage = dataclasses.replace(stage, after=(*stage.after, *(t.name for t in extra)))
        stages.append(stage)
        if stage.name == train_stage_name(VARIANTS[-1]):
            stages += extra
    replicates = list(replicate_pairs(config.replicates))
    pairs = {**TWIN_PAIRS, **replicate_pairs(config.replicates)}
    for replicate in replicates if config.replicate_twins else ():
        pairs |= twin_pairs(replicate)
    controls = control_stages(stages, pairs) + alignment_stages(stages, config.replicates)
    after = [s.name for s in [*stages, *controls]]
    return [
        *stages,
        *controls,
        controls_analysis(stages, after, replicates, config.replicate_twins),
        scorecard_analysis(after),
    ]


def release_memory() -> None:
    """Hand the memory that earlier stages freed back to the OS: collect garbage, then (on
    glibc) `malloc_trim(0)`. Without it the process keeps the freed heap of a training
    run (gigabytes at the full preset) and every later stage's peak starts from there."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> None:
    """Start a stage's peak-memory count afresh: on Linux, writing 5 to
    /proc/self/clear_refs resets the process's peak RSS (VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float | None:
    """Peak resident memory since `reset_peak_rss`, in MiB (Linux's VmHWM; None where
    /proc does not exist)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def stage_basis(stage: Analysis[Any], config: Any, hashes: dict[str, str]) -> Basis:
    """What a stage's outputs depend on: its settings and its inputs' hashes, as JSON values
    (so it compares equal to a basis read back from a release's manifest)."""
    upstream = {name: hashes[name] for name in stage.after}
    return to_jsonable({"settings": settings.settings_values(config), "upstream": upstream})


def stage_hash(stage: Analysis[Any], config: Any, hashes: dict[str, str]) -> str:
    """The hash of the stage's basis (`stage_basis`), kept in its record."""
    return config_hash(stage_basis(stage, config, hashes))


def from_release(
    stage: Analysis[Any],
    config: Any,
    ws: Workspace,
    release: Release,
    bases: dict[str, Basis],
    console: Console,
) -> StageOutput | None:
    """The stage's outputs restored from `release` when it ran the stage on the same basis
    and inputs; else None, after one line saying that the stage retrains and why."""
    assert stage.from_release is not None
    why = why_differs(stage.name, bases, release.bases())
    released = release.stage(stage.name)
    if why is None and released is None:
        why = "the release holds only its settings, not its outputs"
    if why is None:
        why = release.inputs_differ(ws.root)
    if why is not None:
        console.print(f"{stage.name} retrains: {why}", highlight=False)
        return None
    assert released is not None
    return stage.from_release(ws, config, released)


OUTPUTS_BASE = "study"
"""A record's `outputs_base`: its outputs are written relative to the study directory, so
a study moved, copied or run from another working directory keeps its stages current.
Records without it (older ones) hold paths as they were given, relative to the working
directory of the run that wrote them."""


def stored_outputs(ws: Workspace, outputs: list[Path]) -> list[str]:
    """`outputs` as a record keeps them: relative to the study directory when under it,
    else absolute."""
    root = ws.root.resolve()
    return [
        p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
        for p in (path.resolve() for path in outputs)
    ]


def read_record(ws: Workspace, record_file: Path) -> dict[str, Any]:
    """A stage record with its outputs as paths under this run's study directory (as the
    stages hand them over: `ws.root / ...`)."""
    record = read_json(record_file)
    if record.get("outputs_base") == OUTPUTS_BASE:
        record["outputs"] = [str(ws.root / p) for p in record["outputs"]]
        del record["outputs_base"]
    return record


def is_current(record: dict[str, Any] | None, digest: str) -> bool:
    return (
        record is not None
        and record.get("hash") == digest
        and all(Path(p).exists() for p in record["outputs"])
    )


def status_table(
    stages: list[Analysis[Any]], status: dict[str, str], seconds: dict[str, float]
) -> Table:
    table = Table(title="interpgpt study", show_lines=False)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("what it does")
    styles = {
        "done": "green",
        "skipped": "cyan",
        "release": "magenta",
        "running": "yellow",
        "pending": "dim",
    }
    for stage in stages:
        state = status[stage.name]
        took = f"{seconds[stage.name]:.0f}s" if stage.name in seconds else ""
        table.add_row(stage.name, f"[{styles[state]}]{state}[/]", took, stage.description)
    return table


def run_stages(
    stages: list[Analysis[Any]],
    config: StudyConfig,
    ws: Workspace,
    force: set[str],
    console: Console,
    release: Release | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the stages in order, skipping the current ones and taking from `release` what
    it holds on the same basis; return every stage's record."""
    check_force(stages, force)
    hashes: dict[str, str] = {}
    bases: dict[str, Basis] = {}
    status = {s.name: "pending" for s in stages}
    seconds: dict[str, float] = {}
    ran: set[str] = set()  # a stage that ran may have new outputs: what reads it reruns
    for stage in stages:
        stage_config = config.section(stage.settings_key)
        bases[stage.name] = stage_basis(stage, stage_config, hashes)
        digest = hashes[stage.name] = config_hash(bases[stage.name])
        record_file = ws.path(STAGE_RECORDS, f"{stage.name}.json")
        forced = stage.name in force or any(name in ran for name in stage.after)
        kept = read_record(ws, record_file) if record_file.is_file() else None
        if not forced and is_current(kept, digest):
            assert kept is not None
            ws.records[stage.name] = kept
            status[stage.name] = "skipped"
            continue
        release_memory()
        reset_peak_rss()  # a stage copied from the release gets its own peak too
        started = time.perf_counter()
        output = None
        if release is not None and stage.from_release is not None and stage.name not in force:
            output = from_release(stage, stage_config, ws, release, bases, console)
        if output is None:
            status[stage.name] = "running"
            console.print(status_table(stages, status, seconds))
            started = time.perf_counter()
            output = stage.stage(ws, stage_config)
        seconds[stage.name] = time.perf_counter() - started
        record = {
            "hash": digest,
            "outputs": [str(p) for p in output.outputs],
            "summary": output.summary,
            "seconds": seconds[stage.name],
            "peak_rss_mb": peak_rss_mb(),
            "settings": settings.settings_values(stage_config),
        }
        if "release" in output.summary:
            record["release"] = output.summary["release"]
        write_json(
            record_file,
            {**record, "outputs": stored_outputs(ws, output.outputs), "outputs_base": OUTPUTS_BASE},
        )
        ws.records[stage.name] = record
        status[stage.name] = "release" if "release" in record else "done"
        ran.add(stage.name)
    console.print(status_table(stages, status, seconds))
    return ws.records


def check_force(stages: list[Analysis[Any]], force: set[str]) -> None:
    unknown = force - {s.name for s in stages} - {REPORT}
    if unknown:
        raise UserError(
            f"--force {', '.join(sorted(unknown))}: no such stage; stages: "
            f"{', '.join(s.name for s in stages)}"
        )


def report_section(stage: Analysis[Any], record: dict[str, Any] | None) -> Section | None:
    """The stage's section; a missing stage or an unreadable summary says so plainly."""
    if stage.section is None:
        return None
    if not record:
        return Section(stage.name, f"The {stage.name} stage did not run.", status="missing")
    try:
        return stage.section(record["summary"], record["outputs"])
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return Section(
            stage.name, f"The {stage.name} summary could not be read ({err!r}).", status="warn"
        )


def twins_report_section(records: dict[str, dict[str, Any]]) -> Section:
    """The twins' section from the four train stages' records, or why it cannot be built."""
    names = [train_stage_name(v, twin) for v in VARIANTS for twin in (False, True)]
    missing = [name for name in names if not records.get(name)]
    if missing:
        finding = f"The twins cannot be compared: {', '.join(missing)} did not run."
        return Section(TWINS_TITLE, finding, status="missing")
    try:
        return twins_section(records)
    except (KeyError, TypeError, ValueError, IndexError, UserError) as err:
        return Section(TWINS_TITLE, f"The twins could not be read ({err!r}).", status="warn")


def build_report(stages: list[Analysis[Any]], config: StudyConfig, ws: Workspace) -> Report:
    """The report: each stage's section in order, the twins' after their training."""
    sections: list[Section | None] = []
    names: list[str] = []
    for stage in stages:
        sections.append(report_section(stage, ws.records.get(stage.name)))
        names.append(stage.name)
        if stage.name == TWIN_STAGES[-1].name:
            sections.append(twins_report_section(ws.records))
            names.append(TWINS_TITLE)
    shown = [s for s in sections if s is not None]
    verdicts = headline_verdicts(ws.summary("controls"))
    headlines = [
        f"{s.title}: {s.finding}" + (f" Seed null: {verdicts[name]}." if name in verdicts else "")
        for name, s in zip(names, sections, strict=True)
        if s is not None and s.status != "missing"
    ]
    timing = {name: round(r.get("seconds", 0.0), 1) for name, r in ws.records.items()}
    memory = {name: r.get("peak_rss_mb") for name, r in ws.records.items()}
    blob = {"study": config.to_json(), "stage_seconds": timing, "stage_peak_rss_mb": memory}
    title = f"InterpGPT matched-pair study ({config.preset} preset)"
    return Report(title, headlines, shown, blob, package_versions())


def run_study(
    config: StudyConfig, out: Path, force: set[str] | None = None, console: Console | None = None
) -> StudyResult:
    """Run (or resume) the study into `out`, then write the report; returns every record."""
    check_study_config(config)
    stages = study_stages(config)
    check_force(stages, force or set())  # before anything is written
    check_writable(out, "--out")
    console = console or Console()
    ws = Workspace(Path(out))
    started = time.perf_counter()
    release = open_release(config)
    with exclusive_lock(ws.root / LOCK, f"--out {out}: another study is running in it"):
        write_json(ws.path("study_config.json"), config.to_json())
        if release is not None:
            console.print(f"starting from the release at {release.root}", highlight=False)
        records = run_stages(stages, config, ws, force or set(), console, release)
        html_path, md_path = write_report(build_report(stages, config, ws), ws.root)
    records[REPORT] = {"outputs": [str(html_path), str(md_path)], "summary": {}}
    return StudyResult(Path(out), records, time.perf_counter() - started)
