"""The optimizer step every TaskGPT is trained with: the matched pair (`train.loop`) and the
IOI sandbox's model (`ioi.train`) both take their steps here.

What is shared is the optimisation (see `interpgpt.train`'s docstring): AdamW with weight
decay on matrices only, or Muon on the blocks' matrices with AdamW on the rest
(`muon_adamw`); linear warmup then cosine or warmup-stable-decay (a pure function of the step),
the loss as the mean over the global batch's loss-carrying targets, gradient-norm
clipping, optional bf16 autocast, and a stop before the update when the loss is not
finite. What differs between trainings is where batches come from, a `BatchSource`:
the matched pair samples its encoded corpus by (seed, step) (`batches.SampledBatches`),
the IOI model draws from a stream of its synthetic language.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.distributed as torch_dist

from interpgpt.device import bf16_native
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.train.batches import IGNORE_INDEX, Batch
from interpgpt.train.distributed import DistInfo
from interpgpt.train.unembed_loss import unembed_cross_entropy


class BatchSource(Protocol):
    """Where the training batches of a run come from."""

    def batch(self, step: int, dist: DistInfo) -> tuple[Batch, int]:
        """This rank's rows of global batch `step`, and the loss-carrying targets of the
        whole global batch (the loss is their mean)."""
        ...


class NonFiniteLoss(Exception):
    """The loss of a step was NaN or infinite; raised before the update is applied."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training loss became NaN/inf at step {step}")
        self.step = step


