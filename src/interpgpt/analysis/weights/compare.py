"""Two TaskGPTs of one shape compared in weight space: how far each moved from an init, which
head of one is which head of the other, and whether the straight line between them stays
in one loss basin. Pure functions on models; the pair's files are `weights.run`'s.

Change from init. ‖W − W0‖_F / ‖W0‖_F for each head (its W_Q, W_K, W_V rows and W_O
columns, each alone and the four together), each MLP matrix (gate, up, down), each norm
gain, the tied embedding and the whole model: where training moved the shared init.

Weight matching (Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin", §3.2): the
permutation of model B's units that best aligns them with model A's, found by the
Hungarian algorithm (`scipy.optimize.linear_sum_assignment`). The units here are the
attention heads of a layer. Moving a whole head — its Q, K, V rows and O columns together
— leaves the function unchanged: RoPE rotates the dims inside a head with tables shared by
every head, so a head's rotary pairs travel with it, and the output sums over heads. Git
Re-Basin maximises Σ ⟨W_A, P W_B⟩; the score here is the *mean over the four matrices of
the cosine* of the two heads' slices instead, because the residual writers (W_O) are
initialised 1/√(2·n_layer) smaller than the readers and a raw inner product would let the
largest matrices decide; cosines weigh Q, K, V and O alike and read the same in every
layer. Not searched: MLP hidden units (a symmetry too) and the within-head symmetries
(V/O under any invertible d_head map, Q/K under rotations that commute with RoPE). From a
shared init nothing sets them adrift, and the question asked is whether heads swapped.

Linear mode connectivity (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery
Ticket Hypothesis"): the held-out loss of θ(α) = (1 − α)·θ_A + α·θ_B along α ∈ [0, 1], every
parameter interpolated (norm gains and the tied embedding too). Its barrier, as Entezari
et al. 2022 and Git Re-Basin define it, is max_α L(θ(α)) − [(1 − α)·L(θ_A) + α·L(θ_B)]:
0 when the loss is convex along the line, large when the two models sit in different
basins. Computed before and after permuting B's heads by the matching. The loss is the
training objective (`train.step.batch_loss`: every next-token target of a real token),
token-weighted over all sequences given.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from interpgpt.analysis.lm import (
    LanguageModel,
    TextSet,
    as_lm,
    check_pair,
    check_permutations,
)
from interpgpt.corpus.evalset import EncodedSet
from interpgpt.errors import UserError
from interpgpt.model.taskgpt import Block, TaskGPT
from interpgpt.train.batches import Batch, next_token_batch
from interpgpt.train.step import batch_loss

HEAD_MATRICES = ("W_Q", "W_K", "W_V", "W_O")
MLP_MATRICES = ("W_gate", "W_up", "W_down")


# ---------------------------------------------------------------------------- weights


def blocks(model: TaskGPT) -> list[Block]:
    """The model's blocks, typed (an nn.ModuleList yields plain Modules)."""
    return [cast(Block, block) for block in model.blocks]


def head_weights(model: Any) -> Float[Tensor, "layer matrix head d_head d_model"]:
    """Every head's W_Q, W_K, W_V rows and W_O columns (transposed), in `HEAD_MATRICES`
    order: the slices that move together when heads are permuted (any `analysis.lm` model)."""
    return as_lm(model).head_weights()


def mlp_weights(model: TaskGPT) -> dict[str, Float[Tensor, "layer row col"]]:
    """Each layer's SwiGLU matrices by `MLP_MATRICES` name, as nn.Linear stores them."""
    gate, up = zip(*(b.mlp.gate_up_proj.weight.chunk(2) for b in blocks(model)), strict=True)
    down = [b.mlp.down_proj.weight for b in blocks(model)]
    return {
        name: torch.stack(list(ws)).detach().float()
        for name, ws in zip(MLP_MATRICES, (gate, up, down), strict=True)
    }


def check_same_shape(model_a: Any, model_b: Any) -> None:
    """Weight-space comparisons pair parameters by name: two TaskGPTs need one config, any
    other two models one shape and the same parameter names and shapes."""
    if isinstance(model_a, TaskGPT) and isinstance(model_b, TaskGPT):
        if model_a.cfg != model_b.cfg:
            raise UserError(
                f"the models differ in shape ({model_a.cfg} vs {model_b.cfg}); weight-space "
                "comparison needs two models of one config"
            )
        return
    a, b = as_lm(model_a), as_lm(model_b)
    check_pair(a, b)
    params_a, params_b = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    if params_a.keys() != params_b.keys() or any(
        params_a[k].shape != params_b[k].shape for k in params_a
    ):
        raise UserError(f"{a.label} and {b.label}: the parameters differ in names or shapes")


# ---------------------------------------------------------------------------- change from init


@dataclass
class WeightDeltas:
    """‖W − W0‖_F / ‖W0‖_F of each part of a model against its init."""

    heads: Float[np.ndarray, "layer head"]
    """Each head's four matrices together."""
    head_matrices: dict[str, Float[np.ndarray, "layer head"]]
    """Each head's W_Q, W_K, W_V and W_O alone."""
    mlp: Float[np.ndarray, " layer"]
    """Each MLP's three matrices together."""
    mlp_matrices: dict[str, Float[np.ndarray, " layer"]]
    """Each MLP's W_gate, W_up and W_down alone."""
    norms: dict[str, Float[np.ndarray, " layer"]]
    """The gains of ln1 (before attention) and ln2 (before the MLP) of each block."""
    ln_final: float
    """The final norm's gain."""
    embed: float
    """The tied embedding / unembedding."""
    total: float
    """Every parameter together."""

    @property
    def mean_head(self) -> float:
        return float(self.heads.mean())


def _relative(w: Tensor, w0: Tensor, dims: tuple[int, ...]) -> np.ndarray:
    norm = torch.linalg.vector_norm
    return (norm(w - w0, dim=dims) / norm(w0, dim=dims)).double().numpy()


def weight_deltas(model: TaskGPT, init: TaskGPT) -> WeightDeltas:
    """Relative change of every part of `model` from `init` (a model of the same config)."""
    check_same_shape(model, init)
    heads, heads0 = head_weights(model).cpu(), head_weights(init).cpu()
    mlps = {n: w.cpu() for n, w in mlp_weights(model).items()}
    mlps0 = {n: w.cpu() for n, w in mlp_weights(init).items()}
    params, params0 = _cpu_parameters(model), _cpu_parameters(init)
    n_layer = model.cfg.n_layer

    def gains(state: dict[str, Tensor], ln: str) -> Tensor:
        return torch.stack([state[f"blocks.{i}.{ln}.weight"] for i in range(n_layer)])

    def joint(delta: list[Tensor], base: list[Tensor]) -> Tensor:
        """‖ΔW‖/‖W0‖ of several matrices together, from their squared norms."""
        return (torch.stack(delta).sum(0) / torch.stack(base).sum(0)).sqrt()

    per_matrix = _relative(heads, heads0, (-2, -1))  # (layer, matrix, head)
    mlp = joint(
        [(mlps[n] - mlps0[n]).pow(2).sum((1, 2)) for n in MLP_MATRICES],
        [mlps0[n].pow(2).sum((1, 2)) for n in MLP_MATRICES],
    )
    total = joint(
        [(params[n] - params0[n]).pow(2).sum() for n in params],
        [p.pow(2).sum() for p in params0.values()],
    )
    return WeightDeltas(
        heads=_relative(heads.transpose(1, 2), heads0.transpose(1, 2), (2, 3, 4)),
        head_matrices={name: per_matrix[:, m] for m, name in enumerate(HEAD_MATRICES)},
        mlp=mlp.double().numpy(),
        mlp_matrices={n: _relative(mlps[n], mlps0[n], (1, 2)) for n in MLP_MATRICES},
        norms={ln: _relative(gains(params, ln), gains(params0, ln), (1,)) for ln in ("ln1", "ln2")},
        ln_final=float(_relative(params["ln_final.weight"], params0["ln_final.weight"], (0,))),
        embed=float(_relative(params["embed.weight"], params0["embed.weight"], (0, 1))),
        total=float(total),
    )


def _cpu_parameters(model: TaskGPT) -> dict[str, Tensor]:
    """Every parameter by name, fp32 on the CPU (the tied embedding once)."""
    return {name: p.detach().float().cpu() for name, p in model.named_parameters()}


# ---------------------------------------------------------------------------- head matching


@dataclass
class LayerDistances:
    """How far model b's weights are from model a's, per block: ‖θ_b − θ_a‖ / ‖θ_a‖ over the
    block's parameters; any two modules of one shape with TransformerLens names
    (`blocks.{layer}.…`), TaskGPT or HookedTransformer. From a shared init (b fine-tuned
    from a) it is the change from init."""

    layers: list[float]
    """Per block."""
    other: float
    """Every parameter outside the blocks (embeddings, final norm, unembedding)."""
    total: float
    """Every parameter."""


