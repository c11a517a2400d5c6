"""Export a trained TaskGPT in the three forms the seed model cards load, and load them back.

`export(ExportConfig(model=RUN_DIR, out=DIR))` writes one directory that every loading
path of the seed card accepts, with the local directory in place of the hub id:

- **Hugging Face**: `config.json` + `model.safetensors` of a standard
  `LlamaForCausalLM` (TaskGPT is Llama-shaped: half-half RoPE, SwiGLU, RMSNorm,
  tied embeddings), `generation_config.json`, and the tokenizer as
  `tokenizer.json` (byte-identical to the training tokenizer) with
  `tokenizer_config.json` / `special_tokens_map.json`. No remote code is needed.
- **TransformerLens**: `hooked_transformer.pt` = `{"config", "model_state_dict"}`,
  the config as plain Python values so `torch.load(weights_only=True)` reads it,
  the state dict complete (including TransformerLens's buffers) so a strict
  `load_state_dict` succeeds.
- **Raw PyTorch**: `pytorch_model.pt` = `{"config": GPTConfig fields,
  "model_state_dict"}` for `TaskGPT(GPTConfig(**blob["config"]))`.

plus a generated model card (`README.md`) and `interpgpt_export.json` (variant,
held-out loss, verification, provenance). Before the directory is renamed into
place, each form is loaded back through its public path and its logits are
compared with the source model's, so an export that does not compute the same
function is never published.

`load_exported(path)` turns an export dir or a bare bundle file back into a
TaskGPT; `artifacts.load_model` delegates everything that is not a run dir here.
Loading never unpickles code (safetensors or `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from interpgpt.artifacts import convert
from interpgpt.artifacts.config import ExportConfig
from interpgpt.artifacts.load import (
    LoadedModel,
    load_exported,
    load_model,
    safe_torch_load,
    tokenizer_file,
)
from interpgpt.artifacts.modelcard import ModelCard, find_corpus_stats, render_model_card
from interpgpt.artifacts.names import (
    EXPORT_INFO,
    MODEL_CARD,
    RAW_BUNDLE,
    RUN_CONFIG,
    SPECIAL_TOKENS_MAP,
    TL_BUNDLE,
    TOKENIZER_CONFIG,
    TOKENIZER_FILE,
)
from interpgpt.errors import UserError
from interpgpt.io import (
    describe_fault,
    file_sha256,
    provenance,
    read_json,
    remove_stale_temps,
    replace_dir,
    write_json,
    write_text,
)
from interpgpt.model.config import GPTConfig
from interpgpt.model.taskgpt import TaskGPT

# Logit agreement the export must reach before it is published (fp32); the raw
# bundle holds the very same tensors, TransformerLens sums heads in another order.
TOLERANCE = {"huggingface": 1e-4, "transformer_lens": 1e-3, "pytorch": 1e-6}


@dataclass
class ExportResult:
    """The export directory and what was checked about it."""

    out_dir: Path
    files: dict[str, Path]
    """Every file written, by name."""
    n_parameters: int
    variant: str | None
    max_abs_logit_diff: dict[str, float] = field(default_factory=dict)
    """Per form ("huggingface", "transformer_lens", "pytorch"): the largest logit
    difference from the source model on a sample decomposition (empty if not verified)."""


# --------------------------------------------------------------------------- writing


def export(config: ExportConfig) -> ExportResult:
    """Write the export directory of `config.model` to `config.out` atomically."""
    out_dir = config.out
    if out_dir.resolve() == config.model.resolve():
        raise UserError(f"--out {out_dir}: must differ from the model being exported")
    loaded = load_model(config.model)
    _check_target(out_dir, config.force)
    model, cfg = loaded.model.float().cpu().eval(), loaded.model.cfg
    metadata = _source_metadata(config.model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)  # a killed export's
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        shutil.copyfile(tokenizer_file(config.model), tmp / TOKENIZER_FILE)
        specials = loaded.tokenizer.special_ids
        _write_huggingface(model, specials, tmp)
        _write_tokenizer_config(cfg, tmp)
        torch.save(tl_bundle(model), tmp / TL_BUNDLE)
        torch.save(raw_bundle(model), tmp / RAW_BUNDLE)
        diffs = _verify(model, loaded.tokenizer, tmp) if config.verify else {}
        n_parameters = convert.count_parameters(model)
        info = {
            "variant": loaded.variant,
            "source": str(config.model),
            "val_loss": metadata.get("val_loss"),
            "train": metadata.get("train") or {},
            "steps": metadata.get("steps"),
            "tokens_seen": metadata.get("tokens_seen"),
            "n_parameters": n_parameters,
            "tokenizer_sha256": file_sha256(tmp / TOKENIZER_FILE),
            "max_abs_logit_diff": diffs,
            "provenance": provenance(config),
        }
        _write_card(info, loaded, out_dir, tmp)
        write_json(tmp / EXPORT_INFO, info)
        replace_dir(tmp, out_dir)  # replaces an earlier export
    except OSError as err:
        raise UserError(f"--out {describe_fault(err, out_dir)}") from None
    except RuntimeError as err:  # torch.save reports a failed write (a full disk) this way
        if "write" not in str(err):
            raise
        raise UserError(
            f"--out {out_dir}: writing failed; is the disk full? free some space and run again"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = {p.name: p for p in sorted(out_dir.iterdir()) if p.is_file()}
    return ExportResult(out_dir, files, n_parameters, loaded.variant, diffs)


def _check_target(out_dir: Path, force: bool) -> None:
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a directory")
    if not force:
        raise UserError(f"--out {out_dir}: already exists; pass --force to replace it")
    if not (out_dir / EXPORT_INFO).is_file():
        raise UserError(
            f"--out {out_dir}: not an earlier export (no {EXPORT_INFO}); refusing to replace it"
        )


def _source_metadata(path: Path) -> dict[str, Any]:
    """The run dir's config.json (variant, train config, val_loss), or an export's info."""
    for name in (RUN_CONFIG, EXPORT_INFO):
        candidate = path / name
        if path.is_dir() and candidate.is_file():
            blob = read_json(candidate)
            if name == EXPORT_INFO or "model" in blob:
                return blob
    return {}


def llama_config(cfg: GPTConfig, specials: dict[str, int]) -> dict[str, Any]:
    """`LlamaConfig` keyword arguments computing the same function as TaskGPT `cfg`."""
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_mlp,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head,
        "head_dim": cfg.d_head,
        "max_position_embeddings": cfg.n_ctx,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_base,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "initializer_range": cfg.init_std,
        # Every sequence opens with <|task|>, written explicitly by the prompt format.
        "bos_token_id": specials["<|task|>"],
        "eos_token_id": specials["<|end|>"],
        "pad_token_id": specials["<|pad|>"],
    }


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars (shard writing / weight loading) for a block."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _write_huggingface(model: TaskGPT, specials: dict[str, int], out: Path) -> None:
    """config.json, model.safetensors and generation_config.json via save_pretrained."""
    cfg = model.cfg
    hf_cfg = LlamaConfig(**llama_config(cfg, specials))
    with torch.device("meta"):
        hf_model = LlamaForCausalLM(hf_cfg)
    state = convert.to_llama_state_dict(model.state_dict(), cfg)
    result = hf_model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys or set(result.missing_keys) - {"lm_head.weight"}:
        raise RuntimeError(f"Llama state dict mismatch: {result}")
    hf_model.tie_weights()  # lm_head shares the embedding, as TaskGPT's unembedding does
    hf_model.generation_config = GenerationConfig(
        bos_token_id=specials["<|task|>"],
        eos_token_id=specials["<|end|>"],
        pad_token_id=specials["<|pad|>"],
        max_length=cfg.n_ctx,
        do_sample=False,
    )
    with _quiet_transformers():
        hf_model.save_pretrained(out)


def _write_tokenizer_config(cfg: GPTConfig, out: Path) -> None:
    """HF tokenizer metadata around the unchanged tokenizer.json.

    No BOS/EOS is ever inserted automatically: the prompt format writes <|task|>
    itself, and the model writes <|end|>. Left padding, because batched
    generation appends on the right.
    """
    specials = {
        "bos_token": "<|task|>",
        "eos_token": "<|end|>",
        "pad_token": "<|pad|>",
        "additional_special_tokens": ["<|steps|>", "<|sep|>"],
    }
    write_json(
        out / TOKENIZER_CONFIG,
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": cfg.n_ctx,
            "padding_side": "left",
        },
    )
    write_json(out / SPECIAL_TOKENS_MAP, specials)


def tl_bundle(model: TaskGPT) -> dict[str, Any]:
    """The `hooked_transformer.pt` payload: plain-value config + complete TL state dict."""
    tl_model = convert.to_hooked_transformer(model)
    state = {k: v.detach().cpu().clone() for k, v in tl_model.state_dict().items()}
    return {"config": convert.hooked_transformer_config(model.cfg), "model_state_dict": state}


def raw_bundle(model: TaskGPT) -> dict[str, Any]:
    """The `pytorch_model.pt` payload: GPTConfig fields + TaskGPT state dict."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"config": model.cfg.to_dict(), "model_state_dict": state}


