"""The IOI baseline: is the behaviour there, and does it follow the role rather than the name?

Following the sandbox's notebook 00: the mean logit difference logit(IO) − logit(S)
at END over an evaluation set, its share of positive prompts, the ABBA/BABA split,
and the *role swaps* — every name pair scored with IO and S exchanged. A model that
tracks the indirect-object role has a positive mean in both assignments of every
pair; one that prefers a particular name does not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.ioi.prompts import IOIBatch, IOIPrompt, encode_prompts, logit_diff


@dataclass
class RoleSwap:
    """Mean logit difference of one ordered (IO, S) assignment of a name pair."""

    io: str
    s: str
    logit_diff: float
    n: int


@dataclass
class Baseline:
    mean_logit_diff: float
    std_logit_diff: float
    frac_positive: float
    """Share of prompts with logit(IO) > logit(S)."""
    frac_top_io: float
    """Share of prompts whose arg-max next token is the IO name."""
    by_order: dict[str, float]
    """Mean logit difference of the ABBA and BABA prompts."""
    by_template: dict[int, float]
    swaps: list[RoleSwap]
    """One entry per ordered (IO, S) pair present in the set."""
    n_prompts: int

    @property
    def all_swaps_positive(self) -> bool:
        return all(r.logit_diff > 0 for r in self.swaps)


def encode_for(subject, prompts: Sequence[IOIPrompt], answers_from=None) -> IOIBatch:
    return encode_prompts(
        prompts, subject.encode, bos=subject.bos, pad=subject.pad, answers_from=answers_from
    ).to(subject.device)


@torch.no_grad()
def run_logits(subject, batch: IOIBatch, batch_size: int = 256) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits at END for every prompt, in chunks."""
    out = []
    for start in range(0, len(batch), batch_size):
        part = batch.subset(range(start, min(start + batch_size, len(batch))))
        logits = subject.model(part.tokens)
        rows = torch.arange(len(part), device=logits.device)
        out.append(logits[rows, part.end_pos].float())
    return torch.cat(out)


def end_logit_diff(subject, batch: IOIBatch) -> Float[Tensor, " batch"]:
    end = run_logits(subject, batch)
    rows = torch.arange(len(batch), device=end.device)
    return end[rows, batch.io_token] - end[rows, batch.s_token]


def baseline(subject, prompts: Sequence[IOIPrompt]) -> Baseline:
    """Score `prompts` on `subject` (see module docstring)."""
    batch = encode_for(subject, prompts)
    end = run_logits(subject, batch)
    rows = torch.arange(len(batch), device=end.device)
    diff = (end[rows, batch.io_token] - end[rows, batch.s_token]).cpu()
    top_io = (end.argmax(-1) == batch.io_token).float().mean()
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    orders: dict[str, list[float]] = defaultdict(list)
    templates: dict[int, list[float]] = defaultdict(list)
    for p, d in zip(prompts, diff.tolist(), strict=True):
        groups[(p.io, p.s)].append(d)
        orders[p.order].append(d)
        templates[p.template].append(d)
    return Baseline(
        mean_logit_diff=float(diff.mean()),
        std_logit_diff=float(diff.std()) if len(diff) > 1 else 0.0,
        frac_positive=float((diff > 0).float().mean()),
        frac_top_io=float(top_io),
        by_order={k: _mean(v) for k, v in sorted(orders.items())},
        by_template={k: _mean(v) for k, v in sorted(templates.items())},
        swaps=[RoleSwap(io, s, _mean(v), len(v)) for (io, s), v in sorted(groups.items())],
        n_prompts=len(prompts),
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


__all__ = ["Baseline", "RoleSwap", "baseline", "encode_for", "end_logit_diff", "logit_diff"]
