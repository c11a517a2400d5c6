"""The commands' result tables, readable at 80 columns: numbers to three significant
digits and never cut (their columns do not wrap), text columns folded to the width left,
and no vertical rules, so a ten-column table still fits."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from rich import box
from rich.table import Table


def number(value: float, signed: bool = False) -> str:
    """Three significant digits (`0.0123`, `1.23e-05`, `123`), with a sign if asked."""
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def fitted_table(
    title: str, columns: Sequence[str], numeric: Collection[str], **options: Any
) -> Table:
    """A table whose `numeric` columns are right-aligned and never wrapped or cut; the
    others fold their text to the width left."""
    table = Table(
        title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, **options
    )
    for name in columns:
        if name in numeric:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold")
    return table
