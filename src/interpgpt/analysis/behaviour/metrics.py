"""What the behaviour stage measures: content words, the sampled metrics of one model on
one subset of tasks, and the P(regulation) AUROC at step onsets.

Sampled (one decomposition per task):

- parse rate: the share of samples that end with `<|end|>` with no empty step;
- on-topic rate: the share of parsed samples with at least one non-regulation step
  that names a content word of the task (`content_words`, `names_content`);
- object-mention rate: the share of non-regulation steps that name one;
- Spearman(task complexity, generated step count), over parsed samples;
- regulation: the share of parsed samples with a regulation action and the share of
  their steps that are one (the standard model's must be 0).

Teacher-forced on ADHD records: the AUROC (`corpus.regulation.auroc`) with which
P(regulation) at the step-onset predictors (`<|steps|>`/`<|sep|>`; the summed probability
of the regulation actions' first tokens, `regulation_first_tokens`) ranks "the next step
is a regulation action", beside the AUROC of the records' own Bayes-optimal `p_break` on
the same positions: the ceiling any model of the data can reach.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from interpgpt.artifacts.load import LoadedModel
from interpgpt.corpus.evalset import encode_eval_set
from interpgpt.corpus.regulation import auroc, is_regulation
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.model.generate import Decomposition

# ----------------------------------------------------------------------------- content words

STOPWORDS = frozenset(
    " ".join(
        (
            # function words and pronouns
            "the and for with from into onto over under out off about all any are but its our "
            "ours your yours their them they theirs his her hers him she who whom what which "
            "that those these there then than too very just also not nor yet was were been "
            "being has had does did doing done one some each every other own same such only "
            "more most per via how why when where while upon between through",
            # how a request is phrased
            "need needs help have want can could would should will shall may might must you "
            "please get got let lets make sure",
            # deadlines and scope: when, not what
            "before after until till today tonight tomorrow morning afternoon evening night "
            "week weekend end day days month year quarter next soon this first time minutes "
            "deadline starting monday tuesday wednesday thursday friday saturday sunday spring "
            "summer autumn winter holiday holidays whole",
        )
    ).split()
)
"""Words of three letters or more that say nothing about what a task is about."""

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    """Lower-cased words ([a-z']+) of `text`, without leading or trailing apostrophes."""
    found = (w.strip("'") for w in _WORD.findall(text.lower()))
    return [w for w in found if w]


def word_forms(word: str) -> frozenset[str]:
    """The word and the word minus a trailing 's, es or s: two words are the same content
    word when their forms overlap (dish ~ dishes, cookie ~ cookies, driver ~ driver's)."""
    ends = [e for e in ("'s", "es", "s") if word.endswith(e) and len(word) > len(e)]
    cut = {word[: -len(e)].rstrip("'") for e in ends}  # driver's -> driver, never driver'
    return frozenset({word, *cut})


def content_words(task: str) -> frozenset[str]:
    """What a task is about: its words of three letters or more that are not `STOPWORDS`
    ("Clean the garage before Friday" -> {clean, garage})."""
    return frozenset(w for w in words(task) if len(w) >= 3 and w not in STOPWORDS)


def names_content(step: str, content: frozenset[str]) -> bool:
    """Whether `step` names one of the `content` words (up to `word_forms`)."""
    targets = frozenset().union(*map(word_forms, content))
    return any(word_forms(w) & targets for w in words(step))


# ----------------------------------------------------------------------------- metrics


@dataclass
class OnsetAuroc:
    """How well P(regulation) at step-onset predictors ranks regulation steps."""

    n_sequences: int
    """ADHD test records teacher-forced (those that fit the context)."""
    n_positions: int
    """Onset predictors scored (one per step)."""
    n_regulation: int
    """Of them, those whose next step is a regulation action."""
    model: float
    """AUROC of the model's P(regulation first token) (nan without both classes)."""
    bayes: float | None
    """AUROC of the corpus's Bayes-optimal p_break (None: the records carry none)."""


@dataclass
class SubsetBehaviour:
    """One model on one subset of test tasks. Ratios are None where nothing was counted."""

    n: int
    """Tasks sampled (one decomposition each)."""
    parse_rate: float | None
    """Share of samples that end with <|end|> and have no empty step."""
    on_topic_rate: float | None
    """Share of parsed samples with a non-regulation step naming a content word of the
    task."""
    object_mention_rate: float | None
    """Share of non-regulation steps (parsed samples) naming a content word of the task."""
    regulating_outputs: float | None
    """Share of parsed samples with at least one regulation action."""
    regulation_step_share: float | None
    """Share of steps (parsed samples) that are regulation actions."""
    mean_steps: float | None
    """Mean step count of parsed samples."""
    spearman_complexity_steps: float | None
    """Spearman(task complexity, step count) over parsed samples (None if either is
    constant or fewer than three parsed)."""
    auroc: OnsetAuroc | None = None
    """P(regulation) at onsets against the next step (None: no ADHD record of the subset
    fits the context)."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    """The first parsed samples: task and steps."""


def _share(hits: Sequence[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def summarise(outputs: list[Decomposition], complexity: list[int], shown: int) -> SubsetBehaviour:
    """The sampled metrics of one model on one subset (`complexity` per output)."""
    parsed = [(d, c) for d, c in zip(outputs, complexity, strict=True) if d.parsed]
    steps = [s for d, _ in parsed for s in d.steps]
    content_named = []  # per parsed sample: per non-regulation step, does it name the task
    for d, _ in parsed:
        content = content_words(d.task)
        content_named.append([names_content(s, content) for s in d.steps if not is_regulation(s)])
    counts = [len(d.steps) for d, _ in parsed]
    levels = [c for _, c in parsed]
    rho = None
    if len(parsed) > 2 and len(set(counts)) > 1 and len(set(levels)) > 1:
        rho = float(spearmanr(levels, counts).statistic)
    return SubsetBehaviour(
        n=len(outputs),
        parse_rate=_share([d.parsed for d in outputs]),
        on_topic_rate=_share([any(named) for named in content_named]),
        object_mention_rate=_share([hit for named in content_named for hit in named]),
        regulating_outputs=_share([any(map(is_regulation, d.steps)) for d, _ in parsed]),
        regulation_step_share=_share([is_regulation(s) for s in steps]),
        mean_steps=float(np.mean(counts)) if counts else None,
        spearman_complexity_steps=rho,
        examples=[{"task": d.task, "steps": list(d.steps)} for d, _ in parsed[:shown]],
    )


@torch.no_grad()
def onset_auroc(
    loaded: LoadedModel,
    records: list[dict[str, Any]],
    batch_size: int,
) -> OnsetAuroc | None:
    """Teacher-force `records` (ADHD, one per task) and score every onset predictor by
    P(regulation first token), beside the records' own `p_break` (the Bayes AUROC, None
    unless every record carries one); None when no record fits the model's context."""
    model, tokenizer = loaded.model, loaded.tokenizer
    fits = [
        r
        for r in records
        if len(tokenizer.encode_example(r["task"], r["steps"])) <= model.cfg.n_ctx
    ]
    if not fits:  # a small subset of long ADHD records, with a short-context preset
        return None
    device = next(model.parameters()).device
    data = encode_eval_set(tokenizer, fits)
    reg = torch.tensor(sorted(regulation_first_tokens(tokenizer)), device=device)
    scores = []
    for batch in data.batches(batch_size):
        mask = batch.onset_predictor_mask().to(device)
        logits = model(batch.ids.to(device))[mask].float()  # (positions, d_vocab)
        scores.append(logits.softmax(-1)[:, reg].sum(-1).cpu())
    labels = data.regulation_next_mask()[data.onset_predictor_mask()]  # row-major, as scores
    bayes = [r.get("p_break") for r in data.records]
    bayes_scores = [p for ps in bayes for p in ps or []]
    return OnsetAuroc(
        n_sequences=len(data),
        n_positions=len(labels),
        n_regulation=int(labels.sum()),
        model=auroc(torch.cat(scores).tolist(), labels.tolist()),
        bayes=auroc(bayes_scores, labels.tolist()) if all(p is not None for p in bayes) else None,
    )
