"""What the benchmark scripts share: the machine they ran on, the time stamp, and the
marked sections of bench/results.md that a script rewrites in place."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results.md"


def machine() -> str:
    """CPU model, core count, architecture and torch version, in one line."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def markers(name: str) -> tuple[str, str]:
    """The HTML comments that open and close a script's section of results.md."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(name: str, lines: list[str], results: Path = RESULTS) -> None:
    """Put `lines` between `name`'s markers in `results`, replacing what was there (or
    appending the section), so every other section and the table of `make bench` stay."""
    begin, end = markers(name)
    section = "\n".join([begin, *lines, end])
    text = results.read_text() if results.is_file() else "# Benchmark results\n"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = results.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(results)
