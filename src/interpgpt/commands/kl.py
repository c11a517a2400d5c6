"""`interpgpt kl`: per-token KL between a pair's next-token distributions, by token role."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from interpgpt import settings
from interpgpt.analysis.kl.config import KLConfig
from interpgpt.commands.tables import fitted_table, number

if TYPE_CHECKING:
    from interpgpt.analysis.kl.run import KLRun


def kl(config: KLConfig) -> None:
    """KL(standard‖adhd) and KL(adhd‖standard) of the next-token distributions on held-out
    sequences of both variants, by token role."""
    from interpgpt.analysis.kl.run import run_kl

    console = Console()
    with console.status("comparing next-token distributions"):
        run = run_kl(config)
    console.print(*kl_tables(run))
    console.print(f"wrote {', '.join(str(p) for p in run.files.values())}")


def kl_tables(run: KLRun) -> list[Table]:
    """Mean KL per role and direction for each source, then the highest-KL positions."""
    from interpgpt.analysis.kl.run import ALL, POOLED, ROLES

    a, b = run.result.names
    stats = ("n", "KL(a‖b)", "KL(b‖a)")
    roles = fitted_table(
        f"mean KL (nats) by role, {a} = a, {b} = b", ("role", "source", *stats), stats
    )
    for role in (*ROLES, ALL):
        if not run.result.roles[POOLED][role].count:
            continue
        for k, (source, by_role) in enumerate(run.result.roles.items()):
            s = by_role[role]
            last = k == len(run.result.roles) - 1
            cells = (str(s.count), number(s.mean_ab), number(s.mean_ba))
            roles.add_row(role if k == 0 else "", source, *cells, end_section=last)
    columns = ("source", "role", "KL(a‖b)", "KL(b‖a)", "context → next", f"{a} / {b} top")
    top = fitted_table("highest symmetric KL", columns, ("KL(a‖b)", "KL(b‖a)"))
    for h in run.top[:10]:
        top.add_row(
            h.source,
            h.role,
            number(h.kl_ab),
            number(h.kl_ba),
            f"{h.context!r} → {h.next_token!r}",
            f"{h.top_a[0].token!r} / {h.top_b[0].token!r}",
        )
    return [roles, top]


def register(app: typer.Typer) -> None:
    settings.command(app, "kl", KLConfig)(kl)
