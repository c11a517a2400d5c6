"""The `interpgpt` command line: one subcommand per pipeline stage.

The CLI only dispatches. Each module in `interpgpt.commands` defines its
subcommands in a `register(app)` function that parses options and calls the
stage's public entry point; this file collects them and turns `UserError` into
a one-line message with exit code 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from interpgpt import commands
from interpgpt.io import UserError

app = typer.Typer(
    name="interpgpt",
    help="Matched-pair mechanistic interpretability: corpus, models, analyses, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    importlib.import_module(f"{commands.__name__}.{_module.name}").register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app(standalone_mode=False)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as done:
        code = getattr(done, "exit_code", getattr(done, "code", 0))
        sys.exit(code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise
