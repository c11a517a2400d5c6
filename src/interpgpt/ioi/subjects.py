"""The model an IOI analysis studies: GPT-2 small through TransformerLens, or a local IOI model.

Both are `HookedRootModule`s with TransformerLens hook names (`blocks.{l}.attn.hook_z`,
`hook_pattern`, `hook_resid_pre`, ...), so every analysis runs on either unchanged;
an `IOISubject` adds what differs: how text is encoded, the BOS/pad tokens, the
names to draw corruptions from, and the evaluation prompts.

GPT-2 is only ever loaded from the local Hugging Face cache (`HF_HUB_OFFLINE=1`):
nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import torch
from huggingface_hub import try_to_load_from_cache
from transformer_lens import HookedTransformer

from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.ioi.language import HELDOUT_DEFINITION
from interpgpt.ioi.local_model import IOIModel, load_ioi_model
from interpgpt.ioi.prompts import NAMES, IOIPrompt, sample_prompts

GPT2_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
GPT2_HELP = (
    "GPT-2 small is not in the local Hugging Face cache and cannot be downloaded here; "
    "on a machine with internet run `huggingface-cli download gpt2`, then copy "
    "~/.cache/huggingface to this machine (or set HF_HOME), or pass --model PATH to an "
    "IOI model directory (`interpgpt ioi-demo --out DIR` trains one)"
)


@dataclass
class IOISubject:
    """A model under IOI analysis, with its tokenisation and evaluation prompts."""

    model: Any
    """TaskGPT or HookedTransformer: called on token ids, returns logits."""
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    bos: int | None
    pad: int
    names: tuple[str, ...]
    """Single-token names usable in prompts and corruptions."""
    vocab_ids: list[int]
    """Token ids to draw repeated random sequences from (induction score)."""
    name: str
    """Label in reports."""
    eval_prompts: Callable[[int, int], list[IOIPrompt]]
    """(n, seed) -> evaluation prompts; held-out ones for a local IOI model."""
    heldout_definition: str = ""

    @property
    def n_layer(self) -> int:
        cfg = self.model.cfg
        return getattr(cfg, "n_layer", None) or cfg.n_layers

    @property
    def n_head(self) -> int:
        cfg = self.model.cfg
        return getattr(cfg, "n_head", None) or cfg.n_heads

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def subject_from_ioi_model(ioi: IOIModel) -> IOISubject:
    held = ioi.split.held_out_prompts

    def eval_prompts(n: int, seed: int) -> list[IOIPrompt]:
        prompts = held(0)  # one fixed held-out set; `seed` only picks a subset of it
        if n >= len(prompts):
            return prompts
        index = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))
        return [prompts[i] for i in sorted(index[:n].tolist())]

    return IOISubject(
        model=ioi.model,
        encode=ioi.tokenizer.encode,
        decode=ioi.tokenizer.decode,
        bos=ioi.tokenizer.bos_id,
        pad=ioi.tokenizer.pad_id,
        names=NAMES,
        vocab_ids=ioi.tokenizer.word_ids(),
        name=ioi.source.name or "ioi-model",
        eval_prompts=eval_prompts,
        heldout_definition=HELDOUT_DEFINITION,
    )


def gpt2_cached() -> bool:
    """True when every GPT-2 small file is in the local Hugging Face cache."""
    return all(isinstance(try_to_load_from_cache("gpt2", f), str) for f in GPT2_FILES)


def load_gpt2(device: torch.device) -> IOISubject:
    """GPT-2 small from the local cache only, as a HookedTransformer."""
    # Never reach the network, even on a cache miss: the env var for libraries that read it
    # later, the constant for huggingface_hub, which read it at import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    if not gpt2_cached():
        raise UserError(GPT2_HELP)
    try:
        model = HookedTransformer.from_pretrained("gpt2", device=str(device))
    except OSError as err:  # a partial cache: some file from_pretrained wants is missing
        raise UserError(f"{GPT2_HELP} ({str(err).splitlines()[0]})") from None
    model.eval()
    tok = model.tokenizer
    if tok is None or tok.eos_token_id is None:
        raise UserError(f"{GPT2_HELP} (the cached GPT-2 came without its tokenizer)")
    names = tuple(n for n in NAMES if len(tok.encode(" " + n)) == 1)

    def eval_prompts(n: int, seed: int) -> list[IOIPrompt]:
        return sample_prompts(n, seed, names=names)

    def decode(ids: list[int]) -> str:
        text = tok.decode(ids)
        assert isinstance(text, str)  # a list of ids decodes to one string
        return text

    return IOISubject(
        model=model,
        encode=lambda text: tok.encode(text),
        decode=decode,
        bos=tok.bos_token_id,
        pad=tok.eos_token_id,
        names=names,
        vocab_ids=list(range(1000, 10000)),  # ordinary mid-frequency BPE tokens
        name="gpt2",
        eval_prompts=eval_prompts,
    )


def load_subject(model: str | Path, device: str = "auto") -> IOISubject:
    """`gpt2` (local HF cache only) or the path of an IOI model directory."""
    dev = resolve_device(device)
    if str(model) == "gpt2":
        return load_gpt2(dev)
    path = Path(model)
    if not path.exists():
        raise UserError(f"--model {model}: no such directory; pass gpt2 or an IOI model dir")
    return subject_from_ioi_model(load_ioi_model(path, str(dev)))
