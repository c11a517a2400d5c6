"""What `interpgpt export` takes: data only, no torch, so the command line reads it without
loading the converters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.settings import inputs


@dataclass(frozen=True)
class ExportConfig:
    """What to export and where (`interpgpt export`, study `[export]`)."""

    model: Path = inputs.argument()
    """Run dir written by `interpgpt train` (an export dir or bundle also works)."""
    out: Path = inputs.option()
    """Export directory to create; it is built beside itself and renamed into place."""
    force: bool = inputs.flag()
    """Replace --out if it already holds an earlier export (the same as --overwrite)."""
    overwrite: bool = False
    """Replace --out if it already holds an earlier export (the study's setting; --force
    is the name every command shares)."""
    verify: bool = True
    """Reload every written form and check its logits against the source model."""

    def __post_init__(self) -> None:
        if self.overwrite:  # one switch from here on: the flag is not a study setting
            object.__setattr__(self, "force", True)
