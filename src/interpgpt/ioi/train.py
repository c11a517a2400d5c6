"""Train a small TaskGPT on the synthetic IOI language and write its directory.

The IOI model is a TaskGPT (same blocks, hooks and conversions as the matched
pair) with a narrow custom shape, trained with next-token loss on the stream of
`language.training_batch` by the matched pair's optimizer step (`train.step`:
AdamW with decay on matrices, warmup then cosine decay, the mean loss over non-pad
targets, gradient clipping, bf16 autocast when `precision` asks for it). What is its
own: the data stream, the shape and hyperparameters, and no checkpoints, validation
loss or samples during training; the held-out logit difference is measured after.
`local_model` reads the directory back (`model.safetensors`, `ioi_model.json`, the
word-level `tokenizer.json`, `metrics.jsonl`).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from interpgpt.artifacts.names import MODEL_WEIGHTS, TOKENIZER_FILE
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import atomic_path, provenance, write_json, write_text
from interpgpt.ioi.baseline import Baseline, baseline
from interpgpt.ioi.config import IOITrainConfig
from interpgpt.ioi.language import (
    HELDOUT_DEFINITION,
    IOISplit,
    IOITokenizer,
    build_ioi_tokenizer,
    training_batch,
)
from interpgpt.ioi.local_model import IOI_CONFIG, IOIModel
from interpgpt.ioi.subjects import subject_from_ioi_model
from interpgpt.model.config import GPTConfig
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.train.batches import Batch, next_token_batch
from interpgpt.train.distributed import DistInfo
from interpgpt.train.step import NonFiniteLoss, Stepper, adamw, warmup_cosine

IOI_METRICS = "metrics.jsonl"
LOG_EVERY = 50
"""Steps between metrics.jsonl records (and the last step)."""


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


def lr_at(step: int, config: IOITrainConfig) -> float:
    """Linear warmup over `config.warmup` steps, cosine decay to a tenth of the peak."""
    return warmup_cosine(
        step, peak=config.lr, warmup=config.warmup, total=config.steps, min_ratio=0.1
    )


@dataclass
class IOIBatches:
    """The training stream of the IOI language (`language.training_batch`) as a
    `train.step.BatchSource`. A stream, not indexable: each call draws the next batch from
    `rng`, so call it for steps 0, 1, 2, ... in order."""

    tok: IOITokenizer
    split: IOISplit
    config: IOITrainConfig
    rng: random.Random

    def batch(self, step: int, dist: DistInfo) -> tuple[Batch, int]:
        c = self.config
        ids = training_batch(
            self.tok, self.split, c.batch_size, self.rng, c.repeat_fraction, c.n_ctx
        )
        every = next_token_batch(ids, self.tok.pad_id)
        per_rank = len(ids) // dist.world
        mine = ids[dist.rank * per_rank : (dist.rank + 1) * per_rank]
        return next_token_batch(mine, self.tok.pad_id), every.n_tokens


def _fit(
    model: TaskGPT, tok: IOITokenizer, split: IOISplit, config: IOITrainConfig, device: torch.device
) -> tuple[list[dict], float]:
    """`config.steps` optimizer steps of `train.step.Stepper` on the IOI stream."""
    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    stepper = Stepper(
        model,
        optimizer,
        DistInfo(rank=0, world=1, device=device),
        schedule=lambda step: lr_at(step, config),
        grad_clip=1.0,
        autocast=config.precision == "bf16",
    )
    stream = IOIBatches(tok, split, config, random.Random(config.seed))
    log, loss = [], float("nan")
    for step in range(config.steps):
        try:
            loss, _ = stepper.step(step, stream)
        except NonFiniteLoss:
            raise UserError(
                f"IOI training loss became NaN/inf at step {step}; lower lr or raise warmup"
            ) from None
        if step % LOG_EVERY == 0 or step == config.steps - 1:
            log.append({"step": step, "loss": loss, "lr": lr_at(step, config)})
    model.eval()
    return log, loss


def train_ioi_model(config: IOITrainConfig, out_dir: str | Path) -> IOITrainResult:
    """Train the IOI model and write its directory; returns held-out numbers (measured
    with the pipeline's own metric, `baseline`)."""
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


def _save(
    ioi: IOIModel, config: IOITrainConfig, log: list[dict], seconds: float, base: Baseline
) -> None:
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
