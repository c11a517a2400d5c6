"""Fitting the linear probes: every real position's residuals with their labels, a
task-level train/test split, and L2-penalised softmax regression.

The probes read the embedding and every block's `hook_resid_post` (`probe_sites`). The
split is by task, so no task contributes positions to both probe-train and probe-test
and a probe cannot succeed by memorising a task's tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.corpus.evalset import EncodedSet
from interpgpt.errors import UserError


@dataclass
class PositionTable:
    """Residual activations at every real position of an evaluation set, with labels."""

    acts: dict[str, Float[Tensor, "n d_model"]]
    """Per hook name, one row per real position."""
    task: Int[Tensor, " n"]
    """task_id of each position's sequence."""
    is_onset_predictor: Bool[Tensor, " n"]
    next_is_regulation: Bool[Tensor, " n"]
    step_index: Int[Tensor, " n"]
    """Index of the step this onset predictor starts (-1 elsewhere)."""


@dataclass
class LinearProbe:
    """Softmax regression on (x - mean) / scale."""

    weight: Float[Tensor, "n_classes d_model"]
    bias: Float[Tensor, " n_classes"]
    mean: Float[Tensor, " d_model"]
    scale: float

    def logits(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n n_classes"]:
        return ((x.float() - self.mean) / self.scale) @ self.weight.T + self.bias

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        return float((self.logits(x).argmax(-1) == y).float().mean())

    def subspace(self) -> Float[Tensor, "d_model rank"]:
        """Orthonormal basis of the class-centred weight rows: the only directions the
        probe's predictions depend on (softmax ignores a shift shared by all rows)."""
        centred = (self.weight - self.weight.mean(0, keepdim=True)).double()
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        rank = int((s > s.max() * 1e-6).sum()) if s.numel() and s.max() > 0 else 0
        return vh[: max(rank, 1)].T.float()


def probe_sites(n_layer: int) -> list[tuple[str, str]]:
    """(label, hook name) of every residual the probes read: the embedding, then each block."""
    return [("embed", "hook_embed")] + [
        (f"L{layer}", f"blocks.{layer}.hook_resid_post") for layer in range(n_layer)
    ]


@torch.no_grad()
def collect_positions(model, eset: EncodedSet, batch_size: int = 32) -> PositionTable:
    """Run the model once over `eset` and keep every real position's residuals."""
    sites = [name for _, name in probe_sites(model.cfg.n_layer)]
    device = next(model.parameters()).device
    acts: dict[str, list[Tensor]] = {name: [] for name in sites}
    for batch in eset.batches(batch_size):
        valid = batch.valid
        _, cache = model.run_with_cache(  # the logits are not needed
            batch.ids.to(device), names_filter=sites, stop_at_layer=model.cfg.n_layer
        )
        for name in sites:
            acts[name].append(cache[name][valid.to(device)].float().cpu())
    valid = eset.valid
    step_index = torch.full_like(eset.ids, -1)
    for row, roles in enumerate(eset.roles):
        for k, pos in enumerate(roles.onset_predictors):
            step_index[row, pos] = k
    task = torch.tensor([int(r["task_id"]) for r in eset.records])[:, None].expand_as(eset.ids)
    return PositionTable(
        acts={name: torch.cat(chunks) for name, chunks in acts.items()},
        task=task[valid],
        is_onset_predictor=eset.onset_predictor_mask()[valid],
        next_is_regulation=eset.regulation_next_mask()[valid],
        step_index=step_index[valid],
    )


def split_by_task(task: Tensor, train_fraction: float, seed: int) -> Bool[Tensor, " n"]:
    """True for positions of probe-train tasks; no task is on both sides."""
    tasks = task.unique()
    if len(tasks) < 2:
        raise UserError("the probes need at least two held-out tasks to split by task")
    order = tasks[torch.randperm(len(tasks), generator=torch.Generator().manual_seed(seed))]
    n_train = min(max(1, round(train_fraction * len(tasks))), len(tasks) - 1)
    return torch.isin(task, order[:n_train])


def fit_probe(
    x: Float[Tensor, "n d_model"],
    y: Int[Tensor, " n"],
    n_classes: int,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
) -> LinearProbe:
    """L2-penalised softmax regression by L-BFGS (a convex problem, so full batch)."""
    x = x.float()
    mean = x.mean(0)
    scale = float((x - mean).pow(2).sum(-1).mean().sqrt().clamp(min=1e-6))
    xs = (x - mean) / scale * math.sqrt(x.shape[1])  # unit variance per dim on average
    weight = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xs @ weight.T + bias, y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    # Fold the sqrt(d_model) factor into the weights so `logits` uses (x - mean) / scale.
    return LinearProbe(weight.detach() * math.sqrt(x.shape[1]), bias.detach(), mean, scale)
