"""Every command answers a usage mistake with its usage line, one error line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from interpgpt import __version__
from interpgpt.cli import app, main


def leaf_commands() -> list[tuple[list[str], bool]]:
    """(command path, whether it has a required parameter) for every command and subcommand."""
    root = typer.main.get_command(app)
    found: list[tuple[list[str], bool]] = []

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            ctx = typer.Context(command)
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])
        else:
            found.append((path, any(p.required for p in command.params)))

    walk(root, [])
    return found


COMMANDS = leaf_commands()


def run(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and output of `interpgpt ARGV` (returning normally is exit code 0)."""
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_usage_error(code: int, output: str, path: list[str]) -> None:
    assert code == 2, output
    assert "Show this message and exit" not in output, "a usage error prints usage, not help"
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, output
    assert lines[-1] == errors[0], "the error line comes last"
    usage = [line for line in lines if line.startswith("Usage:")]
    assert usage and usage[-1].startswith(f"Usage: interpgpt {' '.join(path)}".rstrip()), output


def test_every_command_is_reached():
    names = {" ".join(path) for path, _ in COMMANDS}
    for expected in ("headswap", "study", "train", "sae train", "corpus", "export"):
        assert expected in names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p))
def test_a_bogus_option_is_one_line_and_exit_2(path, capsys):
    code, output = run([*path, "--no-such-option"], capsys)
    assert_usage_error(code, output, path)
    assert "--no-such-option" in output.strip().splitlines()[-1]


# Commands whose parameters all have defaults (`study` runs the default study) are
# not a mistake without arguments; every other command is.
@pytest.mark.parametrize(
    "path", [p for p, required in COMMANDS if required], ids=lambda p: " ".join(p)
)
def test_no_arguments_is_one_line_and_exit_2(path, capsys):
    code, output = run(path, capsys)
    assert_usage_error(code, output, path)


def test_unknown_command_and_missing_command(capsys):
    code, output = run(["nosuchcommand"], capsys)
    assert_usage_error(code, output, [])
    assert "nosuchcommand" in output.strip().splitlines()[-1]
    code, output = run([], capsys)
    assert code == 2 and output.strip().splitlines()[-1] == "error: missing command"


def test_a_bad_value_names_the_option(capsys):
    code, output = run(["headswap", "a", "b", "--corpus", "c", "--out", "d", "--bins", "0"], capsys)
    assert code == 2
    assert output.strip().splitlines() == ["error: --bins: must be at least 1 (got 0)"]
    code, output = run(["headswap", "a", "b", "--corpus", "c", "--out", "d", "--bins", "x"], capsys)
    assert_usage_error(code, output, ["headswap"])
    assert "--bins" in output.strip().splitlines()[-1]


def test_version(capsys):
    code, output = run(["--version"], capsys)
    assert code == 0 and output.strip() == f"interpgpt {__version__}"


HEAVY = ("torch", "transformer_lens", "transformers", "matplotlib", "scipy")
"""Packages a usage error must not load (torch alone takes seconds to import)."""


def test_usage_errors_and_help_load_no_torch():
    """`interpgpt --version`, `--help` and every command's usage error, in one fresh
    interpreter: each exits at once, and none imports the torch stack (a command's
    options come from its torch-free config; the work is imported when it runs)."""
    code = f"""
import sys
from interpgpt.cli import main
from tests.test_cli import leaf_commands
argvs = [["--version"], ["--help"], *([*path, "--no-such-option"] for path, _ in leaf_commands())]
for argv in argvs:
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = done.code
    loaded = sorted(set({HEAVY!r}) & set(sys.modules))
    print("RESULT", " ".join(argv), code, loaded, file=sys.stderr)
"""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    lines = [
        line.split(" ", 1)[1] for line in done.stderr.splitlines() if line.startswith("RESULT")
    ]
    assert len(lines) == len(COMMANDS) + 2, done.stderr
    for line in lines:
        first = line.split()[0]
        assert line.endswith(" []"), f"{line}: loaded by a usage error"
        assert line.removesuffix(" []").endswith(" 0" if first.startswith("--") else " 2"), line


