"""Attention-pattern head scores: the head families the IOI circuit is described with.

All four are means of single attention-pattern entries (`blocks.{l}.attn.hook_pattern`,
batch head query key), read from one cached forward pass:

- duplicate-token: attention from S2 to S1 on IOI prompts — the head notices that
  the current name occurred before (Wang et al. 2022, §3.2).
- previous-token: attention from each real token to the one before it, on IOI prompts.
- induction: on a random token sequence repeated twice, attention from each token
  of the second copy to the token *after* its earlier occurrence (Olsson et al.
  2022; TransformerLens `head_detector`'s "induction_head" pattern; Elhage et al.
  2021's repeated-random-tokens test).
- name-mover: attention from END to the IO name, against attention to the two S
  mentions; name movers attend to IO and copy it to the logits (Wang et al. §3.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.ioi.prompts import IOIBatch


@dataclass
class HeadScores:
    """Per-head scores, each an array of shape (layer, head)."""

    duplicate_token: np.ndarray
    previous_token: np.ndarray
    induction: np.ndarray
    name_mover_io: np.ndarray
    """Attention END -> IO."""
    name_mover_s: np.ndarray
    """Attention END -> S1 plus END -> S2."""


def _pattern_names(name: str) -> bool:
    return name.endswith("attn.hook_pattern")


@torch.no_grad()
def cached_patterns(model, tokens: Int[Tensor, "batch pos"]) -> list[Tensor]:
    """Attention patterns of every layer, each (batch, head, query, key), in fp32."""
    _, cache = model.run_with_cache(tokens, names_filter=_pattern_names)
    n_layer = len(model.blocks)
    return [cache[f"blocks.{layer}.attn.hook_pattern"].float() for layer in range(n_layer)]


def ioi_pattern_scores(
    patterns: list[Tensor], batch: IOIBatch
) -> dict[str, Float[np.ndarray, "layer head"]]:
    """Duplicate-token, previous-token and name-mover scores on IOI prompts."""
    rows = torch.arange(len(batch), device=patterns[0].device)
    b = batch.to(patterns[0].device)
    pos = torch.arange(b.tokens.shape[1], device=rows.device)
    real = (pos[None, :] >= 1) & (pos[None, :] <= b.end_pos[:, None])  # (batch, pos)
    out: dict[str, list[Tensor]] = {k: [] for k in ("dup", "prev", "io", "s")}
    for pattern in patterns:
        at = pattern.permute(0, 2, 3, 1)  # (batch, query, key, head)
        out["dup"].append(at[rows, b.s2_pos, b.s1_pos].mean(0))
        prev = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)  # (batch, head, pos - 1)
        mask = real[:, None, 1:].float()
        out["prev"].append((prev * mask).sum((0, 2)) / mask.sum((0, 2)))
        out["io"].append(at[rows, b.end_pos, b.io_pos].mean(0))
        out["s"].append((at[rows, b.end_pos, b.s1_pos] + at[rows, b.end_pos, b.s2_pos]).mean(0))
    return {k: torch.stack(v).cpu().numpy() for k, v in out.items()}


def repeated_random_tokens(
    vocab_ids: list[int], bos: int | None, n: int, half: int, seed: int
) -> Int[Tensor, "batch pos"]:
    """`n` rows of [bos] + r + r with r of `half` tokens drawn from `vocab_ids`."""
    gen = torch.Generator().manual_seed(seed)
    choice = torch.tensor(vocab_ids)[torch.randint(len(vocab_ids), (n, half), generator=gen)]
    parts = [choice, choice]
    if bos is not None:
        parts.insert(0, torch.full((n, 1), bos, dtype=torch.long))
    return torch.cat(parts, dim=1)


def induction_scores(patterns: list[Tensor], half: int, offset: int) -> np.ndarray:
    """Mean attention from each second-copy token to the token after its first occurrence.

    `offset` is the position of the first copy's first token (1 with a BOS)."""
    queries = torch.arange(offset + half, offset + 2 * half)
    keys = queries - half + 1
    return torch.stack([p[:, :, queries, keys].mean((0, 2)) for p in patterns]).cpu().numpy()


def head_scores(subject, batch: IOIBatch, n_random: int = 32, half: int = 12) -> HeadScores:
    """All four head scores of `subject` (see module docstring)."""
    ioi = ioi_pattern_scores(cached_patterns(subject.model, batch.tokens), batch)
    n_ctx = getattr(subject.model.cfg, "n_ctx", 2 * half + 1)
    half = min(half, (n_ctx - 1) // 2)
    rand = repeated_random_tokens(subject.vocab_ids, subject.bos, n_random, half, seed=0)
    offset = 0 if subject.bos is None else 1
    induction = induction_scores(
        cached_patterns(subject.model, rand.to(subject.device)), half, offset
    )
    return HeadScores(ioi["dup"], ioi["prev"], induction, ioi["io"], ioi["s"])
