"""Train a BatchTopK crosscoder on a pair of models, judge it on held-out tokens, write it.

`train_crosscoder` (`interpgpt crosscoder train`) reads two models that share a tokenizer
and shape (a matched pair, or a model and its twin) and one corpus. The recipe mirrors
our SAEs' (`interpgpt.sae.training`):

1. Both models run on the *same* training sequences (by default both variants' train
   splits: each model is read on its own data and on its partner's), their activations
   at `blocks.{layer}.hook_resid_post` streamed through one bounded shuffle buffer
   (`sae.activations.activation_stream`), so a buffer row holds one token in both models.
2. Per-model scales from the first batch, E‖s^m x^m‖² = d_model (`model.py`).
3. b_dec at the geometric median, decoder rows at data points (`trainer.init_from_data`).
4. BatchTopK + AuxK steps with Adam (`trainer.CrosscoderTrainer`), then the inference
   threshold from the decay phase.
5. Held-out quality on the val split per model (`quality.py`).

Written to OUT: `cfg.json` and `crosscoder_weights.safetensors` (`model.py`), and
`quality.json` (quality, training history, provenance). Training is seeded (init and
activation order), so the same seed on the same machine gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from interpgpt.artifacts.load import LoadedModel, load_pair
from interpgpt.constants import VARIANTS, Split, Variant
from interpgpt.corpus.build import CorpusRecord, load_split
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.crosscoder.config import CrosscoderHyperparams, CrosscoderTrainConfig, PairData
from interpgpt.crosscoder.model import (
    BatchTopKCrosscoder,
    CrosscoderConfig,
    ModelRecord,
    model_sha256,
)
from interpgpt.crosscoder.quality import CrosscoderQuality, evaluate_crosscoder
from interpgpt.crosscoder.trainer import CrosscoderTrainer, StepStats, init_from_data
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, write_json
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.sae.activations import activation_stream, collect_activations
from interpgpt.sae.topk import sae_hook_name
from interpgpt.sae.training import QUALITY_FILE
from interpgpt.settings import option_name


@dataclass
class CrosscoderTrainResult:
    """One trained crosscoder: its directory, the crosscoder, its quality and time."""

    path: Path
    crosscoder: BatchTopKCrosscoder
    quality: CrosscoderQuality
    seconds: float
    """Wall time of training (activations and steps, not the evaluation)."""
    history: list[dict[str, float]]
    """Loss, AuxK loss and dead latents at ~20 points of training."""


class Fitted(NamedTuple):
    crosscoder: BatchTopKCrosscoder
    history: list[dict[str, float]]
    """Loss, AuxK loss and dead latents at ~20 points of training."""


class PairRunner(nn.Module):
    """Two token-aligned models as one for `sae.activations`: `run_with_cache` runs each
    and files model i's activation at `hook` as `{hook}#{i}` (`pair_hooks`), so the one
    shuffle buffer keeps a token's activations in both models in the same row."""

    def __init__(self, models: Sequence[TaskGPT]):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.pair = list(models)
        self.cfg = models[0].cfg

    def run_with_cache(self, ids: Tensor, names_filter: Sequence[str], stop_at_layer=None):
        cache = {}
        for name in names_filter:
            hook, index = name.rsplit("#", 1)
            model = self.pair[int(index)]
            _, own = model.run_with_cache(ids, names_filter=[hook], stop_at_layer=stop_at_layer)
            cache[name] = own[hook]
        return None, cache


def pair_hooks(hook: str, n_models: int = 2) -> list[str]:
    return [f"{hook}#{i}" for i in range(n_models)]


def stack_pair(batch: dict[str, Tensor], hooks: Sequence[str]) -> Tensor:
    """{hook#i: (n, d_model)} -> (n, model, d_model)."""
    return torch.stack([batch[h] for h in hooks], dim=1)


