"""TaskGPT block pieces for the unhooked fast paths (head-swap profiles, patching).

Those paths run the model's computation without its hook points, on fused kernels, to
skip work the analysis does not read. Each piece here is the same computation as the
matching part of `model.py` (tests compare both paths with the hooked model and
TransformerLens), written once so the fast paths cannot drift apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from interpgpt import onednn


def rms_norm(norm: nn.Module, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """A TaskGPT `RMSNorm` as one fused kernel (its hooks are not run)."""
    return F.rms_norm(x, x.shape[-1:], norm.weight, norm.eps)


def rotary(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None = None) -> Tensor:
    """`model.apply_rotary(x)` (half-half layout), into `out` when given (no temporaries),
    with two fused multiply-adds instead of `rotate_half`'s negated copy and concat."""
    half = x.shape[-1] // 2
    out = x * cos if out is None else torch.mul(x, cos, out=out)
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


def mlp_residual(block: nn.Module, mid: Float[Tensor, "... d_model"]) -> Tensor:
    """The second half of a TaskGPT block: mid + mlp(ln2(mid)), the MLP fused on oneDNN."""
    return onednn.swiglu_residual(block.mlp, rms_norm(block.ln2, mid), mid)
