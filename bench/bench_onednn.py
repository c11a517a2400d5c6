"""What the private oneDNN op buys: the unhooked fast paths with `INTERPGPT_ONEDNN` on vs off.

`interpgpt.model.fast.onednn` runs the fast paths' fp32 linears on oneDNN through the
private `torch.ops.mkldnn._linear_pointwise` (with SwiGLU and residual post-ops fused
into the GEMMs) when its switch is on, and on plain `F.linear` (MKL's sgemm on CPU)
when it is off. Everything else is the same code, so the ratio of the two times is what
the private op is worth on this machine; it depends on the CPU (MKL picks its kernels
by vendor as well as ISA, oneDNN by ISA alone), which is why it is measured, not assumed.

Rows (both in one process, switch flipped between runs; ours = on, peer = off):

1. the head-swap inventory (`bench_headswap.time_ours`: special-mass profiles of two
   random-init `small` models over held-out tasks of a generated corpus, length-sorted
   batches of 16, then cosines and matching), the path that pushes the most tokens
   through the block linears;
2. exact activation patching, attn_head_out_by_pos (576 sites) with a final-position
   metric on the `small` preset (as in `bench_patching`).

CPU seconds of this process (`time.process_time`) on one torch thread, best of
`REPEATS` runs taken in alternation (on, off, on, off, ...) after one cold run each
(oneDNN builds a kernel per new shape on first use: the cold runs are in the notes).
The results of the two settings are compared (max |on - off|) before timing is reported.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from interpgpt.analysis.patching.run import activation_patch
from interpgpt.model.config import preset
from interpgpt.model.fast import onednn
from interpgpt.model.taskgpt import TaskGPT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_headswap import build_inputs, time_ours

N_TASKS = 400
BATCH_SIZE = 16
REPEATS = 3


def _alternating(fn, repeats: int) -> dict[bool, dict]:
    """Per switch setting: cold CPU seconds, best warm CPU seconds, last result."""
    out: dict[bool, dict] = {on: {"best": float("inf")} for on in (True, False)}
    for turn in range(repeats + 1):
        for on in (True, False):
            with onednn.switched(on):
                began = time.process_time()
                value = fn()
                seconds = time.process_time() - began
            if turn == 0:
                out[on]["cold"] = seconds
            else:
                out[on]["best"] = min(out[on]["best"], seconds)
            out[on]["value"] = value
    return out


def _row(name: str, unit: str, timed: dict[bool, dict], diff: float, notes: str) -> dict:
    on, off = timed[True], timed[False]
    return {
        "name": name,
        "ours": round(on["best"], 3),
        "peer": round(off["best"], 3),
        "unit": unit,
        "ratio": round(off["best"] / on["best"], 2),
        "notes": (
            f"ours = {onednn.SWITCH}=1 (oneDNN), peer = {onednn.SWITCH}=0 (F.linear); "
            f"ratio = off / on CPU seconds (above 1: oneDNN is faster here); "
            f"best of {REPEATS} alternating runs after a cold one "
            f"(cold on {on['cold']:.3f} s, off {off['cold']:.3f} s); "
            f"max /on - off/ = {diff:.1e}; {notes}"
        ),
    }


def headswap_row() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        models, data = build_inputs(Path(tmp), N_TASKS)
    timed = _alternating(lambda: time_ours(models, data, BATCH_SIZE)[1], REPEATS)
    on, off = timed[True]["value"], timed[False]["value"]
    diff = max(float((on[name].sums - off[name].sums).abs().max()) for name in on)
    return _row(
        "head-swap inventory, oneDNN on vs off (small preset, 2 x 48 heads)",
        f"CPU s for {len(data):,} held-out tasks",
        timed,
        diff,
        f"batch {BATCH_SIZE}, fp32, 1 torch thread",
    )


def patching_row() -> dict:
    torch.manual_seed(0)
    model = TaskGPT(preset("small")).eval()
    vocab = model.cfg.vocab_size
    clean = torch.randint(0, vocab, (4, 12))
    corrupted = torch.randint(0, vocab, (4, 12))
    _, cache = model.run_with_cache(clean)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        final = logits[:, -1].float()
        return (final[:, :5].logsumexp(-1) - final[:, 5:50].logsumexp(-1)).mean()

    def patch() -> torch.Tensor:
        return activation_patch(
            model,
            clean,
            corrupted,
            metric,
            "attn_head_out_by_pos",
            metric_positions=[-1],
            clean_cache=cache,
        )

    timed = _alternating(patch, REPEATS)
    diff = float((timed[True]["value"] - timed[False]["value"]).abs().nan_to_num().max())
    return _row(
        "activation patching attn_head_out_by_pos, oneDNN on vs off (576 sites)",
        "CPU s",
        timed,
        diff,
        "small preset, 4 prompts x 12 tokens, final-position metric, 1 torch thread",
    )


def run() -> list[dict]:
    threads = torch.get_num_threads()
    grad = torch.is_grad_enabled()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    try:
        return [headswap_row(), patching_row()]
    finally:
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
