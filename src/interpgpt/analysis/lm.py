"""Any language model as the pair analyses read it: layers, residual hook names, the final
norm + unembedding, and the tokenizer.

The analyses of a pair (KL, the difference lens, the logit lens, head profiles) need four
things of a model and nothing else: its shape, the TransformerLens hook name of each
layer's residual stream (`blocks.{layer}.hook_resid_post`), a way to turn a residual
into logits through the model's *own* final norm and unembedding (the logit lens,
nostalgebraist 2020), and the tokenizer that made the ids. `LanguageModel` is that
protocol; `TaskGPTModel` and `HookedTransformerModel` adapt our `TaskGPT` and any
TransformerLens `HookedTransformer` to it. They differ where the two libraries differ:
`TaskGPT.unembed` applies the final RMSNorm itself, a `HookedTransformer`'s `unembed`
does not (its `ln_final` is a separate module), so reading a residual through
`HookedTransformer.unembed` alone would silently compute something else.

`load_lm` reads a model from disk: a TransformerLens bundle (`hooked_transformer.pt`, a
plain-value config and a state dict; any `HookedTransformer`) as a `HookedTransformer`,
our run and export dirs as a `TaskGPT`; the tokenizer is the `tokenizer.json` beside it.
`TextSet` holds texts to teacher-force through both models, with position sets the
caller names (`load_texts` reads them from JSONL).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from tokenizers import Tokenizer
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interpgpt.artifacts.load import load_model, safe_torch_load, tokenizer_file
from interpgpt.artifacts.names import HF_CONFIG, RAW_BUNDLE, RUN_CONFIG, TL_BUNDLE
from interpgpt.errors import UserError
from interpgpt.io import atomic_path
from interpgpt.model.taskgpt import TaskGPT

ALL_POSITIONS = "all"
"""The position set every `TextSet` has: every real (non-pad) position."""
TL_CONFIG_SKIP = ("device", "n_params", "dtype")
"""HookedTransformerConfig fields a bundle leaves out: the loader's device, and derived ones."""


class TextTokenizer(Protocol):
    """What the pair analyses need of a tokenizer (`TaskTokenizer` and `FileTokenizer`)."""

    sha256: str
    """Identity: two models share a tokenizer when these agree."""

    @property
    def vocab_size(self) -> int: ...

    def encode_text(self, text: str) -> list[int]: ...

    def decode_text(self, ids: Sequence[int]) -> str: ...


class FileTokenizer:
    """A `tokenizers.Tokenizer` read from a tokenizer.json, named by the file's hash."""

    def __init__(self, tokenizer: Tokenizer, sha256: str) -> None:
        self.tokenizer = tokenizer
        self.sha256 = sha256

    @classmethod
    def from_file(cls, path: str | Path) -> FileTokenizer:
        data = Path(path).read_bytes()
        try:
            tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON
            raise UserError(f"{path}: not a valid tokenizer file ({err})") from None
        return cls(tokenizer, hashlib.sha256(data).hexdigest())

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode_text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)


