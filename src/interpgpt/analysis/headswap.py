"""Attention profiles of every head of a matched pair, and the full head-swap inventory.

Profile (the seed notebook's `profile()`): teacher-force held-out sequences through a
model; for each head and each query position q in 1..T-1 of an example of length T,
the attention mass on the step-structure specials (`<|task|>`, `<|steps|>`, `<|sep|>`,
`<|end|>`) is added to bin `min(int(q / T * n_bins), n_bins - 1)` of a normalised
position axis; the profile is the per-bin mean over all queries of all examples. A
head that keeps broadcasting the step layout has a characteristic profile whatever
its index, so comparing profiles across the two models finds heads that moved.

Here the profiles are computed in batches with hooks on `blocks.{layer}.attn.hook_pattern`
only, each reduced at once to per-example bin sums (the sufficient statistics, which
also make the task bootstrap cheap); no cache of activations is kept.

Inventory:
- cosine of every standard head's profile against every ADHD head's profile, an
  (layer·head) × (layer·head) matrix (cosine 0 when a profile is all zero, as in the
  notebook);
- the one-to-one matching that maximises the summed cosine (the Hungarian algorithm,
  `scipy.optimize.linear_sum_assignment`), within each layer and over all heads;
- each head's best partner in the other model (argmax, not one-to-one).

Statistics, per layer:
- *matched* mean cosine (within-layer Hungarian matching) and *same-index* mean cosine
  (standard head h against ADHD head h); their gap is >= 0 by construction.
- Bootstrap over tasks (Efron's percentile bootstrap): resample held-out tasks with
  replacement, rebuild both models' profiles from the per-task sums, re-run the
  matching; the 2.5/97.5 percentiles give 95% CIs of the matched mean, the same-index
  mean and the gap, and the fraction of resamples in which each observed matched pair
  recurs is its *stability*. Re-optimising inside each resample keeps the matching's
  selection bias in the interval.
- Permutation null: uniformly random within-layer assignments (all of them when
  head! <= null_samples). `p_same_index` is the share of random assignments whose mean
  cosine is >= the same-index mean: small means heads kept their index. `p_matched` is
  the same share for the matched mean; since the matching maximises the mean it is the
  smallest attainable value unless many assignments tie with it, i.e. it says only
  that the matching is distinguishable from chance, not that heads moved — the gap and
  its CI say that.

A standard head "moved" when its within-layer partner has another index and the
matched cosine beats the same-index cosine by at least `move_margin`.
"""

from __future__ import annotations

import itertools
import math
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from interpgpt.analysis import plots
from interpgpt.analysis.data import Split, Variant, load_eval_set, load_pair, resolve_device
from interpgpt.io import UserError, provenance, write_json, write_text

HEADSWAP_JSON = "headswap.json"
MIGRATION_MAP = "migration_map.md"
SWAP_HEATMAP = "swap_heatmap.png"
PROFILE_PAIR = "profile_pair.png"
MODELS = ("standard", "adhd")


