"""The Activation Difference Lens: what the mean residual difference of a pair says, and does.

After Minder et al. 2025 ("Narrow finetuning leaves clearly readable traces in activation
differences") and the science-of-finetuning diffing toolkit's `activation_difference_lens`:
teacher-force the same held-out text through both models and, per layer L, average

    δ_L = mean over positions of ( resid_b − resid_a ) at `blocks.L.hook_resid_post`,

once over the step-onset predictors (`<|steps|>`/`<|sep|>` before a step: where a
regulation action would be chosen) and once over every real position. Each δ_L is read
through each model's own final RMSNorm and tied unembedding (`TaskGPT.unembed`, the logit
lens, nostalgebraist 2020): the tokens it promotes and suppresses, and where the first
tokens of the regulation actions rank. Because the norm rescales its input, the reading
depends only on δ_L's direction; its size is reported as the norm beside the mean norm of
model a's residual at the same positions.

Causal check (activation addition, Turner et al. 2023): add the onset-predictor δ_L
(times `scale`) to model a's residual at layer L, at every position of the prompt and of
every generated token, while it decodes held-out test tasks (`model.generate`, greedy by
default as in the behaviour stage), and measure the regulation rate: the share of its
generated steps that are regulation actions (`corpus.regulation.is_regulation`; steps
closed by `<|sep|>` or `<|end|>` only, so a step cut off by the token budget never
counts). The same is done with `n_random` random directions of δ_L's norm (seeded), the
random-vector control of steering; the empirical one-sided p-value is
(1 + #{random rate ≥ steered rate}) / (1 + n_random) (Phipson & Smyth 2010), so its
floor is 1 / (1 + n_random). Every condition, the baseline included (a zero vector),
decodes through the same hooked path, so the comparison is paired.

`difference_lens` (any two TaskGPTs of one shape and tokenizer) and `steering_check` (any
model, tasks and direction) are pure (no files), so the study can run them on a model and
its data-order twin as well as on the pair. In the study the stage is "diff-lens", after
the export; a is the standard model, b the ADHD model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from matplotlib.figure import Figure
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.diff_lens.config import DiffLensConfig
from interpgpt.analysis.interventions import act_name, add_direction
from interpgpt.analysis.lm import TextSet, as_lm
from interpgpt.analysis.plots import save_figure
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    figures,
    fmt,
    layer_in_preset,
)
from interpgpt.artifacts.load import load_pair
from interpgpt.corpus.evalset import EncodedSet, load_eval_set, load_records
from interpgpt.corpus.regulation import is_regulation
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, to_jsonable, write_bytes, write_json
from interpgpt.model.config import GenerationConfig
from interpgpt.model.generate import Decomposition, sample_decompositions

DIFF_LENS_JSON = "diff_lens.json"
DIFF_LENS_VECTORS = "diff_lens.safetensors"
DIFF_LENS_PLOT = "diff_lens.png"
POSITION_SETS: tuple[str, ...] = ("onset_predictor", "all")
"""Where the difference is averaged: step-onset predictors, every real position."""


# ---------------------------------------------------------------------------- the lens


@dataclass
class LensReading:
    """δ_L through one model's final norm and unembedding."""

    promoted: list[int]
    """Token ids of the largest logits, largest first."""
    promoted_logits: list[float]
    suppressed: list[int]
    """Token ids of the smallest logits, smallest first."""
    suppressed_logits: list[float]
    regulation_rank: int | None
    """Tokens with a larger logit than the best regulation first token (0: one of them is
    the top token; None: no regulation ids given)."""