@runtime_checkable
class LanguageModel(Protocol):
    """A hooked model (TransformerLens hook names) with what a pair analysis reads."""

    model: Any
    """The `HookedRootModule`: called on ids, `run_with_cache`, `hooks(fwd_hooks=...)`."""
    tokenizer: Any
    """A `TextTokenizer`, or None when the model was handed over without one."""
    label: str
    """Its name in results and reports (`a`/`b` roles carry these labels)."""

    @property
    def n_layer(self) -> int: ...

    @property
    def n_head(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def d_vocab(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def resid_hook(self, layer: int) -> str: ...

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]: ...


@dataclass
class _Hooked:
    """What both adapters share: hook names and the final residual stream."""

    model: Any
    tokenizer: Any = None
    label: str = "model"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def resid_hook(self, layer: int) -> str:
        """The residual stream after block `layer` (TransformerLens's name)."""
        return f"blocks.{layer}.hook_resid_post"

    def final_residual(self, ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream after the last block, before the final norm."""
        return self.model(ids, stop_at_layer=self.n_layer)

    @property
    def n_layer(self) -> int:
        raise NotImplementedError

    def head_weights(self) -> Float[Tensor, "layer matrix head d_head d_model"]:
        """Every head's W_Q, W_K, W_V rows and W_O columns (`HEAD_MATRICES` order): the
        slices that move together when heads are permuted."""
        raise NotImplementedError

    def permute_heads(self, perms: Sequence[Sequence[int]]) -> Any:
        """A copy (same adapter type) whose head i of layer l is this model's head
        perms[l][i]: the same function, since each head's Q, K, V and O move together."""
        raise NotImplementedError


@dataclass
class TaskGPTModel(_Hooked):
    """Our `TaskGPT` (RMSNorm, tied embedding): `unembed` applies the final norm itself."""

    @property
    def n_layer(self) -> int:
        return self.model.cfg.n_layer

    @property
    def n_head(self) -> int:
        return self.model.cfg.n_head

    @property
    def d_model(self) -> int:
        return self.model.cfg.d_model

    @property
    def d_vocab(self) -> int:
        return self.model.cfg.vocab_size

    def unembed(self, resid: Tensor) -> Tensor:
        return self.model.unembed(resid)

    def head_weights(self) -> Tensor:
        cfg, layers = self.model.cfg, []
        for block in self.model.blocks:
            qkv = block.attn.qkv_proj.weight.view(3, cfg.n_head, cfg.d_head, cfg.d_model)
            layers.append(torch.cat([qkv, block.attn.W_O[None]]))
        return torch.stack(layers).detach().float()

    def permute_heads(self, perms: Sequence[Sequence[int]]) -> TaskGPTModel:
        cfg = self.model.cfg
        check_permutations(perms, cfg.n_layer, cfg.n_head)
        copied = copy.deepcopy(self.model)
        inner = cfg.n_head * cfg.d_head
        with torch.no_grad():
            for block, perm in zip(copied.blocks, perms, strict=True):
                order = torch.tensor(list(perm), device=block.attn.o_proj.weight.device)
                head_dims = order[:, None] * cfg.d_head + torch.arange(cfg.d_head).to(order)
                head_dims = head_dims.flatten()
                qkv_rows = torch.cat([head_dims + part * inner for part in range(3)])
                block.attn.qkv_proj.weight.copy_(block.attn.qkv_proj.weight[qkv_rows])
                block.attn.o_proj.weight.copy_(block.attn.o_proj.weight[:, head_dims])
        return TaskGPTModel(copied, self.tokenizer, self.label)


@dataclass
class HookedTransformerModel(_Hooked):
    """A TransformerLens `HookedTransformer`: its `ln_final` (absent without normalisation)
    is applied before `unembed`, as its forward does."""

    @property
    def n_layer(self) -> int:
        return self.model.cfg.n_layers

    @property
    def n_head(self) -> int:
        return self.model.cfg.n_heads

    @property
    def d_model(self) -> int:
        return self.model.cfg.d_model

    @property
    def d_vocab(self) -> int:
        return self.model.cfg.d_vocab_out

    def unembed(self, resid: Tensor) -> Tensor:
        ln_final = getattr(self.model, "ln_final", None)
        return self.model.unembed(resid if ln_final is None else ln_final(resid))

    def _check_heads(self) -> None:
        if self.model.cfg.n_key_value_heads is not None:
            raise UserError(
                f"{self.label}: grouped-query attention shares key/value heads, so its heads "
                "cannot be matched or permuted one by one"
            )

    def head_weights(self) -> Tensor:
        self._check_heads()
        layers = []
        for block in self.model.blocks:
            attn = block.attn  # W_Q/W_K/W_V: (head, d_model, d_head); W_O: (head, d_head, d_model)
            qkv = [w.transpose(-1, -2) for w in (attn.W_Q, attn.W_K, attn.W_V)]
            layers.append(torch.stack([*qkv, attn.W_O]))
        return torch.stack(layers).detach().float()

    def permute_heads(self, perms: Sequence[Sequence[int]]) -> HookedTransformerModel:
        self._check_heads()
        cfg = self.model.cfg
        check_permutations(perms, cfg.n_layers, cfg.n_heads)
        copied = copy.deepcopy(self.model)
        with torch.no_grad():
            for block, perm in zip(copied.blocks, perms, strict=True):
                order = torch.tensor(list(perm), device=block.attn.W_O.device)
                for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
                    param = getattr(block.attn, name)
                    param.copy_(param[order])
        return HookedTransformerModel(copied, self.tokenizer, self.label)


def as_lm(model: Any, tokenizer: Any = None, label: str = "model") -> Any:
    """`model` as a `LanguageModel`: an adapter is returned as it is, a `TaskGPT` or a
    `HookedTransformer` wrapped."""
    if isinstance(model, _Hooked):
        return model
    if isinstance(model, TaskGPT):
        return TaskGPTModel(model, tokenizer, label)
    if isinstance(model, HookedTransformer):
        return HookedTransformerModel(model, tokenizer, label)
    raise TypeError(f"not a TaskGPT, HookedTransformer or LanguageModel: {type(model).__name__}")


def check_permutations(perms: Sequence[Sequence[int]], n_layer: int, n_head: int) -> None:
    if len(perms) != n_layer or any(sorted(p) != list(range(n_head)) for p in perms):
        raise UserError(
            f"head permutations must be {n_layer} permutations of 0..{n_head - 1}, got {perms}"
        )


@torch.no_grad()
def hook_activations(
    model: Any, texts: TextSet, hook_name: str, batch_size: int = 16
) -> Float[Tensor, "batch pos d"]:
    """The activation at `hook_name` of every position of `texts` (fp32, on the CPU; pad
    positions hold whatever the model computed there), the model run only as far as the
    hook's block."""
    lm = as_lm(model)
    if hook_name not in lm.model.hook_dict:
        raise UserError(f"{lm.label}: {hook_name!r} is not a hook of this model")
    parts = hook_name.split(".")
    stop = int(parts[1]) + 1 if parts[0] == "blocks" and parts[1].isdigit() else None
    stop = None if stop is not None and stop >= lm.n_layer else stop
    chunks = []
    for batch in texts.batches(batch_size):
        ids = batch.ids.to(lm.device)
        _, cache = lm.model.run_with_cache(ids, names_filter=[hook_name], stop_at_layer=stop)
        acts = cache[hook_name].float().cpu()
        pad = torch.zeros(acts.shape[0], texts.ids.shape[1] - acts.shape[1], acts.shape[2])
        chunks.append(torch.cat([acts, pad], 1))
    return torch.cat(chunks)


def resolve_layer(layer: float | str, n_layer: int) -> int:
    """A layer index (an int, or text without a dot; negative counts from the end), or a
    fraction of depth (a float, or text with a dot) as the block round(f · (n_layer − 1))."""
    if isinstance(layer, str):
        try:
            layer = float(layer) if "." in layer else int(layer)
        except ValueError:
            raise UserError(f"layer {layer!r}: an index or a fraction of depth") from None
    if isinstance(layer, float):
        if not 0.0 <= layer <= 1.0:
            raise UserError(f"layer {layer}: a fraction of depth lies in [0, 1]")
        return round(layer * (n_layer - 1))
    index = int(layer) + (n_layer if layer < 0 else 0)
    if not 0 <= index < n_layer:
        raise UserError(f"layer {layer}: the models have layers 0..{n_layer - 1}")
    return index


def check_pair(a: Any, b: Any) -> None:
    """Refuse, in one line, two models that do not share a tokenizer and a shape: every
    pair analysis feeds both the same ids and compares layers and heads by index."""
    a, b = as_lm(a), as_lm(b)
    ta, tb = a.tokenizer, b.tokenizer
    if ta is not None and tb is not None and ta.sha256 != tb.sha256:
        raise UserError(
            f"{a.label} and {b.label} use different tokenizers "
            f"({ta.sha256[:12]} vs {tb.sha256[:12]}); a pair must share one"
        )
    shape = ("n_layer", "n_head", "d_model", "d_vocab")
    differ = [
        f"{k} {getattr(a, k)} vs {getattr(b, k)}" for k in shape if getattr(a, k) != getattr(b, k)
    ]
    if differ:
        raise UserError(f"{a.label} and {b.label} differ in shape ({', '.join(differ)})")


# ---------------------------------------------------------------------------- on disk


def tl_bundle(model: HookedTransformer) -> dict[str, Any]:
    """A `hooked_transformer.pt` payload of any HookedTransformer: its config as plain
    values (loadable with `torch.load(weights_only=True)`) and its state dict."""
    values = {f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(model.cfg)}
    config = {  # numpy scalars (attn_scale, initializer_range) as Python ones
        k: float(v) if isinstance(v, float) else v
        for k, v in values.items()
        if k not in TL_CONFIG_SKIP and (v is None or isinstance(v, bool | int | float | str))
    }
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"config": config, "model_state_dict": state}


def save_tl_bundle(
    model: HookedTransformer, out_dir: str | Path, tokenizer_json: str | Path
) -> Path:
    """Write `hooked_transformer.pt` and a copy of the tokenizer into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / TL_BUNDLE) as tmp:
        torch.save(tl_bundle(model), tmp)
    (out / "tokenizer.json").write_bytes(Path(tokenizer_json).read_bytes())
    return out


def _is_tl_bundle_only(path: Path) -> bool:
    """A TL bundle file, or a dir whose only model form is one (not our export dirs, which
    also hold the Hugging Face and raw forms and load as a TaskGPT)."""
    if path.is_file():
        return path.suffix == ".pt" and path.name != RAW_BUNDLE
    others = (HF_CONFIG, RAW_BUNDLE, RUN_CONFIG)
    return (path / TL_BUNDLE).is_file() and not any((path / o).is_file() for o in others)


def load_hooked_transformer(path: Path, device: torch.device | str = "cpu") -> HookedTransformer:
    """A TL bundle as a HookedTransformer; never unpickles code."""
    bundle = path / TL_BUNDLE if path.is_dir() else path
    blob = safe_torch_load(bundle)
    if not (isinstance(blob, dict) and {"config", "model_state_dict"} <= set(blob)):
        raise UserError(f"{bundle}: expected a dict with 'config' and 'model_state_dict'")
    try:
        cfg = HookedTransformerConfig(**blob["config"], device=str(device))
        model = HookedTransformer(cfg, move_to_device=False)
        model.load_state_dict(blob["model_state_dict"])
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{bundle}: not a loadable TransformerLens bundle ({first})") from None
    return model.to(device).eval()


def load_lm(path: str | Path, device: torch.device | str = "cpu", label: str = "") -> Any:
    """A model on disk as a `LanguageModel`: a TL bundle (file, or a dir holding only one)
    as a HookedTransformer with the `tokenizer.json` beside it; a run dir, export dir or raw
    bundle as a TaskGPT with its own tokenizer."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model directory or file")
    name = label or (path if path.is_dir() else path.parent).resolve().name
    if _is_tl_bundle_only(path):
        model = load_hooked_transformer(path, device)
        tokenizer = FileTokenizer.from_file(tokenizer_file(path))
        return HookedTransformerModel(model, tokenizer, name)
    loaded = load_model(path)
    return TaskGPTModel(loaded.model.to(device).eval(), loaded.tokenizer, label or loaded.name)


