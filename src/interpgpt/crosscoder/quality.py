"""Held-out quality of a crosscoder, per model: FVE, MSE and the CE of the spliced model.

Measured at inference (the learned threshold, not BatchTopK) on activations the
crosscoder never trained on, as `interpgpt.sae.quality` measures an SAE: per model m the
fraction of variance explained FVE^m = 1 − SSE^m / Σ‖x^m − mean(x^m)‖² and the MSE per
element (raw units); for the shared code, L0 and the latents that never fire. The CE
increase splices model m's reconstruction into model m at the crosscoder's hook: the
reconstruction needs both models' activations at the same tokens, so the other model is
run first on the same ids. As for the SAEs, "CE loss recovered" compares with
zero-ablating the activation, and the seed SAE card's gates (FVE ≥ MIN_FVE for both
models, dead latents < MAX_DEAD_FRACTION) are applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from interpgpt.crosscoder.model import BatchTopKCrosscoder
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.sae.activations import pad_batch
from interpgpt.sae.hyperparams import MAX_DEAD_FRACTION, MIN_FVE


@dataclass
class ModelQuality:
    """How well the crosscoder reconstructs one model."""

    name: str
    fve: float
    """1 − SSE / Σ‖x − mean(x)‖² over held-out tokens."""
    mse: float
    """Mean squared error per activation element (raw units)."""
    ce_clean: float
    """Next-token cross-entropy of the unmodified model on the held-out sequences."""
    ce_spliced: float
    """... with this model's reconstruction in place of its activation."""
    ce_increase: float
    ce_zero_ablated: float
    """... with the activation replaced by zeros."""
    ce_loss_recovered: float
    """(CE_zero − CE_spliced) / (CE_zero − CE_clean); nan when zero-ablation does not hurt."""


@dataclass
class CrosscoderQuality:
    """Held-out quality of one crosscoder and whether it passes the SAE card's gates."""

    n_eval_tokens: int
    l0: float
    """Mean active latents per token at inference (the threshold's k)."""
    dead_latents: int
    """Latents active on no held-out token."""
    dead_fraction: float
    threshold: float
    """θ on the scaled activation."""
    models: list[ModelQuality]
    passed: bool = True
    failures: list[str] = field(default_factory=list)


class ReconstructionMetrics(NamedTuple):
    fve: list[float]
    """Per model."""
    mse: list[float]
    """Per model, raw units."""
    l0: float
    dead_latents: int


@torch.no_grad()
def reconstruction_metrics(
    crosscoder: BatchTopKCrosscoder, acts: Float[Tensor, "n model d_model"]
) -> ReconstructionMetrics:
    """Per-model FVE and MSE (raw units), L0 and never-active latents over `acts`."""
    n_models = acts.shape[1]
    sse = torch.zeros(n_models, dtype=torch.float64)
    l0 = 0.0
    fired = torch.zeros(crosscoder.cfg.d_latent, dtype=torch.bool, device=acts.device)
    for chunk in acts.split(8192):
        f = crosscoder.encode(crosscoder.normalise(chunk))
        recon = crosscoder.denormalise(crosscoder.decode(f))
        sse += (recon - chunk).double().pow(2).sum((0, 2)).cpu()
        active = f > 0
        l0 += float(active.sum())
        fired |= active.any(0)
    centred = acts.double() - acts.double().mean(0)
    total = centred.pow(2).sum((0, 2)).cpu().clamp(min=1e-12)
    n = acts.shape[0]
    return ReconstructionMetrics(
        fve=(1 - sse / total).tolist(),
        mse=(sse / (n * acts.shape[2])).tolist(),
        l0=l0 / n,
        dead_latents=int((~fired).sum()),
    )


