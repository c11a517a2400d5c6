"""The oneDNN linears equal torch's: plain, with a residual, and the fused SwiGLU."""

from __future__ import annotations

import pytest
import torch

from interpgpt import onednn
from interpgpt.model import TaskGPT, preset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    return TaskGPT(preset("tiny", vocab_size=64, init_std=0.2)).eval().blocks[0]


# 7 x 29 rows: above MIN_ROWS and not a multiple of ROW_BUCKET, so rows are padded.
@pytest.mark.parametrize("rows", [(7, 29), (3, 2)])
def test_kernels_equal_torch(block, rows) -> None:
    x = torch.randn(*rows, 32)
    residual = torch.randn(*rows, 32)
    weight = block.attn.o_proj.weight
    with torch.no_grad():
        fast = onednn.usable(x, weight)
        assert fast == (rows[0] * rows[1] >= onednn.MIN_ROWS)  # both paths are exercised
        torch.testing.assert_close(onednn.linear(x, weight), x @ weight.T)
        torch.testing.assert_close(
            onednn.linear(x, weight, residual=residual), residual + x @ weight.T
        )
        torch.testing.assert_close(
            onednn.swiglu_residual(block.mlp, x, residual), residual + block.mlp(x)
        )


def test_not_used_with_autograd_or_off_fp32(block) -> None:
    x = torch.randn(64, 32)
    weight = block.attn.o_proj.weight
    assert not onednn.usable(x, weight)  # grad mode is on
    with torch.no_grad():
        assert onednn.usable(x, weight)
        assert not onednn.usable(x.double(), weight.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not onednn.usable(x, weight)


def test_few_rows_on_request(block) -> None:
    """The decoder's unembedding: oneDNN from one row, with and without a row bucket."""
    weight = torch.randn(97, 32)
    with torch.no_grad():
        for rows in (1, 3):
            x = torch.randn(rows, 32)
            assert not onednn.usable(x, weight) and onednn.usable(x, weight, min_rows=1)
            for bucket in (1, 8):
                out = onednn.linear(x, weight, min_rows=1, row_bucket=bucket)
                assert out.shape == (rows, 97)
                torch.testing.assert_close(out, x @ weight.T)
