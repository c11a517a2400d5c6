"""The settings of `interpgpt sae train` and `train-all` (the study's `[sae]` section):
data only, no torch, so the command line reads them without loading the training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.sae.hyperparams import SAEHyperparams
from interpgpt.settings import SettingError, at_least, inputs


@dataclass(frozen=True, kw_only=True)
class _OneSAE:
    """What `sae train` reads and writes (first in `--help`, before the hyperparameters)."""

    model: Path = inputs.argument()
    """The model (run or export dir)."""
    corpus: Path = inputs.option()
    """Corpus dir; its train split feeds training, its val split the quality metrics."""
    out: Path = inputs.option()
    """Parent directory; the SAE goes to OUT/{model}_L{layer}_hook_resid_post/."""
    layer: int
    """Block whose hook_resid_post the SAE reads."""
    model_name: str | None = None
    """Name in the SAE's directory and metadata; default the model's variant."""


@dataclass(frozen=True, kw_only=True)
class SAETrainConfig(SAEHyperparams, _OneSAE):
    """One SAE: a model, a layer, a corpus and where to write (`interpgpt sae train`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, layer=0)


@dataclass(frozen=True, kw_only=True)
class _PairSAEs:
    """What `sae train-all` reads and writes (first in `--help`)."""

    corpus: Path = inputs.option()
    """Corpus dir shared by both models."""
    out: Path = inputs.option()
    """Parent directory of every SAE directory and of sae_summary.json."""
    standard: Path | None = None
    """The standard model (run or export dir); the study passes its export."""
    adhd: Path | None = None
    """The ADHD model (run or export dir); the study passes its export."""
    std_layers: tuple[int, ...] = (0, 1, 2, 3)
    """Layers of the standard model that get an SAE (comma-separated)."""
    adhd_layers: tuple[int, ...] = (1, 2, 3)
    """Layers of the ADHD model that get an SAE (comma-separated)."""
    seed_twins: bool = False
    """Also train, for each ADHD layer, a second SAE from another seed on the same
    activations (`<model>-seed1_L<layer>_...`): SAEs of two seeds learn partly different
    latents (Paulo & Belrose 2025), so the feature diff calls a feature ADHD-only only if
    it is matched in the other seed's SAE."""


@dataclass(frozen=True, kw_only=True)
class TrainAllConfig(SAEHyperparams, _PairSAEs):
    """The card's set of SAEs on a matched pair, either model may be left out
    (`interpgpt sae train-all`, study `[sae]`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("std_layers", "adhd_layers"):
            negative = [layer for layer in getattr(self, name) if layer < 0]
            if negative:
                raise SettingError(name, f"layer {negative[0]} is negative")
