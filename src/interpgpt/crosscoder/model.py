"""BatchTopK crosscoder over two models' residual streams: config, inference and files.

A crosscoder (Lindsey et al. 2024, "Sparse crosscoders for cross-layer features and model
diffing") reads the same token's activation in both models of a pair and writes one
sparse code that each model's own decoder maps back to that model's activation:

    f = ReLU(Σ_m (x^m - b_dec^m) W_enc^m + b_enc)        # (..., d_latent)
    x̂^m = f W_dec^m + b_dec^m                             # (..., d_model), per model m

So latent j has one decoder row per model, d_j^m; whether both models use it or one
does is read off their norms. The input bias b_dec^m is subtracted first, as in our TopK
SAE (SAELens's `apply_b_dec_to_input`), which centres the residual stream's large mean.

Sparsity is BatchTopK (Bussmann et al. 2024, "BatchTopK sparse autoencoders"), the
crosscoder of Minder, Dumas et al. 2025 ("Robustly identifying concepts introduced
during chat fine-tuning using crosscoders", arXiv 2504.02922), which they show avoids
most of the L1 crosscoder's spurious model-only latents. A latent is ranked by its
*scaled* activation f_j(x)·(‖d_j^0‖ + ‖d_j^1‖): the decoder-norm weighting of Lindsey et
al.'s sparsity penalty, which makes the ranking blind to trading a smaller f for a
larger decoder (training fixes that gauge with Σ_m ‖d_j^m‖ = 1, `trainer.py`). In
training the k·batch largest scaled activations of the whole batch survive
(`trainer.batch_topk`); at inference a latent is active where its scaled activation
exceeds the threshold θ estimated during training (Bussmann et al.'s mean batch minimum),
so a token's code no longer depends on its batch.

Normalisation: each model's activations are multiplied by one scalar s^m so that
E‖s^m x^m‖² = d_model (SAELens's `expected_average_only_in`, per model as in the
dictionary_learning crosscoders of Minder et al.): neither model dominates the loss, and
decoder norms compare in common units. The weights live in normalised units;
`normalise`/`denormalise` convert, and the scales are in cfg.json.

Files (SAELens-like layout, our own schema, since SAELens has no crosscoder):

- `cfg.json` (`CROSSCODER_CFG_FILE`): {"architecture": "batchtopk_crosscoder",
  "format_version": 1, "d_model", "d_latent", "k", "layer", "hook_name",
  "models": [{"name", "path", "weights_sha256"} x 2], "normalisation":
  {"scheme": "per_model_mean_squared_norm_d_model", "scales": [s^0, s^1]}, "dtype",
  "metadata": {...}}. `models` records what it was trained on; `check_models` refuses
  any other pair.
- `crosscoder_weights.safetensors` (`CROSSCODER_WEIGHTS_FILE`): W_enc (model, d_model,
  d_latent), b_enc (d_latent), W_dec (d_latent, model, d_model), b_dec (model, d_model),
  threshold (0-d), all fp32 and in normalised units. Read with safetensors only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor, nn

from interpgpt.artifacts.load import load_safetensors
from interpgpt.errors import UserError
from interpgpt.io import atomic_path, read_json, write_json
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.sae.topk import sae_hook_name

CROSSCODER_CFG_FILE = "cfg.json"
CROSSCODER_WEIGHTS_FILE = "crosscoder_weights.safetensors"
ARCHITECTURE = "batchtopk_crosscoder"
FORMAT_VERSION = 1
NORMALISATION = "per_model_mean_squared_norm_d_model"
"""The one normalisation scheme: s^m = sqrt(d_model / E‖x^m‖²) per model."""
N_MODELS = 2
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")


def model_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's weights as loaded (names and fp32 bytes, sorted by name).

    Taken from the loaded state dict, not a file, so one model reads the same from its run
    dir and from its export; any retraining or other checkpoint changes it.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelRecord:
    """One model a crosscoder was trained on."""

    name: str
    """Its name in the crosscoder's files ("standard", "adhd", "standard-twin", ...)."""
    path: str
    """Where it was loaded from."""
    weights_sha256: str
    """`model_sha256` of its weights."""


