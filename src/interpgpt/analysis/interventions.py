"""The project's one intervention mechanism: hook functions on TransformerLens hook points.

Ablation, activation patching, steering and probe interventions are all the same
move — replace or edit one activation during a forward pass — so they are all built
here as `Hook`s, `(hook name, function)` pairs that go straight into
`model.run_with_hooks(ids, fwd_hooks=[...])` or the context manager
`with model.hooks(fwd_hooks=[...]):` of a TaskGPT (a TransformerLens
`HookedRootModule`) or a `HookedTransformer`. Inside the context manager the hooks
also act on every incremental step of KV-cached generation, which is how the
ablation study intervenes on sampled decompositions.

The factories:

- `ablate_heads`: zero or mean ablation of attention heads on `attn.hook_z`
  (batch pos head d_head), i.e. of the head's contribution before the output
  projection `W_O` — removing head h there removes exactly `z_h @ W_O[h]` from the
  residual stream (Olsson et al. 2022; Wang et al. 2022 use mean ablation so that the
  ablated head still writes its typical output and only its input dependence is cut).
- `head_means`: the per-head mean of `hook_z` over the real positions of a dataset,
  the reference value of mean ablation.
- `heads_zeroed`: the one exception to hooks. Zero ablation as a weight edit for the
  duration of a `with` block: the heads' input columns of `o_proj` set to zero, which
  is exactly z_h := 0. It leaves the model hook-free, so KV-cached generation keeps
  its unhooked decoder (`decode.Decoder`). To ablate other heads in each row of one
  generation batch, as the ablation study does, `generate.generate_head_masked` takes a
  per-row `decode.HeadMask` instead, tested equal to this.
- `patch_from`: activation patching (Meng et al. 2022; Heimersheim & Nanda 2024):
  copy a clean run's activation into the current run wherever a mask is True.
- `patch_sites`: many patches at once on a batch stacked site-major, each block of
  the batch receiving its own patch; the fast path of `analysis.patching`.
- `add_direction`: activation addition / steering (Turner et al. 2023): add
  `scale * direction` to an activation at chosen positions.
- `project_out`: directional ablation (Arditi et al. 2024; INLP, Ravfogel et al.
  2020): remove the component of an activation inside the span of some directions.
- `interchange`: an interchange intervention along a subspace (Geiger et al. 2021,
  2024, "distributed alignment search"): set the activation's coordinates in the span of
  an orthonormal basis to those of another run, leaving its orthogonal complement alone.

Runs that share everything upstream of a residual-stream edit (one per direction or
subspace) need not recompute it: `resid_block` names the block a residual site feeds,
`model(ids, stop_at_layer=block)` returns the clean residual stream there once, and
`resumed_logits` applies the hooks to it and runs only the blocks from there on,
unembedding only the positions read (TransformerLens's `start_at_layer`).

Positions are given as `None` (every position, including each step of cached
generation), a sequence of position indices into the activation, or a bool mask
(batch, pos) of the activation's own shape (teacher-forced runs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.errors import UserError

HookFn = Callable[..., Tensor | None]
Positions = Sequence[int] | Bool[Tensor, "batch pos"] | None

# TransformerLens `utils.get_act_name` short names of the sites this project intervenes on.
_SITE_NAMES = {
    "embed": "hook_embed",
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "z": "blocks.{layer}.attn.hook_z",
    "pattern": "blocks.{layer}.attn.hook_pattern",
    "result": "blocks.{layer}.attn.hook_result",
    "post": "blocks.{layer}.mlp.hook_post",
}


class Hook(NamedTuple):
    """A forward hook: pass a list of these as `fwd_hooks`."""

    name: str
    """Hook point name, e.g. `blocks.3.attn.hook_z`."""
    fn: HookFn
    """`fn(activation, hook) -> activation`, TransformerLens's hook signature."""


