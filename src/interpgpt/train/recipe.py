"""The recipe's torch half: the model shape and init a config gives, its schedule and
optimizer (`config` holds the settings as data, without torch).
"""

from __future__ import annotations

import hashlib

import torch

from interpgpt.device import bf16_native
from interpgpt.model.config import PRESETS, GPTConfig, preset
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.train.config import TrainConfig
from interpgpt.train.step import MuonAdamW, adamw, warmup_cosine, warmup_stable_decay


def model_config(config: TrainConfig) -> GPTConfig:
    """The model shape: the preset with the config's width overrides, never anything of the
    corpus, so both variants of a pair share it."""
    overrides: dict[str, int] = {}
    if config.d_model is not None:
        overrides["d_model"] = config.d_model
        overrides["d_head"] = config.d_model // PRESETS[config.preset].n_head
    if config.d_mlp is not None:
        overrides["d_mlp"] = config.d_mlp
    return preset(config.preset, **overrides)


def initial_model(config: TrainConfig) -> TaskGPT:
    """The initial weights: a function of (preset, seed) only, identical for both variants
    and for a seed twin (`data_seed` never reaches them)."""
    torch.manual_seed(config.seed)
    return TaskGPT(model_config(config))


def state_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a state dict: each tensor's name, dtype, shape and bytes in sorted key
    order, so two models hash equal exactly when their weights are bit-identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to `lr`, then the config's decay to `min_lr_ratio * lr` at the last
    step."""
    assert config.steps is not None and config.lr is not None, "call on config.resolved()"
    warmup = max(1, round(config.warmup_fraction * config.steps))
    peak, total, floor = config.lr, config.steps, config.min_lr_ratio
    if config.schedule == "wsd":
        cooldown = max(1, round(config.cooldown_fraction * total))
        return warmup_stable_decay(
            step, peak=peak, warmup=warmup, total=total, min_ratio=floor, cooldown=cooldown
        )
    return warmup_cosine(step, peak=peak, warmup=warmup, total=total, min_ratio=floor)


def make_optimizer(model: TaskGPT, config: TrainConfig) -> torch.optim.Optimizer:
    """The config's optimizer; weight decay on matrices (embedding, projections), none on
    norm gains."""
    lr, decay, betas = config.lr or 0.0, config.weight_decay, config.betas
    if config.optimizer == "muon":
        return MuonAdamW(model, lr=lr, weight_decay=decay, betas=betas)
    return adamw(model, lr=lr, weight_decay=decay, betas=betas)


def autocast_enabled(config: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast when asked for and native on `device` (`device.bf16_native`)."""
    return config.autocast and bf16_native(device)
