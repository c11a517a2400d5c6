"""The oneDNN linears equal torch's (plain, with a residual, the fused SwiGLU), and the
`INTERPGPT_ONEDNN` switch really decides whether the private op runs."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from interpgpt.model.config import preset
from interpgpt.model.fast import onednn
from interpgpt.model.taskgpt import TaskGPT

pytestmark = pytest.mark.usefixtures("one_thread")

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="torch without oneDNN")


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    return TaskGPT(preset("tiny", vocab_size=64, init_std=0.2)).eval().blocks[0]


# 7 x 29 rows: above MIN_ROWS and not a multiple of ROW_BUCKET, so rows are padded.
@pytest.mark.parametrize("on", [True, False])
@pytest.mark.parametrize("rows", [(7, 29), (3, 2)])
def test_kernels_equal_torch(block, rows, on) -> None:
    x = torch.randn(*rows, 32)
    residual = torch.randn(*rows, 32)
    weight = block.attn.o_proj.weight
    gate_up, down = block.mlp.gate_up_proj.weight, block.mlp.down_proj.weight
    with torch.no_grad(), onednn.switched(on):
        fast = onednn.usable(x, weight)
        # both paths are exercised
        assert fast == (on and onednn.available() and rows[0] * rows[1] >= onednn.MIN_ROWS)
        torch.testing.assert_close(onednn.linear(x, weight), x @ weight.T)
        torch.testing.assert_close(
            onednn.linear(x, weight, residual=residual), residual + x @ weight.T
        )
        if fast:
            torch.testing.assert_close(
                onednn.swiglu_residual(x, gate_up, down, residual), residual + block.mlp(x)
            )


def test_not_used_with_autograd_or_off_fp32(block) -> None:
    x = torch.randn(64, 32)
    weight = block.attn.o_proj.weight
    assert not onednn.usable(x, weight)  # grad mode is on
    with torch.no_grad():
        assert onednn.usable(x, weight) == onednn.available()
        assert not onednn.usable(x.double(), weight.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not onednn.usable(x, weight)


@needs_onednn
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


@needs_onednn
def test_switch_off_bypasses_the_private_op(block, onednn_calls) -> None:
    """Off, `linear` is `F.linear` to the bit and the oneDNN op never runs; on, it runs."""
    x, residual = torch.randn(4, 40, 32), torch.randn(4, 40, 32)
    weight = block.attn.o_proj.weight
    with torch.no_grad():
        with onednn.switched(False):
            assert not onednn.enabled() and not onednn.usable(x, weight)
            assert torch.equal(onednn.linear(x, weight), F.linear(x, weight))
            assert torch.equal(
                onednn.linear(x, weight, residual=residual), residual + F.linear(x, weight)
            )
            assert onednn_calls(lambda: onednn.linear(x, weight, residual=residual)) == 0
        with onednn.switched(True):
            assert onednn.enabled() and onednn.usable(x, weight)
            assert onednn_calls(lambda: onednn.linear(x, weight, residual=residual)) == 1


def test_switch_is_the_environment_variable_and_is_restored() -> None:
    before = os.environ.get(onednn.SWITCH)
    with onednn.switched(False):
        assert os.environ[onednn.SWITCH] == "0" and not onednn.enabled()
        with onednn.switched(True):
            assert onednn.enabled() == onednn.available()
        assert not onednn.enabled()  # the inner block restored the outer setting
    assert os.environ.get(onednn.SWITCH) == before
    os.environ[onednn.SWITCH] = "yes"
    try:
        with pytest.raises(ValueError, match="INTERPGPT_ONEDNN must be 0 or 1"):
            onednn.enabled()
    finally:
        if before is None:
            del os.environ[onednn.SWITCH]
        else:
            os.environ[onednn.SWITCH] = before


def test_missing_op_falls_back_to_torch(block, monkeypatch) -> None:
    """A torch built without oneDNN: the switch cannot turn it on, `linear` is F.linear."""
    monkeypatch.setattr(onednn, "_LINEAR", None)
    x, weight = torch.randn(64, 32), block.attn.o_proj.weight
    with torch.no_grad(), onednn.switched(True):
        assert not onednn.available() and not onednn.enabled()
        assert not onednn.usable(x, weight)
        assert torch.equal(onednn.linear(x, weight), F.linear(x, weight))