@torch.no_grad()
def layer_distances(model_a: torch.nn.Module, model_b: torch.nn.Module) -> LayerDistances:
    """Relative weight distance of `model_b` from `model_a`, per block and overall."""
    params_a, params_b = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    if params_a.keys() != params_b.keys() or any(
        params_a[k].shape != params_b[k].shape for k in params_a
    ):
        raise UserError("the models' parameters differ in names or shapes")
    diff: dict[str, float] = {}
    base: dict[str, float] = {}
    for name, wa in params_a.items():
        parts = name.split(".")
        group = parts[1] if parts[0] == "blocks" else "other"
        a, b = wa.detach().double().cpu(), params_b[name].detach().double().cpu()
        diff[group] = diff.get(group, 0.0) + float((b - a).square().sum())
        base[group] = base.get(group, 0.0) + float(a.square().sum())

    def relative(groups: Collection[str]) -> float:
        den = sum(base.get(g, 0.0) for g in groups)
        return (sum(diff.get(g, 0.0) for g in groups) / den) ** 0.5 if den else 0.0

    n_blocks = len([g for g in base if g != "other"])
    return LayerDistances(
        layers=[relative([str(i)]) for i in range(n_blocks)],
        other=relative(["other"]),
        total=relative(list(base)),
    )


@dataclass
class HeadMatching:
    """Within each layer, the one-to-one assignment of model B's heads to model A's."""

    perms: list[list[int]]
    """perms[layer][i]: the head of B matched to head i of A; `permute_heads(B, perms)`
    puts each of B's heads at its partner's index."""
    similarity: Float[np.ndarray, "layer head head"]
    """Mean over W_Q, W_K, W_V, W_O of the cosine of A's head i with B's head j."""

    @property
    def off_diagonal(self) -> int:
        """Heads of A whose partner sits at another index."""
        return sum(j != i for perm in self.perms for i, j in enumerate(perm))

    @property
    def moved(self) -> list[tuple[int, int, int]]:
        """(layer, head of A, head of B) of every off-diagonal pair."""
        return [
            (layer, i, j) for layer, p in enumerate(self.perms) for i, j in enumerate(p) if i != j
        ]

    @property
    def matched_mean(self) -> list[float]:
        """Per layer, the mean similarity of the matched pairs."""
        return [
            float(s[np.arange(len(p)), p].mean())
            for s, p in zip(self.similarity, self.perms, strict=True)
        ]

    @property
    def same_index_mean(self) -> list[float]:
        """Per layer, the mean similarity of head i with head i."""
        return [float(np.diagonal(s).mean()) for s in self.similarity]


def head_similarity(model_a: TaskGPT, model_b: TaskGPT) -> Float[Tensor, "layer head head"]:
    """Mean over the four head matrices of the cosine between A's head i and B's head j."""
    check_same_shape(model_a, model_b)
    a = F.normalize(head_weights(model_a).flatten(-2), dim=-1)  # (layer, matrix, head, d)
    b = F.normalize(head_weights(model_b).flatten(-2).to(a.device), dim=-1)
    return torch.einsum("lmid,lmjd->lij", a, b) / len(HEAD_MATRICES)


def match_heads(model_a: TaskGPT, model_b: TaskGPT) -> HeadMatching:
    """Git Re-Basin weight matching of B's heads to A's within each layer (Hungarian
    algorithm on `head_similarity`)."""
    sim = head_similarity(model_a, model_b).double().cpu().numpy()
    perms = [linear_sum_assignment(block, maximize=True)[1].tolist() for block in sim]
    return HeadMatching(perms, sim)


def permute_heads(model: Any, perms: Sequence[Sequence[int]]) -> Any:
    """A copy whose head i of layer l is `model`'s head perms[l][i]: the same function, since
    each head's Q, K, V rows and O columns (and with them its rotary dims) move together. A
    TaskGPT or HookedTransformer comes back bare, an `analysis.lm` adapter as one."""
    permuted = as_lm(model).permute_heads(perms)
    return permuted if isinstance(model, LanguageModel) else permuted.model


@dataclass
class HeadAgreement:
    """One head of A whose partner is off its index in either of two matchings."""

    layer: int
    head: int
    weights: int
    """Its partner in the weight matching."""
    other: int
    """Its partner in the other matching."""
    other_moved: bool = False
    """The other matching calls this head moved (e.g. the head-swap inventory's margin)."""

    @property
    def agree(self) -> bool:
        return self.weights == self.other

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass
class MatchingAgreement:
    """How the weight matching compares with another within-layer matching of the same heads."""

    share: float
    """Share of A's heads given the same partner by both."""
    heads: list[HeadAgreement]
    """Every head off the diagonal in either matching."""

    @property
    def moved_agreeing(self) -> list[str]:
        """Heads the other matching calls moved and the weight matching pairs the same way."""
        return [h.label for h in self.heads if h.other_moved and h.agree]


