"""Atomic checkpoints that make `--resume` bit-identical on CPU to an uninterrupted run.

A checkpoint holds the model, AdamW's moments and step counts, the step, the RNG
states and a fingerprint of the run's config; the data order and learning rate are
functions of the step, so nothing else needs restoring.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from interpgpt.artifacts.load import load_safetensors
from interpgpt.artifacts.names import CHECKPOINT, METRICS
from interpgpt.errors import UserError
from interpgpt.io import atomic_path, describe_fault, file_sha256, read_jsonl
from interpgpt.train.config import TrainConfig
from interpgpt.train.outputs import write_metrics
from interpgpt.train.state import LoopState, nan_message

OLDER_DEFAULTS = {
    "optimizer": "adamw",
    "schedule": "cosine",
    "cooldown_fraction": 0.2,
    "d_model": None,
    "d_mlp": None,
}
"""What a checkpoint written before a setting existed was trained with."""


FINGERPRINT_SETTINGS = (
    "preset",
    "variant",
    "seed",
    "data_seed",
    "steps",
    "batch_size",
    "group_by_length",
    "lr",
    "warmup_fraction",
    "min_lr_ratio",
    "weight_decay",
    "betas",
    "grad_clip",
    "autocast",
    "optimizer",
    "schedule",
    "cooldown_fraction",
    "d_model",
    "d_mlp",
)
"""The training settings a checkpoint must share with the run resuming it."""


def settings_fingerprint(config: TrainConfig) -> dict:
    """A resolved config's `FINGERPRINT_SETTINGS` and its tokenizer's hash."""
    blob = {k: getattr(config, k) for k in FINGERPRINT_SETTINGS}
    blob["betas"] = list(config.betas)
    blob["tokenizer_sha256"] = file_sha256(config.tokenizer)
    return blob


def fingerprint(state: LoopState) -> dict:
    """What a checkpoint must share with the run resuming it: the settings, and the size
    of the training set they read."""
    return {**settings_fingerprint(state.config), "train_examples": len(state.train_set)}


def checkpoint_metadata(path: Path) -> dict[str, str]:
    """A checkpoint's metadata; a truncated or corrupt file is one line saying so."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise UserError(
            f"{path}: not a readable checkpoint ({describe_fault(err)}); it is truncated or "
            "corrupt: delete it to start the run again, or choose another --out"
        ) from None


def saved_fingerprint(path: Path) -> dict:
    """The fingerprint a checkpoint was written with, older checkpoints' gaps filled."""
    saved = json.loads(checkpoint_metadata(path).get("fingerprint", "{}"))
    saved.setdefault("data_seed", saved.get("seed"))  # written before data_seed: seed's order
    for key, before in OLDER_DEFAULTS.items():  # written before these settings existed
        saved.setdefault(key, before)
    return saved


def checkpoint_differs(config: TrainConfig) -> list[str]:
    """The settings in which the run dir's checkpoint differs from `config` (resolved), so
    resuming it would refuse; empty when there is no checkpoint or it matches."""
    path = config.out / CHECKPOINT
    if not path.is_file():
        return []
    saved, current = saved_fingerprint(path), settings_fingerprint(config)
    return sorted(k for k in current if saved.get(k) != current[k])


def save_checkpoint(state: LoopState) -> None:
    """Model, AdamW state, step and RNG states in one atomically written safetensors file.

    Weights that went non-finite in the last update are never saved over a good checkpoint.
    """
    if state.dist.rank != 0:
        return
    if not all(bool(p.isfinite().all()) for p in state.model.parameters()):
        raise UserError(nan_message(state))

    tensors = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.state_dict().items()
    }
    for index, slots in state.optimizer.state_dict()["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and state.dist.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(state.dist.device)
    meta = {
        "step": str(state.step),
        "tokens_seen": str(state.tokens_seen),
        "fingerprint": json.dumps(fingerprint(state), sort_keys=True),
    }
    with atomic_path(state.config.out / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    write_metrics(state)


def load_checkpoint(state: LoopState) -> None:
    """Restore a checkpoint written by `save_checkpoint` into `state`."""
    path = state.config.out / CHECKPOINT
    meta = checkpoint_metadata(path)
    saved, current = saved_fingerprint(path), fingerprint(state)
    differ = sorted(k for k in current if saved.get(k) != current[k])
    if differ:
        raise UserError(
            f"{path}: was written with different settings ({', '.join(differ)}); "
            "resume with the original options or start a new --out"
        )
    tensors = load_safetensors(path)
    state.model.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    )
    optim = state.optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            optim["state"].setdefault(int(index), {})[slot] = value
    state.optimizer.load_state_dict(optim)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and state.dist.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], state.dist.device)
    state.step = state.resumed_from = int(meta["step"])
    state.tokens_seen = int(meta["tokens_seen"])
    metrics = state.config.out / METRICS
    if metrics.is_file():
        state.records = [r for r in read_jsonl(metrics) if r.get("step", 0) <= state.step]
