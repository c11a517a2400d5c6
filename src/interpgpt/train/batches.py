"""Token data for training: a split encoded once, and batches that are a function of the step.

A split is encoded to one flat id tensor plus per-example offsets (`TokenSet`), in the
notebook's `encode_example` layout. Encoding goes through the tokenizers library's
`encode_batch` on all task strings and all step strings at once (Rust, parallel), then
assembles `<|task|> task <|steps|> s1 <|sep|> ... <|end|>` from the pieces; the result
equals `TaskTokenizer.encode_example` (tested).

The data order is a pure function of (seed, step), where the seed is the run's
`data_seed` (by default its init seed): global sample `i = step * batch + j` is position
`i mod n` of the permutation of epoch `i div n`, and each epoch's permutation comes from
`numpy.random.default_rng([seed, epoch])`. With length grouping (`group` > 1, as
Hugging Face's `group_by_length` sampler), the `group` consecutive batches of a window
hold the same examples, re-dealt by length: the window's examples sorted by length, cut
into `group` batches, and those batches taken in an order drawn from
`default_rng([seed, window, 1])`; a batch then pads to nearly its own length instead of
the longest of random examples (padding was ~40% of a step's tokens). Resuming a run
therefore needs no iterator state; two runs with the same data seed — the standard and
the ADHD model of a matched pair — follow the same data-order policy over their own
corpora, and a seed twin (same init, another data seed) reads the same corpus in
another order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interpgpt.constants import Variant
from interpgpt.corpus.build import CorpusRecord, load_split, split_path
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.errors import UserError
from interpgpt.train.distributed import DistInfo

IGNORE_INDEX = -100
"""Target value that `cross_entropy` skips (padding)."""


@dataclass(frozen=True)
class TokenSet:
    """Every example of one split, encoded and concatenated."""

    ids: Int[Tensor, " token"]
    """All examples' ids back to back (int32)."""
    offsets: Int[Tensor, " example_plus_one"]
    """Example k is `ids[offsets[k]:offsets[k + 1]]`."""
    tasks: tuple[str, ...]
    """The task text of each example (for sampling decompositions during training)."""

    def __len__(self) -> int:
        return len(self.tasks)

    def example(self, k: int) -> list[int]:
        return self.ids[self.offsets[k] : self.offsets[k + 1]].tolist()

    @cached_property
    def lengths(self) -> list[int]:
        """Tokens of each example."""
        return (self.offsets[1:] - self.offsets[:-1]).tolist()

    @property
    def n_tokens(self) -> int:
        return int(self.ids.numel())


@dataclass(frozen=True)
class Batch:
    """A right-padded batch of next-token prediction examples."""

    input_ids: Int[Tensor, "batch pos"]
    """Example ids without their last token; pad after each example's end."""
    targets: Int[Tensor, "batch pos"]
    """input_ids shifted by one; IGNORE_INDEX where the target is padding."""
    n_tokens: int
    """Real (non-pad) input tokens; each carries exactly one loss target."""

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.n_tokens,
        )


def _encode_texts(tokenizer: TaskTokenizer, texts: list[str]) -> list[list[int]]:
    """Plain-text ids via one `encode_batch`; texts holding a special literal go through
    `encode_text`, which cuts the literal so it never becomes a special token."""
    fast = [t for t in texts if "<|" not in t]
    encoded = iter(tokenizer.tokenizer.encode_batch(fast))
    return [next(encoded).ids if "<|" not in t else tokenizer.encode_text(t) for t in texts]


def encode_training_set(tokenizer: TaskTokenizer, records: Sequence[CorpusRecord]) -> TokenSet:
    """Encode corpus records in the `encode_example` layout, back to back."""
    tasks = [r.task for r in records]
    step_texts = [s for r in records for s in r.steps]
    task_ids = _encode_texts(tokenizer, tasks)
    step_ids = iter(_encode_texts(tokenizer, step_texts))
    flat: list[int] = []
    offsets = [0]
    for record, task in zip(records, task_ids, strict=True):
        flat.append(tokenizer.task_id)
        flat += task
        flat.append(tokenizer.steps_id)
        for i in range(len(record.steps)):
            if i:
                flat.append(tokenizer.sep_id)
            flat += next(step_ids)
        flat.append(tokenizer.end_id)
        offsets.append(len(flat))
    return TokenSet(
        ids=torch.tensor(flat, dtype=torch.int32),
        offsets=torch.tensor(offsets, dtype=torch.int64),
        tasks=tuple(tasks),
    )


@lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def sample_indices(seed: int, step: int, batch_size: int, n: int) -> list[int]:
    """Example indices of global batch `step`: a pure function of its arguments."""
    indices = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(i, n)
        indices.append(int(_epoch_permutation(seed, epoch, n)[pos]))
    return indices


def grouped_indices(
    seed: int, step: int, batch_size: int, lengths: Sequence[int], group: int
) -> list[int]:
    """Example indices of global batch `step` under length grouping (module docstring):
    the window's `sample_indices` re-dealt by length; `group` 1 is `sample_indices`."""
    n = len(lengths)
    if group <= 1:
        return sample_indices(seed, step, batch_size, n)
    window, position = divmod(step, group)
    pool = [
        k
        for s in range(window * group, (window + 1) * group)
        for k in sample_indices(seed, s, batch_size, n)
    ]
    by_length = sorted(range(len(pool)), key=lambda i: (lengths[pool[i]], i))
    order = np.random.default_rng([seed, window, 1]).permutation(group)
    start = int(order[position]) * batch_size
    return [pool[i] for i in by_length[start : start + batch_size]]


def make_batch(data: TokenSet, indices: list[int], pad_id: int, n_ctx: int) -> Batch:
    """Right-pad the examples at `indices`, truncated to `n_ctx` inputs.

    Right padding needs no attention mask: under causal attention a real token never
    sees the pads that follow it, so the fused causal kernel stays usable.
    """
    seqs = [data.ids[data.offsets[k] : data.offsets[k + 1]][: n_ctx + 1] for k in indices]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
    lengths = torch.tensor([len(s) for s in seqs])
    targets = ids[:, 1:].clone()
    # Every next-token target of a real token carries loss (pads never appear inside an
    # example, so "position < length - 1" is exactly "the target is not padding").
    real_target = torch.arange(width - 1)[None, :] < (lengths[:, None] - 1)
    targets[~real_target] = IGNORE_INDEX
    return Batch(
        input_ids=ids[:, :-1],
        targets=targets,
        n_tokens=int(real_target.sum()),
    )


def count_targets(data: TokenSet, indices: list[int], n_ctx: int) -> int:
    """Loss-carrying targets of these examples (length - 1 each, after truncation)."""
    lengths = (data.offsets[1:] - data.offsets[:-1])[indices].clamp(max=n_ctx + 1)
    return int((lengths - 1).sum())


def next_token_batch(ids: Int[Tensor, "batch pos"], pad_id: int) -> Batch:
    """The batch of right-padded sequences `ids` that hold no pad inside a sequence: every
    target that is not padding carries loss."""
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == pad_id, IGNORE_INDEX)
    return Batch(ids[:, :-1], targets, int((targets != IGNORE_INDEX).sum()))


@dataclass(frozen=True)
class SampledBatches:
    """A split's training batches: global batch `step` is `sample_indices(seed, step, ...)`,
    so any step can be drawn at any time (resuming needs no iterator state)."""

    data: TokenSet
    seed: int
    """The data-order seed."""
    batch_size: int
    """Sequences per global batch (all ranks)."""
    pad_id: int
    n_ctx: int
    group: int = 1
    """Length grouping window in batches (1: none; see the module docstring)."""

    def indices(self, step: int) -> list[int]:
        """Example indices of global batch `step`."""
        return grouped_indices(self.seed, step, self.batch_size, self.data.lengths, self.group)

    def global_batch(self, step: int) -> Batch:
        """Every row of global batch `step`."""
        return make_batch(self.data, self.indices(step), self.pad_id, self.n_ctx)

    def batch(self, step: int, dist: DistInfo) -> tuple[Batch, int]:
        """This rank's slice of global batch `step`, and the global batch's targets."""
        indices = self.indices(step)
        total = count_targets(self.data, indices, self.n_ctx)
        per_rank = len(indices) // dist.world
        local = indices[dist.rank * per_rank : (dist.rank + 1) * per_rank]
        return make_batch(self.data, local, self.pad_id, self.n_ctx), total


def load_splits(
    corpus: Path, variant: Variant, tokenizer: TaskTokenizer
) -> tuple[TokenSet, TokenSet]:
    """One variant's train and val splits, encoded."""
    sets = []
    for split in ("train", "val"):
        records = load_split(corpus, variant, split)
        if not records:
            raise UserError(f"{split_path(corpus, variant, split)}: no examples")
        sets.append(encode_training_set(tokenizer, records))
    return sets[0], sets[1]