@dataclass
class HeadswapConfig:
    """Inputs and knobs of the head-swap inventory (`interpgpt headswap`)."""

    standard: Path
    """Run or export dir of the standard model."""
    adhd: Path
    """Run or export dir of the ADHD model."""
    corpus: Path
    """Corpus dir written by `interpgpt corpus`."""
    out: Path
    """Output dir for headswap.json, migration_map.md and the figures."""
    bins: int = 20
    """Bins of the normalised query-position axis."""
    sequences: Variant = "standard"
    """Which variant's held-out sequences are teacher-forced through both models."""
    split: Split = "test"
    """Corpus split to evaluate on."""
    limit: int | None = None
    """Use only the first N tasks of the split (None: all)."""
    null_samples: int = 1000
    """Random within-layer assignments in the permutation null (0: skip)."""
    bootstrap_samples: int = 1000
    """Task-bootstrap resamples for the confidence intervals (0: skip)."""
    move_margin: float = 0.1
    """A head moved when matched cosine - same-index cosine is at least this."""
    seed: int = 0
    """Seed of the null and bootstrap random draws."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Matmul precision; bfloat16 autocast is faster but profiles drift by ~1e-3."""

    def __post_init__(self) -> None:
        self.standard, self.adhd = Path(self.standard), Path(self.adhd)
        self.corpus, self.out = Path(self.corpus), Path(self.out)
        minimum = {
            "bins": 1,
            "limit": 1,
            "null_samples": 0,
            "bootstrap_samples": 0,
            "batch_size": 1,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is not None and value < low:
                option = "--" + name.replace("_", "-")
                raise UserError(f"{option}: must be at least {low} (got {value})")
        if self.sequences not in MODELS:
            raise UserError(f"--sequences {self.sequences!r}: choose standard or adhd")
        if self.split not in ("train", "val", "test"):
            raise UserError(f"--split {self.split!r}: choose train, val or test")
        if self.dtype not in ("float32", "bfloat16"):
            raise UserError(f"--dtype {self.dtype!r}: choose float32 or bfloat16")


# ---------------------------------------------------------------------------- profiles


@dataclass
class ProfileSums:
    """Per-example sufficient statistics of the attention profiles."""

    sums: Float[Tensor, "batch layer head bin"]
    """Attention mass to specials summed over each example's queries in each bin (float64)."""
    counts: Float[Tensor, "batch bin"]
    """Queries of each example in each bin (float64)."""

    def profiles(self, weights: Tensor | None = None) -> Float[Tensor, "layer head bin"]:
        """Per-bin mean mass over all queries; `weights` (batch,) reweights examples."""
        if weights is None:
            sums, counts = self.sums.sum(0), self.counts.sum(0)
        else:
            sums = torch.einsum("b,blhn->lhn", weights, self.sums)
            counts = weights @ self.counts
        return sums / counts.clamp(min=1)

    def profiles_batch(self, weights: Float[Tensor, "sample batch"]) -> Tensor:
        """Profiles under many example reweightings at once: (sample, layer, head, bin)."""
        sums = (weights @ self.sums.flatten(1)).view(len(weights), *self.sums.shape[1:])
        return sums / (weights @ self.counts).clamp(min=1)[:, None, None, :]


def query_bins(
    lengths: Int[Tensor, " batch"], width: int, n_bins: int
) -> Float[Tensor, "batch pos bin"]:
    """One-hot bin of every query position; all-zero rows for q = 0 and for padding."""
    q = torch.arange(width, dtype=torch.float64, device=lengths.device)[None, :]
    length = lengths.to(torch.float64)[:, None]
    # Same float64 arithmetic as the notebook's `int(q / T * NBINS)`.
    index = torch.floor(q / length * n_bins).long().clamp(max=n_bins - 1)
    valid = (q >= 1) & (q < length)
    onehot = torch.nn.functional.one_hot(index.clamp(min=0), n_bins).to(torch.float32)
    return onehot * valid[..., None]


@torch.no_grad()
def attention_profile_sums(
    model: torch.nn.Module,
    ids: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
    special: Bool[Tensor, "batch pos"],
    *,
    n_bins: int = 20,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
) -> ProfileSums:
    """Profile sums of every head of `model` (a TaskGPT or a HookedTransformer).

    Only `hook_pattern` is hooked, and each layer's pattern is reduced inside its hook,
    so memory is one layer's pattern of one batch. Sequences are batched in order of
    length (less padding: attention cost grows with the square of the batch width), and
    the forward pass is cut short after the last layer's pattern, since nothing
    downstream of it (its values, the MLP, the unembedding) is needed.
    """
    n_layer, n_head = _shape(model)
    device = next(model.parameters()).device
    sums = torch.zeros(len(ids), n_layer, n_head, n_bins, dtype=torch.float64)
    order = torch.argsort(lengths, stable=True)
    for start in range(0, len(ids), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows].max())
        onehot = query_bins(lengths[rows].to(device), width, n_bins)
        spec = special[rows, :width].to(device, torch.float32)
        out = torch.zeros(len(rows), n_layer, n_head, n_bins, device=device)
        hooks = [
            (
                f"blocks.{layer}.attn.hook_pattern",
                _reduce_hook(layer, spec, onehot, out, layer == n_layer - 1),
            )
            for layer in range(n_layer)
        ]
        with (
            model.hooks(fwd_hooks=hooks),
            torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32),
            suppress(_PatternsDone),
        ):
            model(ids[rows, :width].to(device))
        sums[rows] = out.double().cpu()
    counts = query_bins(lengths, ids.shape[1], n_bins).sum(1).double()
    return ProfileSums(sums, counts)


class _PatternsDone(Exception):
    """Raised by the last layer's pattern hook to end a forward pass early."""