@dataclass
class DiffLensResult:
    """What `difference_lens` computed (no files)."""

    names: tuple[str, str]
    """Labels of model a and model b; δ is b − a."""
    means: dict[str, Float[Tensor, "layer d_model"]]
    """Position set -> δ per layer."""
    norms: dict[str, list[float]]
    """Position set -> |δ_L| per layer."""
    resid_norms: dict[str, list[float]]
    """Position set -> mean |resid_a| per layer at the same positions (the scale of δ)."""
    readings: dict[str, list[dict[str, LensReading]]]
    """Position set -> per layer -> reading model's name -> its reading."""
    n_positions: dict[str, int]
    headline: dict[str, float] = field(default_factory=dict)
    """Per position set s: `max_norm_{s}`, `max_norm_layer_{s}`, `relative_norm_{s}` (|δ|
    over the mean residual norm at that layer), `norm_{s}_L{layer}` for every layer, and
    with regulation ids `regulation_rank_{s}` (read by model a at the max-norm layer)."""

    def max_norm_layer(self, positions: str = "onset_predictor") -> int:
        return int(np.argmax(self.norms[positions]))


@dataclass
class PositionSums:
    """Running sums over the positions of one position set, in float64."""

    diff: Float[Tensor, "layer d_model"]
    """Σ (resid_b − resid_a)."""
    resid_norm: Float[Tensor, " layer"]
    """Σ |resid_a|."""
    count: int = 0


def corpus_position_sets(data: EncodedSet) -> dict[str, Tensor]:
    """The study's position sets (`POSITION_SETS`) of a corpus evaluation set."""
    return {"onset_predictor": data.onset_predictor_mask(), "all": data.valid}


@torch.no_grad()
def residual_sums(
    model_a,
    model_b,
    data,
    *,
    batch_size: int = 32,
    position_sets: Mapping[str, Tensor] | None = None,
) -> dict[str, PositionSums]:
    """Per position set, the sums over its positions of the residual difference and norm at
    every layer's resid_post (one cached forward per model per batch, no unembedding).

    `position_sets` names (batch, pos) masks of `data` (default: `corpus_position_sets`);
    the models are TaskGPTs, HookedTransformers or `analysis.lm` adapters."""
    lm_a, lm_b = as_lm(model_a), as_lm(model_b)
    n_layer, d_model = lm_a.n_layer, lm_a.d_model
    names = [lm_a.resid_hook(layer) for layer in range(n_layer)]
    device = lm_a.device
    sets = corpus_position_sets(data) if position_sets is None else dict(position_sets)
    sums = {
        s: PositionSums(torch.zeros(n_layer, d_model, dtype=torch.float64),
                        torch.zeros(n_layer, dtype=torch.float64))
        for s in sets
    }  # fmt: skip
    for chunk in data.lengths.argsort(descending=True).split(batch_size):  # less padding
        width = int(data.lengths[chunk].max())
        ids = data.ids[chunk, :width].to(device)
        _, cache_a = lm_a.model.run_with_cache(ids, names_filter=names, stop_at_layer=n_layer)
        _, cache_b = lm_b.model.run_with_cache(ids, names_filter=names, stop_at_layer=n_layer)
        resid_a = torch.stack([cache_a[n] for n in names], 2).double()  # (batch, pos, layer, d)
        resid_b = torch.stack([cache_b[n] for n in names], 2).double()
        for s, full in sets.items():
            mask = full[chunk, :width].to(device)
            sums[s].diff += (resid_b - resid_a)[mask].sum(0).cpu()
            sums[s].resid_norm += resid_a[mask].norm(dim=-1).sum(0).cpu()
            sums[s].count += int(mask.sum())
    return sums


@torch.no_grad()
def read_lens(
    model,
    delta: Float[Tensor, " d_model"],
    top_k: int,
    regulation_ids: Sequence[int] = (),
    n_tokens: int | None = None,
) -> LensReading:
    """The logit lens of one difference vector through `model`'s final norm and unembedding,
    over the first `n_tokens` ids (the tokenizer's vocabulary: embedding rows past it are
    never trained and would only add noise to the list; None: every row)."""
    lm = as_lm(model)
    dtype = next(lm.model.parameters()).dtype
    logits = lm.unembed(delta.to(lm.device, dtype)).double().cpu()[:n_tokens]
    k = min(top_k, logits.numel())
    top, bottom = logits.topk(k), logits.topk(k, largest=False)
    rank = None
    if regulation_ids:
        rank = int((logits > logits[list(regulation_ids)].max()).sum())
    return LensReading(
        top.indices.tolist(),
        top.values.tolist(),
        bottom.indices.tolist(),
        bottom.values.tolist(),
        rank,
    )