def matching_agreement(
    matching: HeadMatching,
    partners: Sequence[Sequence[int]],
    moved: Collection[tuple[int, int]] = (),
) -> MatchingAgreement:
    """Compare `matching` with `partners[layer][head]` (the head of B another method pairs
    with A's head); `moved` marks the (layer, head) pairs the other method calls moved."""
    n_layer, n_head = matching.similarity.shape[:2]
    check_permutations(partners, n_layer, n_head)
    same, heads = 0, []
    for layer, (mine, theirs) in enumerate(zip(matching.perms, partners, strict=True)):
        for head, (w, o) in enumerate(zip(mine, theirs, strict=True)):
            same += w == o
            if w != head or o != head:
                heads.append(HeadAgreement(layer, head, w, o, (layer, head) in moved))
    return MatchingAgreement(same / (n_layer * n_head), heads)


# ---------------------------------------------------------------------------- mode connectivity


class LossSum(NamedTuple):
    """A summed loss and the targets it sums over."""

    total: float
    tokens: int

    @property
    def mean(self) -> float:
        return self.total / self.tokens if self.tokens else float("nan")


def heldout_batches(data: EncodedSet, pad_id: int, batch_size: int = 32) -> list[Batch]:
    """An evaluation set as next-token batches (every target of a real token carries loss)."""
    return [next_token_batch(part.ids, pad_id) for part in data.batches(batch_size)]


@torch.no_grad()
def heldout_loss(model: TaskGPT, batches: Sequence[Batch]) -> LossSum:
    """The training objective summed over `batches` (fp32, no grad)."""
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for batch in batches:
        total += float(batch_loss(model, model, batch.to(device), 1, 1))
        tokens += batch.n_tokens
    return LossSum(total, tokens)


@torch.no_grad()
def text_loss(model: Any, texts: TextSet, batch_size: int = 16) -> LossSum:
    """The next-token cross-entropy of any `analysis.lm` model summed over every target of a
    real token of `texts` (the training objective, without the corpus's loss masks)."""
    lm = as_lm(model)
    lm.model.eval()
    total, tokens = 0.0, 0
    for batch in texts.batches(batch_size):
        ids = batch.ids.to(lm.device)
        logits = lm.model(ids)[:, :-1].float()
        target = batch.valid[:, 1:].to(lm.device)
        ce = F.cross_entropy(logits[target], ids[:, 1:][target], reduction="sum")
        total += float(ce)
        tokens += int(target.sum())
    return LossSum(total, tokens)


def interpolate(model_a: TaskGPT, model_b: TaskGPT, alpha: float) -> TaskGPT:
    """θ(α) = (1 − α)·θ_A + α·θ_B, every parameter (exactly θ_A where θ_A = θ_B)."""
    check_same_shape(model_a, model_b)
    mixed = copy.deepcopy(model_a)
    _set_interpolated(mixed, model_a, model_b, alpha)
    return mixed


@torch.no_grad()
def _set_interpolated(out: TaskGPT, model_a: TaskGPT, model_b: TaskGPT, alpha: float) -> None:
    pairs = zip(model_a.parameters(), model_b.parameters(), strict=True)
    for param, (a, b) in zip(out.parameters(), pairs, strict=True):
        param.copy_(torch.lerp(a, b.to(a.device), alpha))


def loss_barrier(alphas: Sequence[float], losses: Sequence[float]) -> float:
    """max over α of L(α) − [(1 − α)·L(0) + α·L(1)]; the ends of `alphas` must be 0 and 1."""
    ends = losses[0], losses[-1]
    return max(
        loss - ((1 - a) * ends[0] + a * ends[1]) for a, loss in zip(alphas, losses, strict=True)
    )


@dataclass
class LossLine:
    """Held-out loss along the straight line from model A (α = 0) to model B (α = 1)."""

    alphas: list[float]
    loss: list[float]
    """Token-weighted over every set."""
    by_set: dict[str, list[float]] = field(default_factory=dict)
    """Per evaluation set (e.g. each variant's held-out sequences)."""

    @property
    def barrier(self) -> float:
        return loss_barrier(self.alphas, self.loss)

    @property
    def barriers_by_set(self) -> dict[str, float]:
        return {name: loss_barrier(self.alphas, line) for name, line in self.by_set.items()}


