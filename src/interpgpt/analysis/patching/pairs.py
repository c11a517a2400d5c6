"""The study's default patching inputs: clean/corrupted corpus pairs and their metric.

For one held-out task, the clean input is an ADHD decomposition cut right after an onset
predictor (`<|steps|>`/`<|sep|>`) whose next step is a regulation action; the corrupted
input is a standard decomposition of the same task cut after an onset predictor, of
exactly the same token length (both share the `<|task|>…<|steps|>` header). Every pair
of one run must share one length to stack into one batch, so the length matched by the
most tasks is used. The metric (`RegulationLogitDiff`) is a logit difference between
token classes at the final position: logsumexp of the logits of the regulation actions'
first tokens minus logsumexp of the logits of the content steps' first tokens seen in
the same records (the log-odds of "a regulation step starts next" among step onsets; it
is the plain logit difference when each class has one token), averaged over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.constants import Variant
from interpgpt.corpus.build import iter_split
from interpgpt.errors import UserError


@dataclass
class RegulationLogitDiff:
    """logsumexp(final logits of regulation onsets) - logsumexp(of content onsets), mean
    over the batch; see the module docstring."""

    regulation: list[int]
    """First token ids of the regulation actions."""
    content: list[int]
    """First token ids of content steps (regulation first tokens excluded)."""
    positions: tuple[int, ...] = (-1,)
    """The positions whose logits it reads (`activation_patch`'s `metric_positions`)."""

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        final = logits[:, -1].float()
        reg = final[:, self.regulation].logsumexp(-1)
        content = final[:, self.content].logsumexp(-1)
        return (reg - content).mean()


@dataclass
class PatchPairs:
    """Clean/corrupted inputs of one shared length, and the metric's token classes."""

    clean: Int[Tensor, "pair pos"]
    corrupted: Int[Tensor, "pair pos"]
    task_ids: list[str]
    regulation_tokens: list[int]
    content_tokens: list[int]
    tasks_with_a_match: int
    """Held-out tasks that had some equal-length pair (before choosing one length)."""


def _prefixes(tokenizer, record: dict, regulation_next: bool) -> list[list[int]]:
    """Prefixes of one record ending at an onset predictor whose next step is (not)
    regulation, shortest first."""
    ids = tokenizer.encode_example(record["task"], record["steps"])
    roles = tokenizer.roles(ids)
    return [
        ids[: pos + 1]
        for pos, is_reg in zip(roles.onset_predictors, roles.step_is_regulation, strict=True)
        if is_reg == regulation_next
    ]


def _onset_tokens(tokenizer, records: list[dict]) -> tuple[set[int], set[int]]:
    regulation: set[int] = set()
    content: set[int] = set()
    for record in records:
        ids = tokenizer.encode_example(record["task"], record["steps"])
        roles = tokenizer.roles(ids)
        for onset, is_reg in zip(roles.step_onsets, roles.step_is_regulation, strict=True):
            (regulation if is_reg else content).add(ids[onset])
    return regulation, content - regulation


def _by_task(corpus_dir: Path, variant: Variant, phrasings: int) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in iter_split(corpus_dir, variant, "test"):
        rows = grouped.setdefault(str(record.task_id), [])
        if len(rows) < phrasings:
            rows.append({"task": record.task, "steps": list(record.steps)})
    return grouped


def build_pairs(
    corpus_dir: str | Path, tokenizer, n_pairs: int, phrasings: int = 8, max_len: int = 512
) -> PatchPairs:
    """The default clean (ADHD, regulation next) / corrupted (standard) pairs."""
    adhd = _by_task(Path(corpus_dir), "adhd", phrasings)
    standard = _by_task(Path(corpus_dir), "standard", phrasings)
    matches: dict[int, dict[str, tuple[list[int], list[int]]]] = {}
    for task_id, records in adhd.items():
        # Keyed by the task's phrasing too: both inputs must share the header exactly.
        corrupt = {
            (r["task"], len(p)): p
            for r in standard.get(task_id, [])
            for p in _prefixes(tokenizer, r, False)
        }
        for record in records:
            for clean in _prefixes(tokenizer, record, True):
                key = (record["task"], len(clean))
                if key in corrupt and len(clean) <= max_len:
                    matches.setdefault(len(clean), {}).setdefault(task_id, (clean, corrupt[key]))
    if not matches:
        raise UserError(
            f"{corpus_dir}: no held-out task has an ADHD prefix before a regulation step and "
            "a standard prefix of the same token length; use a larger corpus"
        )
    length = max(matches, key=lambda n: (len(matches[n]), n))
    chosen = list(matches[length].items())[:n_pairs]
    all_records = [r for rows in (*adhd.values(), *standard.values()) for r in rows]
    regulation, content = _onset_tokens(tokenizer, all_records)
    return PatchPairs(
        clean=torch.tensor([pair[0] for _, pair in chosen]),
        corrupted=torch.tensor([pair[1] for _, pair in chosen]),
        task_ids=[task_id for task_id, _ in chosen],
        regulation_tokens=sorted(regulation),
        content_tokens=sorted(content),
        tasks_with_a_match=len({t for by_task in matches.values() for t in by_task}),
    )