def _reduce_hook(layer: int, special: Tensor, onehot: Tensor, out: Tensor, last: bool = False):
    def hook(pattern: Tensor, hook) -> None:
        mass = torch.einsum("bhqk,bk->bhq", pattern.float(), special)  # mass on specials
        out[:, layer] = torch.einsum("bhq,bqn->bhn", mass, onehot)
        if last:
            raise _PatternsDone

    return hook


def _shape(model) -> tuple[int, int]:
    cfg = model.cfg
    return (cfg.n_layer, cfg.n_head) if hasattr(cfg, "n_layer") else (cfg.n_layers, cfg.n_heads)


# ---------------------------------------------------------------------------- matching


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of every row of `a` (..., n, bin) with every row of `b` (..., m, bin); 0 when
    either row is all zero, like the notebook's `cosine`."""
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    a_unit = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    b_unit = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return a_unit @ np.swapaxes(b_unit, -1, -2)


def within_layer_matching(cos: np.ndarray) -> np.ndarray:
    """(layer, head, head) cosines -> (layer, head) ADHD partner of each standard head."""
    return np.stack([linear_sum_assignment(block, maximize=True)[1] for block in cos])


@dataclass
class HeadMatch:
    """A standard head and its ADHD partner."""

    std: tuple[int, int]
    """(layer, head) in the standard model."""
    adhd: tuple[int, int]
    """(layer, head) of its partner in the ADHD model."""
    cosine: float
    """Profile cosine of the pair."""
    same_index: float
    """Cosine of the standard head with the ADHD head at the same index."""
    partner_same_index: float
    """Cosine of the ADHD partner with the standard head at the partner's index."""
    stability: float | None = None
    """Share of task-bootstrap resamples that match the same pair (None: not computed)."""
    moved: bool = False
    """Partner index differs and cosine - same_index >= move_margin."""

    @property
    def label(self) -> str:
        return f"std L{self.std[0]}H{self.std[1]} → adhd L{self.adhd[0]}H{self.adhd[1]}"


def _head_match(cos4: np.ndarray, std: tuple[int, int], adhd: tuple[int, int], margin: float):
    cosine, same = float(cos4[std + adhd]), float(cos4[std + std])
    return HeadMatch(
        std=std,
        adhd=adhd,
        cosine=cosine,
        same_index=same,
        partner_same_index=float(cos4[adhd + adhd]),
        moved=std != adhd and cosine - same >= margin,
    )


def match_heads(cos4: np.ndarray, margin: float) -> tuple[list[HeadMatch], list[HeadMatch]]:
    """Within-layer and global one-to-one matchings from the (L, H, L, H) cosine array."""
    n_layer, n_head = cos4.shape[:2]
    per_layer = within_layer_matching(np.stack([cos4[i, :, i, :] for i in range(n_layer)]))
    within = [
        _head_match(cos4, (i, h), (i, int(per_layer[i, h])), margin)
        for i in range(n_layer)
        for h in range(n_head)
    ]
    cols = linear_sum_assignment(cos4.reshape(n_layer * n_head, -1), maximize=True)[1]
    global_ = [
        _head_match(cos4, divmod(row, n_head), divmod(int(col), n_head), margin)
        for row, col in enumerate(cols)
    ]
    return within, global_


def best_partners(cos4: np.ndarray) -> dict[str, list[dict]]:
    """Each head's most similar head in the other model (not one-to-one)."""
    n_layer, n_head = cos4.shape[:2]
    flat = cos4.reshape(n_layer * n_head, n_layer * n_head)
    out: dict[str, list[dict]] = {}
    for name, matrix in (("standard", flat), ("adhd", flat.T)):
        out[name] = [
            {"head": _hl(row, n_head), "partner": _hl(int(col), n_head), "cosine": matrix[row, col]}
            for row, col in enumerate(matrix.argmax(1))
        ]
    return out


def _hl(flat_index: int, n_head: int) -> str:
    layer, head = divmod(flat_index, n_head)
    return f"L{layer}H{head}"


# ---------------------------------------------------------------------------- statistics


