"""fp32 linears on oneDNN for inference passes that push many tokens through a TaskGPT.

Why: on CPU, torch's fp32 `F.linear` calls MKL's sgemm, and on the AMD EPYC (Zen)
machines this project runs on MKL takes its AVX2 code path. oneDNN, bundled with torch
(`mkldnn::_linear_pointwise` is what torch.compile's CPU freezing pass lowers a linear
to), dispatches on ISA features and runs AVX-512 kernels: about 2x MKL's fp32
throughput on the study model's shapes, still in fp32 (only the order of the sums
differs, ~1e-7 relative). oneDNN also applies an elementwise or binary post-op inside
the GEMM (oneDNN "post-ops"), which `swiglu_residual` uses for SwiGLU's silu(gate) * up
and for the residual addition.

Costs: oneDNN builds one kernel per input shape, ~2 ms and ~1.5 MiB the first time
(then cached for the process), and under a few dozen rows its per-call overhead exceeds
MKL's on the blocks' linears (d_out of a few hundred). So `usable` asks for enough rows
(`min_rows`), and the rows (tokens) are padded up to a multiple of `row_bucket`, which
bounds the number of shapes a run builds kernels for (a length-sorted pass over 1,000
tasks would otherwise build one per batch width) at the price of a few padded rows. The
wide unembedding (d_out 8,197) is the exception: from a few rows up oneDNN runs it
faster than MKL, which decoding one token per row needs (`decode.Decoder` asks for a
small `min_rows` and bucket). Everywhere else — off CPU, non-fp32, autocast, autograd —
the functions here are the plain torch computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

try:
    _LINEAR = torch.ops.mkldnn._linear_pointwise.default
    _LINEAR_BINARY = torch.ops.mkldnn._linear_pointwise.binary
except (AttributeError, RuntimeError):  # a torch built without oneDNN
    _LINEAR = _LINEAR_BINARY = None

MIN_ROWS = 32
"""Fewest rows (tokens) for which oneDNN beats MKL on the study model's linears."""
ROW_BUCKET = 128
"""oneDNN GEMMs run on a multiple of this many rows (see the module docstring)."""


def usable(x: Tensor, weight: Tensor, min_rows: int = MIN_ROWS) -> bool:
    """Whether `x @ weight.T` runs on oneDNN: CPU fp32 inference with `min_rows` rows."""
    return (
        _LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and x.numel() >= min_rows * x.shape[-1]
    )


def linear(
    x: Float[Tensor, "... d_in"],
    weight: Float[Tensor, "d_out d_in"],
    residual: Float[Tensor, "... d_out"] | None = None,
    *,
    min_rows: int = MIN_ROWS,
    row_bucket: int = ROW_BUCKET,
) -> Float[Tensor, "... d_out"]:
    """`F.linear(x, weight)` (bias-free, as every TaskGPT linear), plus `residual` if given;
    on oneDNN from `min_rows` rows, padded to a multiple of `row_bucket`."""
    if not usable(x, weight, min_rows):
        out = F.linear(x, weight)
        return out if residual is None else residual + out
    if residual is None:
        return _run(x, weight, None, "none", row_bucket)
    return _run(x, weight, residual, "add", row_bucket)


def swiglu_residual(
    mlp: torch.nn.Module, x: Float[Tensor, "... d_model"], residual: Float[Tensor, "... d_model"]
) -> Float[Tensor, "... d_model"]:
    """`residual + mlp(x)` for a TaskGPT `SwiGLU` (down(silu(gate(x)) * up(x))), fused on
    oneDNN: silu as the gate GEMM's post-op, * gate as the up GEMM's, + residual as the
    down GEMM's. The MLP's internal hooks are not run: for unhooked inference only."""
    gate_up, down = mlp.gate_up_proj.weight, mlp.down_proj.weight
    if not usable(x, gate_up):
        return residual + mlp(x)
    d_mlp = down.shape[1]
    shape, rows = x.shape[:-1], x.numel() // x.shape[-1]
    x = _pad_rows(x.reshape(rows, -1))
    gate = _LINEAR(x, gate_up[:d_mlp], None, "swish", [], "")  # swish with beta 1 is silu
    hidden = _LINEAR_BINARY(x, gate, gate_up[d_mlp:], None, "mul")
    out = _LINEAR_BINARY(hidden, _pad_rows(residual.reshape(rows, -1)), down, None, "add")
    return out[:rows].view(*shape, -1)


def _run(x: Tensor, weight: Tensor, other: Tensor | None, post_op: str, bucket: int) -> Tensor:
    """One oneDNN GEMM on rows padded to the bucket, with a binary post-op if `other`."""
    shape, rows = x.shape[:-1], x.numel() // x.shape[-1]
    x = _pad_rows(x.reshape(rows, -1), bucket)
    if other is None:
        out = _LINEAR(x, weight, None, post_op, [], "")
    else:
        other = _pad_rows(other.reshape(rows, -1), bucket)
        out = _LINEAR_BINARY(x, other, weight, None, post_op)
    return out[:rows].view(*shape, -1)


def _pad_rows(x: Float[Tensor, "rows d"], bucket: int = ROW_BUCKET) -> Float[Tensor, "padded d"]:
    missing = -x.shape[0] % bucket
    return F.pad(x, (0, 0, 0, missing)) if missing else x
