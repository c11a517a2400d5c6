"""BatchTopK crosscoder training: our crosscoder on two models vs our TopK SAE on one.

A crosscoder reads two activations per token (one per model) and decodes into both, so
each step has twice the encoder input and twice the decoder output of an SAE with the
same latent count; the peer is our own SAE trainer (`bench_sae.py` benches it against
SAELens), at equal d_latent = d_sae, k, batch size, learning rate, token budget, bf16
autocast and one torch thread. Both train on in-memory activations from `bench_sae`'s
residual-like source: the SAE on model a; the crosscoder on model a and a model b that
reads the same tokens with a fifth of the dimensions turned (`paired_activations`).
Timed: the training loop only (data generation excluded; each trainer's data-based
init and, for the crosscoder, its threshold estimate included), best of `REPEATS`
interleaved runs.

Reported: activations per second, counting both models' activations for the crosscoder
(two per token; ratio = ours / SAE, target >= 0.5), tokens per second, and held-out FVE
(the crosscoder's per model) so that the speed is not bought with quality.
"""

from __future__ import annotations

import time

import torch
from bench_sae import D_IN, LR, K, synthetic_activations

D_LATENT = 1024
BATCH, STEPS, EVAL_TOKENS = 1024, 300, 20_000
TRAIN_TOKENS = BATCH * STEPS
DEAD_STEPS = 32
REPEATS = 2
ROTATED_FRACTION = 0.1
SEED = 0


def paired_activations(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, model, d_in): model a is `bench_sae`'s source; model b reads the same tokens,
    with a random 2·(d_in/10)-dimensional subspace turned by 90 degrees (pairs of
    directions u, v -> v, -u), so part of every feature's direction differs."""
    a = synthetic_activations(n, gen)
    m = int(ROTATED_FRACTION * D_IN)
    fixed = torch.Generator().manual_seed(321)  # the same model b for every call
    basis = torch.linalg.qr(torch.randn(D_IN, 2 * m, generator=fixed)).Q  # (d_in, 2m)
    u, v = basis[:, :m], basis[:, m:]
    turn = v @ u.T - u @ v.T  # u -> v, v -> -u on the subspace, 0 elsewhere
    b = a - a @ (basis @ basis.T) + a @ turn.T
    return torch.stack([a, b], dim=1)


def fve(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float(1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def train_crosscoder(train: torch.Tensor):
    from interpgpt.crosscoder.config import CrosscoderHyperparams
    from interpgpt.crosscoder.model import ModelRecord
    from interpgpt.crosscoder.training import fit

    hyper = CrosscoderHyperparams(
        d_latent=D_LATENT, k=K, lr=LR, tokens=TRAIN_TOKENS, batch_size=BATCH,
        dead_tokens=DEAD_STEPS * BATCH, autocast=True,
    )  # fmt: skip
    records = (ModelRecord("a", "bench", "-"), ModelRecord("b", "bench", "-"))
    start = time.perf_counter()
    crosscoder, _ = fit(iter(train.split(BATCH)), records, 0, hyper)
    return time.perf_counter() - start, crosscoder


def train_sae(train: torch.Tensor):
    from interpgpt.sae.hyperparams import SAEHyperparams
    from interpgpt.sae.topk import TopKSAEConfig
    from interpgpt.sae.training import SAEFit

    hyper = SAEHyperparams(
        k=K, d_sae=D_LATENT, lr=LR, tokens=TRAIN_TOKENS, batch_size=BATCH,
        dead_tokens=DEAD_STEPS * BATCH, autocast=True,
    )  # fmt: skip
    start = time.perf_counter()
    fit = SAEFit(train[:BATCH], TopKSAEConfig(d_in=D_IN, d_sae=D_LATENT, k=K), hyper, STEPS, SEED)
    for step in range(STEPS):
        fit.step(train[step * BATCH : (step + 1) * BATCH])
    sae = fit.finish()
    return time.perf_counter() - start, sae


def run(threads: int = 1) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run()
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def _run() -> dict:
    gen = torch.Generator().manual_seed(SEED)
    train = paired_activations(TRAIN_TOKENS, gen)
    held_out = paired_activations(EVAL_TOKENS, torch.Generator().manual_seed(SEED + 1))
    ours_times, peer_times = [], []
    for _ in range(REPEATS):  # interleaved, so machine load hits both alike
        with torch.enable_grad():
            ours_s, crosscoder = train_crosscoder(train)
            peer_s, sae = train_sae(train[:, 0])
        ours_times.append(ours_s)
        peer_times.append(peer_s)
    ours_s, peer_s = min(ours_times), min(peer_times)
    recon = crosscoder.reconstruct(held_out)
    cc_fve = [fve(recon[:, m], held_out[:, m]) for m in (0, 1)]
    l0 = float((crosscoder.encode(crosscoder.normalise(held_out)) > 0).sum(-1).float().mean())
    sae_fve = fve(sae(held_out[:, 0]), held_out[:, 0])
    ours, peer = 2 * TRAIN_TOKENS / ours_s, TRAIN_TOKENS / peer_s
    return {
        "name": (
            f"BatchTopK crosscoder training vs our TopK SAE (d_model {D_IN}, {D_LATENT} "
            f"latents, k {K}, {TRAIN_TOKENS:,} tokens)"
        ),
        "ours": ours,
        "peer": peer,
        "unit": "activations/s",
        "ratio": ours / peer,
        "notes": (
            f"ours: crosscoder on 2 models, 2 activations per token ({TRAIN_TOKENS / ours_s:,.0f} "
            f"tokens/s); peer: our TopK SAE on model a; batch {BATCH} x {STEPS} steps, lr "
            f"{LR:g}, bf16 autocast, each trainer's AuxK defaults; held-out FVE crosscoder "
            f"{cc_fve[0]:.3f} / {cc_fve[1]:.3f} (a / b, inference L0 {l0:.1f}) vs SAE "
            f"{sae_fve:.3f}; {ours_s:.1f} s vs {peer_s:.1f} s, best of {REPEATS}; "
            f"{torch.get_num_threads()} thread(s)"
        ),
    }


if __name__ == "__main__":
    print(run())
