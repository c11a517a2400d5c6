"""The settings of `interpgpt crosscoder diff` and the study's `[crosscoder]` section:
data only, no torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interpgpt.constants import Split
from interpgpt.crosscoder.config import CrosscoderHyperparams, Thresholds
from interpgpt.settings import SettingError, at_least, check_choices, in_range, inputs


@dataclass(frozen=True, kw_only=True)
class DiffSettings:
    """How the diff reads, thresholds and shows latents (shared by the command and study)."""

    split: Split = "test"
    """Corpus split of the held-out sequences."""
    limit: int | None = 300
    """Held-out tasks per variant (one phrasing each); None for all."""
    exclusive_margin: float = 0.1
    """Standard-only when the relative decoder norm is below this, ADHD-only above 1 minus it."""
    max_nu_error: float = 0.1
    """Confirmed exclusive: |ν^ε| (other model's error β over the claimed model's) below this."""
    # Looser than ν^ε: other latents active with j project onto d_j by chance, which on
    # planted data spreads ν^r of truly exclusive latents over about ±0.1.
    max_nu_reconstruction: float = 0.2
    """... and |ν^r| (the same for the reconstructions) below this."""
    top_n: int = 10
    """Latents per side (leaning most to each model) with contexts and tokens."""
    n_contexts: int = 5
    """Top-activating contexts per shown latent."""
    context_tokens: int = 10
    """Tokens of context before the activating token."""
    top_tokens: int = 10
    """Promoted and suppressed tokens per model of each shown latent."""
    eval_batch: int = 32
    """Sequences per forward pass."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, limit=1, top_n=0, n_contexts=0, context_tokens=0, top_tokens=1, eval_batch=1)
        in_range(self, "exclusive_margin", 0.0, 0.5)
        for name in ("max_nu_error", "max_nu_reconstruction"):
            if not getattr(self, name) > 0:
                raise SettingError(name, f"must be positive (got {getattr(self, name)})")

    def thresholds(self) -> Thresholds:
        return Thresholds(self.exclusive_margin, self.max_nu_error, self.max_nu_reconstruction)

    def diff_settings(self) -> dict[str, Any]:
        """The values of the `DiffSettings` fields (without a subclass's)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DiffSettings)}


@dataclass(frozen=True, kw_only=True)
class _DiffInputs:
    """What `crosscoder diff` reads and writes (first in `--help`)."""

    crosscoder_dir: Path = inputs.argument()
    """Crosscoder directory (cfg.json + crosscoder_weights.safetensors)."""
    std: Path = inputs.option()
    """The crosscoder's first model (run or export dir), as it was trained."""
    adhd: Path = inputs.option()
    """The crosscoder's second model (run or export dir), as it was trained."""
    corpus: Path = inputs.option()
    """Corpus directory; its held-out split supplies the sequences."""
    out: Path = inputs.option()
    """Directory for crosscoder_diff.json."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    feature_diff: Path | None = None
    """A feature diff's feature_diff.json (or its directory): map its features to latents."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""


@dataclass(frozen=True, kw_only=True)
class CrosscoderDiffConfig(DiffSettings, _DiffInputs):
    """The diff of a pair through its crosscoder (`interpgpt crosscoder diff`)."""


@dataclass(frozen=True, kw_only=True)
class CrosscoderStudyConfig(DiffSettings, CrosscoderHyperparams):
    """The study's `[crosscoder]` section: training, diff and the layer."""

    layer: int = 2
    """Block whose hook_resid_post the study's crosscoders read."""
    same_variant: bool = inputs.flag()
    """Set by the seed controls for a control pair (a model and its twin)."""

    def __post_init__(self) -> None:
        DiffSettings.__post_init__(self)
        CrosscoderHyperparams.__post_init__(self)
        at_least(self, layer=0)