@dataclass
class LayerStats:
    """Matched vs same-index profile cosine of one layer, with its uncertainty."""

    layer: int
    matched_mean: float
    """Mean cosine of the within-layer Hungarian pairs."""
    same_index_mean: float
    """Mean cosine of standard head h with ADHD head h."""
    gap: float
    """matched_mean - same_index_mean."""
    n_moved: int
    """Heads of this layer that moved (see module docstring)."""
    matched_ci: tuple[float, float] | None = None
    """95% task-bootstrap percentile interval of matched_mean."""
    same_index_ci: tuple[float, float] | None = None
    """95% task-bootstrap percentile interval of same_index_mean."""
    gap_ci: tuple[float, float] | None = None
    """95% task-bootstrap percentile interval of the gap."""
    null_mean: float | None = None
    """Mean cosine of a uniformly random within-layer assignment."""
    null_std: float | None = None
    """Its standard deviation over assignments."""
    p_matched: float | None = None
    """Share of random assignments with mean cosine >= matched_mean."""
    p_same_index: float | None = None
    """Share of random assignments with mean cosine >= same_index_mean."""


def permutation_null(block: np.ndarray, samples: int, rng: np.random.Generator):
    """Mean cosine of random one-to-one assignments of a (head, head) block; exhaustive
    when head! <= samples. Returns (means, exact)."""
    n_head = block.shape[0]
    if math.factorial(n_head) <= samples:
        perms = np.array(list(itertools.permutations(range(n_head))))
        exact = True
    else:
        perms = rng.permuted(np.tile(np.arange(n_head), (samples, 1)), axis=1)
        exact = False
    return block[np.arange(n_head), perms].mean(1), exact


def _p_at_least(null: np.ndarray, observed: float, exact: bool) -> float:
    """Upper-tail p-value; a sampled null counts the observation itself (Phipson & Smyth)."""
    hits = int((null >= observed - 1e-12).sum())
    return hits / len(null) if exact else (hits + 1) / (len(null) + 1)


@dataclass
class Bootstrap:
    """Task-bootstrap replicates of the per-layer statistics."""

    matched: np.ndarray  # (sample, layer)
    same_index: np.ndarray  # (sample, layer)
    stability: np.ndarray  # (layer, head): share of resamples reproducing each pair


def bootstrap_layers(
    sums: dict[str, ProfileSums], partners: np.ndarray, samples: int, rng: np.random.Generator
) -> Bootstrap:
    """Resample tasks with replacement and redo profiles, cosines and matching."""
    n = sums["standard"].sums.shape[0]
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(samples)])
    weights_t = torch.from_numpy(weights).double()
    std, adhd = (sums[m].profiles_batch(weights_t).numpy() for m in MODELS)  # (s, L, H, B)
    cos = cosine_matrix(std, adhd)  # (sample, layer, head, head): same-layer pairs only
    same = np.diagonal(cos, axis1=-2, axis2=-1).mean(-1)
    boot_partners = np.stack([within_layer_matching(c) for c in cos])  # (sample, layer, head)
    matched = np.take_along_axis(cos, boot_partners[..., None], -1)[..., 0].mean(-1)
    return Bootstrap(matched, same, (boot_partners == partners[None]).mean(0))


