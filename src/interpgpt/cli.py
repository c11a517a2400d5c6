"""The `interpgpt` command line: one subcommand per pipeline stage.

The CLI only dispatches. Each module in `interpgpt.commands` defines its subcommands
in a `register(app)` function (options generated from the stage's config, see
`interpgpt.settings`); this file collects them and answers every mistake the same
way: the usage line, one line saying what is wrong, exit code 2, no traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from interpgpt import __version__, commands
from interpgpt.errors import UserError

app = typer.Typer(
    name="interpgpt",
    help="Matched-pair mechanistic interpretability: corpus, models, analyses, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"interpgpt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    """Matched-pair mechanistic interpretability: corpus, models, analyses, report."""


for _module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    importlib.import_module(f"{commands.__name__}.{_module.name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="interpgpt", standalone_mode=False)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.TyperException as err:  # click's usage errors (typer carries its own click)
        ctx = getattr(err, "ctx", None)
        message = err.format_message()
        if type(err).__name__ == "NoArgsIsHelpError":  # a group called without a command
            message = "missing command"  # (its help was printed when the error was raised)
        if ctx is not None:
            typer.echo(ctx.get_usage(), err=True)
        typer.echo(f"error: {' '.join(message.split())}", err=True)
        sys.exit(err.exit_code)
