"""Training throughput: our training step vs a TransformerLens HookedTransformer of the same shape.

Both train on the same random token batches with the same AdamW settings on the same
CPU/GPU. Ours is the real step of `interpgpt.train` (`LoopState.train_step` pieces:
`batch_loss` under bf16 autocast, clipping, AdamW); the peer is `HookedTransformer` in
its default fp32, and also under the same autocast when that runs. The ratio uses the
fp32 peer (TransformerLens's default way to train). Model-FLOPs utilisation (MFU) is
6 * parameters * tokens / s plus attention FLOPs, against the bf16 matmul peak measured
here with a large autocast matmul.
"""

from __future__ import annotations

import statistics
import time

import torch

from interpgpt.artifacts.convert import count_parameters, hooked_transformer_config
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.train.batches import IGNORE_INDEX, Batch
from interpgpt.train.config import TrainConfig
from interpgpt.train.recipe import make_optimizer
from interpgpt.train.step import batch_loss

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batch(cfg, batch: int, pos: int) -> Batch:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg.vocab_size, (batch, pos + 1), generator=gen)
    return Batch(ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), batch * pos).to(DEVICE)


def _seconds(step) -> float:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _timed(step, repeats: int) -> float:
    return _timed_interleaved([step], repeats)[0]


def _timed_interleaved(steps: list, repeats: int) -> list[float]:
    """Median seconds of each step after a warm-up, timed in alternation (A B A B ...) so
    that a slow spell of a shared machine falls on both sides rather than on one."""
    for step in steps:
        step()  # warm-up (allocations, kernel choice)
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, record in zip(steps, times, strict=True):
            record.append(_seconds(step))
    return [statistics.median(record) for record in times]


def ours_step(cfg, batch: Batch, autocast: bool = True):
    torch.manual_seed(0)
    model = TaskGPT(cfg).to(DEVICE).train()
    config = TrainConfig(lr=1e-4)
    optimizer = make_optimizer(model, config)

    def step():
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
            loss = batch_loss(model, model, batch, batch.n_tokens, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tl_step(cfg, batch: Batch, autocast: bool):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    tl_cfg = HookedTransformerConfig(**hooked_transformer_config(cfg), device=str(DEVICE))
    model = HookedTransformer(tl_cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    targets = batch.targets

    def step():
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch.input_ids)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bf16_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured bf16 matmul throughput of this device (FLOP/s) under autocast."""
    a = torch.randn(n, n, device=DEVICE)
    b = torch.randn(n, n, device=DEVICE)

    def matmul():
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            a @ b

    return 2 * n**3 / _timed(matmul, repeats)


def train_flops_per_token(cfg, pos: int) -> float:
    """6N per token (forward + backward) plus causal attention's q.k and p.v matmuls."""
    params = count_parameters(TaskGPT(cfg))
    attention = 6 * cfg.n_layer * cfg.n_head * cfg.d_head * pos  # 2 matmuls, x3, /2 causal
    return 6 * params + attention


def _mfu_notes(cfg, batch_size: int, pos: int, tokens_per_s: float, peak: float):
    mfu = tokens_per_s * train_flops_per_token(cfg, pos) / peak
    return mfu, f"batch {batch_size}x{pos}; MFU {mfu:.0%} of bf16 peak {peak / 1e9:.0f} GFLOP/s"


def small_row(peak: float, batch_size: int = 32, pos: int = 96, repeats: int = 9) -> dict:
    """Ours vs TransformerLens fp32 (and, in the notes, under the same autocast)."""
    cfg = preset("small")
    batch = _batch(cfg, batch_size, pos)
    tokens = batch_size * pos
    steps = [ours_step(cfg, batch), tl_step(cfg, batch, autocast=False)]
    ours, peer = (tokens / seconds for seconds in _timed_interleaved(steps, repeats))
    _, notes = _mfu_notes(cfg, batch_size, pos, ours, peak)
    notes += f"; ours and TL timed in alternation, median of {repeats}"
    try:
        peer_bf16 = tokens / _timed(tl_step(cfg, batch, autocast=True), repeats)
        notes += f"; TL under bf16 autocast {peer_bf16:,.0f} tok/s ({ours / peer_bf16:.2f}x)"
    except Exception as err:  # autocast support differs across TL versions
        notes += f"; TL under autocast failed ({type(err).__name__})"
    return {"name": "train tokens/s (small) vs TL fp32", "ours": ours, "peer": peer,
            "unit": "tokens/s", "ratio": ours / peer, "notes": notes}  # fmt: skip


def full_mfu_row(peak: float, batch_size: int = 8, pos: int = 128, repeats: int = 3) -> dict:
    """Model-FLOPs utilisation of the `full` preset against the 50% aim."""
    cfg = preset("full")
    ours = batch_size * pos / _timed(ours_step(cfg, _batch(cfg, batch_size, pos)), repeats)
    mfu, notes = _mfu_notes(cfg, batch_size, pos, ours, peak)
    notes += f"; {ours:,.0f} tok/s; peer = 50% target"
    return {"name": "train MFU (full)", "ours": mfu, "peer": 0.5, "unit": "fraction of peak",
            "ratio": mfu / 0.5, "notes": notes}  # fmt: skip


def run() -> list[dict]:
    torch.set_num_threads(torch.get_num_threads())
    peak = bf16_peak_flops()
    return [small_row(peak), full_mfu_row(peak)]


if __name__ == "__main__":
    for row in run():
        print(row)
