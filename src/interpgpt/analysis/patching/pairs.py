"""The study's default patching inputs: clean/corrupted corpus pairs and their metric.

The ADHD corpus places a break where the effort rule fires (`corpus.regulation`): the
load of content steps since the last break reaches the task's budget. The clean input is
an ADHD decomposition cut right after an onset predictor (`<|steps|>`/`<|sep|>`) where
the rule fires and a break follows; the corrupted input is another ADHD decomposition of
the same task text, cut after an onset predictor where the rule is quiet (the corpus's
posterior of a break there is the noise rate: not the first step, not right after a
break, load below budget) and a content step follows, of exactly the same token length.
Both share the `<|task|>...<|steps|>` header and are prefixes a trained ADHD model has to
read the load from, so the clean input should score above the corrupted one and patching
shows where the model computes the rule. (A standard decomposition as the corrupted
input, as before, is a run of content steps with no break at all: under the effort rule
that is where a break is most due, and it scored above the clean input.) Every pair of
one run must share one length to stack into one batch, so the length matched by the most
task texts is used. The metric (`RegulationLogitDiff`) is a logit difference between
token classes at the final position: logsumexp of the logits of the regulation actions'
first tokens minus logsumexp of the logits of the content steps' first tokens seen in the
held-out records (the log-odds of "a regulation step starts next" among step onsets; it
is the plain logit difference when each class has one token), averaged over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.corpus.build import CorpusRecord, iter_split
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


RULE_FIRES = 0.5
"""A prefix's next onset is where the break rule fires when the corpus's Bayes posterior
of a break there (`p_break`) is at least this (1 - noise), and quiet when it lies in
(0, this) (the noise rate; 0 is the first step or right after a break)."""


def _prefixes(tokenizer, record: CorpusRecord, fires: bool) -> list[list[int]]:
    """Prefixes of one ADHD record ending at an onset predictor: where the break rule fires
    and a break follows (`fires`), or where the rule is quiet, no break follows, and the
    previous step is not a break (not `fires`)."""
    if record.p_break is None:
        raise UserError(
            f"ADHD test record of task {record.task_id} has no p_break; rebuild the corpus "
            "with `interpgpt corpus` (held-out ADHD records carry the break rule's posterior)"
        )
    ids = tokenizer.encode_example(record.task, list(record.steps))
    roles = tokenizer.roles(ids)
    out = []
    for pos, is_reg, p in zip(
        roles.onset_predictors, roles.step_is_regulation, record.p_break, strict=True
    ):
        fired = is_reg and p >= RULE_FIRES
        quiet = not is_reg and 0 < p < RULE_FIRES
        if fired if fires else quiet:
            out.append(ids[: pos + 1])
    return out


def _onset_tokens(tokenizer, records: list[CorpusRecord]) -> tuple[set[int], set[int]]:
    regulation: set[int] = set()
    content: set[int] = set()
    for record in records:
        ids = tokenizer.encode_example(record.task, list(record.steps))
        roles = tokenizer.roles(ids)
        for onset, is_reg in zip(roles.step_onsets, roles.step_is_regulation, strict=True):
            (regulation if is_reg else content).add(ids[onset])
    return regulation, content - regulation


def _by_text(corpus_dir: Path, phrasings: int) -> dict[str, list[CorpusRecord]]:
    """Held-out ADHD records grouped by task text (at most `phrasings` each): records of
    one text share the `<|task|>...<|steps|>` header and place their breaks differently."""
    grouped: dict[str, list[CorpusRecord]] = {}
    for record in iter_split(corpus_dir, "adhd", "test"):
        rows = grouped.setdefault(record.task, [])
        if len(rows) < phrasings:
            rows.append(record)
    return grouped


def build_pairs(
    corpus_dir: str | Path, tokenizer, n_pairs: int, phrasings: int = 8, max_len: int = 512
) -> PatchPairs:
    """The default clean (the rule fires, a break next) / corrupted (the rule quiet) pairs:
    two ADHD decompositions of one task text, cut at the same token length."""
    by_text = _by_text(Path(corpus_dir), phrasings)
    matches: dict[int, dict[str, tuple[list[int], list[int], str]]] = {}
    for text, records in by_text.items():
        if len(records) < 2:
            continue
        quiet = {len(p): p for r in records for p in _prefixes(tokenizer, r, fires=False)}
        for record in records:
            for clean in _prefixes(tokenizer, record, fires=True):
                corrupt = quiet.get(len(clean))
                if corrupt is not None and len(clean) <= max_len and corrupt != clean:
                    matches.setdefault(len(clean), {}).setdefault(
                        text, (clean, corrupt, str(record.task_id))
                    )
    if not matches:
        raise UserError(
            f"{corpus_dir}: no held-out task text has two ADHD decompositions, one cut where "
            "the break rule fires and one where it is quiet, of the same token length; use "
            "a larger corpus (more tasks or examples per task)"
        )
    length = max(matches, key=lambda n: (len(matches[n]), n))
    chosen = list(matches[length].items())[:n_pairs]
    all_records = [r for rows in by_text.values() for r in rows]
    all_records += list(iter_split(Path(corpus_dir), "standard", "test"))
    regulation, content = _onset_tokens(tokenizer, all_records)
    return PatchPairs(
        clean=torch.tensor([pair[0] for _, pair in chosen]),
        corrupted=torch.tensor([pair[1] for _, pair in chosen]),
        task_ids=[pair[2] for _, pair in chosen],
        regulation_tokens=sorted(regulation),
        content_tokens=sorted(content),
        tasks_with_a_match=len({t for by_text in matches.values() for t in by_text}),
    )
