"""Exact activation patching computed only where a patch can change anything.

TransformerLens (`transformer_lens.patching`) runs one full forward per patch. Three
facts of a causal decoder make almost all of that work redundant, and the code here
skips it while staying exact (same arithmetic per token, only the batching differs):

1. Nothing upstream of a patch changes. A patch at layer L joins at block L with the
   corrupted run's residual stream. A head-output or MLP-output patch at layer L changes
   block L's output only where it patches, so it is applied right there (the block's
   output projection and MLP on the patched positions only) and joins at block L + 1.
2. Causal attention: a patch at position p changes nothing before p, at any layer. A
   patched row computes only its suffix p.. ; its attention reads the corrupted run's
   keys and values before p, which are exactly the corrupted run's (a KV-cache prefix,
   as in cached decoding). In the block a row joins, only the positions its patch
   changed differ at the block's input; its other suffix positions take the corrupted
   queries, keys and values, and only their attention, output and MLP are recomputed.
3. The metric reads few positions (`read`, e.g. the final one): in the last block only
   those query positions need attention, output projection and MLP (the other
   positions matter there only through their keys and values), only they are
   unembedded, and positions after the last read one are never computed.

Every patched row is packed as a flat list of its suffix tokens (varlen batching, as in
FlashAttention's `cu_seqlens` and vLLM's packed prefill), rows ordered by the block
they join, so every linear of a block runs once over all rows of every patch with no
padding or waste. Attention alone uses a padded (row, head, pos, d_head) view: the
corrupted prefix keys/values with the recomputed suffix scattered in. Rows of patches
at different positions and layers batch together; `max_chunk_mb` bounds one pass.
Every piece of block arithmetic is the shared unhooked block (`model.fast.block`), so
the linears run on oneDNN when its switch allows (`model.fast.onednn`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interpgpt.model.fast import block as fast

unembed = fast.unembed
"""`model.unembed` (final norm, tied unembedding), unhooked and on oneDNN when usable."""


@dataclass
class CorruptedRun:
    """The unpatched corrupted run, as every patched row reuses it."""

    resid_pre: list[Tensor]
    """Per block (batch pos d_model), plus the final residual stream at index n_layer."""
    resid_mid: list[Tensor]
    q: list[Tensor]
    """Per block, rotated (batch pos head d_head); also `k`, `v`."""
    k: list[Tensor]
    v: list[Tensor]
    z: list[Tensor]
    """Per block (batch pos head d_head), the `attn.hook_z` activation."""
    logits: Tensor
    """(batch pos d_vocab); with `read`, NaN outside it."""

    @property
    def qkv(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        return self.q, self.k, self.v


def _tail(block, resid: Tensor, z: Tensor) -> Tensor:
    """The rest of a block after `attn.hook_z` (z flattened to head * d_head): output
    projection, residual, MLP."""
    return fast.mlp_residual(block, fast.out_residual(block.attn, resid, z))


@torch.no_grad()
def corrupted_run(model, ids: Tensor, read: list[int] | None) -> CorruptedRun:
    """One unpatched forward keeping what patched rows reuse; with `read`, only those
    positions are unembedded."""
    batch, n_pos = ids.shape
    if n_pos > model.cfg.n_ctx:
        raise ValueError(f"{n_pos} tokens exceed the model context of {model.cfg.n_ctx}")
    cos, sin = fast.rope(model, torch.arange(n_pos, device=ids.device))
    resid = model.embed(ids)
    run = CorruptedRun([], [], [], [], [], [], resid)
    for block in model.blocks:
        attended = fast.attention_residual(block, resid, cos, sin)
        for store, value in zip(
            (run.resid_pre, run.resid_mid, run.q, run.k, run.v, run.z),
            (resid, *attended),
            strict=True,
        ):
            store.append(value.contiguous())
        resid = fast.mlp_residual(block, attended.mid)
    run.resid_pre.append(resid)
    if read is None:
        run.logits = model.unembed(resid)
    else:
        run.logits = resid.new_full((batch, n_pos, model.cfg.vocab_size), float("nan"))
        run.logits[:, read] = model.unembed(resid[:, read])
    return run


@dataclass
class Entries:
    """Where the patched rows of a chunk of sites join, site-major (sorted by `block`)."""

    block: Tensor
    """(site,) the block each site's rows join; n_layer: straight to the unembedding."""
    first: Tensor
    """(site,) the first position each patch changes."""
    fresh: Tensor
    """(site batch fresh d_model) the patched residual stream entering `block` at
    positions first, first + 1, ... (the only ones that differ there)."""


