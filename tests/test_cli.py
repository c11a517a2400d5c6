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
