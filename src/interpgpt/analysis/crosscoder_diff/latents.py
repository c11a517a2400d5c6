"""The diff of two models through their crosscoder, and what a dashboard shows of it.

`DiffSettings` says how the diff reads, thresholds and shows latents; `diff_models` runs
both models on held-out sequences up to the crosscoder's hook and classes every latent
(`interpgpt.crosscoder.diff`); `shown_latents`, `latent_rows` and `latent_cards` give
the JSON rows and the dashboard cards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.analysis import dashboard
from interpgpt.analysis.crosscoder_diff.config import DiffSettings
from interpgpt.corpus.evalset import EncodedSet
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.crosscoder.diff import (
    DiffCounts,
    LatentClasses,
    LatentTable,
    classify,
    latent_table,
)
from interpgpt.crosscoder.model import BatchTopKCrosscoder
from interpgpt.model.taskgpt import TaskGPT

KINDS = {"shared": "shared", "std_only": "standard-only", "adhd_only": "ADHD-only", "dead": "dead"}
"""Class -> the label a dashboard card shows."""


# ---------------------------------------------------------------------------- measuring


@dataclass
class SequenceActs:
    """Both models' activations on one variant's held-out sequences, real tokens only."""

    eset: EncodedSet
    x: Float[Tensor, "n model d_model"]
    """Normalised activations, in (row, position) order."""
    rows: Int[Tensor, " n"]
    pos: Int[Tensor, " n"]
    onset: Bool[Tensor, " n"]
    """Onset predictors."""


@torch.no_grad()
def sequence_activations(
    crosscoder: BatchTopKCrosscoder, models: Sequence[TaskGPT], eset: EncodedSet, batch_size: int
) -> SequenceActs:
    """Run both models on `eset` up to the crosscoder's hook; keep the real tokens."""
    hook, layer = crosscoder.cfg.hook_name, crosscoder.cfg.layer
    stop = layer + 1 if layer + 1 < models[0].cfg.n_layer else None
    device = crosscoder.W_dec.device
    xs, rows, pos, onset = [], [], [], []
    offset = 0
    for batch in eset.batches(batch_size):
        ids = batch.ids.to(device)
        acts = torch.stack(
            [m.run_with_cache(ids, names_filter=[hook], stop_at_layer=stop)[1][hook]
             for m in models], dim=-2,
        )  # fmt: skip
        valid = batch.valid
        xs.append(crosscoder.normalise(acts[valid.to(device)].float()))
        r, p = valid.nonzero(as_tuple=True)
        rows.append(r + offset)
        pos.append(p)
        onset.append(batch.onset_predictor_mask()[valid])
        offset += len(batch)
    return SequenceActs(eset, torch.cat(xs), torch.cat(rows), torch.cat(pos), torch.cat(onset))


@dataclass
class PairDiff:
    """The diff of two models through their crosscoder."""

    table: LatentTable
    classes: LatentClasses
    counts: DiffCounts
    data: dict[str, SequenceActs]
    """Sequence variant -> the activations it was measured on."""


def diff_models(
    crosscoder: BatchTopKCrosscoder,
    models: Sequence[TaskGPT],
    sets: Mapping[str, EncodedSet],
    settings: DiffSettings,
) -> PairDiff:
    """The diff of any two models through their crosscoder, without files: latent
    table, classes and headline counts (the study's pair and its twin null)."""
    data = {v: sequence_activations(crosscoder, models, s, settings.eval_batch)
            for v, s in sets.items()}  # fmt: skip
    table = latent_table(
        crosscoder, {v: a.x for v, a in data.items()}, {v: a.onset for v, a in data.items()}
    )
    classes = classify(table, settings.thresholds())
    return PairDiff(table, classes, classes.counts(), data)


# ---------------------------------------------------------------------------- cards


def shown_latents(diff: PairDiff, top_n: int) -> list[int]:
    """Per side, the `top_n` live latents leaning most to that model: confirmed exclusive
    first, then by relative norm (lowest for standard, highest for ADHD)."""
    rel, live = diff.table.rel_norm, diff.table.live
    confirmed = diff.classes.confirmed
    candidates = [j for j in range(len(rel)) if live[j]]
    std_side = sorted(candidates, key=lambda j: (not confirmed[j], float(rel[j]), j))
    adhd_side = sorted(candidates, key=lambda j: (not confirmed[j], -float(rel[j]), j))
    shown = std_side[:top_n] + [j for j in adhd_side[:top_n] if j not in std_side[:top_n]]
    return shown


