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


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively on `device`: a GPU with bf16 units, a CPU with
    AVX512-BF16 or AMX. Elsewhere bf16 is emulated and slower than fp32 (on an AVX2-only
    CPU a bf16-autocast matmul took 7x the fp32 time), so autocasting there only costs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False
