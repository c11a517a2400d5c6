"""Shared by the fast-path tests: counting runs of the private oneDNN op."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def _onednn_calls(fn: Callable[[], object]) -> int:
    """How many times `fn()` ran the private oneDNN linear op (counted by torch.profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if "mkldnn::_linear_pointwise" in e.key)


@pytest.fixture
def onednn_calls() -> Callable[[Callable[[], object]], int]:
    return _onednn_calls
