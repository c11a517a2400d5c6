"""How every SAE is trained and judged: the hyperparameters shared by `sae train`,
`sae train-all` and the study's `[sae]` section (`SAEHyperparams`), and the seed SAE
card's quality gates.

Each field's docstring is its `--help` text; `__post_init__` rejects a bad value with a
`SettingError` naming the field, so the command line and the study both report it the
way the user wrote it (`interpgpt.settings`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from interpgpt.settings import SettingError, at_least, check_choices, in_range

MIN_FVE = 0.87
"""Quality gate of the seed SAE card: held-out fraction of variance explained."""
MAX_DEAD_FRACTION = 0.02
"""Quality gate of the seed SAE card: latents that never fire on held-out tokens."""
SAE_EXPANSION = 8
"""The seed card's dictionary size per residual dimension (d_sae 4096 for d_model 512)."""

DataChoice = Literal["own", "standard", "adhd", "both"]
"""Corpus variant(s) whose sequences feed the model an SAE reads."""


@dataclass(frozen=True, kw_only=True)
class SAEHyperparams:
    """How every SAE is trained and judged (shared by `sae train` and `sae train-all`)."""

    k: int = 40
    """Active latents per token (TopK)."""
    d_sae: int | None = None
    """Dictionary size (latents); unset: 8 x the model's d_model, the seed card's expansion."""
    tokens: int = 500_000
    """Training activations per SAE (the corpus is cycled when it has fewer)."""
    # Small, so that the default budget is ~1,000 Adam steps: with ~120 steps of 4096,
    # 8-18% of the small preset's latents were still dead on held-out tokens (AuxK needs
    # steps to revive them); with 512, under 1%.
    batch_size: int = 512
    """Activations per optimiser step (small: AuxK needs many steps to revive latents)."""
    lr: float = 4e-3
    """Adam learning rate (constant, then linear decay to 0 over the last 20% of steps)."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK dead-latent loss (Gao et al. 2024)."""
    dead_tokens: int = 32_768
    """A latent silent for this many training tokens counts as dead for AuxK."""
    data: DataChoice = "own"
    """Corpus variant(s) whose sequences feed the model: its own variant, one, or both."""
    eval_tokens: int = 50_000
    """Held-out (val split) tokens for the quality metrics."""
    buffer_tokens: int = 262_144
    """Shuffle-buffer size in activations (bounds memory)."""
    seq_batch: int = 64
    """Sequences per model forward pass when streaming activations."""
    min_fve: float = MIN_FVE
    """Gate: held-out FVE must be at least this."""
    max_dead_fraction: float = MAX_DEAD_FRACTION
    """Gate: the fraction of latents never firing on held-out tokens must be below this."""
    strict: bool = False
    """Fail (exit non-zero) when an SAE misses a quality gate."""
    seed: int = 0
    """Seed of the SAE init (plus the layer) and of the activation order."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    autocast: bool = True
    """bf16 autocast for the model pass and the SAE encoder matmul."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(
            self, k=1, d_sae=1, tokens=1, batch_size=1, eval_tokens=1, seq_batch=1,
            buffer_tokens=1, dead_tokens=1, aux_coef=0,
        )  # fmt: skip
        if not self.lr > 0:
            raise SettingError("lr", f"must be positive (got {self.lr})")
        in_range(self, "max_dead_fraction", 0.0, 1.0)
        if self.d_sae is not None and self.k > self.d_sae:
            raise SettingError("k", f"{self.k} exceeds d_sae {self.d_sae}")
        if self.tokens < self.batch_size:
            raise SettingError(
                "tokens", f"{self.tokens} is less than one batch (batch_size {self.batch_size})"
            )

    def hyperparams(self) -> dict[str, Any]:
        """The values of the `SAEHyperparams` fields (without a subclass's inputs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SAEHyperparams)}

    def dictionary_size(self, d_model: int) -> int:
        """`d_sae`, or the seed card's expansion of the model's width when it is None."""
        return SAE_EXPANSION * d_model if self.d_sae is None else self.d_sae