def result_tables() -> dict[str, list]:
    """The result tables of `diff`, `known-answers` and `release build`/`verify`, filled
    with values as wide as real ones (the full preset's nine residual sites)."""
    from types import SimpleNamespace as Fake

    from interpgpt.commands.diff import statistics_table
    from interpgpt.commands.known_answers import known_answers_tables
    from interpgpt.commands.release import build_table, verify_table

    names = ("kl/onset", "kl/regulation", "diff_lens/onset", "token_lens/onset", "heads")
    stats = {
        n: Fake(name=n, value=1.23456e-5, controls=[0.000123, 12.5], verdict="beyond seed noise")
        for n in names
    }
    diff = Fake(diff=Fake(pair=Fake(labels=("standard", "adhd")), statistics=stats))
    layers = ["embed", *(f"L{i}" for i in range(6))]  # the full preset's sites
    scores = [
        Fake(variable=v, metric=m, skipped=None, score=[0.987] * 7, selectivity=[-0.123] * 7)
        for v, m in (("remaining", "r2"), ("since_break", "r2"), ("effort", "accuracy"))
    ]
    probe = Fake(iia=0.5, iia_flip=0.25, sign_agreement=0.75, mean_delta_up=-0.123,
                 mean_delta_down=0.456)  # fmt: skip
    inter = [Fake(layer=f"L{i}", probe=probe, random_iia_flip=0.1, random_sign_agreement=0.5)
             for i in range(6)]  # fmt: skip
    models = [Fake(name=n, probes=Fake(scores=scores), interchange=inter)
              for n in ("standard", "adhd")]  # fmt: skip
    answers = Fake(layers=layers, models=models)
    entry = {"steps": 25_000, "val_loss": 1.23456, "targets": {"a": True, "b": False},
             "wall_seconds": 5432.1}  # fmt: skip
    built = Fake(out=Path("release"), manifest={"models": {
        n: entry for n in ("standard", "adhd", "standard-twin", "adhd-twin")}})  # fmt: skip
    checks = [Fake(name=n, logit_diff={"hf": 1.2e-5, "tl": 3.4e-6, "raw": 0.0},
                   check={"parse_rate": 0.95, "on_topic_rate": 0.875})
              for n in ("standard", "adhd", "standard-twin", "adhd-twin")]  # fmt: skip
    verified = Fake(root=Path("release"), models=checks)
    return {
        "diff": [statistics_table(diff)],  # type: ignore[arg-type]
        "known-answers": known_answers_tables(answers),  # type: ignore[arg-type]
        "release build": [build_table(built)],  # type: ignore[arg-type]
        "release verify": [verify_table(verified)],  # type: ignore[arg-type]
    }


@pytest.mark.parametrize("command", ["diff", "known-answers", "release build", "release verify"])
def test_result_tables_fit_80_columns(command, monkeypatch):
    from rich.console import Console

    monkeypatch.setenv("COLUMNS", "80")
    console = Console(record=True)
    for table in result_tables()[command]:
        console.print(table)
    text = console.export_text()
    assert "…" not in text, f"a cell cut at 80 columns:\n{text}"
    assert max(map(len, text.splitlines())) <= 80, text
    shown = {
        "diff": ("1.23e-05", "0.000123–12.500", "beyond seed noise"),
        "known-answers": ("0.99", "-0.12", "+0.456", "since_break", "standard"),
        "release build": ("25,000", "1.2346", "1 of 2", "90.5 min"),
        "release verify": ("1.2e-05 / 3.4e-06 / 0.0e+00", "0.95 / 0.88"),
    }
    for value in shown[command]:
        assert value in text, f"{value} not shown whole:\n{text}"
