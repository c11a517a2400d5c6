"""The `interpgpt` command line: one subcommand per pipeline stage.

The CLI only dispatches. Each module in `interpgpt.commands` defines its subcommands
in a `register(app)` function (options generated from the stage's config, see
`interpgpt.settings`). `COMMANDS` names the module of each command, imported only when
that command is looked up; the module imports only the command's torch-free config (its
options), and the function that runs it imports the work, so `--help`, `--version` and
usage errors answer at once (`tests/test_cli.py` checks that none loads torch). Every mistake is
answered the same way: the usage line, one line saying what is wrong, exit code 2, no
traceback; an interruption (Ctrl-C) is one line and exit code 130.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NamedTuple

import typer
from typer import _click as click  # the click typer carries (its types)
from typer.core import TyperGroup

from interpgpt import __version__
from interpgpt.errors import Interrupted, UserError
from interpgpt.io import describe_fault


class Entry(NamedTuple):
    module: str
    """The module of `interpgpt.commands` whose `register(app)` adds the command."""
    summary: str
    """The one line `interpgpt --help` shows (the command's own help is its docstring)."""


COMMANDS: dict[str, Entry] = {
    "corpus": Entry("corpus", "Build the paired standard/ADHD corpus."),
    "corpus-stats": Entry("corpus", "Print a corpus's stats.json as tables."),
    "tokenizer": Entry("corpus", "Train the byte-level BPE tokenizer shared by both models."),
    "train": Entry("train", "Train one model of the matched pair."),
    "generate": Entry("train", "Sample task decompositions from a trained model."),
    "export": Entry("export", "Write a model as transformers, TransformerLens and TaskGPT."),
    "behaviour": Entry("behaviour", "Decompositions of held-out tasks from both models."),
    "kl": Entry("kl", "Per-token KL between the pair's next-token distributions."),
    "weights": Entry("weights", "Change from init, head matching, mode connectivity."),
    "headswap": Entry("headswap", "Attention profiles of every head and the head-swap inventory."),
    "diff-lens": Entry("diff_lens", "Mean ADHD - standard residual per layer, and steering by it."),
    "logit-lens": Entry("logit_lens", "Regulation logit lens and direct logit attribution."),
    "ablate": Entry("ablate", "Ablate heads during generation, against head nulls."),
    "patch": Entry("patch", "Activation patching and attribution patching on corpus pairs."),
    "probes": Entry("probes", "Onset, regulation and step-index probes on every layer."),
    "known-answers": Entry(
        "known_answers", "Probes for the break rule's variables, interchange on remaining."
    ),
    "sae": Entry("sae", "TopK sparse autoencoders on the residual stream (SAELens)."),
    "steer": Entry("steer", "Steer with one SAE feature against a random-direction null."),
    "crosscoder": Entry("crosscoder", "BatchTopK crosscoders on a pair: train and diff."),
    "ioi": Entry("ioi", "Run the IOI pipeline: baseline, patching, DLA, head scores."),
    "ioi-demo": Entry("ioi", "Train a model on synthetic IOI, then run the IOI pipeline."),
    "diff": Entry("diff", "The pair analyses on any two models sharing a tokenizer."),
    "study": Entry("study", "Run the whole matched-pair study and write report.html."),
    "release": Entry("release", "The trained matched pair, its twins and SAEs, with a manifest."),
}


class LazyGroup(TyperGroup):
    """A group that imports a command's module only when the command is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        holder = typer.Typer(rich_markup_mode=None)
        importlib.import_module(f"interpgpt.commands.{entry.module}").register(holder)
        return typer.main.get_group(holder).commands[cmd_name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry.summary) for name, entry in COMMANDS.items()])


app = typer.Typer(
    name="interpgpt",
    help="Matched-pair mechanistic interpretability: corpus, models, analyses, report.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: readable at 80 columns, "[section]" kept
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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exits with the command's code (0, 2 for a mistake,
    130 for an interruption)."""
    try:
        code: Any = app(args=argv, prog_name="interpgpt", standalone_mode=False)
    except Interrupted as err:
        typer.echo(f"\ninterrupted: {err}", err=True)
        sys.exit(130)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (OSError, UnicodeDecodeError) as err:  # a fault no reader named (io.faults does)
        typer.echo(f"error: {describe_fault(err)}", err=True)
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
    # typer returns the code of an `Exit` it caught, 130 for a KeyboardInterrupt outside
    # a command (a command's own becomes `Interrupted` above, saying what was saved).
    if isinstance(code, int) and code:
        if code == 130:
            typer.echo("\ninterrupted: nothing was written; run the command again", err=True)
        sys.exit(code)
