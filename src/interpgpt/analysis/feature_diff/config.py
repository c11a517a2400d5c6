"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from interpgpt.constants import Split
from interpgpt.settings import SettingError, at_least, check_choices, in_range, inputs


@dataclass(frozen=True)
class FeatureDiffConfig:
    """What the feature diff compares and how it thresholds (`interpgpt sae diff`)."""

    sae_dir: Path = inputs.argument()
    """SAELens-format SAE directory (cfg.json + sae_weights.safetensors)."""
    standard: Path = inputs.option()
    """The standard model (run or export dir)."""
    adhd: Path = inputs.option()
    """The ADHD model (run or export dir)."""
    corpus: Path = inputs.option()
    """Corpus directory; its held-out split supplies the sequences."""
    out: Path = inputs.option()
    """Directory for feature_diff.json, feature_diff.md and dashboard.html."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    sequences: Literal["own", "adhd", "standard"] = "own"
    """"own": each model reads its own variant's sequences; otherwise both read that variant's."""
    split: Split = "test"
    """Corpus split of the held-out tasks."""
    limit: int | None = 300
    """Held-out tasks per variant (one phrasing each); None for all."""
    adhd_min_rate: float = 0.05
    """A selected feature fires at least this often at ADHD onset predictors."""
    standard_max_rate: float = 0.005
    """... and at most this often at standard onset predictors."""
    epsilon: float = 1e-4
    """Smoothing added to both rates in the asymmetry ratio, so a zero rate gives a finite ratio."""
    top_n: int = 20
    """Features shown with their contexts on the markdown page and the dashboard."""
    n_contexts: int = 5
    """Top-activating contexts per shown feature."""
    context_tokens: int = 10
    """Tokens of left context shown before the activating token."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    stability_sae: Path | None = None
    """An SAE of the same model and layer trained from another seed (`sae train-all
    --seed-twins`): a feature is then selected only if it is stable across SAE seeds,
    i.e. the Hungarian matching of the two decoders pairs it with a latent at cosine >=
    `interpgpt.analysis.controls.MATCH_THRESHOLD`."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, limit=1, top_n=0, n_contexts=0, context_tokens=0, batch_size=1)
        in_range(self, "adhd_min_rate", 0, 1)
        in_range(self, "standard_max_rate", 0, 1)
        if self.standard_max_rate >= self.adhd_min_rate:
            raise SettingError(
                "standard_max_rate",
                f"must be below adhd_min_rate {self.adhd_min_rate} (got {self.standard_max_rate})",
            )
        if self.epsilon <= 0:
            raise SettingError("epsilon", f"must be positive (got {self.epsilon})")
