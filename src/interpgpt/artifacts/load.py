"""Loading a trained model from any of its forms: run dir, export dir, bundle file.

A *run dir* (written by `interpgpt train`) holds `model.safetensors` (TaskGPT state
dict), `config.json` (GPTConfig under "model", the training config under "train",
the tokenizer hash, variant, held-out loss, versions) and a copy of
`tokenizer.json`, so it is self-contained. An *export dir* (written by
`interpgpt export`) holds the Hugging Face, TransformerLens and raw PyTorch forms.
`load_model` accepts either, or a `hooked_transformer.pt` / `pytorch_model.pt`
file, and always returns a TaskGPT with its tokenizer. Loading never unpickles
code: safetensors, or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from interpgpt.artifacts import convert
from interpgpt.artifacts.names import (
    EXPORT_INFO,
    HF_CONFIG,
    MODEL_WEIGHTS,
    RAW_BUNDLE,
    RUN_CONFIG,
    TL_BUNDLE,
    TOKENIZER_FILE,
)
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.errors import UserError
from interpgpt.io import read_json
from interpgpt.model.config import GPTConfig
from interpgpt.model.taskgpt import TaskGPT

# HookedTransformerConfig fields that must match TaskGPT's for the weights to mean the same.
TL_ARCHITECTURE_KEYS = (
    "act_fn",
    "gated_mlp",
    "normalization_type",
    "positional_embedding_type",
    "rotary_dim",
    "rotary_adjacent_pairs",
)
# Buffers a HookedTransformer keeps in its state dict that TaskGPT recomputes.
TL_BUFFER_SUFFIXES = (".attn.mask", ".attn.IGNORE", ".attn.rotary_sin", ".attn.rotary_cos")


@dataclass
class LoadedModel:
    """A TaskGPT ready for analysis, with the tokenizer it was trained with."""

    model: TaskGPT
    tokenizer: Any  # interpgpt.corpus.tokenizer.TaskTokenizer
    source: Path
    variant: str | None
    name: str  # a short label for reports: the variant, else the directory name


def safe_torch_load(path: Path) -> Any:
    """torch.load restricted to tensors and plain containers; refuses pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except Exception as err:  # weights_only raises UnpicklingError / RuntimeError variants
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{path}: refused to load ({first_line}); only tensors and plain values are accepted"
        ) from None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None


def check_state(state: dict[str, Any], expected: dict[str, torch.Tensor], source: Path) -> None:
    """Keys and shapes of `state` against `expected`; a mismatch is a UserError naming the file."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{source}: state dict does not fit the config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"{source}: {name} is a {type(tensor).__name__}, not a tensor")
        if tensor.shape != expected[name].shape:
            raise UserError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, "
                f"the config needs {tuple(expected[name].shape)}"
            )


def build_model(cfg: GPTConfig, state: dict[str, torch.Tensor], source: Path) -> TaskGPT:
    """A TaskGPT from a config and state dict; shape mismatches name the file."""
    model = TaskGPT(cfg)
    check_state(state, model.state_dict(), source)
    bad = next((k for k, v in state.items() if not bool(v.isfinite().all())), None)
    if bad is not None:
        raise UserError(
            f"{source}: {bad} holds NaN or infinite weights (the run diverged); retrain it, "
            "e.g. with a lower --lr"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def gpt_config_from_dict(blob: dict[str, Any], source: Path) -> GPTConfig:
    try:
        return GPTConfig(**blob)
    except (TypeError, ValueError) as err:
        raise UserError(f"{source}: invalid model config ({err})") from None


def load_run_dir(run_dir: Path) -> LoadedModel:
    config = read_json(run_dir / RUN_CONFIG)
    cfg = gpt_config_from_dict(config["model"], run_dir / RUN_CONFIG)
    model = build_model(cfg, load_safetensors(run_dir / MODEL_WEIGHTS), run_dir / MODEL_WEIGHTS)
    tokenizer = TaskTokenizer.from_file(run_dir / TOKENIZER_FILE)
    variant = config.get("variant")
    return LoadedModel(model, tokenizer, run_dir, variant, variant or run_dir.name)


def load_model(path: str | Path) -> LoadedModel:
    """Load a run dir, an export dir, or a TL / raw bundle file as a TaskGPT."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model directory or file")
    if path.is_dir() and (path / MODEL_WEIGHTS).is_file() and (path / RUN_CONFIG).is_file():
        config = read_json(path / RUN_CONFIG)
        if "model" in config:
            return load_run_dir(path)
    return load_exported(path)


