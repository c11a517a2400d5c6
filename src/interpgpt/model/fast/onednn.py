"""fp32 linears on oneDNN for the unhooked inference paths, behind one switch.

What: `linear` is `F.linear` (bias-free, as every TaskGPT linear) with an optional
residual addition, and `swiglu_residual` is a SwiGLU MLP plus its residual; both run on
oneDNN's CPU GEMM when `usable`, else (the fallback) on plain `F.linear`.

Why: on CPU, torch's fp32 `F.linear` calls MKL's sgemm, which picks its kernels by CPU
vendor as well as ISA (on AMD processors it takes its AVX2 path even where AVX-512 is
available); oneDNN, bundled with torch, dispatches on ISA features alone. It also applies
an elementwise or binary post-op inside the GEMM (oneDNN "primitive attributes:
post-ops", https://oneapi-src.github.io/oneDNN/dev_guide_attributes_post_ops.html),
which `swiglu_residual` uses for SwiGLU's silu(gate) * up and for the residual
addition. The results stay fp32; only the order of the sums differs from MKL's.

The private op. oneDNN is reached through `torch.ops.mkldnn._linear_pointwise`, the op
torch.compile's CPU freezing pass lowers a linear to (torch/_inductor/fx_passes/
mkldnn_fusion.py); it is not public API and may change or be missing (a torch built
without oneDNN). So it is used only behind one switch, the environment variable
`INTERPGPT_ONEDNN` (`SWITCH`: "1", the default, or "0"), read in `enabled()` alone; when
the switch is off or the op is missing, every function here is the plain torch
computation. `bench/bench_onednn.py` times the analyses with the switch on and off.

Costs: oneDNN builds one kernel per input shape the first time it meets it (then
cached for the process), and with few rows its per-call overhead exceeds MKL's on the
blocks' narrow linears. So `usable` asks for enough rows (`min_rows`), and the rows
(tokens) are padded up to a multiple of `row_bucket`, which bounds the number of shapes
a run builds kernels for (a length-sorted pass over many tasks would otherwise build one
per batch width) at the price of a few padded rows. The wide unembedding is the
exception: decoding one token per row asks for a small `min_rows` and bucket
(`decode.Decoder`). Off CPU, non-fp32, under autocast or with autograd on, the plain
torch computation runs too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

SWITCH = "INTERPGPT_ONEDNN"
"""Environment variable: "0" turns the oneDNN kernels off, "1" (or unset) allows them."""

_LINEAR: Callable[..., Tensor] | None
_LINEAR_BINARY: Callable[..., Tensor] | None
try:
    _LINEAR = torch.ops.mkldnn._linear_pointwise.default
    _LINEAR_BINARY = torch.ops.mkldnn._linear_pointwise.binary
except (AttributeError, RuntimeError):  # a torch built without oneDNN
    _LINEAR = _LINEAR_BINARY = None

MIN_ROWS = 32
"""Fewest rows (tokens) for which oneDNN beats MKL on the study model's block linears."""
ROW_BUCKET = 128
"""oneDNN GEMMs run on a multiple of this many rows (see the module docstring)."""


def available() -> bool:
    """Whether this torch has the private oneDNN linear op."""
    return _LINEAR is not None


def enabled() -> bool:
    """Whether the oneDNN kernels may run: the op is available and `SWITCH` is not "0".

    The one place the switch is read; read on every call, so a process can flip it."""
    value = os.environ.get(SWITCH, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{SWITCH} must be 0 or 1, got {value!r}")
    return value == "1" and available()


@contextmanager
def switched(on: bool) -> Iterator[None]:
    """Set `SWITCH` for the duration of a `with` block (tests, benchmarks), then restore it."""
    previous = os.environ.get(SWITCH)
    os.environ[SWITCH] = "1" if on else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[SWITCH]
        else:
            os.environ[SWITCH] = previous


def usable(x: Tensor, weight: Tensor, min_rows: int = MIN_ROWS) -> bool:
    """Whether `x @ weight.T` runs on oneDNN: the switch is on and this is CPU fp32
    inference with at least `min_rows` rows."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and x.numel() >= min_rows * x.shape[-1]
        and enabled()
    )


def linear(
    x: Float[Tensor, "... d_in"],
    weight: Float[Tensor, "d_out d_in"],
    residual: Float[Tensor, "... d_out"] | None = None,
    *,
    min_rows: int = MIN_ROWS,
    row_bucket: int = ROW_BUCKET,
) -> Float[Tensor, "... d_out"]:
    """`F.linear(x, weight)`, plus `residual` if given; on oneDNN when `usable` (from
    `min_rows` rows, padded to a multiple of `row_bucket`)."""
    if not usable(x, weight, min_rows):
        out = F.linear(x, weight)
        return out if residual is None else residual + out
    if residual is None:
        return _run(x, weight, None, "none", row_bucket)
    return _run(x, weight, residual, "add", row_bucket)


def swiglu_residual(
    x: Float[Tensor, "... d_model"],
    gate_up: Float[Tensor, "two_d_mlp d_model"],
    down: Float[Tensor, "d_model d_mlp"],
    residual: Float[Tensor, "... d_model"],
) -> Float[Tensor, "... d_model"]:
    """`residual + down(silu(gate(x)) * up(x))` for a SwiGLU's stacked gate/up weight and
    its down weight, as three oneDNN GEMMs: silu as the gate GEMM's post-op, * gate as
    the up GEMM's, + residual as the down GEMM's. Only when `usable(x, gate_up)`: the
    caller (`block.mlp_residual`) runs the plain computation otherwise."""
    if _LINEAR is None or _LINEAR_BINARY is None:
        raise RuntimeError("this torch has no oneDNN linear op; check onednn.usable first")
    d_mlp = down.shape[1]
    shape, rows = x.shape[:-1], x.numel() // x.shape[-1]
    x = _pad_rows(x.reshape(rows, -1))
    gate = _LINEAR(x, gate_up[:d_mlp], None, "swish", [], "")  # swish with beta 1 is silu
    hidden = _LINEAR_BINARY(x, gate, gate_up[d_mlp:], None, "mul")
    out = _LINEAR_BINARY(hidden, _pad_rows(residual.reshape(rows, -1)), down, None, "add")
    return out[:rows].view(*shape, -1)


def _run(x: Tensor, weight: Tensor, other: Tensor | None, post_op: str, bucket: int) -> Tensor:
    """One oneDNN GEMM on rows padded to the bucket, with a binary post-op if `other`."""
    assert _LINEAR is not None and _LINEAR_BINARY is not None  # checked by `usable`
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
