"""The synthetic IOI language: its word-level tokenizer, held-out split and training stream.

GPT-2 weights cannot be fetched here, so the IOI sandbox trains its own small
model on a language made only of the IOI templates (`prompts.TEMPLATES`) filled
with the names, places and objects of `prompts`, each followed by its answer:
"<|bos|> Then, Mary and John went to the store. John gave a drink to Mary ."
A word-level `tokenizers` model makes every name one token. A fraction of the
training sequences are a random word sequence repeated twice, the standard
recipe that makes induction heads form (Olsson et al. 2022), so the induction
score of notebook 03 has something to find.

Held-out split (`IOISplit`): a fixed share of the *unordered name pairs* never
appear together as IO and S in training (each name still appears with the other
names), and a few *templates* never appear in training at all (all their words
do, in other templates). The evaluation set is held-out pairs × held-out
templates, so it measures a rule, not memorised name combinations or sentences.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from jaxtyping import Int
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import Tensor

from interpgpt.errors import UserError
from interpgpt.io import atomic_path
from interpgpt.ioi.prompts import NAMES, OBJECTS, PLACES, TEMPLATES, IOIPrompt, sample_prompts

BOS, PAD, UNK = "<|bos|>", "<|pad|>", "<|unk|>"
HELD_OUT_TEMPLATES: tuple[int, ...] = (6, 8, 11)
"""Templates kept out of training; `test_ioi` checks their words all occur in the others."""
HELDOUT_DEFINITION = (
    "prompts whose (IO, S) name pair is one of the unordered pairs never used together "
    "in training, in both role assignments, written in templates never used in training; "
    "every name and every word occurs in training in other combinations"
)
"""What the held-out evaluation set (`IOISplit.held_out_prompts`) is, for reports."""


def template_words(template: str) -> list[str]:
    """The words and punctuation of a template, placeholders removed."""
    return re.findall(r"\w+|[^\w\s]+", re.sub(r"\{\w+\}", " ", template))


def build_ioi_tokenizer() -> Tokenizer:
    """Word-level tokenizer over the IOI language: specials, then every word once."""
    words = [BOS, PAD, UNK, *NAMES, *PLACES, *OBJECTS]
    for template in TEMPLATES:
        words += template_words(template)
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits "store," into "store" ","
    return tok


class IOITokenizer:
    """The word-level tokenizer with the small interface the IOI pipeline needs."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        bos, pad, unk = (tokenizer.token_to_id(token) for token in (BOS, PAD, UNK))
        if bos is None or pad is None or unk is None:
            raise UserError(f"IOI tokenizer lacks one of {BOS}, {PAD}, {UNK}")
        self.bos_id, self.pad_id, self.unk_id = bos, pad, unk

    @classmethod
    def from_file(cls, path: str | Path) -> IOITokenizer:
        if not Path(path).is_file():
            raise UserError(f"{path}: IOI tokenizer not found")
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            self.tokenizer.save(str(tmp))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if self.unk_id in ids:
            raise ValueError(f"{text!r} has words outside the IOI vocabulary")
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def word_ids(self) -> list[int]:
        """Every non-special token (the alphabet of the repeated random sequences)."""
        return [
            i for i in range(self.vocab_size) if i not in (self.bos_id, self.pad_id, self.unk_id)
        ]


@dataclass(frozen=True)
class IOISplit:
    """Which name pairs and templates are held out of training."""

    held_out_pairs: tuple[tuple[str, str], ...]
    """Unordered name pairs (sorted) never used together as IO/S in training."""
    held_out_templates: tuple[int, ...]
    """Indices into `TEMPLATES` never used in training."""

    @classmethod
    def make(cls, seed: int, pair_fraction: float, names=NAMES) -> IOISplit:
        pairs = list(itertools.combinations(sorted(names), 2))
        held = random.Random(seed).sample(pairs, round(pair_fraction * len(pairs)))
        return cls(tuple(sorted(held)), HELD_OUT_TEMPLATES)

    def train_pairs(self, names=NAMES) -> list[tuple[str, str]]:
        """Ordered (IO, S) pairs allowed in training."""
        held = set(self.held_out_pairs)
        return [
            (a, b) for a, b in itertools.permutations(names, 2) if tuple(sorted((a, b))) not in held
        ]

    def eval_pairs(self) -> list[tuple[str, str]]:
        """Ordered (IO, S) pairs of the held-out set: both role assignments of every pair."""
        return [(a, b) for a, b in self.held_out_pairs] + [(b, a) for a, b in self.held_out_pairs]

    def train_templates(self) -> list[int]:
        return [t for t in range(len(TEMPLATES)) if t not in self.held_out_templates]

    def held_out_prompts(self, seed: int = 0) -> list[IOIPrompt]:
        """Every held-out pair in both role assignments × every held-out template, orders
        alternating ABBA/BABA, places and objects drawn with `seed`."""
        rng = random.Random(seed)
        return [
            IOIPrompt(
                template=t,
                order="ABBA" if (i + j) % 2 == 0 else "BABA",
                io=io,
                s=s,
                place=rng.choice(PLACES),
                object=rng.choice(OBJECTS),
            )
            for i, (io, s) in enumerate(self.eval_pairs())
            for j, t in enumerate(self.held_out_templates)
        ]


def training_batch(
    tok: IOITokenizer,
    split: IOISplit,
    batch_size: int,
    rng: random.Random,
    repeat_fraction: float,
    width: int,
) -> Int[Tensor, "batch pos"]:
    """One batch of training sequences, right-padded with `<|pad|>`; none longer than `width`."""
    pairs, templates = split.train_pairs(), split.train_templates()
    words = tok.word_ids()
    rows = []
    for _ in range(batch_size):
        if rng.random() < repeat_fraction:
            half = rng.choices(words, k=rng.randint(4, 12))
            rows.append([tok.bos_id, *half, *half])
            continue
        (prompt,) = sample_prompts(1, rng.randrange(1 << 30), templates=templates, pairs=pairs)
        if rng.random() < 0.5:  # sample_prompts alternates orders from its own index
            prompt = replace(prompt, order="BABA")
        rows.append([tok.bos_id, *tok.encode(f"{prompt.text()} {prompt.io} .")])
    longest = max(len(ids) for ids in rows)
    if longest > width:
        raise ValueError(f"training sequence of {longest} tokens exceeds width {width}")
    batch = torch.full((batch_size, longest), tok.pad_id, dtype=torch.long)
    for i, ids in enumerate(rows):
        batch[i, : len(ids)] = torch.tensor(ids)
    return batch
