"""Training one model of the matched pair: same init, same data-order policy, own corpus.

The matched-pair recipe. Both variants start from bit-identical weights
(`initial_model`: `torch.manual_seed(seed)` right before `TaskGPT(cfg)`, and the model
shape comes from the preset alone, never from the corpus or tokenizer), and both read
their corpus in an order that is a pure function of (seed, step) (`data.sample_indices`).
Everything else — optimizer, schedule, batch, steps — comes from the same config, so
the only difference between the two runs is the text they see.

Which tokens carry loss. A sequence is `<|task|> task <|steps|> s1 <|sep|> ... <|end|>`
and every next-token target from the first token after `<|task|>` through `<|end|>`
inclusive carries loss: the task text too (it shapes the task representation the
analyses probe), `<|steps|>` and `<|sep|>` (the model must learn where steps start and
how many there are — the step-count/complexity statistic depends on it), and `<|end|>`
(so generation stops). `<|task|>` itself is never a target (nothing precedes it), and
right padding carries no loss (IGNORE_INDEX), so batch composition does not change the
per-token objective. The loss is the mean over all such targets of the global batch.

Optimisation (nanoGPT's recipe): AdamW with weight decay on matrices only (norm gains
are not decayed), linear warmup then cosine decay to `min_lr_ratio * lr` (the learning
rate is a pure function of the step, so there is no scheduler state to restore),
gradient-norm clipping, bf16 autocast where the device supports it.

Resuming. A checkpoint (`checkpoint.safetensors`, written atomically) holds the model,
AdamW's moments and step counts, the step and the RNG states; the data order and the
learning rate are functions of the step, so `--resume` reaches bit-identical final
weights on CPU to an uninterrupted run (tested).

Beyond one machine: under `torchrun` the run uses DDP (gloo on CPU, NCCL on GPU). Each
rank takes its slice of the same global batch and scales its token-sum loss by
world_size / global_targets, so DDP's gradient average equals the single-process
gradient of the global batch. Rank 0 evaluates, samples and writes every file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as torch_dist
from rich.console import Console

from interpgpt import artifacts
from interpgpt.data import (
    IGNORE_INDEX,
    Batch,
    TokenSet,
    count_targets,
    load_splits,
    make_batch,
    sample_indices,
)
from interpgpt.io import (
    UserError,
    atomic_path,
    file_sha256,
    provenance,
    read_jsonl,
    write_bytes,
    write_json,
    write_text,
)
from interpgpt.model import PRESETS, GPTConfig, TaskGPT, preset
from interpgpt.unembed_loss import unembed_cross_entropy


@dataclass(frozen=True)
class PresetBudget:
    """Default training budget of one model preset."""

    steps: int
    """Optimizer steps."""
    batch_size: int
    """Sequences per optimizer step (global, across all ranks)."""
    lr: float
    """Peak learning rate."""


# Budgets are data. `small` is sized to train one variant in a few minutes on a 2-core
# CPU and still produce decompositions that parse; `full` follows the seed cards' ~25k
# steps; `tiny` exists for tests.
TRAIN_DEFAULTS: dict[str, PresetBudget] = {
    "full": PresetBudget(steps=25_000, batch_size=64, lr=6e-4),
    "small": PresetBudget(steps=800, batch_size=32, lr=2e-3),
    "tiny": PresetBudget(steps=200, batch_size=16, lr=3e-3),
}


@dataclass
class TrainConfig:
    """One model's training run. Unset budget fields take the preset's TRAIN_DEFAULTS."""

    corpus: Path
    """Corpus directory written by `interpgpt corpus`."""
    tokenizer: Path
    """tokenizer.json written by `interpgpt tokenizer`."""
    out: Path
    """Run directory to write (model, config, metrics, checkpoint, loss plot)."""
    variant: Literal["standard", "adhd"] = "standard"
    """Which corpus variant to train on; the only thing that differs within a pair."""
    preset: str = "small"
    """Model preset (model.PRESETS)."""
    steps: int | None = None
    """Optimizer steps."""
    batch_size: int | None = None
    """Sequences per optimizer step, summed over DDP ranks."""
    lr: float | None = None
    """Peak learning rate."""
    seed: int = 0
    """Seed of the initial weights and of the data order."""
    warmup_fraction: float = 0.05
    """Fraction of steps of linear learning-rate warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (cosine decay)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, applied to matrices only."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    autocast: bool = True
    """bf16 autocast for matmuls where the device supports it; False trains in fp32."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda; under torchrun, cuda means the local rank's GPU."""
    log_every: int = 10
    """Steps between metrics.jsonl records of the training loss."""
    eval_every: int | None = None
    """Steps between validation losses and sample decompositions (None: steps // 5)."""
    eval_batches: int = 4
    """Validation batches per evaluation (a fixed subset of the val split)."""
    n_samples: int = 3
    """Val tasks greedily decomposed at each evaluation (0 disables)."""
    checkpoint_every: int | None = None
    """Steps between checkpoints (None: eval_every)."""
    resume: bool = False
    """Continue from the run dir's checkpoint (a fresh start if it has none)."""
    stop_after_steps: int | None = None
    """Stop after this step as if killed (no final files); for tests and time-boxing."""
    progress: bool = True
    """Show a rich progress bar."""

    def __post_init__(self) -> None:
        self.corpus, self.tokenizer, self.out = (
            Path(self.corpus),
            Path(self.tokenizer),
            Path(self.out),
        )
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.variant not in ("standard", "adhd"):
            raise UserError(f"--variant must be standard or adhd, got {self.variant!r}")
        if self.preset not in PRESETS:
            raise UserError(f"--preset {self.preset!r}: choose one of {sorted(PRESETS)}")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "stop_after_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.log_every < 1 or self.eval_batches < 1 or self.n_samples < 0:
            raise UserError("log_every and eval_batches must be >= 1, n_samples >= 0")

    def resolved(self) -> TrainConfig:
        """This config with every None budget field filled from the preset's defaults."""
        budget = TRAIN_DEFAULTS[self.preset]
        steps = self.steps or budget.steps
        eval_every = self.eval_every or max(1, steps // 5)
        return dataclasses.replace(
            self,
            steps=steps,
            batch_size=self.batch_size or budget.batch_size,
            lr=self.lr or budget.lr,
            eval_every=eval_every,
            checkpoint_every=self.checkpoint_every or eval_every,
        )


@dataclass(frozen=True)
class TrainResult:
    """What a training run wrote and how it went."""

    run_dir: Path
    """The run directory (load it with `artifacts.load_model`)."""
    finished: bool
    """False when `stop_after_steps` ended the run early (no final model written)."""
    steps: int
    """Optimizer steps completed."""
    val_loss: float
    """Validation loss of the final model (NaN if not finished)."""
    tokens_seen: int
    """Real (non-pad) training tokens processed, this invocation and earlier ones."""
    tokens_per_second: float
    """Training throughput of this invocation (all ranks, evaluation time excluded)."""
    seconds: float
    """Wall time of this invocation."""
    resumed_from: int
    """Step the run resumed from (0 for a fresh start)."""
    samples: list[dict] = field(default_factory=list)
    """The last evaluation's sample decompositions ({task, steps, parsed})."""


def model_config(config: TrainConfig) -> GPTConfig:
    """The model shape: the preset alone, so both variants of a pair share it."""
    return preset(config.preset)


def initial_model(config: TrainConfig) -> TaskGPT:
    """The initial weights: a function of (preset, seed) only, identical for both variants."""
    torch.manual_seed(config.seed)
    return TaskGPT(model_config(config))


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr_ratio * lr` at the last step."""
    assert config.steps is not None and config.lr is not None, "call on config.resolved()"
    warmup = max(1, round(config.warmup_fraction * config.steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def make_optimizer(model: TaskGPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (embedding, projections), none on norm gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr or 0.0, betas=config.betas)


def autocast_enabled(config: TrainConfig, device: torch.device) -> bool:
    if not config.autocast:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def batch_loss(
    forward: torch.nn.Module, model: TaskGPT, batch: Batch, total_targets: int, world: int
) -> torch.Tensor:
    """This rank's share of the global-batch mean loss (see the module docstring).

    `forward` is the model or its DDP wrapper. Logits are computed only at positions whose
    target carries loss (right padding is often a third of a batch), a chunk of rows at a
    time and never all at once (`unembed_loss`): the vocabulary projection and softmax
    dominate a small model's step.
    """
    resid = forward(batch.input_ids, stop_at_layer=model.cfg.n_layer)
    keep = batch.targets != IGNORE_INDEX
    normed = model.ln_final(resid[keep])  # (target, d_model)
    loss_sum = unembed_cross_entropy(normed, model.embed.weight, batch.targets[keep])
    return loss_sum * (world / total_targets)


def load_tokenizer(config: TrainConfig, cfg: GPTConfig):
    """The shared tokenizer; its ids must fit the preset's embedding."""
    from interpgpt.tokenizer import TaskTokenizer

    tokenizer = TaskTokenizer.from_file(config.tokenizer)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(
            f"--tokenizer {config.tokenizer}: {tokenizer.vocab_size} tokens do not fit preset "
            f"{config.preset!r} ({cfg.vocab_size} embedding rows); retrain the tokenizer "
            f"with --vocab-size {cfg.vocab_size - 5} or less"
        )
    return tokenizer


def check_run_dir(config: TrainConfig) -> None:
    """Refuse to overwrite an existing run unless resuming it."""
    used = [n for n in (artifacts.CHECKPOINT, artifacts.MODEL_WEIGHTS) if (config.out / n).exists()]
    if used and not config.resume:
        raise UserError(
            f"--out {config.out}: already holds a run ({used[0]}); pass --resume to continue "
            "it or choose another directory"
        )


def write_run(state: LoopState, val_loss: float) -> None:
    """The final run dir files: weights, config.json, a copy of the tokenizer."""
    from safetensors.torch import save_file

    config = state.config
    out = config.out
    weights = {
        k: v.detach().float().contiguous().cpu() for k, v in state.model.state_dict().items()
    }
    with atomic_path(out / artifacts.MODEL_WEIGHTS) as tmp:
        save_file(weights, str(tmp))
    write_bytes(out / artifacts.TOKENIZER_FILE, config.tokenizer.read_bytes())
    write_json(
        out / artifacts.RUN_CONFIG,
        {
            "model": state.model.cfg.to_dict(),
            "train": config,
            "variant": config.variant,
            "tokenizer_sha256": file_sha256(config.tokenizer),
            "val_loss": val_loss,
            "steps": state.step,
            "tokens_seen": state.tokens_seen,
            "provenance": provenance(config),
        },
    )


def train(config: TrainConfig) -> TrainResult:
    """Train one variant and write its run dir; see the module docstring for the recipe."""
    config = config.resolved()
    dist = init_distributed(config.device)
    try:
        return _train(config, dist)
    finally:
        finish_distributed(dist)


def _train(config: TrainConfig, dist: DistInfo) -> TrainResult:
    started = time.perf_counter()
    assert config.batch_size is not None
    if config.batch_size % dist.world:
        raise UserError(f"--batch-size {config.batch_size} is not divisible by {dist.world} ranks")
    check_run_dir(config)
    tokenizer = load_tokenizer(config, model_config(config))
    train_set, val_set = load_splits(config.corpus, config.variant, tokenizer)
    model = initial_model(config).to(dist.device)
    optimizer = make_optimizer(model, config)
    console = Console(quiet=dist.rank != 0)
    state = LoopState.start(model, optimizer, config, dist, tokenizer, train_set, val_set)
    if state.step:
        console.print(f"resuming {config.out} from step {state.step}")
    seconds_training = run_loop(state, console)
    finished = state.step >= (config.steps or 0)
    val_loss = float("nan")
    if finished and dist.rank == 0:
        last = [r for r in state.records if "val_loss" in r and r["step"] == state.step]
        val_loss = last[-1]["val_loss"] if last else state.evaluate()
        write_run(state, val_loss)
        write_loss_plot(
            state.records, config.out / artifacts.LOSS_PLOT, f"{config.variant} ({config.preset})"
        )
    dist.barrier()
    return TrainResult(
        run_dir=config.out,
        finished=finished,
        steps=state.step,
        val_loss=val_loss,
        tokens_seen=state.tokens_seen,
        tokens_per_second=state.tokens_this_run / max(seconds_training, 1e-9),
        seconds=time.perf_counter() - started,
        resumed_from=state.resumed_from,
        samples=state.last_samples,
    )


# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world: int
    device: torch.device

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()


def init_distributed(device_name: str) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    from interpgpt.analysis.data import resolve_device

    device = resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(torch_dist.get_rank(), torch_dist.get_world_size(), device)


def finish_distributed(dist: DistInfo) -> None:
    if dist.world > 1 and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


# ----------------------------------------------------------------------------- the loop


@dataclass
class LoopState:
    """Everything the loop mutates; `step` counts completed optimizer steps."""

    model: TaskGPT
    ddp: torch.nn.Module  # the model, DDP-wrapped under torchrun
    optimizer: torch.optim.AdamW
    config: TrainConfig
    dist: DistInfo
    tokenizer: object
    train_set: TokenSet
    val_set: TokenSet
    step: int = 0
    tokens_seen: int = 0
    tokens_this_run: int = 0
    resumed_from: int = 0
    records: list[dict] = field(default_factory=list)
    last_samples: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, model, optimizer, config, dist, tokenizer, train_set, val_set) -> LoopState:
        ddp = model
        if dist.world > 1:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        state = cls(model, ddp, optimizer, config, dist, tokenizer, train_set, val_set)
        if config.resume and (config.out / artifacts.CHECKPOINT).is_file():
            load_checkpoint(state)
        return state

    def precision(self):
        enabled = autocast_enabled(self.config, self.dist.device)
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self) -> float:
        """One optimizer step on global batch `self.step`; returns its mean loss."""
        config, dist, n_ctx = self.config, self.dist, self.model.cfg.n_ctx
        indices = sample_indices(config.seed, self.step, config.batch_size, len(self.train_set))
        total = count_targets(self.train_set, indices, n_ctx)
        per_rank = len(indices) // dist.world
        local = indices[dist.rank * per_rank : (dist.rank + 1) * per_rank]
        batch = make_batch(self.train_set, local, self.tokenizer.pad_id, n_ctx)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, config)
        self.ddp.train()
        with self.precision():
            loss = batch_loss(self.ddp, self.model, batch.to(dist.device), total, dist.world)
        value = loss.detach() / dist.world
        if dist.world > 1:
            torch_dist.all_reduce(value)
        if not math.isfinite(float(value)):
            raise UserError(nan_message(self))
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += total
        self.tokens_this_run += total
        return float(value)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Token-weighted mean loss on a fixed subset of the val split (rank 0 only)."""
        if self.dist.rank != 0:
            return float("nan")
        config, n_ctx = self.config, self.model.cfg.n_ctx
        assert config.batch_size is not None
        self.model.eval()
        loss_sum, targets = 0.0, 0
        for k in range(config.eval_batches):
            indices = sample_indices(config.seed, k, config.batch_size, len(self.val_set))
            batch = make_batch(self.val_set, indices, self.tokenizer.pad_id, n_ctx)
            with self.precision():
                batch = batch.to(self.dist.device)
                loss_sum += float(batch_loss(self.model, self.model, batch, 1, 1))
            targets += batch.n_tokens
        return loss_sum / targets

    def sample(self) -> list[dict]:
        """Greedy decompositions of the first few distinct val tasks."""
        from interpgpt.generate import GenerationConfig, sample_decompositions

        tasks = list(dict.fromkeys(self.val_set.tasks))[: self.config.n_samples]
        gen = GenerationConfig(max_new_tokens=self.model.cfg.n_ctx // 2, temperature=0.0)
        self.model.eval()
        decs = sample_decompositions(self.model, self.tokenizer, tasks, gen)
        return [{"task": d.task, "steps": list(d.steps), "parsed": d.parsed} for d in decs]


def nan_message(state: LoopState) -> str:
    path = state.config.out / artifacts.CHECKPOINT
    kept = (
        f"the last good checkpoint is kept in {path}"
        if path.is_file()
        else "no checkpoint was written yet"
    )
    return (
        f"training loss became NaN/inf at step {state.step}; stopped, {kept}; "
        "lower --lr (or raise warmup) and train again"
    )


def run_loop(state: LoopState, console: Console) -> float:
    """Train until `config.steps` (or `stop_after_steps`); returns seconds spent stepping."""
    config = state.config
    assert config.steps is not None and config.eval_every and config.checkpoint_every
    seconds, window_tokens, window_seconds = 0.0, 0, 0.0
    with training_progress(console, config, state.step) as advance:
        while state.step < config.steps:
            before = state.tokens_this_run
            t0 = time.perf_counter()
            loss = state.train_step()
            dt = time.perf_counter() - t0
            seconds, window_seconds = seconds + dt, window_seconds + dt
            window_tokens += state.tokens_this_run - before
            rate = window_tokens / max(window_seconds, 1e-9)
            advance(loss, rate)
            step = state.step
            if step % config.log_every == 0 or step == config.steps:
                state.records.append(
                    {
                        "step": step,
                        "loss": loss,
                        "lr": lr_at(step - 1, config),
                        "tokens_seen": state.tokens_seen,
                        "tokens_per_second": rate,
                    }
                )
                window_tokens, window_seconds = 0, 0.0
            if step % config.eval_every == 0 or step == config.steps:
                evaluate_and_log(state, console)
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(state)
            if config.stop_after_steps is not None and step >= config.stop_after_steps:
                break
    return seconds


def evaluate_and_log(state: LoopState, console: Console) -> None:
    if state.dist.rank != 0:
        return
    record: dict = {"step": state.step, "val_loss": state.evaluate()}
    if state.config.n_samples:
        state.last_samples = record["samples"] = state.sample()
        for s in state.last_samples:
            mark = "" if s["parsed"] else " [unparsed]"
            steps = " | ".join(s["steps"][:12])[:160]
            console.print(f"  [dim]{s['task']}[/dim] -> {steps}{mark}", highlight=False)
    console.print(f"step {state.step}: val loss {record['val_loss']:.4f}")
    state.records.append(record)
    write_metrics(state)


# ----------------------------------------------------------------------------- files


def fingerprint(state: LoopState) -> dict:
    """The settings a checkpoint must share with the run resuming it."""
    c = state.config
    keys = (
        "preset",
        "variant",
        "seed",
        "steps",
        "batch_size",
        "lr",
        "warmup_fraction",
        "min_lr_ratio",
        "weight_decay",
        "betas",
        "grad_clip",
        "autocast",
    )
    blob = {k: getattr(c, k) for k in keys}
    blob["betas"] = list(c.betas)
    blob["tokenizer_sha256"] = file_sha256(c.tokenizer)
    blob["train_examples"] = len(state.train_set)
    return blob


def save_checkpoint(state: LoopState) -> None:
    """Model, AdamW state, step and RNG states in one atomically written safetensors file.

    Weights that went non-finite in the last update are never saved over a good checkpoint.
    """
    if state.dist.rank != 0:
        return
    from safetensors.torch import save_file

    if not all(bool(p.isfinite().all()) for p in state.model.parameters()):
        raise UserError(nan_message(state))

    tensors = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.state_dict().items()
    }
    for index, slots in state.optimizer.state_dict()["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and state.dist.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(state.dist.device)
    meta = {
        "step": str(state.step),
        "tokens_seen": str(state.tokens_seen),
        "fingerprint": json.dumps(fingerprint(state), sort_keys=True),
    }
    with atomic_path(state.config.out / artifacts.CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    write_metrics(state)


def load_checkpoint(state: LoopState) -> None:
    """Restore a checkpoint written by `save_checkpoint` into `state`."""
    from safetensors import safe_open

    path = state.config.out / artifacts.CHECKPOINT
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    saved, current = json.loads(meta.get("fingerprint", "{}")), fingerprint(state)
    differ = sorted(k for k in current if saved.get(k) != current[k])
    if differ:
        raise UserError(
            f"{path}: was written with different settings ({', '.join(differ)}); "
            "resume with the original options or start a new --out"
        )
    tensors = artifacts.load_safetensors(path)
    state.model.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    )
    optim = state.optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            optim["state"].setdefault(int(index), {})[slot] = value
    state.optimizer.load_state_dict(optim)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and state.dist.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], state.dist.device)
    state.step = state.resumed_from = int(meta["step"])
    state.tokens_seen = int(meta["tokens_seen"])
    metrics = state.config.out / artifacts.METRICS
    if metrics.is_file():
        state.records = [r for r in read_jsonl(metrics) if r.get("step", 0) <= state.step]


def write_metrics(state: LoopState) -> None:
    if state.dist.rank == 0:
        lines = "".join(json.dumps(r, allow_nan=True) + "\n" for r in state.records)
        write_text(state.config.out / artifacts.METRICS, lines)


def write_loss_plot(records: list[dict], path: Path, title: str) -> Path:
    """Training loss per log step and validation loss per evaluation, log-scaled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_pts = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val_pts = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train_pts:
        ax.plot(*zip(*train_pts, strict=True), label="train", lw=1)
    if val_pts:
        ax.plot(*zip(*val_pts, strict=True), "o-", label="val", ms=4)
    ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


@contextlib.contextmanager
def training_progress(console: Console, config: TrainConfig, start: int):
    """A rich progress bar (step, loss, tokens/s, ETA); yields `advance(loss, rate)`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(f"[bold]{config.variant}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[rate]:,.0f} tok/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not config.progress,
    )
    with progress:
        task = progress.add_task(
            "train", total=config.steps, completed=start, loss=float("nan"), rate=0.0
        )

        def advance(loss: float, rate: float) -> None:
            progress.update(task, advance=1, loss=loss, rate=rate)

        yield advance
