"""Where models run: one resolution of the `device` setting for every stage."""

from __future__ import annotations

import torch

from interpgpt.errors import UserError


def resolve_device(name: str) -> torch.device:
    """ "auto" is CUDA when available, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: not a torch device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: CUDA is not available on this machine; use cpu")
    return device
