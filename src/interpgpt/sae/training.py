"""Train TopK SAEs on a model's residual stream, evaluate them on held-out tokens, gate them.

`train_sae` trains one SAE (one model, one layer); `train_all` trains the seed card's
set (standard L0-L3, ADHD L1-L3, or any layers), running each model once per batch for
all of its layers. Per SAE the recipe is (Gao et al. 2024 unless noted):

1. Activations streamed from the model over its corpus train split (`activations.py`).
2. Inputs scaled by one scalar so E‖x‖² = d_in (SAELens's `expected_average_only_in`),
   making the learning rate independent of the layer's residual norm; the scale is
   folded into the biases at the end, so the saved SAE reads raw activations.
3. b_dec initialised to the geometric median of the first batch (Bricken et al. 2023).
4. Adam on normalised MSE + AuxK, unit-norm decoder rows (`topk.TopKTrainer`), a
   constant learning rate decayed linearly to 0 over the last fifth of training.
5. Held-out evaluation on the val split (`quality.py`): FVE, MSE, L0, dead latents and
   the CE of the model with the reconstruction spliced in.
6. Quality gates from the seed SAE card: FVE >= 0.87 and dead latents < 2%.

Each SAE is written in SAELens's layout, `OUT/{model}_L{layer}_hook_resid_post/` with
`cfg.json`, `sae_weights.safetensors` and our `quality.json`, built in a temp dir beside it
and renamed into place. Without `force` an SAE dir (or the summary) that already holds
files is refused before any training; a rerun removes the temps a killed run left.

`SAETrainConfig` is `sae train`'s options and `TrainAllConfig` both `sae train-all`'s
and the study's `[sae]` section (`interpgpt.settings`): the shared hyperparameters
(`hyperparams.SAEHyperparams`) after the paths each reads and writes. An unset `d_sae`
is the seed card's expansion, 8 x the model's d_model, resolved from the loaded model,
so one setting fits every preset.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.artifacts.load import LoadedModel, load_model
from interpgpt.constants import VARIANTS, Split, Variant
from interpgpt.corpus.build import CorpusRecord, load_split
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import already_holds, atomic_dir, provenance, remove_stale_temps, write_json
from interpgpt.sae.activations import (
    activation_stream,
    collect_activations,
    cycle_sequences,
    encode_sequences,
)
from interpgpt.sae.config import SAETrainConfig, TrainAllConfig
from interpgpt.sae.hyperparams import SAE_EXPANSION, DataChoice, SAEHyperparams
from interpgpt.sae.quality import SAEQuality, evaluate_sae
from interpgpt.sae.topk import (
    StepStats,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainer,
    fold_input_scale,
    geometric_median,
    sae_dir_name,
    sae_hook_name,
)
from interpgpt.settings import option_name

QUALITY_FILE = "quality.json"
SUMMARY_FILE = "sae_summary.json"


SEED_TWIN_OFFSET = 1000
"""A seed-twin SAE starts from seed `seed + layer + SEED_TWIN_OFFSET` (its partner's:
`seed + layer`)."""


def seed_twin_name(model_name: str) -> str:
    """The model name a seed-twin SAE is saved under (its directory's prefix)."""
    return f"{model_name}-seed1"


@dataclass
class SAETrainResult:
    """One trained SAE: its directory, quality and training time."""

    path: Path
    quality: SAEQuality
    sae: TopKSAE
    model_name: str
    layer: int
    seconds: float
    """Wall time of training (shared model passes split evenly among a model's SAEs)."""


@dataclass
class TrainAllResult:
    results: list[SAETrainResult]
    summary_path: Path

    @property
    def passed(self) -> bool:
        return all(r.quality.passed for r in self.results)


def train_sae(config: SAETrainConfig, force: bool = True) -> SAETrainResult:
    """Train, evaluate and save one SAE; with `strict`, raise if it misses a gate. Without
    `force`, an SAE dir of that name already in `config.out` is refused before training."""
    loaded = load_model(config.model)
    name = config.model_name or loaded.name
    claim_outputs(config.out, [sae_dir_name(name, config.layer)], force)
    result = _train_model_layers(loaded, name, (config.layer,), config)[0]
    if config.strict:
        _raise_on_failures([result])
    return result


def train_all(config: TrainAllConfig, force: bool = True) -> TrainAllResult:
    """Train the SAEs of both models; write OUT/sae_summary.json; strict raises on a fail.
    Without `force`, any of those outputs already in `config.out` is refused first."""
    # SAEs are named by the role a model plays (`--standard`, `--adhd`), which is what an
    # analysis asks for; a control pair can give the ADHD role to a standard model.
    wanted = [
        (config.standard, config.std_layers, "std_layers", "standard"),
        (config.adhd, config.adhd_layers, "adhd_layers", "adhd"),
    ]
    plan = [(path, layers, s, role) for path, layers, s, role in wanted if path and layers]
    twins = {"adhd": config.seed_twins}
    if not plan:
        raise UserError("sae train-all: pass --standard and/or --adhd with at least one layer each")
    names = [
        sae_dir_name(name, layer)
        for _, layers, _, role in plan
        for name in (role, *([seed_twin_name(role)] if twins.get(role) else []))
        for layer in layers
    ]
    claim_outputs(config.out, [*names, SUMMARY_FILE], force)
    results: list[SAETrainResult] = []
    for path, layers, setting, role in plan:
        loaded = load_model(path)
        one = SAETrainConfig(
            model=path,
            layer=layers[0],
            corpus=config.corpus,
            out=config.out,
            **config.hyperparams(),
        )
        results += _train_model_layers(
            loaded, role, tuple(layers), one, setting, seed_twins=twins.get(role, False)
        )
    summary = {
        "saes": [_summary_row(r) for r in results],
        "all_passed": all(r.quality.passed for r in results),
        "provenance": provenance(config),
    }
    summary_path = write_json(Path(config.out) / SUMMARY_FILE, summary)
    if config.strict:
        _raise_on_failures(results)
    return TrainAllResult(results, summary_path)


def claim_outputs(out: Path, names: list[str], force: bool) -> None:
    """Before any training: without `force`, refuse the outputs `names` (SAE dirs, the
    summary) that already hold something in `out`; then remove the temps a killed earlier
    run left for them."""
    paths = [Path(out) / name for name in names]
    taken = [
        p.name
        for p in paths
        if p.is_file() or (p.is_dir() and any(not c.name.startswith(".") for c in p.iterdir()))
    ]
    if taken and not force:
        raise already_holds("--out", Path(out), taken, "them" if len(taken) > 1 else "it")
    for path in paths:
        remove_stale_temps(path)


def _raise_on_failures(results: list[SAETrainResult]) -> None:
    failed = [r for r in results if not r.quality.passed]
    if failed:
        lines = "; ".join(
            f"{r.model_name} L{r.layer}: {', '.join(r.quality.failures)}" for r in failed
        )
        raise UserError(
            f"quality gates failed ({lines}); train longer (--tokens) or see quality.json"
        )


def _summary_row(r: SAETrainResult) -> dict[str, Any]:
    return {
        "model": r.model_name,
        "layer": r.layer,
        "path": r.path,
        "seconds": r.seconds,
        **dataclasses.asdict(r.quality),
    }


def _data_variants(choice: DataChoice, loaded: LoadedModel) -> list[Variant]:
    if choice == "both":
        return list(VARIANTS)
    if choice != "own":
        return [choice]
    for variant in VARIANTS:
        if loaded.variant == variant:
            return [variant]
    raise UserError(
        f"{loaded.source}: the model records no corpus variant; pass --data standard, adhd or both"
    )


def _sequences(
    corpus: Path, tokenizer: TaskTokenizer, variants: list[Variant], split: Split, n_ctx: int
) -> list[list[int]]:
    """Token ids of every record (all phrasings) of `split` for the given variants."""
    records: list[CorpusRecord] = []
    for variant in variants:
        records += load_split(corpus, variant, split)
    return encode_sequences(tokenizer, records, n_ctx)


def _eval_sequences(sequences: list[list[int]], eval_tokens: int) -> list[list[int]]:
    """The first val sequences holding `eval_tokens` tokens (all of them if fewer)."""
    total, chosen = 0, []
    for seq in sequences:
        if total >= eval_tokens:
            break
        chosen.append(seq)
        total += len(seq)
    return chosen


def _train_model_layers(
    loaded: LoadedModel,
    model_name: str,
    layers: tuple[int, ...],
    config: SAETrainConfig,
    setting: str = "layer",
    seed_twins: bool = False,
) -> list[SAETrainResult]:
    """Train one SAE per layer of one model in lockstep on a shared activation stream
    (and with `seed_twins` a second per layer, from another seed, on the same batches).

    `setting` names the layers' setting in an error (`layer`, `std_layers`, ...).
    """
    model, tok = loaded.model, loaded.tokenizer
    bad = [layer for layer in layers if not 0 <= layer < model.cfg.n_layer]
    if bad:
        raise UserError(
            f"{option_name(setting)} {bad[0]}: {loaded.source} has layers "
            f"0..{model.cfg.n_layer - 1}"
        )
    d_sae = config.dictionary_size(model.cfg.d_model)
    if config.k > d_sae:
        raise UserError(
            f"k={config.k} exceeds d_sae={d_sae} ({SAE_EXPANSION} x the model's d_model "
            f"{model.cfg.d_model}); lower k or set d_sae"
        )
    config = dataclasses.replace(config, d_sae=d_sae)  # provenance records the resolved size
    device = resolve_device(config.device)
    model.to(device).eval()
    variants = _data_variants(config.data, loaded)
    train_seqs = _sequences(config.corpus, tok, variants, "train", model.cfg.n_ctx)
    hooks = [sae_hook_name(layer) for layer in layers]
    stream = activation_stream(
        model,
        cycle_sequences(train_seqs, config.seed),
        hooks,
        pad_id=tok.pad_id,
        batch_size=config.batch_size,
        # No point shuffling more activations than the whole budget.
        buffer_tokens=max(2 * config.batch_size, min(config.buffer_tokens, config.tokens)),
        seq_batch=config.seq_batch,
        seed=config.seed,
        autocast=config.autocast,
    )
    specs = [FitSpec(model_name, layer, config.seed + layer) for layer in layers]
    if seed_twins:
        twin = seed_twin_name(model_name)
        specs += [FitSpec(twin, layer, config.seed + layer + SEED_TWIN_OFFSET) for layer in layers]
    start = time.perf_counter()
    saes, history = fit_saes(specs, stream, config, d_sae)
    seconds = (time.perf_counter() - start) / len(specs)
    val_seqs = _eval_sequences(
        _sequences(config.corpus, tok, variants, "val", model.cfg.n_ctx), config.eval_tokens
    )
    acts = collect_activations(model, val_seqs, hooks, tok.pad_id, config.seq_batch)
    results = []
    known: dict[str, float] = {}  # clean and zero-ablated CE, shared by these SAEs
    for spec, sae, log in zip(specs, saes, history, strict=True):
        hook = sae_hook_name(spec.layer)
        quality = evaluate_sae(sae, model, acts[hook], val_seqs, tok.pad_id, config, known)
        layer_config = dataclasses.replace(config, layer=spec.layer, model_name=spec.model_name)
        path = _write_sae(sae, quality, log, seconds, layer_config, variants)
        results.append(SAETrainResult(path, quality, sae, spec.model_name, spec.layer, seconds))
    return results


class FitSpec(NamedTuple):
    """One SAE of a lockstep fit: the name it is saved under, its layer, its init seed."""

    model_name: str
    layer: int
    seed: int


class SAEFit:
    """One SAE in training: the input scale, the data-based init and the trainer."""

    def __init__(
        self, first: Tensor, cfg: TopKSAEConfig, hyper: SAEHyperparams, steps: int, seed: int
    ):
        # One scalar so that E‖x‖² = d_in (SAELens's expected_average_only_in).
        self.scale = math.sqrt(cfg.d_in / float(first.pow(2).sum(-1).mean().clamp(min=1e-12)))
        gen = torch.Generator().manual_seed(seed)
        self.sae = TopKSAE(cfg, generator=gen).to(first.device)
        init_from_data(self.sae, first * self.scale, gen)
        self.trainer = TopKTrainer(
            self.sae,
            lr=hyper.lr,
            total_steps=steps,
            aux_coef=hyper.aux_coef,
            dead_tokens=hyper.dead_tokens,
            autocast=hyper.autocast,
        )

    def step(self, x: Tensor) -> StepStats:
        return self.trainer.step(x * self.scale)

    def finish(self) -> TopKSAE:
        """Fold the input scale into the biases: the SAE then reads raw activations."""
        fold_input_scale(self.sae, self.scale)
        return self.sae.eval()


def fit_saes(specs: list[FitSpec], stream, config: SAEHyperparams, d_sae: int):
    """The training loop: every SAE takes one step on its hook's slice of each batch of
    `stream` (raw activations, {hook: (batch, d_in)}), `config.tokens // config.batch_size`
    steps. Returns the SAEs and each one's training log, in the order of `specs`."""
    hooks = [sae_hook_name(spec.layer) for spec in specs]
    first = next(stream)
    steps = config.tokens // config.batch_size
    fits = [
        SAEFit(
            first[hook],
            TopKSAEConfig(d_in=first[hook].shape[1], d_sae=d_sae, k=config.k,
                          layer=spec.layer, model_name=spec.model_name),
            config, steps, spec.seed,
        )
        for spec, hook in zip(specs, hooks, strict=True)
    ]  # fmt: skip
    history: list[list[dict[str, float]]] = [[] for _ in specs]
    log_every = max(1, steps // 20)
    batch = first
    for step in range(steps):
        for hook, fit, log in zip(hooks, fits, history, strict=True):
            stats = fit.step(batch[hook])
            if step % log_every == 0 or step == steps - 1:
                log.append({"step": step, **stats._asdict()})
        if step + 1 < steps:
            batch = next(stream)
    return [fit.finish() for fit in fits], history


@torch.no_grad()
def init_from_data(sae: TopKSAE, x: Float[Tensor, "n d_in"], generator: torch.Generator) -> None:
    """b_dec at the geometric median (Bricken et al. 2023); decoder rows at data points.

    Each decoder row starts as a random centred activation (normalised), the encoder as
    its transpose: every latent then wins the TopK for the activations near its row from
    the first step, instead of random directions that point where the (anisotropic)
    residual stream has no mass and die before AuxK can find them.
    """
    median = geometric_median(x[:8192])
    centred = x - median
    rows = torch.randint(0, x.shape[0], (sae.cfg.d_sae,), generator=generator).to(x.device)
    w_dec = centred[rows] + 0.1 * centred.std() * torch.randn(
        sae.cfg.d_sae, sae.cfg.d_in, generator=generator
    ).to(x.device)
    w_dec /= w_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    sae.b_dec.copy_(median)
    sae.W_dec.copy_(w_dec)
    sae.W_enc.copy_(w_dec.T / sae.cfg.k)


def _write_sae(sae, quality, history, seconds, config: SAETrainConfig, variants) -> Path:
    final = Path(config.out) / sae_dir_name(sae.cfg.model_name, sae.cfg.layer)
    with atomic_dir(final) as directory:
        _write_sae_files(directory, sae, quality, history, seconds, config, variants)
    return final


def _write_sae_files(directory: Path, sae, quality, history, seconds, config, variants) -> None:
    sae.save(
        directory,
        {
            "corpus_variants": variants,
            "fve": quality.fve,
            "dead_fraction": quality.dead_fraction,
            "l0": quality.l0,
        },
    )
    write_json(
        directory / QUALITY_FILE,
        {
            "model": sae.cfg.model_name,
            "layer": sae.cfg.layer,
            "hook_name": sae.cfg.hook_name,
            "d_in": sae.cfg.d_in,
            "d_sae": sae.cfg.d_sae,
            "k": sae.cfg.k,
            **dataclasses.asdict(quality),
            "gates": {"min_fve": config.min_fve, "max_dead_fraction": config.max_dead_fraction},
            "train": {
                "tokens": config.tokens // config.batch_size * config.batch_size,
                "seconds": seconds,
                "corpus_variants": variants,
                "history": history,
            },
            "provenance": provenance(config),
        },
    )