class Head(NamedTuple):
    """One attention head, written `L{layer}H{head}` in reports and on the command line."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


def act_name(site: str, layer: int | None = None) -> str:
    """Full hook name of a site (`act_name("z", 3) == "blocks.3.attn.hook_z"`)."""
    if site not in _SITE_NAMES:
        raise ValueError(f"unknown site {site!r}; choose one of {sorted(_SITE_NAMES)}")
    return _SITE_NAMES[site].format(layer=layer)


def parse_heads(spec: str | Iterable[str], n_layer: int, n_head: int) -> list[Head]:
    """Heads from `"L3H5,L2H0"` (or a list of such tokens), checked against the model shape."""
    tokens = spec.split(",") if isinstance(spec, str) else [t for s in spec for t in s.split(",")]
    heads: list[Head] = []
    for token in (t.strip() for t in tokens if t.strip()):
        match = re.fullmatch(r"[Ll](\d+)[Hh](\d+)", token)
        if match is None:
            raise UserError(f"--heads: {token!r} is not a head; write heads as L3H5,L2H0")
        head = Head(int(match[1]), int(match[2]))
        if head.layer >= n_layer or head.head >= n_head:
            raise UserError(
                f"--heads: {token} does not exist in a model with {n_layer} layers "
                f"of {n_head} heads"
            )
        if head not in heads:
            heads.append(head)
    if not heads:
        raise UserError("--heads: give at least one head, e.g. L3H5")
    return heads


def _position_mask(positions: Positions, act: Tensor) -> Tensor | None:
    """A (batch, pos) bool mask on `act`'s device, or None for every position."""
    if positions is None:
        return None
    batch, pos = act.shape[:2]
    if isinstance(positions, Tensor) and positions.dtype == torch.bool:
        if tuple(positions.shape) != (batch, pos):
            raise ValueError(
                f"position mask of shape {tuple(positions.shape)} does not fit an activation "
                f"of shape {tuple(act.shape)}"
            )
        return positions.to(act.device)
    mask = torch.zeros(batch, pos, dtype=torch.bool, device=act.device)
    index = torch.as_tensor(list(positions), dtype=torch.long, device=act.device)
    mask[:, index[(index < pos) & (index >= -pos)]] = True
    return mask


def ablate_heads(
    heads: Sequence[Head],
    mode: str = "zero",
    means: Float[Tensor, "layer head d_head"] | None = None,
) -> list[Hook]:
    """Hooks that replace the heads' `hook_z` by zero or by their mean (one hook per layer).

    mode "zero": z_h := 0, identical to zeroing the head's columns of `o_proj`.
    mode "mean": z_h := means[layer, h] at every position (see `head_means`).
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablation mode must be 'zero' or 'mean', got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("mean ablation needs `means` (see head_means)")
    by_layer: dict[int, list[int]] = {}
    for head in heads:
        by_layer.setdefault(head.layer, []).append(head.head)
    hooks = []
    for layer, indices in sorted(by_layer.items()):
        value = None if means is None or mode == "zero" else means[layer, indices]

        def fn(z: Tensor, hook=None, indices=indices, value=value) -> Tensor:
            z = z.clone()
            z[:, :, indices] = 0.0 if value is None else value.to(z.device, z.dtype)
            return z

        hooks.append(Hook(act_name("z", layer), fn))
    return hooks


@contextmanager
@torch.no_grad()
def heads_zeroed(model, heads: Sequence[Head]) -> Iterator[None]:
    """Zero-ablate `heads` of a TaskGPT inside the block by zeroing their columns of
    `o_proj` (z_h := 0 exactly, as `ablate_heads(heads, "zero")`); restored on exit."""
    d_head = model.cfg.d_head
    saved = []
    for head in heads:
        first = head.head * d_head
        columns = model.blocks[head.layer].attn.o_proj.weight[:, first : first + d_head]
        saved.append((columns, columns.clone()))
        columns.zero_()
    try:
        yield
    finally:
        for columns, original in saved:
            columns.copy_(original)


@torch.no_grad()
def head_means(
    model,
    ids: Int[Tensor, "batch pos"],
    valid: Bool[Tensor, "batch pos"],
    batch_size: int = 64,
) -> Float[Tensor, "layer head d_head"]:
    """Mean of every head's `hook_z` over the True positions of `valid` (padding excluded)."""
    n_layer = len(model.blocks)
    names = [act_name("z", layer) for layer in range(n_layer)]
    device = next(model.parameters()).device
    total: Tensor | None = None
    count = 0
    for start in range(0, ids.shape[0], batch_size):
        rows = ids[start : start + batch_size].to(device)
        keep = valid[start : start + batch_size].to(device)
        _, cache = model.run_with_cache(rows, names_filter=lambda name: name in names)
        z = torch.stack([cache[name] for name in names]).float()  # (layer batch pos head d_head)
        part = z[:, keep].sum(dim=1)  # (layer head d_head)
        total = part if total is None else total + part
        count += int(keep.sum())
    if total is None or count == 0:
        raise ValueError("head_means needs at least one valid position")
    return total / count


