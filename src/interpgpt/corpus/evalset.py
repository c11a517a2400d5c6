"""Teacher-forced evaluation sets: corpus records encoded once, padded, with token roles.

Every analysis reads the held-out tasks through this module, so "the positions that
predict a step onset" and "a regulation step" have one definition (the tokenizer's
`TokenRoles`). Sequences are right-padded with `<|pad|>`: under causal attention a
right pad never influences the real tokens before it, so no attention mask is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interpgpt.constants import Split, Variant
from interpgpt.corpus.build import iter_split
from interpgpt.corpus.tokenizer import TaskTokenizer, TokenRoles
from interpgpt.errors import UserError


def load_records(
    corpus_dir: str | Path, variant: Variant, split: Split = "test", limit: int | None = None
) -> list[dict[str, Any]]:
    """Records of one variant and split, one phrasing per task (the first, so tasks are not
    over-counted); with `limit`, those of the first `limit` tasks. Read with the corpus's
    reader (`build.iter_split`), as plain dicts (task_id, task, steps, complexity, and
    p_break and the `regulation.RULE_VARIABLES` where the record carries them: val and
    test, p_break on ADHD only)."""
    seen: set[int] = set()
    unique: list[dict[str, Any]] = []
    for record in iter_split(corpus_dir, variant, split):
        if limit is not None and len(unique) >= limit:
            break
        if record.task_id not in seen:
            seen.add(record.task_id)
            row: dict[str, Any] = {
                "task_id": record.task_id,
                "task": record.task,
                "steps": list(record.steps),
                "complexity": record.complexity,
            }
            if record.p_break is not None:
                row["p_break"] = list(record.p_break)
            for name, values in (record.rule or {}).items():
                row[name] = list(values)
            unique.append(row)
    return unique


@dataclass
class EncodedSet:
    """A batch of encoded examples, right-padded, with per-example token roles."""

    ids: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    roles: list[TokenRoles]
    """One per example."""
    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def valid(self) -> Bool[Tensor, "batch pos"]:
        """True at real (non-pad) positions."""
        return torch.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]

    def onset_predictor_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at the `<|steps|>`/`<|sep|>` positions whose next token starts a step."""
        return self._mask_from(lambda roles: roles.onset_predictors)

    def step_onset_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at the first token of every step."""
        return self._mask_from(lambda roles: roles.step_onsets)

    def regulation_next_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at onset predictors whose next step is a regulation action."""
        mask = torch.zeros_like(self.ids, dtype=torch.bool)
        for row, roles in enumerate(self.roles):
            for pos, is_reg in zip(roles.onset_predictors, roles.step_is_regulation, strict=True):
                mask[row, pos] = is_reg
        return mask

    def special_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at the step-structure specials of the notebook's `token_roles`."""
        return self._mask_from(lambda roles: roles.special_positions)

    def _mask_from(self, positions_of: Callable[[TokenRoles], Sequence[int]]) -> Tensor:
        mask = torch.zeros_like(self.ids, dtype=torch.bool)
        for row, roles in enumerate(self.roles):
            mask[row, list(positions_of(roles))] = True
        return mask

    def subset(self, rows: slice | Tensor) -> EncodedSet:
        index = range(len(self))[rows] if isinstance(rows, slice) else rows.tolist()
        ids, lengths = self.ids[rows], self.lengths[rows]
        width = int(lengths.max()) if len(lengths) else 0
        return EncodedSet(
            ids[:, :width],
            lengths,
            [self.roles[i] for i in index],
            [self.records[i] for i in index],
        )

    def batches(self, batch_size: int) -> Iterator[EncodedSet]:
        for start in range(0, len(self), batch_size):
            yield self.subset(slice(start, start + batch_size))


def encode_eval_set(
    tokenizer: TaskTokenizer, records: list[dict[str, Any]], max_len: int | None = None
) -> EncodedSet:
    """Encode records as `<|task|>…<|steps|>…<|end|>`; drop those longer than `max_len`."""
    encoded, kept = [], []
    for record in records:
        ids = tokenizer.encode_example(record["task"], record["steps"])
        if max_len is None or len(ids) <= max_len:
            encoded.append(ids)
            kept.append(record)
    if not encoded:
        raise UserError("no example fits the model context; use shorter tasks or a larger model")
    width = max(len(ids) for ids in encoded)
    batch = torch.full((len(encoded), width), tokenizer.pad_id, dtype=torch.long)
    for row, ids in enumerate(encoded):
        batch[row, : len(ids)] = torch.tensor(ids)
    lengths = torch.tensor([len(ids) for ids in encoded])
    roles = [tokenizer.roles(ids) for ids in encoded]
    return EncodedSet(batch, lengths, roles, kept)


def load_eval_set(
    corpus_dir: str | Path,
    tokenizer: TaskTokenizer,
    variant: Variant = "standard",
    split: Split = "test",
    limit: int | None = None,
    max_len: int | None = None,
) -> EncodedSet:
    """The held-out tasks of one variant, encoded and padded (one phrasing per task)."""
    return encode_eval_set(tokenizer, load_records(corpus_dir, variant, split, limit), max_len)