def tokenizer_file(source: Path) -> Path:
    """tokenizer.json of a run/export dir, or beside a bundle file."""
    candidate = (source if source.is_dir() else source.parent) / TOKENIZER_FILE
    if not candidate.is_file():
        raise UserError(
            f"{source}: no {TOKENIZER_FILE} found at {candidate}; "
            "put the tokenizer the model was trained with there"
        )
    return candidate


# ------------------------------------------------------------------ export dirs and bundles


def load_exported(path: str | Path) -> LoadedModel:
    """An export dir, or a `hooked_transformer.pt` / `pytorch_model.pt` file, as a TaskGPT.

    Inside an export dir the Hugging Face safetensors are preferred (no pickle at
    all), then the raw bundle, then the TransformerLens bundle. The tokenizer is
    the dir's `tokenizer.json`, or the one beside a bundle file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model directory or file")
    if path.is_dir():
        model = _load_export_dir(path)
    elif path.suffix == ".safetensors":
        model = _load_huggingface(path.parent)
    else:
        model = _load_bundle(path)
    tokenizer = TaskTokenizer.from_file(tokenizer_file(path))
    home = path if path.is_dir() else path.parent
    info = read_json(home / EXPORT_INFO) if (home / EXPORT_INFO).is_file() else {}
    variant = info.get("variant")
    return LoadedModel(model, tokenizer, path, variant, variant or home.resolve().name)


def _load_export_dir(path: Path) -> TaskGPT:
    if (path / HF_CONFIG).is_file() and (path / MODEL_WEIGHTS).is_file():
        return _load_huggingface(path)
    for name in (RAW_BUNDLE, TL_BUNDLE):
        if (path / name).is_file():
            return _load_bundle(path / name)
    raise UserError(
        f"{path}: neither a run dir nor an export dir (expected {MODEL_WEIGHTS} with "
        f"{RUN_CONFIG}, {RAW_BUNDLE} or {TL_BUNDLE})"
    )


def gpt_config_from_llama(hf: dict[str, Any], source: Path) -> GPTConfig:
    """The GPTConfig of a Llama config.json, refusing Llama features TaskGPT lacks."""
    if "model_type" not in hf:
        raise UserError(
            f"{source}: neither a run config (no 'model' section) "
            "nor a Hugging Face config (no 'model_type')"
        )
    if hf.get("model_type") != "llama":
        raise UserError(f"{source}: model_type {hf.get('model_type')!r}, expected 'llama'")
    heads = hf.get("num_attention_heads")
    rope = hf.get("rope_parameters") or {}
    unsupported = {
        "num_key_value_heads": hf.get("num_key_value_heads", heads) != heads,
        "tie_word_embeddings": hf.get("tie_word_embeddings") is False,
        "attention_bias": bool(hf.get("attention_bias")),
        "mlp_bias": bool(hf.get("mlp_bias")),
        "hidden_act": hf.get("hidden_act", "silu") != "silu",
        "rope_type": rope.get("rope_type", "default") != "default" or hf.get("rope_scaling"),
    }
    bad = [name for name, flag in unsupported.items() if flag]
    if bad:
        raise UserError(f"{source}: not a TaskGPT-shaped Llama ({', '.join(bad)} unsupported)")
    try:
        fields = {
            "vocab_size": hf["vocab_size"],
            "n_layer": hf["num_hidden_layers"],
            "n_head": heads,
            "d_model": hf["hidden_size"],
            "d_head": hf.get("head_dim") or hf["hidden_size"] // heads,
            "d_mlp": hf["intermediate_size"],
            "n_ctx": hf["max_position_embeddings"],
            "norm_eps": hf["rms_norm_eps"],
            "rope_base": rope.get("rope_theta", hf.get("rope_theta", 10_000.0)),
            "init_std": hf.get("initializer_range", 0.02),
        }
    except KeyError as err:
        raise UserError(f"{source}: missing {err} in the Llama config") from None
    return gpt_config_from_dict(fields, source)


def _load_huggingface(directory: Path) -> TaskGPT:
    cfg = gpt_config_from_llama(read_json(directory / HF_CONFIG), directory / HF_CONFIG)
    weights = directory / MODEL_WEIGHTS
    state = load_safetensors(weights)
    state.pop("lm_head.weight", None)  # tied: written by some savers, identical to the embedding
    _check_state(state, cfg, convert.to_llama_state_dict, weights)
    return build_model(cfg, convert.from_llama_state_dict(state, cfg), weights)


def _load_bundle(path: Path) -> TaskGPT:
    """A TL or raw bundle; which one is told by the config's field names."""
    blob = safe_torch_load(path)
    if not (isinstance(blob, dict) and {"config", "model_state_dict"} <= set(blob)):
        raise UserError(f"{path}: expected a dict with 'config' and 'model_state_dict'")
    config, state = blob["config"], blob["model_state_dict"]
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise UserError(f"{path}: 'config' and 'model_state_dict' must be dicts")
    if "n_layers" in config:  # HookedTransformerConfig field names
        cfg = _gpt_config_from_tl(config, path)
        state = {k: v for k, v in state.items() if not k.endswith(TL_BUFFER_SUFFIXES)}
        _check_state(state, cfg, convert.to_tl_state_dict, path)
        try:
            state = convert.from_tl_state_dict(state, cfg)
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
        return build_model(cfg, state, path)
    cfg = gpt_config_from_dict(config, path)
    _check_state(state, cfg, lambda own, _: own, path)
    return build_model(cfg, state, path)


