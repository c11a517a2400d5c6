"""Residual-stream activations streamed from a model over a corpus, for SAE training.

The model is run over batches of training sequences with a capture hook on each wanted
`blocks.{layer}.hook_resid_post` (`run_with_cache(names_filter=…, stop_at_layer=…)`, so
nothing past the deepest wanted block is computed); only real (non-pad) positions are
kept. Activations go into a bounded shuffle buffer, as SAELens's mixing buffer does:
fill to `buffer_tokens`, shuffle, hand out the first half as training batches, keep the
second half and refill. Neighbouring tokens of one sequence are strongly correlated,
and the shuffle spreads them over many steps. Memory is bounded by the buffer, not by
the token budget: the corpus is cycled in a fresh order each epoch.

Several hooks share one stream (one model pass feeds the SAEs of every wanted layer),
which is how `train-all` trains a model's SAEs together.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.corpus.build import CorpusRecord
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.errors import UserError


def hook_layer(hook_name: str) -> int:
    """Block index of a `blocks.{layer}.…` hook name."""
    parts = hook_name.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise UserError(f"hook {hook_name!r}: SAEs read blocks.{{layer}}.* hooks")
    return int(parts[1])


def encode_sequences(
    tokenizer: TaskTokenizer, records: Sequence[CorpusRecord], n_ctx: int
) -> list[list[int]]:
    """Token ids of every record that fits the context (longer ones are dropped)."""
    encoded = (tokenizer.encode_example(r.task, r.steps) for r in records)
    sequences = [ids for ids in encoded if len(ids) <= n_ctx]
    if not sequences:
        raise UserError("no corpus example fits the model context; nothing to train an SAE on")
    return sequences


def cycle_sequences(sequences: list[list[int]], seed: int) -> Iterator[list[int]]:
    """The sequences forever, in a fresh seeded order each epoch."""
    rng = random.Random(seed)
    order = list(range(len(sequences)))
    while True:
        rng.shuffle(order)
        for i in order:
            yield sequences[i]


def pad_batch(
    sequences: Sequence[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Right-padded ids and lengths (a right pad never affects earlier positions)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences])
    return ids.to(device), lengths.to(device)


@torch.no_grad()
def capture(
    model, ids: Tensor, lengths: Tensor, hooks: Sequence[str], autocast: bool = False
) -> dict[str, Float[Tensor, "n_tokens d_model"]]:
    """fp32 activations at `hooks`, real positions only, flattened in (batch, pos) order."""
    deepest = max(hook_layer(h) for h in hooks)
    stop = deepest + 1 if deepest + 1 < model.cfg.n_layer else None
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        _, cache = model.run_with_cache(ids, names_filter=list(hooks), stop_at_layer=stop)
    valid = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
    return {h: cache[h][valid].float() for h in hooks}


def collect_activations(
    model,
    sequences: Sequence[list[int]],
    hooks: Sequence[str],
    pad_id: int,
    seq_batch: int = 64,
) -> dict[str, Float[Tensor, "n_tokens d_model"]]:
    """All real-position activations of `sequences` (for held-out evaluation), in fp32."""
    device = next(model.parameters()).device
    chunks: dict[str, list[Tensor]] = {h: [] for h in hooks}
    for start in range(0, len(sequences), seq_batch):
        ids, lengths = pad_batch(sequences[start : start + seq_batch], pad_id, device)
        for h, acts in capture(model, ids, lengths, hooks).items():
            chunks[h].append(acts)
    return {h: torch.cat(c) for h, c in chunks.items()}


def activation_stream(
    model,
    sequences: Iterator[list[int]],
    hooks: Sequence[str],
    *,
    pad_id: int,
    batch_size: int,
    buffer_tokens: int,
    seq_batch: int = 64,
    seed: int = 0,
    autocast: bool = True,
) -> Iterator[dict[str, Float[Tensor, "batch d_model"]]]:
    """Endless shuffled training batches {hook: (batch_size, d_model)}, token-aligned."""
    if buffer_tokens < 2 * batch_size:
        raise UserError(
            f"buffer of {buffer_tokens} tokens is smaller than two batches of {batch_size}; "
            "raise the buffer or lower the batch size"
        )
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    kept: dict[str, Tensor] = {}
    while True:
        buffer = _refill(model, sequences, hooks, kept, buffer_tokens, pad_id, seq_batch, autocast)
        n = next(iter(buffer.values())).shape[0]
        perm = torch.randperm(n, generator=generator).to(device)
        buffer = {h: acts[perm] for h, acts in buffer.items()}
        half = (n // 2) // batch_size * batch_size
        for start in range(0, half, batch_size):
            yield {h: acts[start : start + batch_size] for h, acts in buffer.items()}
        kept = {h: acts[half:] for h, acts in buffer.items()}


def memory_stream(
    acts: dict[str, Float[Tensor, "n d_model"]], batch_size: int, seed: int = 0
) -> Iterator[dict[str, Float[Tensor, "batch d_model"]]]:
    """Endless shuffled training batches of activations already in memory (token-aligned
    across hooks): each epoch a fresh seeded order, a batch never crossing two epochs. For
    a dictionary trained on a few texts, where streaming from the model is not needed."""
    n = next(iter(acts.values())).shape[0]
    if n < batch_size:
        raise UserError(f"{n} activations are fewer than one batch of {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            rows = perm[start : start + batch_size]
            yield {h: x[rows.to(x.device)] for h, x in acts.items()}


def _refill(
    model: torch.nn.Module,
    sequences: Iterator[list[int]],
    hooks: Sequence[str],
    kept: dict[str, Tensor],
    buffer_tokens: int,
    pad_id: int,
    seq_batch: int,
    autocast: bool,
) -> dict[str, Tensor]:
    """Run the model on fresh sequences until the buffer holds `buffer_tokens` tokens."""
    device = next(model.parameters()).device
    chunks: dict[str, list[Tensor]] = {h: [kept[h]] if h in kept else [] for h in hooks}
    n = next(iter(kept.values())).shape[0] if kept else 0
    while n < buffer_tokens:
        batch = [next(sequences) for _ in range(seq_batch)]
        ids, lengths = pad_batch(batch, pad_id, device)
        for h, acts in capture(model, ids, lengths, hooks, autocast).items():
            chunks[h].append(acts)
        n += int(lengths.sum())
    return {h: torch.cat(c) for h, c in chunks.items()}
