"""Names shared across the package: the two variants of the pair, their models' names and
the corpus splits."""

from typing import Literal

Variant = Literal["standard", "adhd"]
"""The two corpora (and models) of a matched pair."""
Split = Literal["train", "val", "test"]
"""The corpus splits, by task."""

VARIANTS: tuple[Variant, ...] = ("standard", "adhd")
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def model_name(variant: Variant, twin: bool = False, replicate: int = 0) -> str:
    """A study model's name: its variant, `<variant>-twin` for its data-order twin (the
    same initial weights, another order of the same batches), `<variant>-r<N>` for the
    model of replicate pair N (another init seed), `<variant>-r<N>-twin` for that model's
    data-order twin. It names the model's run and export folders and its entries in stage
    summaries."""
    name = f"{variant}-r{replicate}" if replicate else variant
    return f"{name}-twin" if twin else name