def difference_lens(
    model_a,
    model_b,
    eval_set: EncodedSet | TextSet,
    *,
    names: tuple[str, str] = ("a", "b"),
    top_k: int = 10,
    batch_size: int = 32,
    regulation_ids: Sequence[int] = (),
    n_tokens: int | None = None,
    position_sets: Mapping[str, Tensor] | None = None,
) -> DiffLensResult:
    """Mean (b − a) `resid_post` per layer over each position set (default: onset
    predictors and every position of a corpus set; else the caller's named masks), read
    through both models' own final norms and unembeddings (over the first `n_tokens` ids,
    see `read_lens`); pure, for any two models of one shape and tokenizer (TaskGPTs,
    HookedTransformers, `analysis.lm` adapters)."""
    if len(eval_set) == 0:
        raise UserError("no sequence in the evaluation set")
    sums = residual_sums(
        model_a, model_b, eval_set, batch_size=batch_size, position_sets=position_sets
    )
    means, norms, resid_norms, readings, counts = {}, {}, {}, {}, {}
    n_layer = as_lm(model_a).n_layer
    for s, acc in sums.items():
        count = acc.count
        mean = acc.diff / max(count, 1)  # zero where the set has no position
        means[s] = mean.float()
        norms[s] = mean.norm(dim=-1).tolist()
        resid_norms[s] = (acc.resid_norm / count).tolist() if count else [math.nan] * n_layer
        readings[s] = [
            {
                name: read_lens(model, mean[layer].float(), top_k, regulation_ids, n_tokens)
                for name, model in zip(names, (model_a, model_b), strict=True)
            }
            for layer in range(n_layer)
        ]
        counts[s] = count
    result = DiffLensResult(names, means, norms, resid_norms, readings, counts)
    result.headline = lens_headline(result, bool(regulation_ids))
    return result


def lens_headline(result: DiffLensResult, with_regulation: bool) -> dict[str, float]:
    """The scalars a seed-null comparison reads (see `DiffLensResult.headline`)."""
    out: dict[str, float] = {}
    for s in result.norms:
        norms = result.norms[s]
        layer = result.max_norm_layer(s)
        out[f"max_norm_{s}"] = norms[layer]
        out[f"max_norm_layer_{s}"] = float(layer)
        resid = result.resid_norms[s][layer]
        out[f"relative_norm_{s}"] = norms[layer] / resid if resid else math.nan
        out.update({f"norm_{s}_L{i}": value for i, value in enumerate(norms)})
        if with_regulation:
            rank = result.readings[s][layer][result.names[0]].regulation_rank
            out[f"regulation_rank_{s}"] = math.nan if rank is None else float(rank)
    return out


# ---------------------------------------------------------------------------- steering


@dataclass
class SteeringCheck:
    """The regulation rate of model a's decompositions, steered and not."""

    layer: int
    hook_name: str
    norm: float
    """Norm of the vector added (δ_L × scale); every random direction has it too."""
    n_tasks: int
    baseline_rate: float
    """Share of generated steps that are regulation actions, nothing added (nan: no step)."""
    steered_rate: float
    random_rates: list[float]
    p_value: float
    """(1 + #{random ≥ steered}) / (1 + n_random): one-sided, towards more regulation."""
    n_steps: dict[str, int]
    """Closed steps counted, per condition (baseline, steered, random_0, ...)."""


def closed_steps(decomposition: Decomposition, end_id: int) -> tuple[str, ...]:
    """The generated steps closed by `<|sep|>` or `<|end|>`: a step cut off by the token
    budget is dropped, since its text may be the prefix of another step."""
    ended = end_id in decomposition.ids[decomposition.prompt_len :]
    return decomposition.steps if ended else decomposition.steps[:-1]


