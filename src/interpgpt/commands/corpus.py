"""CLI for the data stages: `corpus`, `corpus-stats` and `tokenizer`.

`corpus` and `tokenizer` take their options from `CorpusConfig` and `TokenizerConfig`
(`interpgpt.settings`), the same dataclasses the study's `[corpus]` and `[tokenizer]`
sections are; `corpus-stats` only reads a corpus directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.constants import VARIANTS
from interpgpt.corpus.build import REGULATION_ACTIONS, CorpusConfig, build_corpus, read_stats
from interpgpt.corpus.tokenizer import TaskTokenizer, TokenizerConfig, train_tokenizer


def corpus(config: CorpusConfig) -> None:
    """Build the paired standard/ADHD corpus."""
    console = Console()
    with console.status("building corpus"):
        summary = build_corpus(config)
    console.print(
        f"wrote {summary.n_examples:,} paired examples over {sum(summary.n_tasks.values()):,} "
        f"tasks to {summary.out_dir} (Spearman {summary.spearman:.3f}, "
        f"regulation {summary.regulation_rate:.1%})"
    )


def corpus_stats(
    corpus_dir: Path = typer.Argument(..., help="Corpus directory written by `corpus`."),
) -> None:
    """Print a corpus's stats.json as tables."""
    Console().print(*stats_tables(read_stats(corpus_dir)))


def tokenizer(config: TokenizerConfig) -> None:
    """Train the byte-level BPE tokenizer shared by both models."""
    console = Console()
    with console.status("training tokenizer"):
        path = train_tokenizer(config)
    tok = TaskTokenizer.from_file(path)
    console.print(f"wrote {path} ({tok.vocab_size:,} tokens, sha256 {tok.sha256[:12]})")


def stats_tables(stats: dict[str, Any]) -> list[Table]:
    """Rich tables for a stats.json document: overview, then per variant."""
    overview = Table(title="corpus", show_header=False)
    overview.add_column("what")
    overview.add_column("value")
    overview.add_row("tasks", _kv(stats["tasks"]))
    overview.add_row("complexity", _kv(stats["complexity"]))
    overview.add_row("domains", _kv(stats["domains"]))
    reg = stats["regulation"]
    overview.add_row("regulation rate", f"{reg['rate']:.3f} (target {reg['target']})")
    overview.add_row("by action", _kv({a: reg["by_action"].get(a, 0) for a in REGULATION_ACTIONS}))
    variants = Table(title="variants")
    for column in ("variant", "examples", "steps/example", "words/step", "Spearman"):
        variants.add_column(column, justify="left" if column == "variant" else "right")
    for variant in VARIANTS:
        v = stats["variants"][variant]
        steps, words = v["steps_per_example"], v["words_per_step"]
        variants.add_row(
            variant,
            f"{sum(v['examples'].values()):,}",
            f"{steps['mean']:.2f} [{steps['min']}-{steps['max']}]",
            f"{words['mean']:.2f} [{words['min']}-{words['max']}]",
            f"{stats['spearman'][variant]:.3f}",
        )
    return [overview, variants]


def _kv(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in mapping.items())


def register(app: typer.Typer) -> None:
    settings.command(app, "corpus", CorpusConfig)(corpus)
    app.command("corpus-stats")(corpus_stats)
    settings.command(app, "tokenizer", TokenizerConfig)(tokenizer)
