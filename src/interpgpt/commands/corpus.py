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
from interpgpt.corpus.config import CorpusConfig, TokenizerConfig


def corpus(config: CorpusConfig) -> None:
    """Build the paired standard/ADHD corpus."""
    from interpgpt.corpus.build import build_corpus

    console = Console()
    with console.status("building corpus"):
        summary = build_corpus(config)
    console.print(
        f"wrote {summary.n_examples:,} paired examples over {sum(summary.n_tasks.values()):,} "
        f"tasks to {summary.out_dir} (Spearman {summary.spearman:.3f}, "
        f"regulation {summary.regulation_rate:.1%}, "
        f"Bayes AUROC test {_num(summary.bayes_auroc.get('test'))})"
    )


def corpus_stats(
    corpus_dir: Path = typer.Argument(..., help="Corpus directory written by `corpus`."),
) -> None:
    """Print a corpus's stats.json as tables."""
    from interpgpt.corpus.build import read_stats

    Console().print(*stats_tables(read_stats(corpus_dir)))


def tokenizer(config: TokenizerConfig) -> None:
    """Train the byte-level BPE tokenizer shared by both models and say how much of the BPE
    budget it uses."""
    from interpgpt.corpus.tokenizer import TaskTokenizer, train_tokenizer

    console = Console()
    with console.status("training tokenizer"):
        path = train_tokenizer(config)
    tok = TaskTokenizer.from_file(path)
    console.print(f"wrote {path} ({tok.vocab_size:,} tokens, sha256 {tok.sha256[:12]})")
    console.print(f"the tokenizer {tok.budget().describe()}")


def stats_tables(stats: dict[str, Any]) -> list[Table]:
    """Rich tables for a stats.json document: overview, break rule, then per variant."""
    overview = Table(title="corpus", show_header=False)
    overview.add_column("what")
    overview.add_column("value")
    overview.add_row("tasks", _kv(stats["tasks"]))
    overview.add_row("complexity", _kv(stats["complexity"]))
    overview.add_row("domains", _kv(stats["domains"]))
    fams, objects = stats["families"], stats["held_out_objects"]
    overview.add_row(
        "families",
        f"{fams['total']} ({fams['with_tasks']} with tasks, at most "
        f"{fams['max_tasks_per_family']} tasks each), {fams['held_out']} held out: "
        + ", ".join(fams["held_out_names"]),
    )
    overview.add_row(
        "held out per domain",
        _kv({d: f"{r['held_out']}/{r['total']}" for d, r in fams["per_domain"].items()}),
    )
    overview.add_row("held-out objects", f"{objects['total']} in {objects['families']} families")
    if "object_swap" in stats:  # absent from corpora written before it
        swap = stats["object_swap"]
        overview.add_row(
            "object swap",
            f"{swap['train_tasks']:,} train tasks about another family's object "
            f"(share {swap['share']})",
        )
    overview.add_row(
        "held-out tasks",
        "; ".join(
            f"{split}: {row['unseen_family']} unseen-family, {row['unseen_object']} unseen-object"
            for split, row in fams["tasks_held_out"].items()
            if split != "train"
        ),
    )
    reg = stats["regulation"]
    rule = reg["rule"]
    rules = Table(title="ADHD break rule", show_header=False)
    rules.add_column("what")
    rules.add_column("value")
    rules.add_row("budget by complexity", _kv(rule["budget"]))
    rules.add_row("effort weights", _kv(rule["effort"]))
    rules.add_row("noise", f"{rule['noise']} (realised flip rate {_num(reg['flip_rate'])})")
    rules.add_row("actions", _kv({a: reg["by_action"].get(a, 0) for a in rule["actions"]}))
    rules.add_row("realised regulation rate", f"{reg['rate']:.3f}")
    rules.add_row("Bayes-optimal AUROC", _kv({k: _num(v) for k, v in reg["bayes_auroc"].items()}))
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
    return [overview, rules, variants]


def _kv(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in mapping.items())


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def register(app: typer.Typer) -> None:
    settings.command(app, "corpus", CorpusConfig)(corpus)
    app.command("corpus-stats")(corpus_stats)
    settings.command(app, "tokenizer", TokenizerConfig)(tokenizer)