def random_directions(n: int, like: Float[Tensor, " d_model"], seed: int) -> list[Tensor]:
    """`n` directions uniform on the sphere (normalised Gaussians), scaled to |like|."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n, like.numel(), generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True) * like.double().norm()
    return list(dirs.to(like.dtype))


@torch.no_grad()
def regulation_rate(
    model,
    tokenizer,
    tasks: Sequence[str],
    vector: Float[Tensor, " d_model"],
    layer: int,
    generation: GenerationConfig,
) -> tuple[float, int]:
    """Regulation share of the closed steps `model` generates for `tasks` with `vector`
    added to `blocks.{layer}.hook_resid_post` at every position, and the step count."""
    with model.hooks(fwd_hooks=[add_direction(act_name("resid_post", layer), vector)]):
        samples = sample_decompositions(model, tokenizer, tasks, generation)
    steps = [s for d in samples for s in closed_steps(d, tokenizer.end_id)]
    rate = sum(map(is_regulation, steps)) / len(steps) if steps else math.nan
    return rate, len(steps)


def steering_check(
    model,
    tokenizer,
    tasks: Sequence[str],
    direction: Float[Tensor, " d_model"],
    layer: int,
    *,
    n_random: int = 4,
    seed: int = 0,
    generation: GenerationConfig | None = None,
) -> SteeringCheck:
    """Regulation rate of `model`'s decompositions of `tasks` with `direction` added at
    layer `layer`, against no addition and `n_random` random directions of its norm; pure."""
    if not 0 <= layer < model.cfg.n_layer:
        raise UserError(f"--layer {layer}: the model has layers 0..{model.cfg.n_layer - 1}")
    if not tasks:
        raise UserError("the steering check needs at least one task")
    generation = generation or GenerationConfig(max_new_tokens=48, temperature=0.0, seed=seed)
    direction = direction.detach().float().cpu()
    vectors = {"baseline": torch.zeros_like(direction), "steered": direction}
    for i, vector in enumerate(random_directions(n_random, direction, seed)):
        vectors[f"random_{i}"] = vector
    rates, counts = {}, {}
    for name, vector in vectors.items():
        rates[name], counts[name] = regulation_rate(
            model, tokenizer, tasks, vector, layer, generation
        )
    steered = rates["steered"]
    randoms = [rates[f"random_{i}"] for i in range(n_random)]
    p = (1 + sum(r >= steered for r in randoms)) / (1 + n_random)
    return SteeringCheck(
        layer=layer,
        hook_name=act_name("resid_post", layer),
        norm=float(direction.norm()),
        n_tasks=len(tasks),
        baseline_rate=rates["baseline"],
        steered_rate=steered,
        random_rates=randoms,
        p_value=math.nan if math.isnan(steered) else p,
        n_steps=counts,
    )


# ---------------------------------------------------------------------------- entry point


@dataclass
class DiffLensRun:
    """What `run_diff_lens` computed and wrote."""

    lens: DiffLensResult
    steering: SteeringCheck | None
    """None when `steer_tasks` is 0."""
    n_sequences: int
    layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Position set -> per layer: norms and both readings, tokens decoded (as in the JSON)."""
    files: dict[str, Path] = field(default_factory=dict)


def run_diff_lens(config: DiffLensConfig) -> DiffLensRun:
    """The lens of the pair's residual difference and its steering check; writes
    diff_lens.json, diff_lens.safetensors and diff_lens.png under `config.out`."""
    device = resolve_device(config.device)
    pair = load_pair(config.standard, config.adhd, device, config.same_variant)
    std, adhd = pair.standard.model, pair.adhd.model
    if config.layer is not None and config.layer >= std.cfg.n_layer:
        raise UserError(f"--layer {config.layer}: the models have layers 0..{std.cfg.n_layer - 1}")
    data = load_eval_set(
        config.corpus, pair.tokenizer, config.sequences, config.split, config.limit, std.cfg.n_ctx
    )
    reg_ids = sorted(regulation_first_tokens(pair.tokenizer))
    lens = difference_lens(
        std,
        adhd,
        data,
        names=("standard", "adhd"),
        top_k=config.top_k,
        batch_size=config.batch_size,
        regulation_ids=reg_ids,
        n_tokens=pair.tokenizer.vocab_size,
    )
    steering = None
    if config.steer_tasks:
        layer = lens.max_norm_layer() if config.layer is None else config.layer
        records = load_records(config.corpus, "standard", config.split, config.steer_tasks)
        generation = GenerationConfig(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=config.seed,
            batch_size=config.batch_size,
        )
        steering = steering_check(
            std,
            pair.tokenizer,
            [r["task"] for r in records],
            config.scale * lens.means["onset_predictor"][layer],
            layer,
            n_random=config.n_random,
            seed=config.seed,
            generation=generation,
        )
    run = DiffLensRun(lens, steering, len(data), decoded_layers(lens, pair.tokenizer))
    run.files = write_outputs(run, config)
    return run


