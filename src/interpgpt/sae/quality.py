"""Held-out quality of a TopK SAE and the seed card's gates.

`evaluate_sae` measures an SAE on activations it never trained on: the fraction of
variance explained FVE = 1 - SSE / Σ‖x - mean(x)‖², per-element MSE, L0, dead latents
(never active on any held-out token), and the next-token cross-entropy when the
reconstruction replaces the activation (spliced in with a hook; loss over non-pad
targets as in training), with SAELens's "CE loss recovered" against zero-ablating the
activation. `gate_failures` compares the result with the card's gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from interpgpt.sae.activations import pad_batch
from interpgpt.sae.hyperparams import SAEHyperparams
from interpgpt.sae.topk import TopKSAE


@dataclass
class SAEQuality:
    """Held-out quality of one SAE and whether it passes the card's gates."""

    n_eval_tokens: int
    fve: float
    """1 - SSE / Σ‖x - mean(x)‖² over held-out tokens."""
    mse: float
    """Mean squared error per activation element."""
    l0: float
    """Mean number of active latents per token."""
    dead_features: int
    """Latents that fire on no held-out token."""
    dead_fraction: float
    ce_clean: float
    """Next-token cross-entropy of the unmodified model on the held-out sequences."""
    ce_spliced: float
    """... with the SAE reconstruction in place of the activation."""
    ce_increase: float
    ce_zero_ablated: float
    """... with the activation replaced by zeros."""
    ce_loss_recovered: float
    """(CE_zero - CE_spliced) / (CE_zero - CE_clean), as SAELens reports."""
    passed: bool
    failures: list[str] = field(default_factory=list)


class ReconstructionMetrics(NamedTuple):
    fve: float
    mse: float
    l0: float
    dead_features: int


@torch.no_grad()
def reconstruction_metrics(sae: TopKSAE, acts: Float[Tensor, "n d_in"]) -> ReconstructionMetrics:
    """FVE about the mean, per-element MSE, L0 and never-firing latents over `acts`."""
    sse, l0 = 0.0, 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=acts.device)
    for chunk in acts.split(8192):
        code = sae.encode_topk(chunk)
        sse += float((sae.decode_topk(code) - chunk).double().pow(2).sum())
        active = code.values > 0
        l0 += float(active.sum())
        fired[code.indices[active]] = True
    n = acts.shape[0]
    total_var = float((acts.double() - acts.double().mean(0)).pow(2).sum())
    return ReconstructionMetrics(
        fve=1.0 - sse / max(total_var, 1e-12),
        mse=sse / (n * sae.cfg.d_in),
        l0=l0 / n,
        dead_features=int((~fired).sum()),
    )


def evaluate_sae(
    sae: TopKSAE,
    model,
    acts: Tensor,
    sequences: list[list[int]],
    pad_id: int,
    config: SAEHyperparams,
    known: dict[str, float] | None = None,
) -> SAEQuality:
    """Held-out metrics of `sae` on activations `acts` (n_tokens, d_in) and the CE splice.

    `known`: the clean and zero-ablated CE already measured on these sequences (see
    `splice_cross_entropy`); it is filled in, so SAEs of one model share them."""
    rec = reconstruction_metrics(sae, acts)
    ce = splice_cross_entropy(model, sae, sequences, pad_id, config.seq_batch, known)
    # Recovered fraction is undefined when zero-ablation does not hurt (e.g. an untrained model).
    harm = ce["zero"] - ce["clean"]
    recovered = (ce["zero"] - ce["spliced"]) / harm if harm > 1e-3 else float("nan")
    quality = SAEQuality(
        n_eval_tokens=acts.shape[0],
        fve=rec.fve,
        mse=rec.mse,
        l0=rec.l0,
        dead_features=rec.dead_features,
        dead_fraction=rec.dead_features / sae.cfg.d_sae,
        ce_clean=ce["clean"],
        ce_spliced=ce["spliced"],
        ce_increase=ce["spliced"] - ce["clean"],
        ce_zero_ablated=ce["zero"],
        ce_loss_recovered=recovered,
        passed=True,
    )
    quality.failures = gate_failures(quality, config)
    quality.passed = not quality.failures
    return quality


def gate_failures(quality: SAEQuality, config: SAEHyperparams) -> list[str]:
    """Human-readable reasons an SAE misses the card's quality gates (empty: passes)."""
    failures = []
    if not quality.fve >= config.min_fve:  # `not >=` also catches NaN
        failures.append(f"FVE {quality.fve:.3f} < {config.min_fve}")
    if not quality.dead_fraction < config.max_dead_fraction:
        failures.append(
            f"dead latents {quality.dead_fraction:.1%} >= {config.max_dead_fraction:.0%}"
        )
    return failures


@torch.no_grad()
def splice_cross_entropy(
    model,
    sae: TopKSAE,
    sequences: list[list[int]],
    pad_id: int,
    seq_batch: int = 64,
    known: dict[str, float] | None = None,
) -> dict[str, float]:
    """Mean next-token CE over non-pad targets: clean, SAE-spliced and zero-ablated.

    The clean CE depends only on the model and the sequences, the zero-ablated one also on
    the hook, so a caller evaluating several SAEs of one model on the same sequences passes
    one `known` dict: "clean" and f"zero:{hook}" are read from it when present (no forward
    pass) and stored in it when measured. The values are those of a fresh call."""
    device = next(model.parameters()).device
    hook = sae.cfg.hook_name
    known = {} if known is None else known
    keys = {"clean": "clean", "spliced": None, "zero": f"zero:{hook}"}
    splices = {
        "clean": [],
        "spliced": [(hook, lambda act, hook: sae(act).to(act.dtype))],
        "zero": [(hook, lambda act, hook: torch.zeros_like(act))],
    }
    splices = {name: hooks for name, hooks in splices.items() if keys[name] not in known}
    totals = dict.fromkeys(splices, 0.0)
    n_targets = 0
    for start in range(0, len(sequences), seq_batch):
        ids, lengths = pad_batch(sequences[start : start + seq_batch], pad_id, device)
        targets = ids[:, 1:]
        mask = torch.arange(1, ids.shape[1], device=device)[None, :] < lengths[:, None]
        for name, fwd_hooks in splices.items():
            with model.hooks(fwd_hooks=fwd_hooks):
                logits = model(ids)[:, :-1].float()
            loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            totals[name] += float(loss[mask].sum())
        n_targets += int(mask.sum())
    measured = {name: total / max(n_targets, 1) for name, total in totals.items()}
    for name, value in measured.items():
        key = keys[name]
        if key is not None:
            known[key] = value
    return {
        name: measured[name] if key is None or name in measured else known[key]
        for name, key in keys.items()
    }