def _gpt_config_from_tl(config: dict[str, Any], source: Path) -> GPTConfig:
    """GPTConfig of a TL bundle's config, refusing architectures TaskGPT is not."""
    try:
        cfg = convert.gpt_config_from_tl(config)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{source}: invalid TransformerLens config ({err})") from None
    expected = convert.hooked_transformer_config(cfg)
    bad = [
        f"{k}={config.get(k)!r}"
        for k in TL_ARCHITECTURE_KEYS
        if config.get(k, expected[k]) != expected[k]
    ]
    if bad:
        raise UserError(f"{source}: not a TaskGPT-shaped TransformerLens config ({', '.join(bad)})")
    return cfg


def _check_state(
    state: dict[str, Any],
    cfg: GPTConfig,
    to_format: Callable[[dict[str, Tensor], GPTConfig], dict[str, Tensor]],
    source: Path,
) -> None:
    """Keys and shapes of a foreign-format state dict against what `cfg` needs."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        expected = to_format(TaskGPT(cfg).state_dict(), cfg)
    check_state(state, expected, source)


@dataclass
class ModelPair:
    """The two models of a matched pair, on one device, sharing one tokenizer."""

    standard: LoadedModel
    adhd: LoadedModel
    tokenizer: Any  # interpgpt.corpus.tokenizer.TaskTokenizer

    @property
    def models(self) -> dict[str, Any]:
        return {"standard": self.standard.model, "adhd": self.adhd.model}


def check_roles(standard: LoadedModel, adhd: LoadedModel, same_variant: bool = False) -> None:
    """Each model in its role, by the variant it records (a bundle without one passes):
    the standard model first, the ADHD one second; two of one variant only with
    `same_variant` (the seed controls compare a model with its twin)."""
    a, b = standard.variant, adhd.variant
    if a is None or b is None or (a, b) == ("standard", "adhd"):
        return
    if a == b:
        if same_variant:
            return
        raise UserError(
            f"{standard.source} and {adhd.source}: both are {a} models; pass --same-variant "
            "to compare two models of one variant"
        )
    raise UserError(
        f"{standard.source} is the {a} model and {adhd.source} the {b} one: the standard "
        "model goes in the standard role, the ADHD model in the adhd role"
    )


def load_pair(
    standard: str | Path,
    adhd: str | Path,
    device: torch.device | str = "cpu",
    same_variant: bool = False,
) -> ModelPair:
    """Load both models (run or export dirs, or bundle files) onto `device`; each must be
    in its role (`check_roles`), and they must share shape and tokenizer, since every pair
    analysis feeds the same token ids to both and compares heads by index."""
    device = torch.device(device)
    std, adhd_model = load_model(standard), load_model(adhd)
    check_roles(std, adhd_model, same_variant)
    if std.tokenizer.sha256 != adhd_model.tokenizer.sha256:
        raise UserError(
            f"{standard} and {adhd}: the models were trained with different tokenizers; "
            "a matched pair must share one"
        )
    shape = ("n_layer", "n_head", "d_model", "d_head")
    if any(getattr(std.model.cfg, k) != getattr(adhd_model.model.cfg, k) for k in shape):
        raise UserError(
            f"{standard} and {adhd}: the models differ in shape "
            f"({std.model.cfg} vs {adhd_model.model.cfg}); a matched pair shares one"
        )
    std.model.to(device).eval()
    adhd_model.model.to(device).eval()
    return ModelPair(std, adhd_model, std.tokenizer)
