"""One byte-level BPE tokenizer shared by both models, and the token roles every analysis uses.

Both models must see the same token ids for the same text, otherwise cross-model
comparisons of attention and activations mix up tokenization with learning. So one
tokenizer is trained on the *train* splits of both variants together
(`train_tokenizer(TokenizerConfig(corpus=..., out=...))`, `interpgpt tokenizer`).

The sequence format is the InterpGPT notebook's `encode_example`::

    <|task|> task <|steps|> step1 <|sep|> step2 ... <|end|>

`TokenRoles` is the single definition of which position plays which part (task span,
step onsets, the `<|steps|>`/`<|sep|>` positions that predict a step onset, regulation
steps); `task_range` and `special_positions` reproduce the notebook's `token_roles`.
`regulation_first_tokens` is the one definition of the regulation vocabulary's token ids.
`TaskTokenizer.budget` says how much of the BPE budget training filled: BPE stops early
when no pair of tokens is left to merge, so a short vocabulary means a corpus with few
distinct words.

HF `tokenizers` matches added tokens anywhere in the input, so a task that literally
contains "<|sep|>" would turn into the special. `encode_text` cuts the text inside every
such literal before encoding, which keeps byte-level round trips exact.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from interpgpt.constants import VARIANTS
from interpgpt.corpus.build import iter_split
from interpgpt.corpus.config import DEFAULT_VOCAB_SIZE, TokenizerConfig
from interpgpt.corpus.regulation import REGULATION_ACTIONS, is_regulation
from interpgpt.errors import UserError
from interpgpt.io import refuse_existing, write_text

SPECIAL_TOKENS: tuple[str, ...] = ("<|task|>", "<|steps|>", "<|sep|>", "<|end|>", "<|pad|>")
"""Special tokens, in id order (0-4)."""
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class Example:
    """A decoded (task, steps) sequence."""

    task: str
    """The task text."""
    steps: tuple[str, ...]
    """The steps, in order."""


@dataclass(frozen=True)
class TokenRoles:
    """What each position of one encoded example is.

    Step-indexed fields are aligned: entry k of `step_onsets`, `onset_predictors`,
    `step_spans` and `step_is_regulation` all describe the k-th non-empty step.
    """

    task_range: tuple[int, ...]
    """Non-special positions before `<|steps|>` (the notebook's `task_range`)."""
    special_positions: tuple[int, ...]
    """Positions holding any special token, pad included (the notebook's definition)."""
    step_onsets: tuple[int, ...]
    """Position of the first token of each step."""
    onset_predictors: tuple[int, ...]
    """The `<|steps|>`/`<|sep|>` position right before each onset: its next-token
    prediction is the step onset."""
    step_spans: tuple[tuple[int, int], ...]
    """(start, end) per step, end exclusive."""
    step_is_regulation: tuple[bool, ...]
    """Whether each step's decoded text is a regulation action."""
    end_position: int | None
    """Position of `<|end|>` after the steps, or None if the sequence was cut off."""


@dataclass(frozen=True)
class VocabBudget:
    """How much of the BPE budget (`DEFAULT_VOCAB_SIZE`) a trained tokenizer fills."""

    bpe_tokens: int
    """Learned vocabulary, specials excluded: the byte alphabet plus one token per merge."""
    merges: int
    """Merge rules learned."""
    budget: int = DEFAULT_VOCAB_SIZE
    """BPE tokens allowed (bytes + merges, specials excluded)."""

    def describe(self) -> str:
        """The phrase "uses N of BUDGET tokens (M merges)", as the CLI and the report say it."""
        return f"uses {self.bpe_tokens:,} of {self.budget:,} tokens ({self.merges:,} merges)"


class TaskTokenizer:
    """A `tokenizers.Tokenizer` with the InterpGPT sequence format on top."""

    def __init__(self, tokenizer: Tokenizer, sha256: str | None = None) -> None:
        self.tokenizer = tokenizer
        ids = {name: tokenizer.token_to_id(name) for name in SPECIAL_TOKENS}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise UserError(f"tokenizer lacks special tokens {missing}")
        self.special_ids: dict[str, int] = {k: int(v) for k, v in ids.items() if v is not None}
        self._special_set = frozenset(self.special_ids.values())
        self._json = tokenizer.to_str(pretty=True)
        self.sha256 = sha256 or hashlib.sha256(self._json.encode("utf-8")).hexdigest()
        """SHA-256 of the tokenizer JSON (of the file bytes when loaded from a file)."""

    # -- files
    @classmethod
    def from_file(cls, path: str | Path) -> TaskTokenizer:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: tokenizer file not found")
        data = path.read_bytes()
        try:
            tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON
            first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"{path}: not a valid tokenizer file ({first_line})") from None
        try:
            return cls(tokenizer, hashlib.sha256(data).hexdigest())
        except UserError as err:
            raise UserError(f"{path}: {err}") from None

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json atomically; its bytes hash to `self.sha256`."""
        return write_text(path, self._json)

    # -- ids and sizes
    @property
    def task_id(self) -> int:
        return self.special_ids["<|task|>"]

    @property
    def steps_id(self) -> int:
        return self.special_ids["<|steps|>"]

    @property
    def sep_id(self) -> int:
        return self.special_ids["<|sep|>"]

    @property
    def end_id(self) -> int:
        return self.special_ids["<|end|>"]

    @property
    def pad_id(self) -> int:
        return self.special_ids["<|pad|>"]

    @property
    def vocab_size(self) -> int:
        """Number of token ids, specials included."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def budget(self) -> VocabBudget:
        """The learned vocabulary and merges against `DEFAULT_VOCAB_SIZE`."""
        ids = set(self.tokenizer.get_vocab(with_added_tokens=True).values())
        merges = json.loads(self._json)["model"].get("merges", [])
        return VocabBudget(bpe_tokens=len(ids - self._special_set), merges=len(merges))

    # -- text
    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text; never produces a special id."""
        if "<|" not in text:
            return self.tokenizer.encode(text).ids
        ids: list[int] = []
        for piece in _split_specials(text):
            ids += self.tokenizer.encode(piece).ids
        return ids

    def decode_text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    # -- examples
    def encode_example(self, task: str, steps: Sequence[str]) -> list[int]:
        """The notebook's `encode_example`: <|task|> task <|steps|> s1 <|sep|> s2 ... <|end|>."""
        ids = self.encode_prompt(task)
        for i, step in enumerate(steps):
            if i > 0:
                ids.append(self.sep_id)
            ids += self.encode_text(step)
        ids.append(self.end_id)
        return ids

    def encode_prompt(self, task: str) -> list[int]:
        """What a model is given to generate steps: <|task|> task <|steps|>."""
        return [self.task_id, *self.encode_text(task), self.steps_id]

    def decode_example(self, ids: Sequence[int]) -> Example:
        """Inverse of `encode_example`; tolerates a missing <|end|> and trailing pad."""
        ids = _strip_pad(list(ids), self.pad_id)
        start = 1 if ids and ids[0] == self.task_id else 0
        if self.steps_id not in ids[start:]:
            return Example(self.decode_text(_plain(ids[start:], self._special_set)), ())
        steps_at = ids.index(self.steps_id, start)
        task = self.decode_text(ids[start:steps_at])
        body = ids[steps_at + 1 :]
        if self.end_id in body:
            body = body[: body.index(self.end_id)]
        steps: list[list[int]] = [[]]
        for t in body:
            if t == self.sep_id:
                steps.append([])
            elif t not in self._special_set:
                steps[-1].append(t)
        if steps == [[]]:
            return Example(task, ())
        return Example(task, tuple(self.decode_text(s) for s in steps))

    # -- roles
    def roles(self, ids: Sequence[int]) -> TokenRoles:
        """Token roles of one (unpadded or padded) example; see `TokenRoles`."""
        ids = list(ids)
        special = self._special_set
        special_positions = tuple(i for i, t in enumerate(ids) if t in special)
        steps_at = ids.index(self.steps_id) if self.steps_id in ids else len(ids)
        task_range = tuple(i for i in range(steps_at) if ids[i] not in special)
        onsets, predictors, spans, is_reg = [], [], [], []
        end_position = None
        boundary = steps_at
        for i in range(steps_at + 1, len(ids) + 1):
            if i < len(ids) and ids[i] not in special:
                continue
            if i > boundary + 1:  # a non-empty step occupies boundary+1 .. i-1
                onsets.append(boundary + 1)
                predictors.append(boundary)
                spans.append((boundary + 1, i))
                is_reg.append(is_regulation(self.decode_text(ids[boundary + 1 : i])))
            if i == len(ids) or ids[i] != self.sep_id:
                if i < len(ids) and ids[i] == self.end_id:
                    end_position = i
                break
            boundary = i
        return TokenRoles(
            task_range=task_range,
            special_positions=special_positions,
            step_onsets=tuple(onsets),
            onset_predictors=tuple(predictors),
            step_spans=tuple(spans),
            step_is_regulation=tuple(is_reg),
            end_position=end_position,
        )

    def onset_predictor_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(batch, pos) bool: positions holding <|steps|>/<|sep|> followed by a non-special.

        Vectorised `TokenRoles.onset_predictors` for a padded batch.
        """
        specials = torch.tensor(sorted(self._special_set), device=ids.device)
        boundary = (ids == self.steps_id) | (ids == self.sep_id)
        next_plain = ~torch.isin(ids[:, 1:], specials)
        mask = torch.zeros_like(boundary)
        mask[:, :-1] = boundary[:, :-1] & next_plain
        return mask

    def step_onset_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(batch, pos) bool: first token of each step (what the predictors predict)."""
        predictors = self.onset_predictor_mask(ids)
        mask = torch.zeros_like(predictors)
        mask[:, 1:] = predictors[:, :-1]
        return mask