def model_names(pair: Sequence[LoadedModel], given: tuple[str, ...]) -> tuple[str, str]:
    """The names the crosscoder's files give the two models: `given`, else their variants,
    else (a model and its twin share a variant) their directory names."""
    if given:
        return (given[0], given[1])
    a, b = pair
    for names in ((a.name, b.name), (Path(a.source).resolve().name, Path(b.source).resolve().name)):
        if names[0] != names[1]:
            return names
    raise UserError(
        f"both models are called {a.name!r}; name them with --model-names A --model-names B"
    )


def data_records(corpus: Path, data: PairData, split: Split) -> list[CorpusRecord]:
    """Every record (all phrasings) of `split` for the chosen variant(s), the variants
    interleaved, so that any prefix (the held-out tokens) holds both."""
    variants: Sequence[Variant] = VARIANTS if data == "both" else (data,)
    per_variant = [load_split(corpus, variant, split) for variant in variants]
    return [r for group in itertools.zip_longest(*per_variant) for r in group if r is not None]


def training_sequences(
    tokenizer: TaskTokenizer, records: list[CorpusRecord], n_ctx: int, seed: int
) -> Iterator[list[int]]:
    """Token ids of the records forever, in a fresh seeded order each epoch (as
    `sae.activations.cycle_sequences`), encoded only when needed: encoding every record of
    the small preset's corpus up front takes longer than training on the few thousand
    that a token budget uses. Records longer than the context are skipped."""
    rng = random.Random(seed)
    order = list(range(len(records)))
    while True:
        rng.shuffle(order)
        kept = 0
        for i in order:
            ids = tokenizer.encode_example(records[i].task, records[i].steps)
            if len(ids) <= n_ctx:
                kept += 1
                yield ids
        if not kept:
            raise UserError("no corpus example fits the model context; nothing to train on")