def _write_card(info: dict[str, Any], loaded: LoadedModel, out_dir: Path, tmp: Path) -> None:
    card = ModelCard(
        cfg=loaded.model.cfg,
        n_parameters=info["n_parameters"],
        variant=info["variant"],
        val_loss=info["val_loss"],
        tokenizer_vocab=loaded.tokenizer.vocab_size,
        steps=info["steps"],
        tokens_seen=info["tokens_seen"],
        train=info["train"],
        corpus_stats=find_corpus_stats(info["train"], loaded.source),
        location=str(out_dir.resolve()),
        files=sorted([*(p.name for p in tmp.iterdir()), MODEL_CARD, EXPORT_INFO]),
    )
    write_text(tmp / MODEL_CARD, render_model_card(card))


# --------------------------------------------------------------------------- verifying


def _verify(model: TaskGPT, tokenizer: Any, out: Path) -> dict[str, float]:
    """Load every written form back through its public path; compare logits."""
    ids = torch.tensor([_sample_ids(tokenizer, model.cfg.n_ctx)])
    with torch.no_grad():
        reference = model(ids)
        logits = {
            "huggingface": hf_logits(out, ids),
            "transformer_lens": tl_logits(out / TL_BUNDLE, ids),
            "pytorch": load_exported(out / RAW_BUNDLE).model(ids),
        }
    diffs = {name: float((value - reference).abs().max()) for name, value in logits.items()}
    for name, diff in diffs.items():
        if not diff <= TOLERANCE[name]:
            raise RuntimeError(
                f"export check failed: {name} logits differ from TaskGPT by {diff:.2e} "
                f"(tolerance {TOLERANCE[name]:.0e})"
            )
    return diffs


def _sample_ids(tokenizer: Any, n_ctx: int) -> list[int]:
    ids = tokenizer.encode_example(
        "Clean the kitchen", ["Wash dishes", "sip water", "Wipe counters", "Sweep floor"]
    )
    return ids[:n_ctx]


def hf_logits(out: Path, ids: Tensor) -> Tensor:
    """Logits of the Hugging Face dir `out` loaded as a plain `AutoModelForCausalLM`."""
    with _quiet_transformers():
        hf_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    return hf_model.eval()(ids).logits


def tl_logits(path: Path, ids: Tensor) -> Tensor:
    """The seed card's TransformerLens snippet, with weights_only=True."""
    blob = safe_torch_load(path)
    tl_cfg = HookedTransformerConfig(**blob["config"], device="cpu")
    tl_model = HookedTransformer(tl_cfg)
    tl_model.load_state_dict(blob["model_state_dict"])  # strict, as the card does
    return tl_model.eval()(ids)