# ---------------------------------------------------------------------------- texts


@dataclass
class TextSet:
    """Encoded texts, right-padded, with position sets the caller names."""

    ids: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    positions: dict[str, Bool[Tensor, "batch pos"]] = field(default_factory=dict)
    """Name -> mask; `ALL_POSITIONS` (every real position) is always there."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """The input records, one per text."""

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def valid(self) -> Bool[Tensor, "batch pos"]:
        return torch.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]

    def subset(self, rows: slice | Tensor) -> TextSet:
        index = range(len(self))[rows] if isinstance(rows, slice) else rows.tolist()
        lengths = self.lengths[rows]
        width = int(lengths.max()) if len(lengths) else 0
        return TextSet(
            self.ids[rows, :width],
            lengths,
            {k: m[rows, :width] for k, m in self.positions.items()},
            [self.records[i] for i in index],
        )

    def batches(self, batch_size: int) -> Iterator[TextSet]:
        for start in range(0, len(self), batch_size):
            yield self.subset(slice(start, start + batch_size))


def encode_texts(
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    max_len: int | None = None,
    pad_id: int = 0,
) -> TextSet:
    """Records `{"text": str}` or `{"ids": [int]}`, each with optional `"positions":
    {name: [token index, ...]}` (negative from the end), as a `TextSet`; texts longer than
    `max_len` are cut to it."""
    encoded, kept, named = [], [], []
    for i, record in enumerate(records):
        if "ids" in record:
            ids = [int(t) for t in record["ids"]]
        elif "text" in record:
            ids = tokenizer.encode_text(str(record["text"]))
        else:
            raise UserError(f"text {i}: needs a 'text' or an 'ids' field")
        ids = ids[:max_len] if max_len else ids
        if len(ids) < 2:
            continue  # nothing to predict
        encoded.append(ids)
        kept.append(dict(record))
        named.append(record.get("positions") or {})
    if not encoded:
        raise UserError("no text of two tokens or more to compare the models on")
    width = max(map(len, encoded))
    ids_t = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(encoded):
        ids_t[row, : len(ids)] = torch.tensor(ids)
    lengths = torch.tensor([len(ids) for ids in encoded])
    data = TextSet(ids_t, lengths, records=kept)
    data.positions[ALL_POSITIONS] = data.valid
    for name in sorted({n for p in named for n in p}):
        mask = torch.zeros_like(ids_t, dtype=torch.bool)
        for row, (p, length) in enumerate(zip(named, lengths.tolist(), strict=True)):
            for pos in p.get(name, []):
                pos = int(pos) + (length if int(pos) < 0 else 0)
                if 0 <= pos < length:
                    mask[row, pos] = True
        data.positions[name] = mask
    return data


def load_texts(path: str | Path, tokenizer: Any, max_len: int | None = None) -> TextSet:
    """A JSONL file of records (see `encode_texts`) as a `TextSet`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such texts file")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{n}: not JSON ({err.msg})") from None
    return encode_texts(tokenizer, records, max_len)