def patch_from(
    name: str,
    clean: Tensor,
    mask: Tensor | None = None,
) -> Hook:
    """Copy `clean` into the activation where `mask` (broadcast from the left) is True.

    `clean` has the activation's shape; `mask` covers its leading dims, e.g. (batch, pos)
    for the residual stream or (batch, pos, head) for `hook_z`; None patches everything.
    """

    def fn(act: Tensor, hook=None) -> Tensor:
        source = clean.to(act.device, act.dtype)
        if mask is None:
            return source.clone()
        where = mask.to(act.device).reshape(*mask.shape, *([1] * (act.dim() - mask.dim())))
        return torch.where(where, source, act)

    return Hook(name, fn)


def patch_sites(
    name: str,
    clean: Tensor,
    site_mask: Bool[Tensor, "site ..."],
) -> Hook:
    """Patch a batch stacked site-major: rows [s*batch, (s+1)*batch) get patch s.

    The current activation has shape (site*batch, pos, ...); `clean` is one clean run's
    activation (batch, pos, ...); `site_mask[s]` (pos, ...) says which entries of
    patch s come from the clean run. One forward then evaluates every patch at once.
    """
    n_site = site_mask.shape[0]

    def fn(act: Tensor, hook=None) -> Tensor:
        batch = act.shape[0] // n_site
        stacked = act.view(n_site, batch, *act.shape[1:])
        trail = act.dim() - site_mask.dim()  # dims neither the mask nor the site index cover
        where = site_mask.to(act.device).reshape(n_site, 1, *site_mask.shape[1:], *[1] * trail)
        source = clean.to(act.device, act.dtype).unsqueeze(0)
        return torch.where(where, source, stacked).reshape(act.shape)

    return Hook(name, fn)


def add_direction(
    name: str,
    direction: Float[Tensor, " d_model"],
    scale: float = 1.0,
    positions: Positions = None,
) -> Hook:
    """Activation addition: act += scale * direction at `positions` (None: everywhere)."""

    def fn(act: Tensor, hook=None) -> Tensor:
        delta = scale * direction.to(act.device, act.dtype)
        where = _position_mask(positions, act)
        if where is None:
            return act + delta
        return act + where.unsqueeze(-1).to(act.dtype) * delta

    return Hook(name, fn)


def project_out(
    name: str,
    directions: Float[Tensor, "k d_model"] | Float[Tensor, " d_model"],
    positions: Positions = None,
) -> Hook:
    """Directional ablation: remove the component of act in span(directions).

    The directions need not be orthonormal: they are orthonormalised once (QR), so the
    hook is the orthogonal projector I - Q Q^T, idempotent whatever basis is given.
    """
    basis = directions.reshape(-1, directions.shape[-1]).float()
    q, _ = torch.linalg.qr(basis.T)  # (d_model, k), orthonormal columns

    def fn(act: Tensor, hook=None) -> Tensor:
        q_act = q.to(act.device, act.dtype)
        removed = (act @ q_act) @ q_act.T
        where = _position_mask(positions, act)
        if where is None:
            return act - removed
        return act - where.unsqueeze(-1).to(act.dtype) * removed

    return Hook(name, fn)


