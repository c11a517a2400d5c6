"""Train a small TaskGPT on the synthetic IOI language, and load it back.

The IOI model is a TaskGPT (same blocks, hooks and conversions as the matched
pair) with a narrow custom shape, trained with next-token loss on the stream of
`language.training_batch` under bf16 autocast. Its directory is self-contained:
`model.safetensors`, `ioi_model.json` (GPTConfig, training config, held-out
split, held-out logit difference, provenance), the word-level `tokenizer.json`
and `metrics.jsonl`. The config file has its own name so `artifacts.load_model`
never mistakes an IOI model for a matched-pair run dir (different tokenizer).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from interpgpt.analysis.data import resolve_device
from interpgpt.artifacts import MODEL_WEIGHTS, TOKENIZER_FILE, build_model, load_safetensors
from interpgpt.io import UserError, atomic_path, provenance, read_json, write_json, write_text
from interpgpt.ioi.language import IOISplit, IOITokenizer, build_ioi_tokenizer, training_batch
from interpgpt.model import GPTConfig, TaskGPT

IOI_CONFIG = "ioi_model.json"
IOI_METRICS = "metrics.jsonl"


@dataclass(frozen=True)
class IOITrainConfig:
    """How the IOI model is shaped and trained."""

    n_layer: int = 3
    """Transformer blocks (IOI needs duplicate detection before the name move: at least 2)."""
    n_head: int = 4
    """Attention heads per block."""
    d_model: int = 64
    """Residual stream width."""
    d_head: int = 16
    """Width of one head."""
    d_mlp: int = 128
    """SwiGLU hidden width."""
    n_ctx: int = 40
    """Context length: the longest IOI sentence plus its answer fits."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 64
    """Sequences per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warmup, cosine decay)."""
    warmup: int = 100
    """Warmup steps."""
    weight_decay: float = 0.05
    """AdamW weight decay on matrices."""
    repeat_fraction: float = 0.2
    """Share of sequences that are a random word sequence repeated (grows induction heads)."""
    pair_fraction: float = 0.2
    """Share of unordered name pairs held out of training."""
    seed: int = 0
    """Seed of the init, the data stream and the held-out split."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda"."""
    precision: Literal["bf16", "fp32"] = "fp32"
    """Autocast dtype of the matmuls. fp32 by default: at this width the casts cost more
    than bf16 saves on CPU (bf16 pays off at the matched pair's widths)."""
    threads: int = 1
    """CPU threads for training (0: torch's default). At this width one thread is as fast
    as two and avoids OpenMP spinning when the cores are shared (measured 10x)."""

    def __post_init__(self) -> None:
        if self.n_layer < 1 or self.steps < 1 or self.batch_size < 1:
            raise UserError("IOI training needs n_layer, steps and batch_size >= 1")
        if not 0.0 <= self.pair_fraction < 1.0:
            raise UserError(f"pair_fraction must be in [0, 1), got {self.pair_fraction}")


@dataclass
class IOIModel:
    """A model that does IOI, with what the pipeline needs to prompt it."""

    model: TaskGPT
    tokenizer: IOITokenizer
    split: IOISplit
    source: Path
    info: dict = field(default_factory=dict)


@dataclass
class IOITrainResult:
    out_dir: Path
    final_loss: float
    seconds: float
    heldout_logit_diff: float
    """Mean logit(IO) − logit(S) over held-out pairs × held-out templates."""
    min_role_swap: float
    """The smallest per-(pair, role assignment) mean logit difference on the held-out set."""


def gpt_config(config: IOITrainConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(
        vocab_size=vocab_size,
        n_layer=config.n_layer,
        n_head=config.n_head,
        d_model=config.d_model,
        d_head=config.d_head,
        d_mlp=config.d_mlp,
        n_ctx=config.n_ctx,
    )


def _lr(step: int, config: IOITrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: TaskGPT, config: IOITrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98))


