"""`interpgpt kl`: per-token KL between a pair's next-token distributions, by token role."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.kl import ALL, POOLED, ROLES, KLConfig, KLRun, run_kl


def kl(config: KLConfig) -> None:
    """KL(standard‖adhd) and KL(adhd‖standard) of the next-token distributions on held-out
    sequences of both variants, by token role."""
    console = Console()
    with console.status("comparing next-token distributions"):
        run = run_kl(config)
    console.print(*kl_tables(run))
    console.print(f"wrote {', '.join(str(p) for p in run.files.values())}")


def kl_tables(run: KLRun) -> list[Table]:
    """Mean KL per role and direction for each source, then the highest-KL positions."""
    a, b = run.result.names
    roles = Table(title=f"mean KL (nats) by role, {a} = a, {b} = b")
    roles.add_column("role")
    sources = list(run.result.roles)
    for source in sources:
        roles.add_column(f"{source}: n", justify="right")
        roles.add_column(f"{source}: KL(a‖b)", justify="right")
        roles.add_column(f"{source}: KL(b‖a)", justify="right")
    for role in (*ROLES, ALL):
        cells = []
        for source in sources:
            s = run.result.roles[source][role]
            cells += [str(s.count), f"{s.mean_ab:.4f}", f"{s.mean_ba:.4f}"]
        if run.result.roles[POOLED][role].count:
            roles.add_row(role, *cells)
    top = Table(title="highest symmetric KL")
    for column in ("source", "role", "KL(a‖b)", "KL(b‖a)", "context → next", f"{a} / {b} top"):
        top.add_column(column)
    for h in run.top[:10]:
        top.add_row(
            h.source,
            h.role,
            f"{h.kl_ab:.3f}",
            f"{h.kl_ba:.3f}",
            f"{h.context!r} → {h.next_token!r}",
            f"{h.top_a[0].token!r} / {h.top_b[0].token!r}",
        )
    return [roles, top]


def register(app: typer.Typer) -> None:
    settings.command(app, "kl", KLConfig)(kl)
