"""Exact activation patching: ours (`analysis.patching_suffix`: each patch computed only
from its layer and position on, with the corrupted run's keys/values as the causal
prefix, the last block only at the metric's position, many sites packed into one pass)
against `transformer_lens.patching` (one full forward per site).

Same `small`-shaped random-init model (ours and its `convert.to_hooked_transformer`
copy), same prompts, same final-position metric, and both given the clean run's cache;
the results are asserted equal before any timing is reported. `ratio` is peer seconds /
our seconds (higher: we are faster).

Timing is CPU seconds of this process (`time.process_time`) on one intra-op thread:
the study machine is shared, and wall-clock under other jobs' load swings by 2-5x
while CPU time does not. One thread also keeps the comparison conservative — our
large stacked batches would gain more from extra threads than TransformerLens's
per-site forwards.
"""

from __future__ import annotations

import time

import torch
from transformer_lens import patching as tl_patching

from interpgpt.analysis.patching.run import activation_patch
from interpgpt.artifacts.convert import to_hooked_transformer
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT

N_PROMPTS = 4
N_POS = 12
REPEATS = 3

PEERS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_head_out_by_pos": tl_patching.get_act_patch_attn_head_out_by_pos,
}


def _metric(logits: torch.Tensor) -> torch.Tensor:
    """A logit difference between two token classes at the final position."""
    final = logits[:, -1].float()
    return (final[:, :5].logsumexp(-1) - final[:, 5:50].logsumexp(-1)).mean()


def _best_of(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, value = float("inf"), None
    for _ in range(repeats):
        began = time.process_time()
        value = fn()
        best = min(best, time.process_time() - began)
    return best, value


def run() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run()
    finally:
        torch.set_num_threads(threads)


def _run() -> list[dict]:
    torch.manual_seed(0)
    model = TaskGPT(preset("small")).eval()
    peer_model = to_hooked_transformer(model).eval()
    vocab = model.cfg.vocab_size
    clean = torch.randint(0, vocab, (N_PROMPTS, N_POS))
    corrupted = torch.randint(0, vocab, (N_PROMPTS, N_POS))
    _, clean_cache = peer_model.run_with_cache(clean)
    _, our_cache = model.run_with_cache(clean)
    rows = []
    for site, peer_fn in PEERS.items():
        ours_s, ours = _best_of(
            lambda site=site: activation_patch(
                model, clean, corrupted, _metric, site, metric_positions=[-1], clean_cache=our_cache
            ),
            REPEATS,
        )
        full_s, full = _best_of(
            lambda site=site: activation_patch(
                model, clean, corrupted, _metric, site, clean_cache=our_cache
            ),
            1,
        )
        with torch.no_grad():  # best of the same number of runs as ours
            peer_s, peer = _best_of(
                lambda fn=peer_fn: fn(peer_model, corrupted, clean_cache, _metric), REPEATS
            )
        torch.testing.assert_close(ours, peer.cpu(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(full, peer.cpu(), atol=1e-4, rtol=1e-4)
        rows.append({
            "name": f"activation patching {site} ({len(peer.flatten())} sites)",
            "ours": round(ours_s, 3),
            "peer": round(peer_s, 3),
            "unit": "CPU s",
            "ratio": round(peer_s / ours_s, 1),
            "notes": (
                f"small preset, {N_PROMPTS} prompts x {N_POS} tokens, final-position metric, "
                f"max |ours - TL| = {float((ours - peer.cpu()).abs().max()):.1e}; "
                f"ours with full logits (no metric_positions): {full_s:.2f} s "
                f"({peer_s / full_s:.1f}x); 1 thread"
            ),
        })  # fmt: skip
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