def _fit(model, tok, split, config, device) -> tuple[list[dict], float]:
    rng = random.Random(config.seed)
    opt = _optimizer(model, config)
    log, loss_value = [], float("nan")
    model.train()
    for step in range(config.steps):
        batch = training_batch(
            tok, split, config.batch_size, rng, config.repeat_fraction, config.n_ctx
        ).to(device)
        for group in opt.param_groups:
            group["lr"] = _lr(step, config)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            logits = model(batch[:, :-1])
        targets = batch[:, 1:].masked_fill(batch[:, 1:] == tok.pad_id, -100)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_value = float(loss.detach())
        if step % 50 == 0 or step == config.steps - 1:
            log.append({"step": step, "loss": loss_value, "lr": _lr(step, config)})
    model.eval()
    return log, loss_value


def train_ioi_model(config: IOITrainConfig, out_dir: str | Path) -> IOITrainResult:
    """Train the IOI model and write its directory; returns held-out numbers."""
    from interpgpt.ioi.baseline import baseline  # the pipeline's own metric
    from interpgpt.ioi.subjects import subject_from_ioi_model

    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    tok = IOITokenizer(build_ioi_tokenizer())
    split = IOISplit.make(config.seed, config.pair_fraction)
    model = TaskGPT(gpt_config(config, tok.vocab_size)).to(device)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    try:
        log, final_loss = _fit(model, tok, split, config, device)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    ioi = IOIModel(model, tok, split, out_dir)
    base = baseline(subject_from_ioi_model(ioi), split.held_out_prompts(0))
    _save(ioi, config, log, seconds, base)
    return IOITrainResult(
        out_dir, final_loss, seconds, base.mean_logit_diff, min(r.logit_diff for r in base.swaps)
    )


def _save(ioi: IOIModel, config: IOITrainConfig, log, seconds: float, base) -> None:
    out = ioi.source
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in ioi.model.state_dict().items()}
    with atomic_path(out / MODEL_WEIGHTS) as tmp:
        save_file(state, str(tmp))
    ioi.tokenizer.save(out / TOKENIZER_FILE)
    write_text(out / IOI_METRICS, "".join(json.dumps(row) + "\n" for row in log))
    write_json(
        out / IOI_CONFIG,
        {
            "model": ioi.model.cfg.to_dict(),
            "train": config,
            "split": ioi.split,
            "train_seconds": seconds,
            "heldout": {
                "definition": HELDOUT_DEFINITION,
                "mean_logit_diff": base.mean_logit_diff,
                "frac_positive": base.frac_positive,
                "min_role_swap": min(r.logit_diff for r in base.swaps),
                "n_prompts": base.n_prompts,
            },
            "provenance": provenance(config),
        },
    )


HELDOUT_DEFINITION = (
    "prompts whose (IO, S) name pair is one of the unordered pairs never used together "
    "in training, in both role assignments, written in templates never used in training; "
    "every name and every word occurs in training in other combinations"
)


def load_ioi_model(path: str | Path, device: str = "auto") -> IOIModel:
    """Load a directory written by `train_ioi_model`."""
    path = Path(path)
    if not (path / IOI_CONFIG).is_file():
        raise UserError(
            f"{path}: not an IOI model directory (no {IOI_CONFIG}); "
            "train one with `interpgpt ioi-demo --out DIR` or pass --model gpt2"
        )
    info = read_json(path / IOI_CONFIG)
    try:
        cfg = GPTConfig(**info["model"])
        split = IOISplit(
            held_out_pairs=tuple(tuple(p) for p in info["split"]["held_out_pairs"]),
            held_out_templates=tuple(info["split"]["held_out_templates"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path / IOI_CONFIG}: malformed IOI model config ({err})") from None
    model = build_model(cfg, load_safetensors(path / MODEL_WEIGHTS), path / MODEL_WEIGHTS)
    tok = IOITokenizer.from_file(path / TOKENIZER_FILE)
    return IOIModel(model.to(resolve_device(device)), tok, split, path, info)
