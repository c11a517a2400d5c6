"""The settings of `interpgpt crosscoder train` (with the diff's thresholds): data only,
no torch, so the command line reads them without loading the training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from interpgpt.settings import SettingError, at_least, check_choices, inputs

PairData = Literal["both", "standard", "adhd"]
"""Corpus variant(s) whose sequences both models read."""


@dataclass(frozen=True, kw_only=True)
class CrosscoderHyperparams:
    """How a crosscoder is trained (shared by `crosscoder train` and the study)."""

    d_latent: int = 1024
    """Number of latents."""
    k: int = 32
    """Mean active latents per token (BatchTopK keeps k x batch_size per batch)."""
    tokens: int = 300_000
    """Training activations per model (the corpus is cycled when it has fewer)."""
    # As for our SAEs, a small batch gives AuxK more steps to revive latents.
    batch_size: int = 512
    """Tokens per optimiser step (BatchTopK's batch)."""
    lr: float = 4e-3
    """Adam learning rate (constant, then linear decay to 0 over the last 20% of steps)."""
    # Stronger and sooner than our SAEs' 1/32 and 32,768: BatchTopK lets strong latents
    # take more of a batch, and on the small preset (layer 2, 300k tokens) 1/32 left 10-17%
    # of the latents silent on held-out tokens, 1/8 3%, 1/4 1.4%, at an FVE 0.005 lower.
    aux_coef: float = 1 / 4
    """Weight of the AuxK dead-latent loss (Gao et al. 2024)."""
    dead_tokens: int = 8192
    """A latent silent for this many training tokens counts as dead for AuxK."""
    data: PairData = "both"
    """Corpus variant(s) whose sequences both models read: both (default), standard or adhd."""
    eval_tokens: int = 20_000
    """Held-out (val split) tokens for the quality metrics."""
    buffer_tokens: int = 131_072
    """Shuffle-buffer size in tokens (bounds memory: 2 x d_model floats per token)."""
    seq_batch: int = 64
    """Sequences per model forward pass when streaming activations."""
    seed: int = 0
    """Seed of the init and of the activation order."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    autocast: bool = True
    """bf16 autocast for the model passes and the crosscoder's encoder matmul."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(
            self, d_latent=1, k=1, tokens=1, batch_size=1, eval_tokens=1, buffer_tokens=1,
            seq_batch=1, dead_tokens=1, aux_coef=0,
        )  # fmt: skip
        if not self.lr > 0:
            raise SettingError("lr", f"must be positive (got {self.lr})")
        if self.k > self.d_latent:
            raise SettingError("k", f"{self.k} exceeds d_latent {self.d_latent}")
        if self.tokens < self.batch_size:
            raise SettingError(
                "tokens", f"{self.tokens} is less than one batch (batch_size {self.batch_size})"
            )

    def hyperparams(self) -> dict[str, Any]:
        """The values of the `CrosscoderHyperparams` fields (without a subclass's)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(CrosscoderHyperparams)}


@dataclass(frozen=True, kw_only=True)
class _PairInputs:
    """What `crosscoder train` reads and writes (first in `--help`)."""

    std: Path = inputs.argument()
    """The first model (run or export dir): the standard model of the pair."""
    adhd: Path = inputs.argument()
    """The second model (run or export dir): the ADHD model, or the first model's twin."""
    corpus: Path = inputs.option()
    """Corpus dir; its train split feeds training, its val split the quality metrics."""
    out: Path = inputs.option()
    """Directory for cfg.json, crosscoder_weights.safetensors and quality.json."""
    same_variant: bool = inputs.flag()
    """Allow two models of one variant (the output says so); else each must be in its role."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    layer: int
    """Block whose hook_resid_post both models are read at."""
    model_names: tuple[str, ...] = ()
    """Names of the two models in the files (repeat the option); default each model's
    variant, or its directory name when both have the same variant."""


@dataclass(frozen=True, kw_only=True)
class CrosscoderTrainConfig(CrosscoderHyperparams, _PairInputs):
    """One crosscoder on a pair of models (`interpgpt crosscoder train`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, layer=0)
        if self.model_names and len(self.model_names) != 2:
            raise SettingError("model_names", f"give two names, got {len(self.model_names)}")
        if len(set(self.model_names)) != len(self.model_names):
            raise SettingError("model_names", "the two names must differ")


class Thresholds(NamedTuple):
    exclusive_margin: float
    """std_only when the relative norm is below this, adhd_only above 1 minus it."""
    max_nu_error: float
    """Confirmed: |ν^ε| below this ..."""
    max_nu_reconstruction: float
    """... and |ν^r| below this."""