@torch.no_grad()
def latent_activations(
    crosscoder: BatchTopKCrosscoder, acts: SequenceActs, latents: list[int], chunk: int = 4096
) -> Float[Tensor, "batch pos n_latents"]:
    """The activations of `latents` at every position of the sequences (0 at padding)."""
    grid = torch.zeros(*acts.eset.ids.shape, len(latents))
    if latents:
        f = torch.cat([crosscoder.encode(x)[:, latents].cpu() for x in acts.x.split(chunk)])
        grid[acts.rows, acts.pos] = f
    return grid


def latent_rows(diff: PairDiff) -> list[dict[str, Any]]:
    """Every latent's numbers as crosscoder_diff.json lists them."""
    t, s = diff.table, diff.table.scaling
    nu = {target: s.nu(target).tolist() for target in s.beta}
    beta = {target: b.T.tolist() for target, b in s.beta.items()}  # (d_latent, model)
    return [
        {
            "latent": j,
            "class": diff.classes.labels[j],
            "confirmed": bool(diff.classes.confirmed[j]),
            "norm_std": float(t.norms[j, 0]),
            "norm_adhd": float(t.norms[j, 1]),
            "rel_norm": float(t.rel_norm[j]),
            "cosine": float(t.cosine[j]),
            "own": ("std", "adhd")[int(s.own[j])],
            "beta": {target: b[j] for target, b in beta.items()},
            **{f"nu_{target}": values[j] for target, values in nu.items()},
            "n_active": int(s.n_active[j]),
            "freq": {v: float(f[j]) for v, f in t.freq.items()},
            "onset_freq": {v: float(f[j]) for v, f in t.onset_freq.items()},
        }
        for j in range(len(t.rel_norm))
    ]


def latent_contexts(
    grids: Mapping[str, Float[Tensor, "batch pos n_latents"]],
    diff: PairDiff,
    i: int,
    tokenizer: TaskTokenizer,
    settings: DiffSettings,
) -> list[dashboard.Context]:
    """The strongest contexts of shown latent `i` over every sequence set, labelled."""
    contexts = []
    for name, grid in grids.items():
        eset = diff.data[name].eset
        found = dashboard.top_contexts(
            grid[..., i], eset.ids, tokenizer, settings.n_contexts, settings.context_tokens,
            lengths=eset.lengths,
        )  # fmt: skip
        contexts += [dataclasses.replace(c, label=f"{name} sequences, {c.label}") for c in found]
    contexts.sort(key=lambda c: -c.activations[c.focus])
    return contexts[: settings.n_contexts]


def latent_cards(
    crosscoder: BatchTopKCrosscoder,
    models: Sequence[TaskGPT],
    tokenizer: TaskTokenizer,
    diff: PairDiff,
    latents: list[int],
    settings: DiffSettings,
    rows: list[dict[str, Any]],
) -> list[dashboard.LatentCard]:
    """A dashboard card's data per latent: contexts over both sequence sets, a sample of
    non-zero activations, its numbers (`rows`, from `latent_rows`), and each model's
    promoted/suppressed tokens of the latent's decoder row in that model (raw units,
    through that model's own unembedding)."""
    grids = {v: latent_activations(crosscoder, acts, latents) for v, acts in diff.data.items()}
    names = crosscoder.cfg.names
    cards = []
    for i, j in enumerate(latents):
        row = rows[j]
        tokens = {
            name: dashboard.output_tokens(
                crosscoder.W_dec[j, m].detach() / crosscoder.cfg.scales[m],
                models[m], tokenizer, settings.top_tokens,
            )
            for m, name in enumerate(names)
        }  # fmt: skip
        stats: dict[str, float | str] = {
            "class": row["class"] + (", confirmed" if row["confirmed"] else ""),
            f"decoder norm {names[0]}": row["norm_std"],
            f"decoder norm {names[1]}": row["norm_adhd"],
            "relative norm": row["rel_norm"],
            "cosine": row["cosine"],
            "ν error": row["nu_error"],
            "ν reconstruction": row["nu_reconstruction"],
            **{f"freq {v} seqs": f for v, f in row["freq"].items()},
            **{f"onset freq {v} seqs": f for v, f in row["onset_freq"].items()},
        }
        cards.append(
            dashboard.LatentCard(
                latent=j,
                title=f"latent {j} — {KINDS[row['class']]}",
                kind=KINDS[row["class"]],
                stats=stats,
                contexts=latent_contexts(grids, diff, i, tokenizer, settings),
                activations=dashboard.activation_sample(
                    torch.cat([grid[..., i].flatten() for grid in grids.values()])
                ),
                promoted={name: t.promoted for name, t in tokens.items()},
                suppressed={name: t.suppressed for name, t in tokens.items()},
            )
        )
    return cards