def interchange(
    name: str,
    basis: Float[Tensor, "d_model k"],
    coords: Float[Tensor, "batch pos k"],
    positions: Bool[Tensor, "batch pos"],
) -> Hook:
    """Write `coords` into the span of `basis` (orthonormal columns) where `positions` is
    True: act' = act + (coords - act B) B^T, the rest of act unchanged. With `coords` read
    from a source run (source_act B) this is the interchange intervention of distributed
    alignment search (Geiger et al. 2024) with a fixed, here probe-given, subspace."""

    def fn(act: Tensor, hook=None) -> Tensor:
        b = basis.to(act.device, act.dtype)
        delta = (coords.to(act.device, act.dtype) - act @ b) @ b.T
        where = _position_mask(positions, act)
        assert where is not None
        return act + where.unsqueeze(-1).to(act.dtype) * delta

    return Hook(name, fn)


def apply_hooks(hooks: Sequence[Hook], act: Tensor) -> Tensor:
    """Run hook functions on a stored activation, in order, as a forward pass would."""
    for hook in hooks:
        out = hook.fn(act, None)
        act = act if out is None else out  # TransformerLens: None means edited in place
    return act


def resid_block(hook_name: str, n_layer: int) -> int:
    """The block whose input is the residual stream at `hook_name`: 0 for `hook_embed`,
    L for `blocks.L.hook_resid_pre`, L + 1 for `blocks.L.hook_resid_post` (n_layer: the
    final residual stream). `model(ids, stop_at_layer=block)` returns that residual stream
    and `model(resid, start_at_layer=block)` resumes from it."""
    if hook_name == act_name("embed"):
        return 0
    for layer in range(n_layer):
        if hook_name == act_name("resid_pre", layer):
            return layer
        if hook_name == act_name("resid_post", layer):
            return layer + 1
    raise ValueError(f"{hook_name}: not a residual-stream hook of a {n_layer}-layer model")


def resumed_logits(
    model,
    resid: Float[Tensor, "batch pos d_model"],
    block: int,
    read: Bool[Tensor, "batch pos"],
    hooks: Sequence[Hook] = (),
) -> Float[Tensor, "n d_vocab"]:
    """Logits at the True positions of `read` (row-major) of a TaskGPT run resumed at
    `block` from `resid`, the residual stream entering it, edited by `hooks` (functions
    of that residual stream; `resid` itself is left as it is).

    Equal to `model.run_with_hooks(ids, fwd_hooks=hooks)[read]` with the hooks at the
    residual site of `block` (`resid_block`), computed with only the blocks from `block`
    on and only the read positions unembedded. Differentiable (in the hooks' parameters):
    callers that only read run it under `torch.no_grad`."""
    act = apply_hooks(hooks, resid.clone()) if hooks else resid
    final = model(act, start_at_layer=block, stop_at_layer=model.cfg.n_layer)
    return model.unembed(final[read])


class ResidualCache:
    """The clean residual stream entering a block, per batch of token ids, computed once
    per block: what every run resumed from it (`resumed_logits`) starts from. With
    `keep_all`, every block asked for stays cached; else only the last one (one site at a
    time: the last is freed before the next is computed)."""

    def __init__(self, model, ids: Sequence[Tensor], keep_all: bool = False):
        self.model, self.ids, self.keep_all = model, list(ids), keep_all
        self._cached: dict[int, list[Tensor]] = {}

    @torch.no_grad()
    def __call__(self, block: int) -> list[Float[Tensor, "batch pos d_model"]]:
        """The residual stream entering `block` (n_layer: the final one), per batch."""
        if block not in self._cached:
            if not self.keep_all:
                self._cached.clear()
            self._cached[block] = [self.model(ids, stop_at_layer=block) for ids in self.ids]
        return self._cached[block]
