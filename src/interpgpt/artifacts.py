"""File names of every artifact, and loading a trained model from any of its forms.

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from interpgpt.io import UserError, read_json
from interpgpt.model import GPTConfig, TaskGPT

MODEL_WEIGHTS = "model.safetensors"
RUN_CONFIG = "config.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT = "checkpoint.safetensors"
TRAINER_STATE = "trainer_state.pt"
METRICS = "metrics.jsonl"
LOSS_PLOT = "loss.png"
TL_BUNDLE = "hooked_transformer.pt"
RAW_BUNDLE = "pytorch_model.pt"
HF_CONFIG = "config.json"


@dataclass
class LoadedModel:
    """A TaskGPT ready for analysis, with the tokenizer it was trained with."""

    model: TaskGPT
    tokenizer: Any  # interpgpt.tokenizer.TaskTokenizer
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
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def gpt_config_from_dict(blob: dict[str, Any], source: Path) -> GPTConfig:
    try:
        return GPTConfig(**blob)
    except (TypeError, ValueError) as err:
        raise UserError(f"{source}: invalid model config ({err})") from None


def load_run_dir(run_dir: Path) -> LoadedModel:
    from interpgpt.tokenizer import TaskTokenizer

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
    from interpgpt import export  # export dirs and bundles

    return export.load_exported(path)