def warmup_cosine(step: int, *, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps to `peak`, then cosine decay to `min_ratio * peak`
    at step `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return peak * (min_ratio + (1.0 - min_ratio) * cosine)


def warmup_stable_decay(
    step: int, *, peak: float, warmup: int, total: int, min_ratio: float, cooldown: int
) -> float:
    """Linear warmup over `warmup` steps to `peak`, constant, then a linear decay over the
    last `cooldown` steps to `min_ratio * peak` at step `total` (WSD: Hu et al. 2024,
    MiniCPM; the schedule of the modded-nanogpt speedruns)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    start = total - cooldown
    if step < start:
        return peak
    progress = min(1.0, (step - start + 1) / max(1, cooldown))
    return peak * (1.0 - (1.0 - min_ratio) * progress)


def adamw(
    model: torch.nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (embedding, projections), none on norm gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def newton_schulz(
    update: torch.Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The quintic Newton-Schulz iteration that (approximately) orthogonalises a matrix,
    run in `dtype`: `torch.optim.Muon`'s, which always runs it in bf16."""
    a, b, c = coefficients
    x = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def muon_lr(lr: float, shape: torch.Size) -> float:
    """Moonshot's scaling (`adjust_lr_fn="match_rms_adamw"`, Liu et al. 2025): the
    orthogonalised update gets AdamW's RMS, so Muon shares AdamW's lr and weight decay."""
    return lr * 0.2 * math.sqrt(max(shape[0], shape[1]))


class Muon(torch.optim.Muon):
    """`torch.optim.Muon` (Jordan et al. 2024) with `match_rms_adamw` scaling and its
    Newton-Schulz iteration in `ns_dtype`. torch runs the iteration in bf16, which is
    emulated on a CPU without native bf16: there, for the small preset's 24 matrices, it
    took 1.1 s a step against 0.04 s in fp32. With `ns_dtype` bf16 the update is
    torch's, bit for bit (tested); the state dict is torch's."""

    def __init__(self, params: Iterable[torch.Tensor], *, ns_dtype: torch.dtype, **kwargs) -> None:
        super().__init__(params, adjust_lr_fn="match_rms_adamw", **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        assert closure is None, "Muon takes no closure"
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(param.grad, 1 - momentum)
                update = param.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"], self.ns_dtype
                )
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-muon_lr(lr, param.shape))


class MuonAdamW(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024, `Muon` above) on the transformer blocks' matrices,
    AdamW on everything else: the tied embedding (an input lookup and the unembedding,
    which Muon's orthogonalised update does not suit) and the norm gains.

    Muon's `match_rms_adamw` scaling (`muon_lr`) gives its update AdamW's RMS, so both
    halves share one learning rate and weight decay and
    the schedule sets them together through `param_groups` (Muon's groups first). The
    state dict numbers parameters in that order, as one optimizer would, so checkpoints
    store it like AdamW's.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        lr: float,
        weight_decay: float,
        betas: tuple[float, float],
        block_prefix: str = "blocks.",
    ) -> None:
        matrices = [
            p for n, p in model.named_parameters() if n.startswith(block_prefix) and p.dim() == 2
        ]
        chosen = {id(p) for p in matrices}
        rest = [p for p in model.parameters() if id(p) not in chosen]
        native = bool(matrices) and bf16_native(matrices[0].device)
        self.muon = Muon(
            matrices,
            lr=lr,
            weight_decay=weight_decay,
            ns_dtype=torch.bfloat16 if native else torch.float32,
        )
        decay = [p for p in rest if p.dim() >= 2]
        no_decay = [p for p in rest if p.dim() < 2]
        self.adamw = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=lr,
            betas=betas,
        )
        # Not Optimizer.__init__: the state lives in the two optimizers.
        self.defaults = {"lr": lr}
        self._n_muon = len(matrices)

    @property
    def param_groups(self) -> list[dict]:  # type: ignore[override]
        """Both optimizers' group dicts (setting a group's lr here sets it there); read
        anew each time, since `load_state_dict` replaces them."""
        return [*self.muon.param_groups, *self.adamw.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        assert closure is None, "MuonAdamW takes no closure"
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        muon, adam = self.muon.state_dict(), self.adamw.state_dict()
        shift = self._n_muon
        state = {**muon["state"], **{k + shift: v for k, v in adam["state"].items()}}
        groups = [
            *muon["param_groups"],
            *({**g, "params": [i + shift for i in g["params"]]} for g in adam["param_groups"]),
        ]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        shift, n_groups = self._n_muon, len(self.muon.param_groups)
        groups = state_dict["param_groups"]
        state = state_dict["state"]
        self.muon.load_state_dict(
            {
                "state": {k: v for k, v in state.items() if k < shift},
                "param_groups": groups[:n_groups],
            }
        )
        self.adamw.load_state_dict(
            {
                "state": {k - shift: v for k, v in state.items() if k >= shift},
                "param_groups": [
                    {**g, "params": [i - shift for i in g["params"]]} for g in groups[n_groups:]
                ],
            }
        )


def batch_loss(
    forward: torch.nn.Module, model: TaskGPT, batch: Batch, total_targets: int, world: int
) -> torch.Tensor:
    """This rank's share of the global-batch mean loss (see `interpgpt.train`'s docstring).

    `forward` is the model or its DDP wrapper. Logits are computed only at positions whose
    target carries loss (right padding is often a third of a batch), a chunk of rows at a
    time and never all at once (`unembed_loss`): the vocabulary projection and softmax
    dominate a small model's step.
    """
    resid = forward(batch.input_ids, stop_at_layer=model.cfg.n_layer)
    keep = batch.targets != IGNORE_INDEX
    normed = model.ln_final(resid[keep])  # (target, d_model)
    loss_sum = unembed_cross_entropy(normed, model.embed.weight, batch.targets[keep])
    return loss_sum * (world / total_targets)


@dataclass
class Stepper:
    """A model, its optimizer and schedule: takes optimizer steps and evaluates the loss."""

    model: TaskGPT
    optimizer: torch.optim.Optimizer
    dist: DistInfo
    schedule: Callable[[int], float]
    """Learning rate of step k (0-based)."""
    grad_clip: float
    """Clip the global gradient norm to this (0 disables)."""
    autocast: bool
    """bf16 autocast of the forward pass and the loss."""
    ddp: torch.nn.Module = field(init=False)
    """The model, DDP-wrapped when there is more than one rank."""

    def __post_init__(self) -> None:
        self.ddp = self.model
        if self.dist.world > 1:
            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def precision(self) -> torch.autocast:
        device = self.dist.device
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def step(self, step: int, source: BatchSource) -> tuple[float, int]:
        """One optimizer step on global batch `step`; returns its mean loss and its number
        of loss-carrying targets. Raises NonFiniteLoss, leaving the weights untouched."""
        dist = self.dist
        batch, total = source.batch(step, dist)
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(step)
        self.ddp.train()
        with self.precision():
            loss = batch_loss(self.ddp, self.model, batch.to(dist.device), total, dist.world)
        value = loss.detach() / dist.world
        if dist.world > 1:
            torch_dist.all_reduce(value)
        if not math.isfinite(float(value)):
            raise NonFiniteLoss(step)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(value), total

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> float:
        """Token-weighted mean loss over `batches`, on this process alone."""
        self.model.eval()
        loss_sum, targets = 0.0, 0
        for batch in batches:
            with self.precision():
                batch = batch.to(self.dist.device)
                loss_sum += float(batch_loss(self.model, self.model, batch, 1, 1))
            targets += batch.n_tokens
        return loss_sum / targets