def decoded(reading: LensReading, tokenizer) -> dict[str, Any]:
    """A reading with its tokens as text."""

    def pairs(ids: list[int], logits: list[float]) -> list[dict[str, Any]]:
        return [
            {"token": tokenizer.decode_text([i]), "id": i, "logit": v}
            for i, v in zip(ids, logits, strict=True)
        ]

    return {
        "promoted": pairs(reading.promoted, reading.promoted_logits),
        "suppressed": pairs(reading.suppressed, reading.suppressed_logits),
        "regulation_rank": reading.regulation_rank,
    }


def decoded_layers(lens: DiffLensResult, tokenizer) -> dict[str, list[dict[str, Any]]]:
    """Per position set and layer: |δ|, the residual norm, and both readings decoded."""
    return {
        s: [
            {
                "layer": layer,
                "norm": lens.norms[s][layer],
                "resid_norm": lens.resid_norms[s][layer],
                "read_by": {n: decoded(r, tokenizer) for n, r in per_model.items()},
            }
            for layer, per_model in enumerate(lens.readings[s])
        ]
        for s in POSITION_SETS
    }


def write_outputs(run: DiffLensRun, config: DiffLensConfig) -> dict[str, Path]:
    lens = run.lens
    blob = {
        "models": {"a": lens.names[0], "b": lens.names[1]},
        "difference": "mean over positions of resid_post(b) − resid_post(a), per layer",
        "sequences": config.sequences,
        "n_sequences": run.n_sequences,
        "n_positions": lens.n_positions,
        "headline": lens.headline,
        "layers": run.layers,
        "steering": run.steering,
        "provenance": provenance(config),
    }
    out = config.out
    vectors = {s: lens.means[s].contiguous() for s in POSITION_SETS}
    return {
        "diff_lens": write_json(out / DIFF_LENS_JSON, blob),
        "vectors": write_bytes(out / DIFF_LENS_VECTORS, safetensors_bytes(vectors)),
        "diff_lens_plot": plot_diff_lens(run, out / DIFF_LENS_PLOT),
    }


