"""Indirect Object Identification prompts, their corruptions and the logit-difference metric.

IOI (Wang et al. 2022, "Interpretability in the Wild") asks a model to complete
"When Mary and John went to the store, John gave a drink to" with the indirect
object " Mary" (named once) rather than the subject " John" (named twice). The
first two names come in two orders: ABBA (IO first, as above) and BABA (subject
first). Every prompt records the token positions of the four roles the circuit
is described with: IO and S1 (the two first mentions), S2 (the repeated subject)
and END (the last token, whose next-token logits are read).

A prompt is built from *segments*, each name its own segment with a leading
space, and encoded segment by segment. For GPT-2's byte-level BPE and for the
word-level IOI tokenizer alike, encoding at word boundaries equals encoding the
whole string, and a name that encodes to exactly one token sits at a known
position; corruptions only exchange names, so clean and corrupted prompts stay
token-aligned position by position, which activation patching needs.

Corruptions (both keep every non-name token in place):
- `flip_s2`: S2 becomes the IO name ("... Mary gave a drink to"), so the
  correct answer flips and the clean logit difference turns negative — the
  corruption of TransformerLens's exploratory IOI demo.
- `abc`: the three name slots get three fresh distinct names, the paper's "ABC"
  distribution, which removes the IO/S information altogether.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.ioi.config import Corruption

Order = Literal["ABBA", "BABA"]

# Common first names that GPT-2 encodes as one token with a leading space.
NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "Tom", "James", "Dan", "Sarah", "Paul", "Anna",
    "Mark", "Kate", "Mike", "Lisa", "Steve", "Laura", "David", "Emma", "Chris", "Amy",
    "Peter", "Jane", "Jack", "Rose", "Sam", "Grace", "Joe", "Helen", "Adam", "Ruth",
    "Luke", "Claire", "Ben", "Lucy", "Max", "Sophie", "Ryan", "Emily", "Jacob", "Julia",
    "Eric", "Karen", "Kevin", "Linda", "Brian", "Susan", "Scott", "Nancy",
)  # fmt: skip
PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
    "park", "market", "library", "beach", "church", "bank", "hotel", "river",
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "drink", "ring", "kiss", "bone", "basketball", "computer", "necklace", "snack",
    "apple", "book", "letter", "key", "bag", "hat", "ticket", "phone",
)  # fmt: skip

# After the IOI paper's BABA/ABBA templates. `{A}` and `{B}` are the first two
# names (their order decides ABBA/BABA), `{S}` the repeated subject.
TEMPLATES: tuple[str, ...] = (
    "Then, {A} and {B} went to the {place}. {S} gave a {object} to",
    "Then, {A} and {B} had a lot of fun at the {place}. {S} gave a {object} to",
    "Then, {A} and {B} were working at the {place}. {S} decided to give a {object} to",
    "Then, {A} and {B} were thinking about going to the {place}. {S} wanted to give a {object} to",
    "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "After {A} and {B} went to the {place}, {S} gave a {object} to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give it to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give the {object} to",
    "While {A} and {B} were working at the {place}, {S} gave a {object} to",
    "While {A} and {B} were commuting to the {place}, {S} gave a {object} to",
    "After the lunch, {A} and {B} went to the {place}. {S} gave a {object} to",
    "Afterwards, {A} and {B} went to the {place}. {S} gave a {object} to",
    "Then, {A} and {B} had a long argument. Afterwards {S} said to",
    "The {place} {A} and {B} went to had a {object}. {S} gave it to",
    "Friends {A} and {B} found a {object} at the {place}. {S} gave it to",
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
)


@dataclass(frozen=True)
class IOIPrompt:
    """One IOI prompt in words; `tokens` are filled in by `encode_prompts`."""

    template: int
    """Index into `TEMPLATES`."""
    order: Order
    """ABBA: the IO is named first; BABA: the subject is named first."""
    io: str
    """The indirect object, named once: the correct answer."""
    s: str
    """The subject, named twice."""
    place: str
    object: str
    s2: str | None = None
    """The name in the S2 slot when a corruption changed it (None: same as `s`)."""
    first: tuple[str, str] | None = None
    """The names in the first two slots when a corruption changed them."""

    @property
    def names(self) -> tuple[str, str, str]:
        """The names written in slots (first, second, S2)."""
        default = (self.io, self.s) if self.order == "ABBA" else (self.s, self.io)
        a, b = self.first or default
        return a, b, self.s2 or self.s

    def segments(self) -> list[tuple[str, str | None]]:
        """(text, role) pieces; names are their own pieces with a leading space.

        Roles: "IO"/"S1" for the first two names (in order), "S2", and None."""
        a, b, s2 = self.names
        roles = {"A": "IO" if self.order == "ABBA" else "S1"}
        roles["B"] = "S1" if self.order == "ABBA" else "IO"
        text = TEMPLATES[self.template].replace("{place}", self.place)
        text = text.replace("{object}", self.object)
        pieces: list[tuple[str, str | None]] = []
        rest = text
        while rest:
            cut = rest.find("{")
            if cut < 0:
                pieces.append((rest, None))
                break
            if cut:
                pieces.append((rest[:cut].rstrip(" "), None))
            slot = rest[cut + 1]
            name = {"A": a, "B": b, "S": s2}[slot]
            pieces.append(((" " if pieces else "") + name, roles.get(slot, "S2")))
            rest = rest[cut + 3 :]
        return [(t, r) for t, r in pieces if t]

    def text(self) -> str:
        return "".join(t for t, _ in self.segments())


def sample_prompts(
    n: int,
    seed: int,
    *,
    templates: Sequence[int] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    names: Sequence[str] = NAMES,
) -> list[IOIPrompt]:
    """`n` prompts, ABBA and BABA alternating, names drawn from `pairs` (ordered IO, S)
    when given, else two distinct names from `names`."""
    rng = random.Random(seed)
    templates = list(range(len(TEMPLATES))) if templates is None else list(templates)
    prompts = []
    for i in range(n):
        io, s = rng.choice(pairs) if pairs else rng.sample(list(names), 2)
        prompts.append(
            IOIPrompt(
                template=rng.choice(templates),
                order="ABBA" if i % 2 == 0 else "BABA",
                io=io,
                s=s,
                place=rng.choice(PLACES),
                object=rng.choice(OBJECTS),
            )
        )
    return prompts


def corrupt(
    prompts: Sequence[IOIPrompt], kind: Corruption, seed: int, names: Sequence[str] = NAMES
) -> list[IOIPrompt]:
    """Corrupted twins of `prompts` with identical token layout (see module docstring)."""
    rng = random.Random(seed)
    out = []
    for p in prompts:
        if kind == "flip_s2":
            out.append(replace(p, s2=p.io))
        elif kind == "abc":
            a, b, c = rng.sample([n for n in names if n not in (p.io, p.s)], 3)
            out.append(replace(p, first=(a, b), s2=c))
        else:
            raise ValueError(f"unknown corruption {kind!r}; choose 'flip_s2' or 'abc'")
    return out


@dataclass
class IOIBatch:
    """Encoded prompts, right-padded, with per-prompt role positions and answer tokens.

    Right padding never changes the real tokens' activations under causal attention,
    so prompts of different templates share a batch; every metric reads at `end`."""

    tokens: Int[Tensor, "batch pos"]
    io_pos: Int[Tensor, " batch"]
    s1_pos: Int[Tensor, " batch"]
    s2_pos: Int[Tensor, " batch"]
    end_pos: Int[Tensor, " batch"]
    io_token: Int[Tensor, " batch"]
    """Token of the correct answer (the clean prompt's IO)."""
    s_token: Int[Tensor, " batch"]
    """Token of the clean prompt's subject."""
    prompts: list[IOIPrompt]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: str | torch.device) -> IOIBatch:
        return replace(
            self,
            tokens=self.tokens.to(device),
            io_pos=self.io_pos.to(device),
            s1_pos=self.s1_pos.to(device),
            s2_pos=self.s2_pos.to(device),
            end_pos=self.end_pos.to(device),
            io_token=self.io_token.to(device),
            s_token=self.s_token.to(device),
        )

    def subset(self, rows: Sequence[int]) -> IOIBatch:
        index = torch.tensor(list(rows), dtype=torch.long)
        width = int(self.end_pos[index].max()) + 1
        fields = {k: v[index] for k, v in vars(self).items() if isinstance(v, Tensor)}
        fields["tokens"] = fields["tokens"][:, :width]
        return IOIBatch(**fields, prompts=[self.prompts[i] for i in rows])