def regulation_first_tokens(tokenizer: TaskTokenizer) -> dict[int, list[str]]:
    """The regulation vocabulary as the model sees it: the first token id of each
    regulation action (what an onset predictor emits to start one), sorted, -> the actions
    that start with it. `sorted(...)` of it is the list of regulation token ids."""
    first: dict[int, list[str]] = {}
    for action in REGULATION_ACTIONS:
        first.setdefault(tokenizer.encode_text(action)[0], []).append(action)
    return dict(sorted(first.items()))


def _split_specials(text: str) -> list[str]:
    """Cut `text` between "<" and "|" of every special literal so none can match."""
    cuts = sorted({i + 1 for name in SPECIAL_TOKENS for i in _find_all(text, name)})
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _find_all(text: str, sub: str) -> Iterator[int]:
    i = text.find(sub)
    while i >= 0:
        yield i
        i = text.find(sub, i + 1)


def _strip_pad(ids: list[int], pad_id: int) -> list[int]:
    end = len(ids)
    while end and ids[end - 1] == pad_id:
        end -= 1
    return ids[:end]


def _plain(ids: list[int], special: frozenset[int]) -> list[int]:
    return [t for t in ids if t not in special]


# ----------------------------------------------------------------------------- training


def _training_texts(corpus_dir: Path, batch: int = 4096) -> Iterator[list[str]]:
    """Task strings and steps of both variants' train splits, in file order, batched."""
    buffer: list[str] = []
    for variant in VARIANTS:
        for record in iter_split(corpus_dir, variant, "train"):
            buffer.append(record.task)
            buffer.extend(record.steps)
            if len(buffer) >= batch:
                yield buffer
                buffer = []
    if buffer:
        yield buffer


def build_tokenizer(texts: Iterator[list[str]], vocab_size: int) -> TaskTokenizer:
    """Train a byte-level BPE with the specials at ids 0-4."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(SPECIAL_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return TaskTokenizer(tokenizer)


def train_tokenizer(config: TokenizerConfig) -> Path:
    """Train the shared tokenizer on `config.corpus` and write it to `config.out`."""
    if not config.corpus.is_dir():
        raise UserError(f"{config.corpus}: corpus directory not found")
    if not config.force:
        refuse_existing(config.out, "--out", directory=False)
    # A bad line raises UserError from inside training, before anything is written.
    tokenizer = build_tokenizer(_training_texts(config.corpus), config.vocab_size)
    return tokenizer.save(config.out)