def _ci(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def layer_stats(
    cos4: np.ndarray, within: list[HeadMatch], boot: Bootstrap | None, config: HeadswapConfig
) -> list[LayerStats]:
    n_layer, n_head = cos4.shape[:2]
    rng = np.random.default_rng([config.seed, 1])
    stats = []
    for layer in range(n_layer):
        pairs = within[layer * n_head : (layer + 1) * n_head]
        matched = float(np.mean([p.cosine for p in pairs]))
        same = float(np.mean([p.same_index for p in pairs]))
        row = LayerStats(layer, matched, same, matched - same, sum(p.moved for p in pairs))
        if boot is not None:
            row.matched_ci = _ci(boot.matched[:, layer])
            row.same_index_ci = _ci(boot.same_index[:, layer])
            row.gap_ci = _ci(boot.matched[:, layer] - boot.same_index[:, layer])
        if config.null_samples:
            null, exact = permutation_null(cos4[layer, :, layer, :], config.null_samples, rng)
            row.null_mean, row.null_std = float(null.mean()), float(null.std())
            row.p_matched = _p_at_least(null, matched, exact)
            row.p_same_index = _p_at_least(null, same, exact)
        stats.append(row)
    return stats


@dataclass
class Inventory:
    """The head-swap inventory of a matched pair (no files)."""

    profiles: dict[str, np.ndarray]
    """Per model, (layer, head, bin) mean attention mass to specials."""
    cosine: np.ndarray
    """(layer, head, layer, head): standard head x ADHD head profile cosine."""
    within_layer: list[HeadMatch]
    """Hungarian matching inside each layer, one entry per standard head."""
    global_matching: list[HeadMatch]
    """Hungarian matching over all heads, one entry per standard head."""
    best_partners: dict[str, list[dict]]
    """Per model, each head's most similar head in the other model."""
    layers: list[LayerStats] = field(default_factory=list)
    """Per-layer matched vs same-index statistics."""

    @property
    def moved(self) -> list[HeadMatch]:
        return sorted((m for m in self.within_layer if m.moved), key=lambda m: m.same_index)


def build_inventory(sums: dict[str, ProfileSums], config: HeadswapConfig) -> Inventory:
    """Profiles -> cosines -> matchings -> statistics."""
    profiles = {m: sums[m].profiles().numpy() for m in MODELS}
    n_layer, n_head, n_bins = profiles["standard"].shape
    flat = {m: p.reshape(n_layer * n_head, n_bins) for m, p in profiles.items()}
    cos4 = cosine_matrix(flat["standard"], flat["adhd"]).reshape(n_layer, n_head, n_layer, n_head)
    within, global_ = match_heads(cos4, config.move_margin)
    boot = None
    if config.bootstrap_samples:
        partners = np.array([m.adhd[1] for m in within]).reshape(n_layer, n_head)
        rng = np.random.default_rng([config.seed, 0])
        boot = bootstrap_layers(sums, partners, config.bootstrap_samples, rng)
        for match in within:
            match.stability = float(boot.stability[match.std])
    stats = layer_stats(cos4, within, boot, config)
    return Inventory(profiles, cos4, within, global_, best_partners(cos4), stats)


# ---------------------------------------------------------------------------- entry point


@dataclass
class HeadswapResult:
    """What `run_headswap` computed and wrote."""

    inventory: Inventory
    """Profiles, cosines, matchings and per-layer statistics."""
    n_tasks: int
    """Held-out sequences the profiles average over."""
    files: dict[str, Path]
    """Artifact name -> path written."""


def run_headswap(config: HeadswapConfig) -> HeadswapResult:
    """Profile every head of both models on held-out tasks and write the inventory."""
    device = resolve_device(config.device)
    pair = load_pair(config.standard, config.adhd, device)
    data = load_eval_set(
        config.corpus,
        pair.tokenizer,
        config.sequences,
        config.split,
        config.limit,
        max_len=pair.standard.model.cfg.n_ctx,
    )
    special = data.special_mask()
    dtype = getattr(torch, config.dtype)
    sums = {
        name: attention_profile_sums(
            model,
            data.ids,
            data.lengths,
            special,
            n_bins=config.bins,
            batch_size=config.batch_size,
            dtype=dtype,
        )
        for name, model in pair.models.items()
    }
    inventory = build_inventory(sums, config)
    files = write_outputs(inventory, len(data), config, sums["standard"].counts.sum(0))
    return HeadswapResult(inventory, len(data), files)


def write_outputs(
    inv: Inventory, n_tasks: int, config: HeadswapConfig, bin_counts: Tensor
) -> dict[str, Path]:
    out = config.out
    files = {
        "headswap": write_json(
            out / HEADSWAP_JSON, _inventory_json(inv, n_tasks, config, bin_counts)
        ),
        "migration_map": write_text(out / MIGRATION_MAP, migration_map(inv, n_tasks, config)),
        "swap_heatmap": _plot_heatmap(inv, out / SWAP_HEATMAP),
        "profile_pair": _plot_profile_pair(inv, out / PROFILE_PAIR),
    }
    return files


def _inventory_json(inv: Inventory, n_tasks: int, config: HeadswapConfig, bin_counts: Tensor):
    n_layer, n_head = inv.cosine.shape[:2]
    return {
        "n_tasks": n_tasks,
        "sequences": config.sequences,
        "heads": [f"L{i}H{h}" for i in range(n_layer) for h in range(n_head)],
        "bin_query_counts": bin_counts,
        "profiles": inv.profiles,
        "cosine_matrix": inv.cosine.reshape(n_layer * n_head, n_layer * n_head),
        "cosine_matrix_axes": "rows: standard heads, columns: ADHD heads, order of `heads`",
        "matching": {
            "within_layer": [_match_json(m) for m in inv.within_layer],
            "global": [_match_json(m) for m in inv.global_matching],
        },
        "best_partners": inv.best_partners,
        "moved": [m.label for m in inv.moved],
        "layers": inv.layers,
        "provenance": provenance(config),
    }


def _match_json(match: HeadMatch) -> dict:
    blob = {"label": match.label}
    blob.update({k: v for k, v in match.__dict__.items()})
    return blob


def migration_map(inv: Inventory, n_tasks: int, config: HeadswapConfig) -> str:
    """Markdown list of the heads that moved, and the per-layer statistics."""
    lines = [
        "# Head migration map",
        "",
        f"Attention profiles on {n_tasks} held-out {config.sequences} sequences "
        f"({config.bins} position bins). A standard head *moved* when its within-layer "
        f"Hungarian partner has another index and the matched profile cosine beats the "
        f"same-index cosine by at least {config.move_margin}.",
        "",
        "## Moved heads (within-layer matching)",
        "",
    ]
    for m in inv.moved:
        stable = "" if m.stability is None else f"; stability {m.stability:.0%}"
        lines.append(
            f"- {m.label}: cos {m.cosine:.3f} vs same-index {m.same_index:.3f} "
            f"(std L{m.adhd[0]}H{m.adhd[1]} ~ adhd L{m.adhd[0]}H{m.adhd[1]}: "
            f"{m.partner_same_index:.3f}){stable}"
        )
    if not inv.moved:
        lines.append("- none")
    crossed = [m for m in inv.global_matching if m.std[0] != m.adhd[0] and m.moved]
    lines += ["", "## Global matching: pairs that cross layers", ""]
    lines += [f"- {m.label}: cos {m.cosine:.3f} vs same-index {m.same_index:.3f}" for m in crossed]
    lines += [] if crossed else ["- none"]
    lines += ["", "## Per layer", "", _layer_table(inv.layers), ""]
    return "\n".join(lines)


def _layer_table(layers: list[LayerStats]) -> str:
    def fmt_ci(ci):
        return "—" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"

    def fmt_p(p):
        return "—" if p is None else f"{p:.3g}"

    rows = [
        "| layer | matched | same-index | gap | gap 95% CI | p(matched) | p(same-index) | moved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in layers:
        rows.append(
            f"| {s.layer} | {s.matched_mean:.3f} | {s.same_index_mean:.3f} | {s.gap:.3f} | "
            f"{fmt_ci(s.gap_ci)} | {fmt_p(s.p_matched)} | {fmt_p(s.p_same_index)} | {s.n_moved} |"
        )
    return "\n".join(rows)


def strongest_pair(inv: Inventory) -> HeadMatch:
    """The moved pair with the largest cosine gain; else the largest gain of any pair."""
    pool = inv.moved or inv.within_layer
    return max(pool, key=lambda m: (m.cosine - m.same_index, m.cosine))


def _plot_heatmap(inv: Inventory, path: Path) -> Path:
    n_layer, n_head = inv.cosine.shape[:2]
    labels = [f"L{i}H{h}" for i in range(n_layer) for h in range(n_head)]
    panel = plots.HeatmapPanel(
        inv.cosine.reshape(n_layer * n_head, -1),
        title="profile cosine (outlined: within-layer matching)",
        xlabel="ADHD head",
        ylabel="standard head",
        xticklabels=labels,
        yticklabels=labels,
        outlined=[
            (m.std[0] * n_head + m.std[1], m.adhd[0] * n_head + m.adhd[1]) for m in inv.within_layer
        ],
    )
    return plots.save_heatmaps(path, [panel], cmap="viridis", colorbar_label="cosine")


def _plot_profile_pair(inv: Inventory, path: Path) -> Path:
    """The notebook's two panels: matched pair, and the same-index baseline."""
    m = strongest_pair(inv)
    x = np.linspace(0, 1, inv.profiles["standard"].shape[-1])

    def series(model: str, head: tuple[int, int]) -> plots.Series:
        label = f"{'standard' if model == 'standard' else 'ADHD'} L{head[0]}H{head[1]}"
        return plots.Series(x, inv.profiles[model][head], label)

    panels = [
        plots.LinePanel(
            [series("standard", m.std), series("adhd", other)],
            title=title,
            xlabel="normalized query position",
            ylabel="attention mass → step-structure specials",
        )
        for title, other in (
            (f"matched pair (cos = {m.cosine:.3f})", m.adhd),
            (f"same-index baseline (cos = {m.same_index:.3f})", m.std),
        )
    ]
    return plots.save_line_plot(path, panels)