@dataclass(frozen=True)
class CrosscoderConfig:
    """Shape and provenance of one crosscoder."""

    d_model: int
    """Width of each model's activation."""
    models: tuple[ModelRecord, ModelRecord]
    """The two models, in the order of the crosscoder's model axis."""
    d_latent: int = 1024
    """Number of latents (shared by both models)."""
    k: int = 32
    """Mean active latents per token (BatchTopK: k·batch per batch)."""
    layer: int = 0
    """Block whose `hook_resid_post` both models are read at."""
    scales: tuple[float, float] = (1.0, 1.0)
    """Per-model input scales s^m (E‖s^m x^m‖² = d_model on the training stream)."""
    hook_name: str = ""
    """TransformerLens hook name; empty means `blocks.{layer}.hook_resid_post`."""

    def __post_init__(self) -> None:
        if not self.hook_name:
            object.__setattr__(self, "hook_name", sae_hook_name(self.layer))
        if self.d_model <= 0 or self.d_latent <= 0:
            raise ValueError(
                f"d_model and d_latent must be positive: {self.d_model}, {self.d_latent}"
            )
        if not 0 < self.k <= self.d_latent:
            raise ValueError(f"k must be in 1..d_latent={self.d_latent}, got {self.k}")
        if len(self.models) != N_MODELS or len(self.scales) != N_MODELS:
            raise ValueError(f"a crosscoder reads exactly {N_MODELS} models")

    @property
    def names(self) -> tuple[str, str]:
        return (self.models[0].name, self.models[1].name)

    def to_json(self) -> dict[str, Any]:
        """cfg.json (see the module docstring)."""
        return {
            "architecture": ARCHITECTURE,
            "format_version": FORMAT_VERSION,
            "d_model": self.d_model,
            "d_latent": self.d_latent,
            "k": self.k,
            "layer": self.layer,
            "hook_name": self.hook_name,
            "models": [
                {"name": m.name, "path": m.path, "weights_sha256": m.weights_sha256}
                for m in self.models
            ],
            "normalisation": {"scheme": NORMALISATION, "scales": list(self.scales)},
            "dtype": "float32",
        }

    @classmethod
    def from_json(cls, blob: dict[str, Any], source: Path) -> CrosscoderConfig:
        if blob.get("architecture") != ARCHITECTURE:
            raise UserError(
                f"{source}: architecture {blob.get('architecture')!r}, expected {ARCHITECTURE!r}"
            )
        if blob.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{source}: format_version {blob.get('format_version')!r} unknown")
        norm = blob.get("normalisation") or {}
        if norm.get("scheme") != NORMALISATION:
            raise UserError(f"{source}: normalisation {norm.get('scheme')!r} is not supported")
        try:
            models = [
                ModelRecord(str(m["name"]), str(m["path"]), str(m["weights_sha256"]))
                for m in blob["models"]
            ]
            scales = [float(s) for s in norm["scales"]]
            if len(models) != N_MODELS or len(scales) != N_MODELS:
                raise ValueError(f"{N_MODELS} models and scales expected")
            return cls(
                d_model=int(blob["d_model"]),
                d_latent=int(blob["d_latent"]),
                k=int(blob["k"]),
                layer=int(blob["layer"]),
                hook_name=str(blob.get("hook_name") or ""),
                models=(models[0], models[1]),
                scales=(scales[0], scales[1]),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise UserError(f"{source}: not a valid crosscoder config ({err})") from None


class BatchTopKCrosscoder(nn.Module):
    """The crosscoder's parameters and inference. `encode`/`decode` work in normalised
    units; `reconstruct` takes and returns raw activations."""

    threshold: Tensor

    def __init__(self, cfg: CrosscoderConfig):
        super().__init__()
        self.cfg = cfg
        m, d, n = N_MODELS, cfg.d_model, cfg.d_latent
        self.W_enc = nn.Parameter(torch.zeros(m, d, n))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.zeros(n, m, d))
        self.b_dec = nn.Parameter(torch.zeros(m, d))
        # θ on the scaled activation; 0 until training estimates it (then every positive
        # pre-activation is active).
        self.register_buffer("threshold", torch.zeros(()))

    # --- normalisation ----------------------------------------------------------------

    def _scales(self, like: Tensor) -> Tensor:
        return torch.tensor(self.cfg.scales, dtype=like.dtype, device=like.device)[:, None]

    def normalise(
        self, x: Float[Tensor, "... model d_model"]
    ) -> Float[Tensor, "... model d_model"]:
        """Raw activations -> the crosscoder's units (E‖x^m‖² = d_model per model)."""
        x = x.to(self.W_dec.dtype)
        return x * self._scales(x)

    def denormalise(
        self, x: Float[Tensor, "... model d_model"]
    ) -> Float[Tensor, "... model d_model"]:
        return x / self._scales(x)

    # --- inference (normalised units) -----------------------------------------------------

    def decoder_norms(self) -> Float[Tensor, "d_latent model"]:
        """‖d_j^m‖ per latent and model."""
        return self.W_dec.norm(dim=-1)

    def pre_activations(
        self, x: Float[Tensor, "... model d_model"]
    ) -> Float[Tensor, "... d_latent"]:
        """Σ_m (x^m - b_dec^m) W_enc^m + b_enc."""
        xc = (x - self.b_dec).flatten(-2)
        return xc @ self.W_enc.flatten(0, 1) + self.b_enc

    def encode(self, x: Float[Tensor, "... model d_model"]) -> Float[Tensor, "... d_latent"]:
        """Dense code with the inference threshold: f_j where f_j·Σ_m‖d_j^m‖ > θ, else 0."""
        f = self.pre_activations(x).relu()
        scaled = f * self.decoder_norms().sum(-1)
        return f * (scaled > self.threshold)

    def decode(self, f: Float[Tensor, "... d_latent"]) -> Float[Tensor, "... model d_model"]:
        """x̂^m = f W_dec^m + b_dec^m for both models."""
        out = f.to(self.W_dec.dtype) @ self.W_dec.flatten(1)
        return out.unflatten(-1, (N_MODELS, self.cfg.d_model)) + self.b_dec

    def forward(self, x: Float[Tensor, "... model d_model"]) -> Float[Tensor, "... model d_model"]:
        """The reconstruction of normalised activations."""
        return self.decode(self.encode(x))

    def reconstruct(
        self, x: Float[Tensor, "... model d_model"]
    ) -> Float[Tensor, "... model d_model"]:
        """The reconstruction of raw activations, in raw units."""
        return self.denormalise(self(self.normalise(x)))

    # --- files ------------------------------------------------------------------------

    def save(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write cfg.json and crosscoder_weights.safetensors into `directory` (atomically)."""
        directory = Path(directory)
        weights = {n: getattr(self, n).detach().to("cpu", torch.float32).contiguous()
                   for n in WEIGHT_NAMES}  # fmt: skip
        with atomic_path(directory / CROSSCODER_WEIGHTS_FILE) as tmp:
            save_file(weights, str(tmp))
        blob = self.cfg.to_json()
        blob["metadata"] = {"trained_with": "interpgpt", **(metadata or {})}
        write_json(directory / CROSSCODER_CFG_FILE, blob)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> BatchTopKCrosscoder:
        """Read a crosscoder directory (safetensors only, never pickle)."""
        directory = Path(directory)
        cfg_path = directory / CROSSCODER_CFG_FILE
        if not directory.is_dir():
            raise UserError(f"{directory}: no such crosscoder directory")
        cfg = CrosscoderConfig.from_json(read_json(cfg_path), cfg_path)
        state = load_safetensors(directory / CROSSCODER_WEIGHTS_FILE)
        crosscoder = cls(cfg)
        for name in WEIGHT_NAMES:
            expected = getattr(crosscoder, name).shape
            if name not in state or state[name].shape != expected:
                got = tuple(state[name].shape) if name in state else "missing"
                raise UserError(
                    f"{directory / CROSSCODER_WEIGHTS_FILE}: {name} is {got}, cfg.json needs "
                    f"{tuple(expected)}; the two files do not belong together"
                )
        crosscoder.load_state_dict({n: state[n].float() for n in WEIGHT_NAMES})
        return crosscoder.eval()


def check_models(
    crosscoder: BatchTopKCrosscoder,
    models: Sequence[TaskGPT],
    sources: Sequence[str | Path],
    where: str | Path = "crosscoder",
) -> None:
    """Refuse models other than the ones the crosscoder was trained on (by weight hash), in
    the same order, with one line naming the first that differs."""
    cfg = crosscoder.cfg
    for record, model, source in zip(cfg.models, models, sources, strict=True):
        if cfg.hook_name not in model.hook_dict:
            raise UserError(f"{where}: its hook {cfg.hook_name!r} is not a hook of {source}")
        if model.cfg.d_model != cfg.d_model:
            raise UserError(
                f"{where}: reads {cfg.d_model}-wide activations, {source} has "
                f"d_model={model.cfg.d_model}; train a crosscoder on this pair"
            )
        sha = model_sha256(model)
        if sha != record.weights_sha256:
            raise UserError(
                f"{where}: was trained on {record.name} ({record.path}, weights "
                f"{record.weights_sha256[:12]}), but {source} has weights {sha[:12]}; "
                "use the models it was trained on, in that order, or train a crosscoder "
                "on this pair"
            )


__all__ = [
    "ARCHITECTURE",
    "CROSSCODER_CFG_FILE",
    "CROSSCODER_WEIGHTS_FILE",
    "N_MODELS",
    "BatchTopKCrosscoder",
    "CrosscoderConfig",
    "ModelRecord",
    "check_models",
    "model_sha256",
]
