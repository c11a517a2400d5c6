"""Names shared across the package: the two variants of the pair and the corpus splits."""

from typing import Literal

Variant = Literal["standard", "adhd"]
"""The two corpora (and models) of a matched pair."""
Split = Literal["train", "val", "test"]
"""The corpus splits, by task."""

VARIANTS: tuple[Variant, ...] = ("standard", "adhd")
SPLITS: tuple[Split, ...] = ("train", "val", "test")
