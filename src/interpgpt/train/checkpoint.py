"""Atomic checkpoints that make `--resume` bit-identical on CPU to an uninterrupted run.

A checkpoint holds the model, AdamW's moments and step counts, the step, the RNG
states and a fingerprint of the run's config; the data order and learning rate are
functions of the step, so nothing else needs restoring.
"""

from __future__ import annotations

import json

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from interpgpt.artifacts.load import load_safetensors
from interpgpt.artifacts.names import CHECKPOINT, METRICS
from interpgpt.errors import UserError
from interpgpt.io import atomic_path, describe_fault, file_sha256, read_jsonl
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


def fingerprint(state: LoopState) -> dict:
    """The settings a checkpoint must share with the run resuming it."""
    c = state.config
    keys = (
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
    blob = {k: getattr(c, k) for k in keys}
    blob["betas"] = list(c.betas)
    blob["tokenizer_sha256"] = file_sha256(c.tokenizer)
    blob["train_examples"] = len(state.train_set)
    return blob


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
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise UserError(
            f"{path}: not a readable checkpoint ({describe_fault(err)}); it is truncated or "
            "corrupt: delete it to start the run again, or choose another --out"
        ) from None
    saved, current = json.loads(meta.get("fingerprint", "{}")), fingerprint(state)
    saved.setdefault("data_seed", saved.get("seed"))  # written before data_seed: seed's order
    for key, before in OLDER_DEFAULTS.items():  # written before these settings existed
        saved.setdefault(key, before)
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