def plot_diff_lens(run: DiffLensRun, path: Path) -> Path:
    """|δ_L| per layer relative to the residual norm; the steering rates beside their null."""
    fig = Figure(figsize=(11.0, 4.0), layout="tight")
    norms_ax, steer_ax = fig.subplots(1, 2)
    for s in POSITION_SETS:
        norms, resid = np.asarray(run.lens.norms[s]), np.asarray(run.lens.resid_norms[s])
        norms_ax.plot(np.arange(len(norms)), norms / resid, marker="o", lw=2, label=s)
    norms_ax.set_xlabel("layer (resid_post)")
    norms_ax.set_ylabel("|mean difference| / mean |resid|")
    norms_ax.set_title(f"{run.lens.names[1]} − {run.lens.names[0]}")
    norms_ax.grid(alpha=0.3)
    norms_ax.legend()
    check = run.steering
    if check is None:
        steer_ax.set_axis_off()
        steer_ax.text(0.5, 0.5, "steering check skipped", ha="center", va="center")
    else:
        randoms = check.random_rates
        steer_ax.scatter(np.full(len(randoms), 1.0), randoms, color="grey", label="random")
        steer_ax.scatter([0.0], [check.baseline_rate], color="black", label="baseline")
        steer_ax.scatter([2.0], [check.steered_rate], color="crimson", label="difference")
        steer_ax.set_xticks([0, 1, 2], ["baseline", "random", "difference"])
        steer_ax.set_ylabel("regulation share of generated steps")
        steer_ax.set_title(f"steering at L{check.layer}, p = {check.p_value:.2f}")
        steer_ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: DiffLensConfig) -> StageOutput:
    run = run_diff_lens(
        dataclasses.replace(
            config,
            standard=ws.export("standard"),
            adhd=ws.export("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("diff_lens"),
        )
    )
    layer = run.lens.max_norm_layer() if run.steering is None else run.steering.layer
    reading = run.layers["onset_predictor"][layer]["read_by"][run.lens.names[0]]
    summary = {
        "names": list(run.lens.names),
        "headline": run.lens.headline,
        "norms": run.lens.norms,
        "resid_norms": run.lens.resid_norms,
        "layer": layer,
        "promoted": [p["token"] for p in reading["promoted"]],
        "steering": to_jsonable(run.steering),
    }
    return StageOutput(list(run.files.values()), summary)


def section(summary: Summary, outputs: list[str]) -> Section:
    head, (a, b) = summary.get("headline", {}), summary.get("names", ["standard", "adhd"])
    norms = summary.get("norms", {})
    table = [["position set", *[f"L{i}" for i in range(len(norms.get("all", [])))]]]
    for s, values in norms.items():
        relative = [
            n / r if r else math.nan for n, r in zip(values, summary["resid_norms"][s], strict=True)
        ]
        table.append([f"|δ| / |resid|, {s}", *map(fmt, relative)])
    promoted = ", ".join(repr(t) for t in summary.get("promoted", [])[:5])
    finding = (
        f"The {b} − {a} residual difference at step-onset predictors is largest at layer "
        f"{fmt(head.get('max_norm_layer_onset_predictor'), 0)} "
        f"({fmt(head.get('relative_norm_onset_predictor'))} of the residual norm); read "
        f"through the {a} model's unembedding at layer {summary.get('layer')} it promotes "
        f"{promoted}"
    )
    steering, status = summary.get("steering"), "ok"
    if steering:
        randoms = steering["random_rates"]
        beats_all = all(steering["steered_rate"] > r for r in randoms)
        finding += (
            f". Added to the {a} model there, it moves the regulation share of its generated "
            f"steps on {steering['n_tasks']} held-out tasks from {fmt(steering['baseline_rate'])} "
            f"to {fmt(steering['steered_rate'])}, against {fmt(min(randoms))}–{fmt(max(randoms))} "
            f"for {len(randoms)} random directions of the same norm (p = "
            f"{fmt(steering['p_value'], 2)})"
            + ("." if beats_all else ": no more than a random direction, a null result.")
        )
        status = "ok" if beats_all else "warn"
    else:
        finding += "; the steering check was skipped."
    return Section(
        "Activation difference lens", finding, table=table, figures=figures(outputs), status=status
    )


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistics: the largest norm of the mean activation difference
    at onset predictors, relative to the residual's, and how much adding it changes the
    standard-role model's regulation rate."""
    head = summary["headline"]
    steering = summary.get("steering") or {}
    steered, baseline = steering.get("steered_rate"), steering.get("baseline_rate")
    change = float("nan") if steered is None or baseline is None else abs(steered - baseline)
    return {
        "norm": Statistic(
            "largest relative norm of the mean activation difference at onset predictors",
            head["relative_norm_onset_predictor"],
        ),
        "steering": Statistic(
            "|change in regulation rate| when the mean difference is added", change
        ),
    }


ANALYSIS = Analysis(
    name="diff-lens",
    description="activation difference lens of the pair, with a steering check",
    config=DiffLensConfig,
    stage=stage,
    section=section,
    after=("export",),
    statistics=statistics,
    check=layer_in_preset("diff_lens"),
)