@dataclass
class _Rows:
    """The packed layout: rows (site-major, then batch) and their suffix tokens."""

    batch: Tensor  # (row,) batch index into the corrupted run
    first: Tensor  # (row,)
    token_row: Tensor  # (token,)
    token_pos: Tensor  # (token,)
    fresh: Tensor  # (token,) bool: differs from the corrupted run where its row joins
    row_end: list[int]  # per block b, and after the last: rows joined at blocks <= b
    token_end: list[int]  # the same in tokens


def _layout(entries: Entries, n_batch: int, n_pos: int, n_block: int) -> _Rows:
    device = entries.block.device
    first = entries.first.repeat_interleave(n_batch)
    lengths = n_pos - first
    n_token = int(lengths.sum())
    token_row = torch.repeat_interleave(torch.arange(len(first), device=device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    offset = torch.arange(n_token, device=device) - starts[token_row]
    block = entries.block.repeat_interleave(n_batch)
    row_end = [int((block <= b).sum()) for b in range(n_block + 1)]
    token_end = [int(lengths[:r].sum()) for r in row_end]
    return _Rows(
        batch=torch.arange(n_batch, device=device).repeat(len(entries.block)),
        first=first,
        token_row=token_row,
        token_pos=first[token_row] + offset,
        fresh=offset < entries.fresh.shape[2],
        row_end=row_end,
        token_end=token_end,
    )


def _joining(rows: _Rows, entries: Entries, corrupted: Tensor, b: int) -> Tensor:
    """Residual stream of the tokens of rows joining at block b: corrupted, with each
    row's patched positions from `entries.fresh`."""
    lo, hi = (rows.token_end[b - 1] if b else 0), rows.token_end[b]
    token_row, pos = rows.token_row[lo:hi], rows.token_pos[lo:hi]
    x = corrupted[rows.batch[token_row], pos]
    fresh = rows.fresh[lo:hi]
    row, offset = token_row[fresh], (pos - rows.first[token_row])[fresh]
    n_batch = entries.fresh.shape[1]
    x[fresh] = entries.fresh[row // n_batch, row % n_batch, offset]
    return x


def _padded(run_t: Tensor, rows: _Rows, n_row: int, flat: Tensor, value: Tensor) -> Tensor:
    """(row pos head d_head): the corrupted run's tensor of each row's batch element, with
    the recomputed tokens scattered in at `flat` (row * pos + position)."""
    out = run_t.index_select(0, rows.batch[:n_row])
    out.view(len(out) * out.shape[1], -1).index_copy_(0, flat, value.flatten(-2))
    return out


def _block(model, layer: int, run: CorruptedRun, rows: _Rows, x: Tensor, fresh: Tensor):
    """Block `layer` on the packed tokens x (every active row's suffix)."""
    block, n_row, pos = model.blocks[layer], rows.row_end[layer], rows.token_pos[: len(x)]
    n_pos = run.q[layer].shape[1]
    h = fast.rms_norm(block.ln1, x[fresh])
    q, k, v = fast.qkv(block.attn, h, *fast.rope(model, pos[fresh]))
    flat = rows.token_row[: len(x)] * n_pos + pos
    at = flat[fresh]
    q, k, v = (
        _padded(t[layer], rows, n_row, at, new) for t, new in zip(run.qkv, (q, k, v), strict=True)
    )
    z = fast.attend(q, k, v)
    return _tail(block, x, z.reshape(n_row * n_pos, -1).index_select(0, flat))


def _last_block(model, layer, run, rows: _Rows, x, fresh, read: list[int]):
    """The last block at the read positions only: keys and values at every fresh token,
    queries, output and MLP only where the metric reads. Returns (out, token indices)."""
    block, n_row, pos = model.blocks[layer], rows.row_end[layer], rows.token_pos[: len(x)]
    n_pos, width = run.q[layer].shape[1], len(read)
    is_read = torch.zeros(n_pos, dtype=torch.bool, device=x.device)
    is_read[read] = True
    column = torch.cumsum(is_read, 0) - 1
    h = fast.rms_norm(block.ln1, x[fresh])
    k, v = fast.qkv(block.attn, h, *fast.rope(model, pos[fresh]), "kv")
    at = rows.token_row[fresh] * n_pos + pos[fresh]
    k_pad = _padded(run.k[layer], rows, n_row, at, k)
    v_pad = _padded(run.v[layer], rows, n_row, at, v)
    fresh_read = fresh[is_read[pos[fresh]]]
    (q,) = fast.qkv(block.attn, h[is_read[pos[fresh]]], *fast.rope(model, pos[fresh_read]), "q")
    at = rows.token_row[fresh_read] * width + column[pos[fresh_read]]
    q_pad = _padded(run.q[layer][:, read], rows, n_row, at, q)
    mask = None  # the last position attends to every key
    if read != [n_pos - 1]:
        keys = torch.arange(n_pos, device=x.device)
        mask = keys[None] <= torch.tensor(read, device=x.device)[:, None]
    z = fast.attend(q_pad, k_pad, v_pad, mask).reshape(n_row * width, -1)
    keep = is_read[pos].nonzero().squeeze(1)
    z = z.index_select(0, rows.token_row[keep] * width + column[pos[keep]])
    return _tail(block, x[keep], z), keep


@torch.no_grad()
def patched_final(model, run: CorruptedRun, entries: Entries, read: list[int] | None):
    """Run every site's rows to the end. Returns (final residual stream of the tokens the
    metric reads, their row, their position); rows are site-major then batch."""
    n_batch, n_pos = run.resid_pre[0].shape[:2]
    n_layer = len(model.blocks)
    rows = _layout(entries, n_batch, n_pos, n_layer)
    x = run.resid_pre[0].new_empty(0, model.cfg.d_model)
    index = torch.arange(rows.token_end[-1], device=x.device)
    kept = index[:0]
    for layer in range(n_layer):
        joined = rows.token_end[layer - 1] if layer else 0
        x = torch.cat([x, _joining(rows, entries, run.resid_pre[layer], layer)])
        fresh = torch.cat([index[:joined], index[joined : len(x)][rows.fresh[joined : len(x)]]])
        if len(x) == 0:
            continue
        if read is not None and layer == n_layer - 1:
            x, kept = _last_block(model, layer, run, rows, x, fresh, read)
        else:
            x, kept = _block(model, layer, run, rows, x, fresh), index[: len(x)]
    # Rows joining after the last block change the logits only at their patched tokens.
    tail = index[rows.token_end[n_layer - 1] :]
    keep = rows.fresh[tail]
    if read is not None:
        is_read = torch.zeros(n_pos, dtype=torch.bool, device=x.device)
        is_read[read] = True
        keep &= is_read[rows.token_pos[tail]]
    last = _joining(rows, entries, run.resid_pre[n_layer], n_layer)[keep]
    tail = tail[keep]
    kept = torch.cat([kept, tail])
    return torch.cat([x, last]), rows.token_row[kept], rows.token_pos[kept]


def site_entries(model, site: str, specs: list, run: CorruptedRun, clean: list[Tensor]) -> Entries:
    """Where the rows of each patch join and what they carry (see the module docstring, 1).

    specs: `patching_sites.SiteSpec`s sorted by layer; clean: per layer the clean run's
    activation at the site's hook."""
    device = run.logits.device
    n_batch, n_pos, d_model = run.resid_pre[0].shape
    layer = torch.tensor([spec.layer for spec in specs], device=device)
    width = n_pos if site == "attn_head_out" else 1
    fresh = run.logits.new_empty(len(specs), n_batch, width, d_model)
    for at in sorted(set(layer.tolist())):
        group = (layer == at).nonzero().squeeze(1)
        chosen = [specs[i] for i in group.tolist()]
        fresh[group] = _entry(model.blocks[at], site, chosen, run, clean[at], at)
    return Entries(
        block=layer if site == "resid_pre" else layer + 1,
        first=torch.tensor([spec.first for spec in specs], device=device),
        fresh=fresh,
    )


def _entry(block, site: str, specs: list, run: CorruptedRun, clean: Tensor, layer: int) -> Tensor:
    """(site batch fresh d_model) for patches of one layer: the clean residual stream for
    resid_pre; block `layer`'s output at the patched positions otherwise."""
    device = clean.device
    pos = torch.tensor([spec.first for spec in specs], device=device)
    if site == "resid_pre":
        return clean[:, pos].transpose(0, 1)[:, :, None]
    if site == "mlp_out":  # resid_post = resid_mid + mlp_out, with the clean mlp_out
        return (run.resid_mid[layer][:, pos] + clean[:, pos]).transpose(0, 1)[:, :, None]
    heads = torch.tensor([spec.where[-1] for spec in specs], device=device)
    sites = torch.arange(len(specs), device=device)
    if site == "attn_head_out_by_pos":
        z = run.z[layer][:, pos].transpose(0, 1).clone()  # (site batch head d_head)
        z[sites, :, heads] = clean[:, pos, heads].transpose(0, 1)
        resid = run.resid_pre[layer][:, pos].transpose(0, 1)
        return _tail(block, resid, z.flatten(-2))[:, :, None]
    z = run.z[layer].expand(len(specs), *run.z[layer].shape).clone()  # (site batch pos head d)
    z[sites, :, :, heads] = clean[:, :, heads].permute(2, 0, 1, 3)
    return _tail(block, run.resid_pre[layer].expand(len(specs), -1, -1, -1), z.flatten(-2))