def length_grouped(
    sequences: Iterator[list[int]], seq_batch: int, seed: int, pool_batches: int = 16
) -> Iterator[list[int]]:
    """`sequences` regrouped so each forward pass of `seq_batch` holds similar lengths:
    pools of `pool_batches` passes are sorted by length and their passes handed out in a
    seeded order. Right-padding to the longest of a random pass wastes about half of
    every pass on this corpus; the shuffle buffer mixes the tokens again."""
    rng = random.Random(seed)
    while True:
        pool = sorted((next(sequences) for _ in range(seq_batch * pool_batches)), key=len)
        chunks = [pool[i : i + seq_batch] for i in range(0, len(pool), seq_batch)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield from chunk


def first_tokens(
    tokenizer: TaskTokenizer, records: list[CorpusRecord], n_ctx: int, n_tokens: int
) -> list[list[int]]:
    """Token ids of the first records that fit the context, up to `n_tokens` tokens."""
    total, chosen = 0, []
    for record in records:
        if total >= n_tokens:
            break
        ids = tokenizer.encode_example(record.task, record.steps)
        if len(ids) <= n_ctx:
            chosen.append(ids)
            total += len(ids)
    if not chosen:
        raise UserError("no held-out example fits the model context; nothing to evaluate on")
    return chosen


def train_crosscoder(config: CrosscoderTrainConfig) -> CrosscoderTrainResult:
    """Train, evaluate and save one crosscoder on `config.std` and `config.adhd`."""
    device = resolve_device(config.device)
    pair = load_pair(config.std, config.adhd, device, config.same_variant)
    loaded = (pair.standard, pair.adhd)
    n_layer = pair.standard.model.cfg.n_layer
    if not 0 <= config.layer < n_layer:
        raise UserError(
            f"{option_name('layer')} {config.layer}: the models have layers 0..{n_layer - 1}"
        )
    names = model_names(loaded, config.model_names)
    models = [m.model for m in loaded]
    std_record, adhd_record = (
        ModelRecord(name, str(m.source), model_sha256(m.model))
        for name, m in zip(names, loaded, strict=True)
    )
    tok, n_ctx = pair.tokenizer, models[0].cfg.n_ctx
    runner = PairRunner(models)
    hooks = pair_hooks(sae_hook_name(config.layer))
    train_records = data_records(config.corpus, config.data, "train")
    stream = activation_stream(
        runner,
        length_grouped(
            training_sequences(tok, train_records, n_ctx, config.seed),
            config.seq_batch,
            config.seed,
        ),
        hooks,
        pad_id=tok.pad_id,
        batch_size=config.batch_size,
        # No point shuffling more activations than the whole budget.
        buffer_tokens=max(2 * config.batch_size, min(config.buffer_tokens, config.tokens)),
        seq_batch=config.seq_batch,
        seed=config.seed,
        autocast=config.autocast,
    )
    start = time.perf_counter()
    crosscoder, history = fit(
        (stack_pair(b, hooks) for b in stream), (std_record, adhd_record), config.layer, config
    )
    seconds = time.perf_counter() - start
    val_records = data_records(config.corpus, config.data, "val")
    # Sorted by length, so each evaluation pass pads little (the metrics are sums).
    val_seqs = sorted(first_tokens(tok, val_records, n_ctx, config.eval_tokens), key=len)
    acts = stack_pair(
        collect_activations(runner, val_seqs, hooks, tok.pad_id, config.seq_batch), hooks
    )
    quality = evaluate_crosscoder(crosscoder, models, acts, val_seqs, tok.pad_id, config.seq_batch)
    path = write_crosscoder(crosscoder, quality, history, seconds, config)
    return CrosscoderTrainResult(path, crosscoder, quality, seconds, history)


def fit(
    batches: Iterator[Tensor],
    models: tuple[ModelRecord, ModelRecord],
    layer: int,
    hyper: CrosscoderHyperparams,
) -> Fitted:
    """The training loop on raw (batch, model, d_model) batches: scales and init from the
    first batch, `tokens // batch_size` steps, then the threshold."""
    first = next(batches)
    d_model = first.shape[-1]
    # One scalar per model so that E‖s^m x^m‖² = d_model (the normalisation of model.py).
    std_scale, adhd_scale = (
        math.sqrt(d_model / float(first[:, m].pow(2).sum(-1).mean().clamp(min=1e-12)))
        for m in range(2)
    )
    cfg = CrosscoderConfig(
        d_model=d_model, models=models, d_latent=hyper.d_latent, k=hyper.k, layer=layer,
        scales=(std_scale, adhd_scale),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(hyper.seed)
    crosscoder = BatchTopKCrosscoder(cfg).to(first.device)
    init_from_data(crosscoder, crosscoder.normalise(first), generator)
    steps = hyper.tokens // hyper.batch_size
    trainer = CrosscoderTrainer(
        crosscoder, lr=hyper.lr, total_steps=steps, aux_coef=hyper.aux_coef,
        dead_tokens=hyper.dead_tokens, autocast=hyper.autocast,
    )  # fmt: skip
    history: list[dict[str, float]] = []
    log_every = max(1, steps // 20)
    batch = first
    for step in range(steps):
        stats: StepStats = trainer.step(crosscoder.normalise(batch))
        if step % log_every == 0 or step == steps - 1:
            history.append({"step": step, **stats._asdict()})
        if step + 1 < steps:
            batch = next(batches)
    return Fitted(trainer.finish(), history)


def write_crosscoder(
    crosscoder: BatchTopKCrosscoder,
    quality: CrosscoderQuality,
    history: list[dict[str, float]],
    seconds: float,
    config: CrosscoderTrainConfig,
) -> Path:
    out = Path(config.out)
    crosscoder.save(
        out,
        {
            "corpus": str(config.corpus),
            "data": config.data,
            "fve": [m.fve for m in quality.models],
            "l0": quality.l0,
            "dead_fraction": quality.dead_fraction,
        },
    )
    cfg = crosscoder.cfg
    write_json(
        out / QUALITY_FILE,
        {
            "model_names": list(cfg.names),
            "hook_name": cfg.hook_name,
            "d_model": cfg.d_model,
            "d_latent": cfg.d_latent,
            "k": cfg.k,
            **dataclasses.asdict(quality),
            "train": {
                "tokens": config.tokens // config.batch_size * config.batch_size,
                "seconds": seconds,
                "history": history,
            },
            "provenance": provenance(config),
        },
    )
    return out
