"""TopK SAE training: our trainer vs SAELens's own (`TopKTrainingSAE` + `SAETrainer`).

Both train on the same in-memory activations (a synthetic residual-like source: sparse
non-negative sums of a planted anisotropic dictionary plus a shared offset and noise),
in the same order, with equal d_in, d_sae, k, batch size and token budget, both with
bf16 autocast. SAELens is driven through its public trainer: `SAETrainer.fit()` with a
data provider that iterates over the tensor. Timed: the training loop only (data
generation and imports excluded). Reported: activations/s (ratio = ours / SAELens)
and both held-out FVEs (1 - SSE / Σ‖x - mean‖²), which must agree within ±0.01 for the
speed comparison to count.
"""

from __future__ import annotations

import itertools
import time

import torch

D_IN, D_SAE, K = 128, 1024, 32
BATCH, TRAIN_TOKENS, EVAL_TOKENS = 4096, 4096 * 100, 20_000
LR = 4e-3
SEED = 0


def synthetic_activations(n: int, gen: torch.Generator) -> torch.Tensor:
    """Residual-like data: sums of 16 of 1024 planted atoms, some rarer than others."""
    n_atoms, active = 1024, 16
    atoms = torch.randn(n_atoms, D_IN, generator=torch.Generator().manual_seed(123))
    atoms *= torch.linspace(0.3, 3.0, D_IN)  # anisotropic, like a residual stream
    atoms /= atoms.norm(dim=-1, keepdim=True)
    popularity = torch.distributions.Pareto(1.0, 3.0).sample((n_atoms,))  # some atoms rare
    out = torch.empty(n, D_IN)
    for start in range(0, n, 8192):
        m = min(8192, n - start)
        idx = torch.multinomial(popularity / popularity.sum(), m * active, replacement=True,
                                generator=gen).view(m, active)  # fmt: skip
        coef = torch.rand(m, active, generator=gen).pow(2) * 2
        noise = 0.05 * torch.randn(m, D_IN, generator=gen)
        out[start : start + m] = torch.einsum("mk,mkd->md", coef, atoms[idx]) + 1.5 + noise
    return out


def fve(forward, x: torch.Tensor) -> float:
    with torch.no_grad():
        recon = torch.cat([forward(chunk).float() for chunk in x.split(4096)])
    return float(1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def train_ours(train: torch.Tensor) -> tuple[float, object]:
    from interpgpt.sae.topk import TopKSAEConfig
    from interpgpt.sae.training import SAEFit, SAEHyperparams

    steps = TRAIN_TOKENS // BATCH
    hyper = SAEHyperparams(k=K, d_sae=D_SAE, lr=LR, tokens=TRAIN_TOKENS, batch_size=BATCH)
    start = time.perf_counter()
    fit = SAEFit(train[:BATCH], TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K), hyper, steps, SEED)
    for step in range(steps):
        fit.step(train[step * BATCH : (step + 1) * BATCH])
    sae = fit.finish()
    return time.perf_counter() - start, sae


def train_saelens(train: torch.Tensor) -> tuple[float, object]:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(SEED)
    # SAELens's own input scaling (folded into the weights after training), like ours.
    sae_cfg = TopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, normalize_activations="expected_average_only_in"
    )
    sae = TopKTrainingSAE(sae_cfg)
    cfg = SAETrainerConfig(
        total_training_samples=TRAIN_TOKENS, train_batch_size_samples=BATCH, lr=LR, lr_end=LR,
        device="cpu", autocast=True, dead_feature_window=8, feature_sampling_window=10**6,
        n_batches_for_norm_estimate=1,
    )  # fmt: skip
    # The norm estimate draws one batch first; cycling keeps the training order the same.
    batches = itertools.cycle([train[i : i + BATCH] for i in range(0, TRAIN_TOKENS, BATCH)])
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches)
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start, sae


def run() -> dict:
    gen = torch.Generator().manual_seed(SEED)
    train = synthetic_activations(TRAIN_TOKENS, gen)
    held_out = synthetic_activations(EVAL_TOKENS, gen)
    ours_s, ours = train_ours(train)
    peer_s, peer = train_saelens(train)
    ours_fve, peer_fve = fve(ours, held_out), fve(peer, held_out)
    return {
        "name": f"TopK SAE training (d_in {D_IN}, d_sae {D_SAE}, k {K}, {TRAIN_TOKENS:,} acts)",
        "ours": TRAIN_TOKENS / ours_s,
        "peer": TRAIN_TOKENS / peer_s,
        "unit": "activations/s",
        "ratio": peer_s / ours_s,
        "notes": (
            f"peer: sae_lens SAETrainer + TopKTrainingSAE, bf16 autocast both; "
            f"held-out FVE ours {ours_fve:.3f} vs SAELens {peer_fve:.3f} "
            f"(|diff| {abs(ours_fve - peer_fve):.3f}); {ours_s:.1f} s vs {peer_s:.1f} s; "
            f"{torch.get_num_threads()} threads"
        ),
    }


if __name__ == "__main__":
    print(run())