@torch.no_grad()
def splice_cross_entropy(
    crosscoder: BatchTopKCrosscoder,
    models: Sequence[TaskGPT],
    sequences: list[list[int]],
    pad_id: int,
    seq_batch: int = 64,
) -> list[dict[str, float]]:
    """Per model, mean next-token CE over non-pad targets: clean, with its own
    reconstruction spliced in at the crosscoder's hook, and zero-ablated there.
    (Sequences of similar length in one pass pad less: sort them first.)"""
    device = crosscoder.W_dec.device
    hook, layer = crosscoder.cfg.hook_name, crosscoder.cfg.layer
    stop = layer + 1 if layer + 1 < models[0].cfg.n_layer else None
    totals = [{"clean": 0.0, "spliced": 0.0, "zero": 0.0} for _ in models]
    n_targets = 0
    for start in range(0, len(sequences), seq_batch):
        ids, lengths = pad_batch(sequences[start : start + seq_batch], pad_id, device)
        acts = [m.run_with_cache(ids, names_filter=[hook], stop_at_layer=stop)[1][hook]
                for m in models]  # fmt: skip
        recon = crosscoder.reconstruct(torch.stack(acts, dim=-2).float())  # (batch, pos, model, d)
        mask = torch.arange(1, ids.shape[1], device=device)[None, :] < lengths[:, None]
        targets = ids[:, 1:][mask]
        for i, model in enumerate(models):
            splices: dict[str, list[tuple[str | Callable[..., Any], Callable[..., Any]]]] = {
                "clean": [],
                "spliced": [(hook, lambda act, hook, i=i, r=recon: r[..., i, :].to(act.dtype))],
                "zero": [(hook, lambda act, hook: torch.zeros_like(act))],
            }
            for name, fwd_hooks in splices.items():
                with model.hooks(fwd_hooks=fwd_hooks):
                    resid = model(ids, stop_at_layer=model.cfg.n_layer)
                # Unembed the real positions only: the vocabulary matmul is most of the cost.
                logits = model.unembed(resid[:, :-1][mask]).float()
                totals[i][name] += float(F.cross_entropy(logits, targets, reduction="sum"))
        n_targets += int(mask.sum())
    return [{k: v / max(n_targets, 1) for k, v in t.items()} for t in totals]


def evaluate_crosscoder(
    crosscoder: BatchTopKCrosscoder,
    models: Sequence[TaskGPT],
    acts: Float[Tensor, "n model d_model"],
    sequences: list[list[int]],
    pad_id: int,
    seq_batch: int = 64,
) -> CrosscoderQuality:
    """Held-out metrics of `crosscoder` on raw activations `acts` of both models and the CE
    splices on the `sequences` they came from."""
    fve, mse, l0, dead = reconstruction_metrics(crosscoder, acts)
    ce = splice_cross_entropy(crosscoder, models, sequences, pad_id, seq_batch)
    per_model = []
    for name, fve_m, mse_m, ce_m in zip(crosscoder.cfg.names, fve, mse, ce, strict=True):
        harm = ce_m["zero"] - ce_m["clean"]
        recovered = (ce_m["zero"] - ce_m["spliced"]) / harm if harm > 1e-3 else float("nan")
        per_model.append(
            ModelQuality(
                name=name,
                fve=fve_m,
                mse=mse_m,
                ce_clean=ce_m["clean"],
                ce_spliced=ce_m["spliced"],
                ce_increase=ce_m["spliced"] - ce_m["clean"],
                ce_zero_ablated=ce_m["zero"],
                ce_loss_recovered=recovered,
            )
        )
    d_latent = crosscoder.cfg.d_latent
    failures = [f"{q.name} FVE {q.fve:.3f} < {MIN_FVE}" for q in per_model if not q.fve >= MIN_FVE]
    if not dead / d_latent < MAX_DEAD_FRACTION:
        failures.append(f"dead latents {dead / d_latent:.1%} >= {MAX_DEAD_FRACTION:.0%}")
    return CrosscoderQuality(
        n_eval_tokens=acts.shape[0],
        l0=l0,
        dead_latents=dead,
        dead_fraction=dead / d_latent,
        threshold=float(crosscoder.threshold),
        models=per_model,
        passed=not failures,
        failures=failures,
    )