def encode_prompts(
    prompts: Sequence[IOIPrompt],
    encode: Callable[[str], list[int]],
    *,
    bos: int | None,
    pad: int,
    answers_from: Sequence[IOIPrompt] | None = None,
) -> IOIBatch:
    """Tokenise prompts segment by segment; every name must be exactly one token.

    `answers_from` gives the prompts whose IO/S tokens are the answers (the clean
    prompts, when encoding their corrupted twins), so one metric serves both."""
    rows, roles = [], []
    for prompt in prompts:
        ids = [] if bos is None else [bos]
        where: dict[str, int] = {}
        for text, role in prompt.segments():
            piece = encode(text)
            if role is not None:
                if len(piece) != 1:
                    raise ValueError(f"name {text.strip()!r} is {len(piece)} tokens, need 1")
                where[role] = len(ids)
            ids += piece
        rows.append(ids)
        roles.append(where)
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = torch.tensor(ids)
    ref = answers_from or prompts

    def column(key: str) -> Tensor:
        return torch.tensor([r[key] for r in roles])

    return IOIBatch(
        tokens=tokens,
        io_pos=column("IO"),
        s1_pos=column("S1"),
        s2_pos=column("S2"),
        end_pos=torch.tensor([len(r) - 1 for r in rows]),
        io_token=torch.tensor([_one(encode(" " + p.io)) for p in ref]),
        s_token=torch.tensor([_one(encode(" " + p.s)) for p in ref]),
        prompts=list(prompts),
    )


def _one(ids: list[int]) -> int:
    if len(ids) != 1:
        raise ValueError(f"answer encodes to {len(ids)} tokens, need 1")
    return ids[0]


def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"], batch: IOIBatch
) -> Float[Tensor, " batch"]:
    """logit(IO) − logit(S) at END, per prompt: positive means the IOI behaviour is there."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    end = logits[rows, batch.end_pos.to(logits.device)].float()
    return end[rows, batch.io_token.to(logits.device)] - end[rows, batch.s_token.to(logits.device)]


_Metric = TypeVar("_Metric", Tensor, np.ndarray, float)
"""A patched metric: one value, or a tensor or array of them."""


def normalised_metric(patched: _Metric, clean: float, corrupted: float) -> _Metric:
    """(patched − corrupted) / (clean − corrupted): 0 at the corrupted run, 1 at the clean."""
    return (patched - corrupted) / (clean - corrupted)