def interpolation_losses(
    model_a: Any,
    model_b: Any,
    eval_sets: Mapping[str, Any],
    alphas: Sequence[float],
    loss: Callable[[Any, Any], LossSum] = heldout_loss,
) -> LossLine:
    """Held-out loss of θ(α) at each α (sorted, from 0 to 1), on `model_a`'s device; `loss`
    sums it over one evaluation set (TaskGPT batches by default; `text_loss` for a
    `TextSet` on any model)."""
    check_same_shape(model_a, model_b)
    if len(alphas) < 2 or alphas[0] != 0 or alphas[-1] != 1 or list(alphas) != sorted(alphas):
        raise UserError(f"alphas must rise from 0 to 1, got {list(alphas)}")
    mixed = copy.deepcopy(model_a)
    sums: dict[str, list[LossSum]] = {name: [] for name in eval_sets}
    for alpha in alphas:
        _set_interpolated(mixed, model_a, model_b, float(alpha))
        for name, batches in eval_sets.items():
            sums[name].append(loss(mixed, batches))
    pooled = [
        LossSum(sum(s[k].total for s in sums.values()), sum(s[k].tokens for s in sums.values()))
        for k in range(len(alphas))
    ]
    return LossLine(
        alphas=[float(a) for a in alphas],
        loss=[s.mean for s in pooled],
        by_set={name: [s.mean for s in line] for name, line in sums.items()},
    )


# ---------------------------------------------------------------------------- all of it


@dataclass
class WeightComparison:
    """Two models compared in weight space (`compare_weights`)."""

    names: tuple[str, str]
    """Labels of model A and model B (the headline's keys use them)."""
    matching: HeadMatching
    """B's heads matched to A's."""
    head_distance: dict[str, float]
    """‖heads_A − heads_B‖ / ‖heads_A‖ over all attention weights, "before" and "after"
    permuting B's heads by the matching."""
    deltas: dict[str, WeightDeltas] | None = None
    """Per model name, the change from the shared init (None: no init given)."""
    interpolation: dict[str, LossLine] | None = None
    """"before" and "after" alignment (None: no evaluation sets given)."""

    @property
    def headline(self) -> dict[str, float | int | None]:
        """The few numbers a report quotes; None where the input was not given."""
        deltas, lines = self.deltas or {}, self.interpolation or {}
        numbers: dict[str, float | int | None] = {}
        for name in self.names:
            numbers[f"relative_change_{name}"] = deltas[name].total if deltas else None
            numbers[f"mean_head_change_{name}"] = deltas[name].mean_head if deltas else None
        numbers["off_diagonal_heads"] = self.matching.off_diagonal
        numbers["head_distance_before"] = self.head_distance["before"]
        numbers["head_distance_after"] = self.head_distance["after"]
        numbers["barrier_before"] = lines["before"].barrier if lines else None
        numbers["barrier_after"] = lines["after"].barrier if lines else None
        return numbers


def head_distance(model_a: TaskGPT, model_b: TaskGPT) -> float:
    """‖heads_A − heads_B‖_F / ‖heads_A‖_F over every attention weight."""
    a = head_weights(model_a)
    b = head_weights(model_b).to(a.device)
    return float((a - b).norm() / a.norm())


def compare_weights(
    model_a: TaskGPT,
    model_b: TaskGPT,
    *,
    init: TaskGPT | None = None,
    eval_sets: Mapping[str, Any] | None = None,
    alphas: Sequence[float] = tuple(np.linspace(0, 1, 11)),
    names: tuple[str, str] = ("a", "b"),
    loss: Callable[[Any, Any], LossSum] = heldout_loss,
) -> WeightComparison:
    """Change from `init` of each model, the head matching of B to A, and the loss along the
    line between them before and after aligning B's heads."""
    matching = match_heads(model_a, model_b)
    aligned = permute_heads(model_b, matching.perms)
    result = WeightComparison(
        names=names,
        matching=matching,
        head_distance={
            "before": head_distance(model_a, model_b),
            "after": head_distance(model_a, aligned),
        },
    )
    if init is not None:
        result.deltas = {
            names[0]: weight_deltas(model_a, init),
            names[1]: weight_deltas(model_b, init),
        }
    if eval_sets is not None:
        result.interpolation = {
            "before": interpolation_losses(model_a, model_b, eval_sets, alphas, loss),
            "after": interpolation_losses(model_a, aligned, eval_sets, alphas, loss),
        }
    return result
