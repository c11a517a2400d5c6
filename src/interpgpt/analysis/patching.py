"""Activation patching and attribution patching: where does the model decide "regulation next"?

Activation patching (Meng et al. 2022, "ROME"; Wang et al. 2022, "IOI"; the best-practice
guide of Heimersheim & Nanda 2024) runs the model on a *corrupted* input, replaces one
activation by its value on the *clean* input, and reads a metric off the logits: sites
whose clean value restores the clean behaviour carry the information that tells the
two inputs apart. Semantics follow `transformer_lens.patching` exactly — the same
sites, index orders and result shapes, the metric a callable from logits
(batch, pos, d_vocab) to a scalar over the whole batch — and the results equal its
`get_act_patch_resid_pre` (layer, pos), `get_act_patch_attn_head_out_all_pos`
(layer, head), `get_act_patch_attn_head_out_by_pos` (layer, pos, head) and
`get_act_patch_mlp_out` (layer, pos) (tested to 1e-4). Head outputs are patched on
`attn.hook_z`, as TransformerLens does.

Speed. TransformerLens runs one full forward per site. Here many sites share one
forward: the corrupted input is stacked once per site along the batch and a hook from
`interventions.patch_sites` patches each block of rows differently. Nothing upstream
of a patch changes, so a site at layer l joins the stacked batch at block l from the
cached corrupted `resid_pre` (a wavefront: block k runs every row whose patch sits at
a layer <= k). A patch at position p cannot change positions before p (causal
attention), so sites are taken in order of position and a chunk whose first patch is
at p computes only positions p.., with the corrupted run's keys and values before p as
a KV-cache prefix; its logits before p are the corrupted ones. When the metric reads
only some positions (`metric_positions`, e.g. the final one), only those are unembedded
and the last block's MLP runs only there. Every result is still exact.

Attribution patching (Nanda 2023, "Attribution Patching"; Syed et al. 2023) is the
first-order approximation: effect ~ (clean - corrupted) . d metric / d act, with the
gradient taken on the corrupted run — one forward and one backward for every site at
once. It is reported beside the exact effects with their correlation.

Default pairs (`build_pairs`): for one held-out task, the clean input is an ADHD
decomposition cut right after an onset predictor (`<|steps|>`/`<|sep|>`) whose next
step is a regulation action; the corrupted input is a standard decomposition of the
same task cut after an onset predictor, of exactly the same token length (both share
the `<|task|>…<|steps|>` header). Every pair of one run must share one length to
stack into one batch, so the length matched by the most tasks is used. The default
metric (`RegulationLogitDiff`) is a logit difference between token classes at the
final position: logsumexp of the logits of the regulation actions' first tokens minus
logsumexp of the logits of the content steps' first tokens seen in the same records
(the log-odds of "a regulation step starts next" among step onsets; it is the plain
logit difference when each class has one token), averaged over pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interpgpt.analysis.data import resolve_device
from interpgpt.analysis.interventions import Hook, act_name, patch_sites
from interpgpt.analysis.plots import HeatmapPanel, save_heatmaps
from interpgpt.artifacts import load_model
from interpgpt.io import UserError, provenance, read_jsonl, write_json

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]
Site = Literal["resid_pre", "attn_head_out", "attn_head_out_by_pos", "mlp_out"]
SITES: tuple[Site, ...] = ("resid_pre", "attn_head_out", "attn_head_out_by_pos", "mlp_out")
RESULT_FILE = "patching.json"

# Per site: the hook it patches and the axes after `layer`, in TransformerLens's order.
_SITE_HOOK = {
    "resid_pre": "resid_pre",
    "attn_head_out": "z",
    "attn_head_out_by_pos": "z",
    "mlp_out": "mlp_out",
}
_SITE_AXES = {
    "resid_pre": ("layer", "pos"),
    "attn_head_out": ("layer", "head"),
    "attn_head_out_by_pos": ("layer", "pos", "head"),
    "mlp_out": ("layer", "pos"),
}


@dataclass
class _CorruptedRun:
    """What every patched forward reuses from the unpatched corrupted run."""

    logits: Tensor  # (batch pos d_vocab)
    resid_pre: list[Tensor]  # per layer (batch pos d_model)
    keys: list[Tensor]  # per layer, rotated (batch head pos d_head)
    values: list[Tensor]


@torch.no_grad()
def _corrupted_run(model, ids: Tensor, read: list[int] | None) -> _CorruptedRun:
    """One unpatched forward that keeps each block's input and rotated keys/values (the
    blocks write them into per-layer KV buffers, as in cached decoding). With `read`,
    only those positions are unembedded; the others are NaN."""
    batch, n_pos = ids.shape
    if n_pos > model.cfg.n_ctx:
        raise ValueError(f"{n_pos} tokens exceed the model context of {model.cfg.n_ctx}")
    cos, sin = model.rope_cos[:n_pos][None], model.rope_sin[:n_pos][None]
    resid = model.hook_embed(model.embed(ids))
    run = _CorruptedRun(logits=resid, resid_pre=[], keys=[], values=[])
    for block in model.blocks:
        run.resid_pre.append(resid)
        shape = (batch, model.cfg.n_head, n_pos, model.cfg.d_head)
        kv = (resid.new_empty(shape), resid.new_empty(shape), 0)
        resid = block(resid, cos, sin, None, kv)
        run.keys.append(kv[0])
        run.values.append(kv[1])
    if read is None:
        run.logits = model.unembed(resid)
    else:
        run.logits = resid.new_full((batch, n_pos, model.cfg.vocab_size), float("nan"))
        run.logits[:, read] = model.unembed(resid[:, read])
    return run


class _SiteSpec(NamedTuple):
    """One patch: its layer, its index after the layer (TransformerLens's order), and the
    first position it changes (0 for a patch over every position)."""

    layer: int
    where: tuple[int, ...]
    first: int


def _all_sites(site: Site, n_layer: int, n_pos: int, n_head: int) -> list[_SiteSpec]:
    """Every patch of a site kind, ordered by first patched position, then layer."""
    per_layer: list[tuple[tuple[int, ...], int]]
    if site == "attn_head_out":
        per_layer = [((head,), 0) for head in range(n_head)]
    elif site == "attn_head_out_by_pos":
        per_layer = [((pos, head), pos) for pos in range(n_pos) for head in range(n_head)]
    else:
        per_layer = [((pos,), pos) for pos in range(n_pos)]
    sites = [_SiteSpec(layer, i, first) for layer in range(n_layer) for i, first in per_layer]
    return sorted(sites, key=lambda s: (s.first, s.layer))


def _site_mask(site: Site, index: tuple[int, ...], n_pos: int, n_head: int) -> Tensor:
    """Which entries of the hooked activation's (pos[, head]) dims one patch replaces."""
    if site in ("resid_pre", "mlp_out"):
        mask = torch.zeros(n_pos, dtype=torch.bool)
        mask[index[0]] = True
        return mask
    mask = torch.zeros(n_pos, n_head, dtype=torch.bool)
    if site == "attn_head_out":
        mask[:, index[0]] = True
    else:
        mask[index[0], index[1]] = True
    return mask


def _plan_chunks(
    sites: list[_SiteSpec], n_pos: int, per_chunk: int, min_sites: int, max_waste: float = 0.25
) -> list[list]:
    """Cut position-sorted sites into chunks of at most `per_chunk`. A chunk runs from its
    first site's position, so a later site recomputes (p - start) unchanged positions; a
    new chunk starts at a position boundary once the current one has `min_sites` (batched
    enough), or when that waste would exceed `max_waste` of the site's useful positions."""
    chunks: list[list[_SiteSpec]] = [[]]
    for spec in sites:
        current = chunks[-1]
        boundary = bool(current) and spec.first != current[-1].first
        waste = (spec.first - current[0].first) / (n_pos - spec.first) if current else 0.0
        full = len(current) >= per_chunk
        if current and (full or (boundary and (len(current) >= min_sites or waste > max_waste))):
            chunks.append([])
        chunks[-1].append(spec)
    return chunks


def _kv_prefix(run: _CorruptedRun, layer: int, start: int, rows: int):
    """Per-layer KV buffers for `rows` rows holding the corrupted keys/values before `start`."""
    keys, values = run.keys[layer], run.values[layer]
    reps = rows // keys.shape[0]
    k_buf = keys.new_empty(rows, *keys.shape[1:])
    v_buf = torch.empty_like(k_buf)
    k_buf[:, :, :start] = keys[:, :, :start].repeat(reps, 1, 1, 1)
    v_buf[:, :, :start] = values[:, :, :start].repeat(reps, 1, 1, 1)
    return k_buf, v_buf, start


def _run_chunk(model, run, chunk, start, patch_at, read, trim: bool):
    """Logits of every patch of a chunk, computed as a wavefront over the blocks.

    Rows of a patch at layer l join the batch at block l with the corrupted resid_pre
    (stacked site-major); `patch_at(layer, specs_so_far, n_new)` sets the hook that patches
    only the rows joining there. Every row computes positions start.. with the corrupted
    keys/values before `start` as a cache prefix. Returns the logits at positions start..
    or, with `read`, only at those absolute positions: (n_sites * batch, pos', d_vocab);
    with `trim` as well, the last block's MLP runs only at the read positions.
    """
    width = run.logits.shape[1]
    cos, sin = model.rope_cos[start:width][None], model.rope_sin[start:width][None]
    mask = None  # start == 0: the plain causal kernel
    if start > 0:
        causal = torch.ones(width - start, width, dtype=torch.bool, device=cos.device)
        mask = causal.tril(start)[None, None]
    keep = None if read is None else [pos - start for pos in read]
    resid, joined = None, []
    for layer, block in enumerate(model.blocks):
        new = [spec for spec in chunk if spec.layer == layer]
        if new:
            entering = run.resid_pre[layer][:, start:].repeat(len(new), 1, 1)
            resid = entering if resid is None else torch.cat([resid, entering])
            joined += new
        patch_at(layer, joined, len(new))
        if resid is None:
            continue
        kv = _kv_prefix(run, layer, start, resid.shape[0]) if start > 0 else None
        if keep is not None and trim and layer == len(model.blocks) - 1:
            return model.unembed(_last_block(block, resid, cos, sin, mask, kv, keep)), joined
        resid = block(resid, cos, sin, mask, kv)
    assert resid is not None, "a chunk holds at least one site"
    return model.unembed(resid if keep is None else resid[:, keep]), joined


def _last_block(block, resid, cos, sin, mask, kv, keep: list[int]) -> Tensor:
    """`Block.forward` with its MLP half only at positions `keep`: in the last block the
    other positions matter only through the keys/values the attention half makes."""
    resid = block.hook_resid_pre(resid)
    attn_out = block.hook_attn_out(block.attn(block.ln1(resid), cos, sin, mask, kv))
    resid = block.hook_resid_mid(resid + attn_out)[:, keep]
    return block.hook_resid_post(resid + block.hook_mlp_out(block.mlp(block.ln2(resid))))


@torch.no_grad()
def activation_patch(
    model,
    clean_ids: Int[Tensor, "batch pos"],
    corrupted_ids: Int[Tensor, "batch pos"],
    metric: Metric,
    site: Site,
    *,
    metric_positions: Sequence[int] | None = None,
    clean_cache: dict[str, Tensor] | None = None,
    max_chunk_mb: int = 256,
    min_chunk_rows: int = 96,
) -> Tensor:
    """Exact activation patching of every `site` index: the metric of the corrupted run
    with that one activation taken from the clean run. Shape as TransformerLens's
    (`_SITE_AXES`).

    metric_positions: the positions whose logits the metric reads (e.g. `[-1]`); only
        those are unembedded and the others are NaN where a patch could change them, so
        a metric that reads elsewhere fails loudly. None: full logits (slower).
    clean_cache: hook name -> clean activation, used instead of running `clean_ids`.
    max_chunk_mb: memory budget of one stacked forward; 0 patches one site per forward.
    min_chunk_rows: batch rows a chunk gathers before it may end at a position boundary.
    """
    if clean_ids.shape != corrupted_ids.shape:
        raise ValueError(
            f"clean {tuple(clean_ids.shape)} and corrupted {tuple(corrupted_ids.shape)} "
            "inputs must have the same shape"
        )
    n_layer, n_head = len(model.blocks), model.cfg.n_head
    batch, n_pos = corrupted_ids.shape
    read = None if metric_positions is None else sorted({p % n_pos for p in metric_positions})
    names = [act_name(_SITE_HOOK[site], layer) for layer in range(n_layer)]
    if clean_cache is None:
        _, clean_cache = model.run_with_cache(clean_ids, names_filter=lambda n: n in names)
    run = _corrupted_run(model, corrupted_ids, read)
    width = n_pos if read is None else len(read)
    site_bytes = 4 * batch * (width * run.logits.shape[-1] + 8 * n_pos * model.cfg.d_model)
    per_chunk = max(1, (max_chunk_mb << 20) // site_bytes)
    sites = _all_sites(site, n_layer, n_pos, n_head)
    out = torch.zeros(n_layer, *[n_pos if a == "pos" else n_head for a in _SITE_AXES[site][1:]])
    active: dict[str, Hook] = {}

    def dispatch(act: Tensor, hook) -> Tensor | None:
        patch = active.get(hook.name)
        return None if patch is None else patch.fn(act, hook)

    with model.hooks(fwd_hooks=[Hook(name, dispatch) for name in names]):
        for chunk in _plan_chunks(sites, n_pos, per_chunk, -(-min_chunk_rows // batch)):
            start = chunk[0].first
            patch_at = _patch_setter(site, names, clean_cache, active, start, n_pos, n_head)
            tail_read = None if read is None else [p for p in read if p >= start]
            # Trimming the last MLP would hide it from an mlp_out patch there.
            trim = site != "mlp_out"
            tail, joined = _run_chunk(model, run, chunk, start, patch_at, tail_read, trim)
            _score(out, metric, run.logits, tail, joined, start, tail_read)
    return out


def _patch_setter(site, names, clean_cache, active: dict, start, n_pos, n_head):
    """`patch_at` for `_run_chunk`: at block `layer`, patch only the rows joining there."""
    blank = torch.zeros_like(_site_mask(site, (0, 0), n_pos, n_head))

    def patch_at(layer: int, joined: list[_SiteSpec], n_new: int) -> None:
        active.clear()
        if n_new:
            old = [blank] * (len(joined) - n_new)
            new = [_site_mask(site, spec.where, n_pos, n_head) for spec in joined[-n_new:]]
            masks = torch.stack(old + new)[:, start:]
            clean = clean_cache[names[layer]][:, start:]
            active[names[layer]] = patch_sites(names[layer], clean, masks)

    return patch_at


def _score(out, metric, corrupted_logits, tail, joined, start, read) -> None:
    """Evaluate the metric on each patch's logits: corrupted logits before `start`, the
    patched tail after (NaN at positions the metric promised not to read)."""
    batch = corrupted_logits.shape[0]
    tail = tail.view(len(joined), batch, *tail.shape[1:])
    logits = corrupted_logits.clone()
    if read is not None:
        logits[:, start:] = float("nan")
    for row, spec in enumerate(joined):
        if read is None:
            logits[:, start:] = tail[row]
        else:
            logits[:, read] = tail[row]
        out[(spec.layer, *spec.where)] = float(metric(logits))


def attribution_patch(
    model,
    clean_ids: Int[Tensor, "batch pos"],
    corrupted_ids: Int[Tensor, "batch pos"],
    metric: Metric,
    sites: Sequence[Site] = SITES,
) -> dict[Site, Tensor]:
    """Attribution patching: the first-order estimate of (patched - corrupted metric) of
    every site index, from one forward and backward on the corrupted input."""
    n_layer = len(model.blocks)
    hooks_needed = sorted({_SITE_HOOK[site] for site in sites})
    names = [act_name(h, layer) for h in hooks_needed for layer in range(n_layer)]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean_ids, names_filter=lambda n: n in names)
    stored: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> Tensor:
        stored[hook.name] = act
        return act

    def leaf(embed: Tensor, hook) -> Tensor:  # gradients flow even if the weights are frozen
        return embed.detach().requires_grad_(True)

    hooks = [Hook("hook_embed", leaf), *(Hook(name, keep) for name in names)]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        value = metric(model(corrupted_ids))
        grads = torch.autograd.grad(value, [stored[name] for name in names], allow_unused=True)
    grad_of = dict(zip(names, grads, strict=True))
    out: dict[Site, Tensor] = {}
    for site in sites:
        per_layer = []
        for layer in range(n_layer):
            name = act_name(_SITE_HOOK[site], layer)
            grad = grad_of[name]
            delta = (clean_cache[name] - stored[name].detach()).float()
            prod = delta * (torch.zeros_like(delta) if grad is None else grad.float())
            per_layer.append(_reduce_attribution(site, prod))
        out[site] = torch.stack(per_layer).cpu()
    return out


def _reduce_attribution(site: Site, prod: Tensor) -> Tensor:
    """Sum (clean - corrupted) * grad over everything a site's patch covers."""
    if site == "attn_head_out":
        return prod.sum(dim=(0, 1, 3))  # (head)
    if site == "attn_head_out_by_pos":
        return prod.sum(dim=(0, 3))  # (pos head)
    return prod.sum(dim=(0, 2))  # (pos)


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


def _by_task(corpus_dir: Path, variant: str, phrasings: int) -> dict[str, list[dict]]:
    path = corpus_dir / variant / "test.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found; pass a corpus dir written by `interpgpt corpus`")
    grouped: dict[str, list[dict]] = {}
    for record in read_jsonl(path):
        rows = grouped.setdefault(str(record["task_id"]), [])
        if len(rows) < phrasings:
            rows.append(record)
    return grouped


def build_pairs(
    corpus_dir: str | Path, tokenizer, n_pairs: int, phrasings: int = 8, max_len: int = 512
) -> PatchPairs:
    """The default clean (ADHD, regulation next) / corrupted (standard) pairs."""
    adhd = _by_task(Path(corpus_dir), "adhd", phrasings)
    standard = _by_task(Path(corpus_dir), "standard", phrasings)
    matches: dict[int, dict[str, tuple[list[int], list[int]]]] = {}
    for task_id, records in adhd.items():
        corrupt = {
            len(p): p for r in standard.get(task_id, []) for p in _prefixes(tokenizer, r, False)
        }
        for record in records:
            for clean in _prefixes(tokenizer, record, True):
                if len(clean) in corrupt and len(clean) <= max_len:
                    matches.setdefault(len(clean), {}).setdefault(
                        task_id, (clean, corrupt[len(clean)])
                    )
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


@dataclass
class PatchingConfig:
    """Activation and attribution patching of one model on clean/corrupted corpus pairs."""

    model: Path
    """Run dir or export dir of the model to patch."""
    corpus_dir: Path
    """Corpus dir (written by `interpgpt corpus`); pairs come from its test split."""
    out_dir: Path
    """Where `patching.json` and the heatmaps are written."""
    site: Site | Literal["all"] = "all"
    """Which activations to patch."""
    n_pairs: int = 16
    """Clean/corrupted pairs (held-out tasks) patched together as one batch."""
    phrasings: int = 8
    """Decompositions read per task and variant when searching for equal-length pairs."""
    attribution: bool = True
    """Also compute attribution patching (one forward + backward) for comparison."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    max_chunk_mb: int = 256
    """Memory budget of one stacked forward (logits dominate); 0 patches one site per forward."""

    def __post_init__(self) -> None:
        if self.site != "all" and self.site not in SITES:
            raise UserError(f"--site: {self.site!r} is not one of {[*SITES, 'all']}")
        if self.n_pairs < 1 or self.phrasings < 1:
            raise UserError("--pairs and phrasings must be at least 1")

    @property
    def sites(self) -> tuple[Site, ...]:
        return SITES if self.site == "all" else (self.site,)


@dataclass
class PatchingResult:
    """What `run_patching` computed and wrote."""

    json_path: Path
    figures: list[Path]
    exact: dict[Site, Tensor]
    """Patched metric per site index (TransformerLens's values)."""
    attribution: dict[Site, Tensor] = field(default_factory=dict)
    """Estimated patched-minus-corrupted metric per site index."""
    correlation: dict[Site, float] = field(default_factory=dict)
    """Pearson r between exact and attributed effects, per site."""
    clean_metric: float = 0.0
    corrupted_metric: float = 0.0


def _pearson(a: Tensor, b: Tensor) -> float:
    x, y = a.flatten().double().numpy(), b.flatten().double().numpy()
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _heatmap(path: Path, site: Site, panels: list[tuple[str, Tensor]], labels: list[str]):
    """Exact and attributed effects side by side, on one symmetric colour scale."""
    mats = []
    for title, values in panels:
        if site == "attn_head_out_by_pos":  # (layer pos head) -> rows layer x head, cols pos
            values = values.permute(0, 2, 1).reshape(-1, values.shape[1])
        mats.append((title, values.numpy()))
    bound = max(float(np.nanmax(np.abs(m))) for _, m in mats) or 1.0
    n_head = panels[0][1].shape[-1]
    rows = mats[0][1].shape[0]
    if site == "attn_head_out_by_pos":
        ylabels = [f"L{r // n_head}H{r % n_head}" for r in range(rows)]
    else:
        ylabels = [f"L{r}" for r in range(rows)]
    along = "head" if site == "attn_head_out" else "position"
    ylabel = "layer, head" if site == "attn_head_out_by_pos" else "layer"
    xlabels = None if site == "attn_head_out" else labels
    heatmaps = [
        HeatmapPanel(
            m, title=t, xlabel=along, ylabel=ylabel, xticklabels=xlabels, yticklabels=ylabels
        )
        for t, m in mats
    ]
    return save_heatmaps(
        path,
        heatmaps,
        suptitle=f"patching: {site}",
        cmap="RdBu_r",
        vmin=-bound,
        vmax=bound,
        colorbar_label="Δ metric vs corrupted",
    )


def run_patching(config: PatchingConfig) -> PatchingResult:
    """Build pairs, patch every requested site exactly (and by attribution), write
    `patching.json` and one heatmap per site."""
    loaded = load_model(config.model)
    device = resolve_device(config.device)
    model = loaded.model.to(device).eval()
    pairs = build_pairs(
        config.corpus_dir, loaded.tokenizer, config.n_pairs, config.phrasings, model.cfg.n_ctx
    )
    metric = RegulationLogitDiff(pairs.regulation_tokens, pairs.content_tokens)
    clean, corrupted = pairs.clean.to(device), pairs.corrupted.to(device)
    with torch.no_grad():
        clean_value, corrupted_value = float(metric(model(clean))), float(metric(model(corrupted)))
    result = PatchingResult(
        Path(config.out_dir) / RESULT_FILE,
        [],
        {},
        clean_metric=clean_value,
        corrupted_metric=corrupted_value,
    )
    timings: dict[str, float] = {}
    for site in config.sites:
        began = time.perf_counter()
        result.exact[site] = activation_patch(
            model, clean, corrupted, metric, site, metric_positions=metric.positions,
            max_chunk_mb=config.max_chunk_mb,
        )  # fmt: skip
        timings[f"exact_{site}"] = time.perf_counter() - began
    if config.attribution:
        began = time.perf_counter()
        result.attribution = attribution_patch(model, clean, corrupted, metric, config.sites)
        timings["attribution_all_sites"] = time.perf_counter() - began
        for site in config.sites:
            effect = result.exact[site] - corrupted_value
            result.correlation[site] = _pearson(effect, result.attribution[site])
    labels = [f"{i}:{loaded.tokenizer.decode_text([t])}" for i, t in enumerate(pairs.clean[0])]
    for site in config.sites:
        panels = [("exact Δ", result.exact[site] - corrupted_value)]
        if site in result.attribution:
            panels.append(
                (f"attribution (r={result.correlation[site]:.2f})", result.attribution[site])
            )
        path = Path(config.out_dir) / f"patching_{site}.png"
        result.figures.append(_heatmap(path, site, panels, labels))
    write_json(result.json_path, _report(config, loaded.name, pairs, result, timings))
    return result


def _report(config, name, pairs: PatchPairs, result: PatchingResult, timings) -> dict:
    gap = result.clean_metric - result.corrupted_metric
    sites = {}
    for site, exact in result.exact.items():
        sites[site] = {
            "axes": list(_SITE_AXES[site]),
            "exact": exact,
            "exact_normalized": (exact - result.corrupted_metric) / gap if gap else None,
            "attribution": result.attribution.get(site),
            "correlation_pearson": result.correlation.get(site),
        }
    return {
        "model": name,
        "metric": {
            "name": "regulation_logit_diff",
            "definition": "mean over pairs of logsumexp(final logits of regulation first "
            "tokens) - logsumexp(final logits of content-step first tokens)",
            "clean": result.clean_metric,
            "corrupted": result.corrupted_metric,
        },
        "pairs": {
            "n": len(pairs.task_ids),
            "length": int(pairs.clean.shape[1]),
            "task_ids": pairs.task_ids,
            "tasks_with_a_match": pairs.tasks_with_a_match,
            "regulation_tokens": pairs.regulation_tokens,
            "content_tokens": pairs.content_tokens,
        },
        "values": "exact: patched metric (TransformerLens semantics); exact_normalized: "
        "(patched - corrupted) / (clean - corrupted); attribution: estimated patched - corrupted",
        "sites": sites,
        "seconds": timings,
        "provenance": provenance(config),
    }
