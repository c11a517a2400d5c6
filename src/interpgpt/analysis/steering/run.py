"""Steering with one SAE feature's decoder direction, each effect read against a null.

The seed ADHD card reports an SAE feature that separates the two models almost
perfectly (fires at 59% of ADHD step onsets, 0.03% of standard ones) and yet moves
behaviour no more than noise under four interventions. This module reruns those four
("variants") on any feature, and always next to a null distribution, so a null result
is reported as plainly as an effect:

- inject-std: add `alpha * W_dec[F]` to the standard model at its onset predictors,
  with `alpha` the feature's mean activation when firing at ADHD onset predictors (its
  typical magnitude, Templeton et al. 2024 "feature steering" clamps to a multiple of
  that; `scale` multiplies it).
- subtract-adhd: subtract the same vector from the ADHD model at its onset predictors.
- zero-ablate: remove the feature from the ADHD model's SAE reconstruction while
  keeping the SAE's error term, x' = x - f_F(x) * W_dec[F] (Marks et al. 2024, "sparse
  feature circuits", keep the error node so only the feature changes).
- inject-upstream: inject-std one layer earlier (L-1, or the block-0 input for L = 0).

Metric: Δ P(regulation) = mean over onset predictors of the probability mass the model
puts on the first token of any regulation action, intervened minus clean (same
sequences, so the difference is paired). The onset predictor's residual is the one
whose logit-lens prediction is the step's first token, the same positions as the diff.
Also the change in the generated regulation rate (fraction of sampled steps that are
regulation actions), with the intervention applied whenever the current input token is
`<|steps|>` or `<|sep|>`, sampled with the same seed as the clean run.

Null: `n_null` random unit directions, each scaled to the feature vector's norm (for
zero-ablate: to `f_F(x) * |W_dec[F]|` at each position), under the same intervention.
A feature direction is only special if it beats directions of the same size chosen at
random: the random-vector control of activation steering (Turner et al. 2023, "Steering
language models with activation engineering", compare a steering vector with random
vectors of the same norm), here drawn many times so it is a distribution. Rule: the
feature's effect is outside the null when |Δ - null_mean| > 2 * max(SEM, null_std), i.e.
beyond both its own sampling noise and the spread of random directions (`null`).

In the study (`stage`), the SAE and the feature come from the feature-diff stage: its
summary names the SAE it read and its diff file, whose top feature is steered unless
the `[steering]` section names one. There both models read the ADHD held-out sequences
(`SteeringStudyConfig.sequences`), the feature diff's inputs, so in a seed-control pair
the two roles differ by the model only; the command's default is each model on its own
variant, the seed card's setup.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from matplotlib.figure import Figure
from torch import Tensor

from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.interventions import ResidualCache, add_direction
from interpgpt.analysis.plots import save_figure
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    figures,
    fmt,
)
from interpgpt.analysis.sae_features import encode_features, hook_layer, onset_feature_stats
from interpgpt.analysis.steering.config import SteeringConfig
from interpgpt.analysis.steering.null import (
    RULE,
    Delta,
    NullComparison,
    compare_to_null,
    paired_delta,
    random_directions,
)
from interpgpt.artifacts.load import load_pair
from interpgpt.constants import VARIANTS as ROLES
from interpgpt.corpus.evalset import EncodedSet, load_eval_set
from interpgpt.corpus.regulation import is_regulation
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, read_json, write_json
from interpgpt.model.config import GenerationConfig
from interpgpt.model.generate import sample_decompositions
from interpgpt.sae.topk import TopKSAE, check_trained_on

STEERING_JSON = "deepdive_steering.json"
STEERING_PLOT = "steering.png"
VARIANTS: tuple[str, ...] = ("inject-std", "subtract-adhd", "zero-ablate", "inject-upstream")

HookFn = Callable[[Tensor, object], Tensor]
HookFactory = Callable[[Callable[[], Tensor]], HookFn]
"""Builds a hook function from a callable returning the (batch, pos) position mask."""


@dataclass(frozen=True)
class SteeringStudyConfig(SteeringConfig):
    """The study's `[steering]` section: the command's settings, with both models reading
    the ADHD held-out sequences, the inputs of the feature diff that picks the feature
    (`FeatureDiffStudyConfig.sequences`). Then each intervention on either role acts at the
    same positions of the same text, and in a seed-control pair (a model and its twin in
    the two roles) the roles differ only by the model."""

    sequences: Literal["own", "adhd", "standard"] = "adhd"


@dataclass
class VariantResult:
    """One of the four interventions."""

    name: str
    model: str
    """Which model is intervened on."""
    hook_name: str
    p_regulation: NullComparison
    """Δ P(regulation) at onset predictors (teacher-forced)."""
    generation: NullComparison | None = None
    """Δ generated regulation rate (None when generation is skipped)."""
    clean_p_regulation: float = 0.0
    clean_generated_rate: float | None = None
    verdict: str = ""
    """The teacher-forced verdict, then the generation one (when sampled)."""


@dataclass
class SteeringResult:
    """What `steer` wrote."""

    json_path: Path
    plot_path: Path
    feature: int
    magnitude: float
    """alpha: the feature's mean activation when firing at ADHD onset predictors × scale."""
    variants: list[VariantResult] = field(default_factory=list)


# ----------------------------------------------------------------------------- hooks


def add_vector(vector: Float[Tensor, " d_model"]) -> HookFactory:
    """Hook factory: act + vector at the masked positions (`interventions.add_direction`,
    rebuilt per forward because under generation the mask changes with every token)."""

    def factory(where: Callable[[], Tensor]) -> HookFn:
        def hook(act: Tensor, hook: object) -> Tensor:
            out = add_direction("", vector, 1.0, where()).fn(act, hook)
            assert out is not None  # add_direction always returns the edited activation
            return out

        return hook

    return factory


def remove_feature(sae, feature: int, direction: Float[Tensor, " d_model"]) -> HookFactory:
    """Hook factory: act - f_F(act) * direction at the masked positions (the SAE's error
    term is untouched; with direction = W_dec[F] this zero-ablates the feature)."""

    def factory(where: Callable[[], Tensor]) -> HookFn:
        def hook(act: Tensor, hook: object) -> Tensor:
            coeff = encode_features(sae, act)[..., feature].to(act.dtype)
            coeff = coeff * where().to(act.device).to(act.dtype)
            return act - coeff[..., None] * direction.to(device=act.device, dtype=act.dtype)

        return hook

    return factory


class BoundaryTokens:
    """Tracks which positions of the current forward hold `<|steps|>` or `<|sep|>`.

    Hooks only see activations, so the token identity is read at `hook_embed`: the
    embedding is a row lookup, so a position holds token t iff its embedding equals
    W_E[t] exactly. This works unchanged under KV-cached generation, where each forward
    sees only the new token.
    """

    def __init__(self, model, token_ids: list[int]):
        self.rows = model.embed.weight[token_ids].detach()
        self.mask = torch.zeros(0, 0, dtype=torch.bool)

    def hook(self, act: Tensor, hook: object) -> None:
        rows = self.rows.to(device=act.device, dtype=act.dtype)
        self.mask = (act[..., None, :] == rows).all(-1).any(-1)

    def __call__(self) -> Tensor:
        return self.mask


# --------------------------------------------------------------------------- metrics


def resume_point(hook_name: str, n_layer: int) -> tuple[int, bool]:
    """Where a run resumed from a cached residual stream meets `hook_name`: the block it
    starts at, and whether the hook edits that block's input itself (the embedding or the
    previous block's resid_post, the same tensor) rather than an activation inside it."""
    if hook_name == "hook_embed":
        return 0, True
    layer = hook_layer(hook_name)
    if layer is None or not 0 <= layer < n_layer:
        raise ValueError(f"{hook_name}: not a hook of the embedding or of a block")
    if hook_name == f"blocks.{layer}.hook_resid_post":
        return layer + 1, True
    return layer, False


@dataclass
class OnsetBatch:
    """Rows of the set with their onset predictors, cut after the last one (under causal
    attention no later position reaches it)."""

    ids: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    """The onset predictors."""
    rows: Int[Tensor, " n"]
    """The set's row of each onset predictor, in `mask.nonzero()` order."""


class OnsetReader:
    """P(regulation first token) at the onset predictors of one model on one set, clean or
    under one hook.

    What a steering run reads is the same as a full forward under the hook followed by a
    softmax at every position (`reference_p_regulation` in the tests), computed with less:
    everything upstream of the hook is the same for the clean run and for every direction,
    so the residual stream entering the hooked block is kept per batch and only the blocks
    from there on run; only the onset predictors, the positions read, are unembedded; and
    rows are batched by length, so a batch is not padded to the set's longest row.
    """

    def __init__(self, model, eset: EncodedSet, reg_ids: list[int], batch_size: int = 32):
        self.model, self.reg_ids = model, reg_ids
        device = next(model.parameters()).device
        mask = eset.onset_predictor_mask()
        width = (mask * torch.arange(1, mask.shape[1] + 1)).amax(1)  # last onset predictor + 1
        by_width = torch.argsort(width, stable=True)
        self.batches: list[OnsetBatch] = []
        for chunk in by_width[width[by_width] > 0].split(batch_size):
            cut = int(width[chunk].max())
            ids, where = eset.ids[chunk, :cut], mask[chunk, :cut]
            rows = chunk[where.nonzero()[:, 0]]
            self.batches.append(OnsetBatch(ids.to(device), where.to(device), rows))
        # Every block asked for stays: the clean run and each hook's block are read again
        # for every direction.
        self.resid = ResidualCache(model, [b.ids for b in self.batches], keep_all=True)

    @torch.no_grad()
    def p_regulation(
        self, hook_name: str | None = None, factory: HookFactory | None = None
    ) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
        """P(regulation first token) at every onset predictor, and the row each comes from;
        with `factory`, under its hook at `hook_name` applied at the onset predictors."""
        n_layer = self.model.cfg.n_layer
        if factory is None:
            finals = self.resid(n_layer)
        elif hook_name is None:
            raise ValueError("a hook factory needs the name of the hook it acts at")
        else:
            start, on_input = resume_point(hook_name, n_layer)
            finals = [
                self._resume(resid, batch.mask, start, hook_name, factory, on_input)
                for resid, batch in zip(self.resid(start), self.batches, strict=True)
            ]
        values = [
            self.model.unembed(final[b.mask]).float().softmax(-1)[:, self.reg_ids].sum(-1)
            for final, b in zip(finals, self.batches, strict=True)
        ]
        if not values:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
        rows = torch.cat([b.rows for b in self.batches])
        in_set_order = torch.argsort(rows, stable=True)  # a row's positions stay in order
        return torch.cat(values).double().cpu()[in_set_order], rows[in_set_order]

    def _resume(self, resid, mask, start, hook_name, factory, on_input) -> Tensor:
        """The final residual stream of a run from block `start` under the hook."""
        hook = factory(_constant(mask))
        if on_input:  # the hook's tensor is the cached one: edit a copy, run the rest
            act = resid.clone()
            out = hook(act, self.model.hook_dict[hook_name])
            act = act if out is None else out  # TransformerLens: None means edited in place
            return self.model(act, start_at_layer=start, stop_at_layer=self.model.cfg.n_layer)
        return self.model.run_with_hooks(
            resid,
            start_at_layer=start,
            stop_at_layer=self.model.cfg.n_layer,
            fwd_hooks=[(hook_name, hook)],
        )


def onset_p_regulation(
    model,
    eset: EncodedSet,
    reg_ids: list[int],
    hook_name: str | None = None,
    factory: HookFactory | None = None,
    batch_size: int = 32,
) -> tuple[Float[Tensor, " n"], Tensor]:
    """P(regulation first token) at every onset predictor, and the row each comes from;
    with `factory`, under its hook at `hook_name` applied at the onset predictors. (One
    call; `OnsetReader` keeps what runs with other hooks or directions share.)"""
    return OnsetReader(model, eset, reg_ids, batch_size).p_regulation(hook_name, factory)


def _constant(mask: Tensor) -> Callable[[], Tensor]:
    return lambda: mask


# -------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class VariantSpec:
    """One intervention: which model, at which hook, with which hook factory."""

    name: str
    model: Literal["standard", "adhd"]
    hook_name: str
    direction: Float[Tensor, " d_model"]
    """The feature's vector; a null draws random unit directions scaled to its norm."""
    make: Callable[[Tensor], HookFactory]
    """Direction -> hook factory."""


def variant_specs(
    sae, feature: int, magnitude: float, hook_name: str, upstream_hook: str
) -> list[VariantSpec]:
    """The card's four interventions on one feature."""
    w_dec = sae.W_dec[feature].detach().float()
    vector = magnitude * w_dec
    return [
        VariantSpec("inject-std", "standard", hook_name, vector, add_vector),
        VariantSpec("subtract-adhd", "adhd", hook_name, vector, lambda d: add_vector(-d)),
        VariantSpec(
            "zero-ablate", "adhd", hook_name, w_dec, lambda d: remove_feature(sae, feature, d)
        ),
        VariantSpec("inject-upstream", "standard", upstream_hook, vector, add_vector),
    ]


def upstream_hook_name(hook_name: str, layer: int | None = None) -> str:
    """resid_post of `layer` (default: the block before the SAE's), or the block-0 input."""
    if layer is None:
        sae_layer = hook_layer(hook_name)
        layer = (sae_layer - 1) if sae_layer else -1
    return f"blocks.{layer}.hook_resid_post" if layer >= 0 else "blocks.0.hook_resid_pre"


@dataclass
class SteeringBench:
    """The models, sequences and clean baselines every variant is measured against."""

    models: dict[str, object]
    sets: dict[str, EncodedSet]
    tokenizer: object
    reg_ids: list[int]
    null_dirs: Tensor
    batch_size: int = 32
    gen_tasks: list[str] = field(default_factory=list)
    gen_config: object = None
    n_null_generate: int = 0
    _clean: dict = field(default_factory=dict)
    _readers: dict[str, OnsetReader] = field(default_factory=dict)

    def reader(self, variant: str) -> OnsetReader:
        """The model's reader, kept so every direction reuses its cached residual streams."""
        if variant not in self._readers:
            self._readers[variant] = OnsetReader(
                self.models[variant], self.sets[variant], self.reg_ids, self.batch_size
            )
        return self._readers[variant]

    def clean(self, variant: str) -> tuple[Tensor, Tensor]:
        if variant not in self._clean:
            self._clean[variant] = self.reader(variant).p_regulation()
        return self._clean[variant]

    def delta(self, spec: VariantSpec, direction: Tensor) -> Delta:
        clean, rows = self.clean(spec.model)
        steered, _ = self.reader(spec.model).p_regulation(spec.hook_name, spec.make(direction))
        return paired_delta(clean, steered, rows)

    def generated(
        self, variant: str, hook_name: str | None = None, factory: HookFactory | None = None
    ) -> Tensor:
        key = ("gen", variant)
        if factory is None and key in self._clean:
            return self._clean[key]
        rates = generated_regulation_rate(
            self.models[variant],
            self.tokenizer,
            self.gen_tasks,
            self.gen_config,
            hook_name,
            factory,
        )
        if factory is None:
            self._clean[key] = rates
        return rates


def run_variant(bench: SteeringBench, spec: VariantSpec) -> VariantResult:
    """The feature's effect and its null, teacher-forced and (optionally) generated."""
    norm = spec.direction.norm()
    effect = bench.delta(spec, spec.direction)
    null = [bench.delta(spec, u * norm).delta for u in bench.null_dirs]
    clean, _ = bench.clean(spec.model)
    result = VariantResult(
        spec.name,
        spec.model,
        spec.hook_name,
        compare_to_null(effect, null, "P(regulation) at onset predictors"),
        clean_p_regulation=float(clean.mean()),
    )
    if bench.gen_tasks and bench.gen_config is not None:
        base = bench.generated(spec.model)
        rows = torch.arange(len(base))

        def gen_delta(direction: Tensor) -> Delta:
            steered = bench.generated(spec.model, spec.hook_name, spec.make(direction))
            keep = base.isfinite() & steered.isfinite()
            return paired_delta(base[keep], steered[keep], rows[keep])

        gen_null = [gen_delta(u * norm).delta for u in bench.null_dirs[: bench.n_null_generate]]
        result.generation = compare_to_null(
            gen_delta(spec.direction), gen_null, "the generated regulation rate"
        )
        result.clean_generated_rate = float(base[base.isfinite()].mean())
    result.verdict = result.p_regulation.verdict
    if result.generation is not None:
        result.verdict += f"; generation: {result.generation.verdict}"
    return result


@torch.no_grad()
def generated_regulation_rate(
    model,
    tokenizer,
    tasks: list[str],
    gen_config,
    hook_name: str | None = None,
    factory: HookFactory | None = None,
) -> Float[Tensor, " task"]:
    """Per task, the fraction of sampled steps that are regulation actions (NaN when the
    sample has no step), with `factory`'s hook active at every `<|steps|>`/`<|sep|>` input."""
    hooks = []
    if factory is not None:
        gate = BoundaryTokens(model, [tokenizer.steps_id, tokenizer.sep_id])
        hooks = [("hook_embed", gate.hook), (hook_name, factory(gate))]
    with model.hooks(fwd_hooks=hooks):
        samples = sample_decompositions(model, tokenizer, tasks, gen_config)
    rates = [
        sum(is_regulation(s) for s in d.steps) / len(d.steps) if d.steps else float("nan")
        for d in samples
    ]
    return torch.tensor(rates, dtype=torch.float64)


# ------------------------------------------------------------------------ entry point


def check_diff_file(config: SteeringConfig, made_with: dict[str, Any], sae_cfg: Any) -> None:
    """The diff file must come from this SAE: same model, hook and width as it records."""
    ours = {
        "model_name": sae_cfg.model_name,
        "hook_name": sae_cfg.hook_name,
        "d_sae": sae_cfg.d_sae,
    }
    differ = [k for k, v in ours.items() if k in made_with and made_with[k] != v]
    if differ:
        raise UserError(
            f"--diff-file {config.diff_file} was made with the SAE {made_with.get('dir')}, not "
            f"{config.sae_dir} ({', '.join(f'{k} {made_with[k]} vs {ours[k]}' for k in differ)});"
            " pass that SAE's feature_diff.json"
        )


def resolve_feature(config: SteeringConfig, d_sae: int, sae_cfg: Any = None) -> int:
    """The requested feature, or the top feature of the diff file (made with this SAE)."""
    feature = config.feature
    if feature is None:
        if config.diff_file is None:
            raise UserError(
                "no feature to steer: pass --feature N, or --diff-file with the "
                "feature_diff.json of this SAE (`interpgpt sae diff`) to take its top feature"
            )
        if not config.diff_file.is_file():
            raise UserError(
                f"{config.diff_file}: no feature_diff.json there; run `interpgpt sae diff` "
                "first, or pass --feature N"
            )
        diff = read_json(config.diff_file)
        if sae_cfg is not None:
            check_diff_file(config, diff.get("sae", {}), sae_cfg)
        features = diff.get("features", [])
        if not features:
            raise UserError(f"{config.diff_file}: lists no ADHD-specific feature; pass --feature N")
        feature = int(features[0]["feature"])
    if not 0 <= feature < d_sae:
        raise UserError(f"--feature {feature}: the SAE has features 0..{d_sae - 1}")
    return feature


def feature_magnitude(model, sae, eset: EncodedSet, feature: int, batch_size: int) -> float:
    """The feature's mean activation when firing at the ADHD onset predictors."""
    stats = onset_feature_stats(model, sae, eset, sae.cfg.hook_name, batch_size)
    if stats.fire_count[feature] == 0:
        raise UserError(
            f"feature {feature} never fires at the ADHD model's onset predictors, so it has no "
            "typical magnitude to steer with; pick one from feature_diff.json"
        )
    return float(stats.mean_when_firing[feature])


def steer(config: SteeringConfig) -> SteeringResult:
    """Run the four interventions with their nulls; write deepdive_steering.json and
    steering.png under `config.out`."""
    device = resolve_device(config.device)
    pair = load_pair(config.standard, config.adhd, device, config.same_variant)
    sae = TopKSAE.load(config.sae_dir).to(device).eval()
    check_trained_on(sae, config.sae_dir, pair.adhd, "adhd", config.same_variant)
    feature = resolve_feature(config, sae.W_dec.shape[0], sae.cfg)
    sets = eval_sets(config, pair.tokenizer, pair.standard.model.cfg.n_ctx)
    magnitude = config.scale * feature_magnitude(
        pair.adhd.model, sae, sets["adhd"], feature, config.batch_size
    )
    bench = build_bench(config, pair, sets, d_model=sae.W_dec.shape[1], device=device)
    upstream = upstream_hook_name(sae.cfg.hook_name, config.upstream_layer)
    specs = variant_specs(sae, feature, magnitude, sae.cfg.hook_name, upstream)
    variants = [run_variant(bench, spec) for spec in specs]
    blob = {
        "feature": feature,
        "sae": {"dir": str(config.sae_dir), "hook_name": sae.cfg.hook_name,
                "layer": sae.cfg.layer},
        "magnitude": magnitude,
        "decoder_norm": float(sae.W_dec[feature].detach().norm()),
        "upstream_hook": upstream,
        "metric": "mean over onset predictors of P(first token of a regulation action), "
                  f"intervened minus clean, on {sequences_phrase(config.sequences)}",
        "sequences": config.sequences,
        "regulation_token_ids": bench.reg_ids,
        "sem": "over tasks (per-task mean difference)",
        "rule": RULE,
        "n_null": config.n_null,
        "variants": {v.name: v for v in variants},
        "provenance": provenance(config),
    }  # fmt: skip
    out = Path(config.out)
    json_path = write_json(out / STEERING_JSON, blob)
    plot_path = plot_steering(out / STEERING_PLOT, variants, feature)
    return SteeringResult(json_path, plot_path, feature, magnitude, variants)


def eval_sets(config: SteeringConfig, tokenizer, n_ctx: int) -> dict[str, EncodedSet]:
    """Per model role, the held-out sequences it reads (`config.sequences`)."""
    source = {v: v if config.sequences == "own" else config.sequences for v in ROLES}
    loaded = {
        s: load_eval_set(config.corpus, tokenizer, s, "test", config.limit, n_ctx)
        for s in dict.fromkeys(source.values())
    }
    return {v: loaded[s] for v, s in source.items()}


def sequences_phrase(sequences: str) -> str:
    if sequences == "own":
        return "each model's own held-out sequences"
    return f"the {sequences} held-out sequences in both models"


def build_bench(config: SteeringConfig, pair, sets, d_model: int, device) -> SteeringBench:
    """Models, sequences, the null directions and (optionally) the sampling setup."""
    bench = SteeringBench(
        pair.models, sets, pair.tokenizer, sorted(regulation_first_tokens(pair.tokenizer)),
        random_directions(config.n_null, d_model, config.seed), config.batch_size,
        n_null_generate=config.n_null_generate,
    )  # fmt: skip
    if config.generate_tasks:
        bench.gen_tasks = [r["task"] for r in sets["standard"].records[: config.generate_tasks]]
        bench.gen_config = GenerationConfig(
            max_new_tokens=config.max_new_tokens, seed=config.seed,
            batch_size=config.batch_size, device=str(device),
        )  # fmt: skip
    return bench


def plot_steering(path: Path, variants: list[VariantResult], feature: int) -> Path:
    """Per variant: the null Δs as points, the null band, and the feature's Δ ± 2 SEM."""
    fig = Figure(figsize=(3.2 * len(variants), 3.6), layout="tight")
    axes = fig.subplots(1, len(variants), squeeze=False)[0]
    for ax, var in zip(axes, variants, strict=True):
        cmp = var.p_regulation
        null = np.asarray(cmp.null_deltas)
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(null))
        ax.scatter(jitter, null, s=12, color="grey", label="random directions")
        band = (cmp.null_mean - 2 * cmp.null_std, cmp.null_mean + 2 * cmp.null_std)
        ax.axhspan(*band, color="grey", alpha=0.15)
        sem = cmp.effect.sem if math.isfinite(cmp.effect.sem) else 0.0
        ax.errorbar([0.5], [cmp.effect.delta], yerr=[2 * sem], fmt="o", color="crimson",
                    capsize=4, label=f"feature {feature} (±2 SEM)")  # fmt: skip
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlim(-0.5, 1.0)
        ax.set_xticks([])
        ax.set_title(f"{var.name}\nz = {cmp.z:+.1f}", fontsize=9)
        ax.set_ylabel("Δ P(regulation) at onset predictors")
    axes[0].legend(fontsize=7, loc="best")
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: SteeringConfig) -> StageOutput:
    diff = ws.summary("feature-diff")
    if "sae_dir" not in diff or "diff_file" not in diff:
        raise UserError(
            "the feature-diff stage's record names no SAE or diff file (an older record); "
            "rerun it with --force feature-diff"
        )
    diff_file = Path(diff["diff_file"])
    if config.feature is None and not read_json(diff_file).get("features"):
        # Nothing to steer is a result of the diff, not an error of the study.
        return StageOutput([diff_file], {"skipped": f"{diff_file} lists no ADHD-specific feature"})
    result = steer(
        dataclasses.replace(
            config,
            sae_dir=Path(diff["sae_dir"]),
            standard=ws.export("standard"),
            adhd=ws.export("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("steering"),
            diff_file=Path(diff["diff_file"]),
        )
    )
    variants = [
        {
            "name": v.name,
            "model": v.model,
            "p_regulation": dataclasses.asdict(v.p_regulation),
            "generation": dataclasses.asdict(v.generation) if v.generation else None,
        }
        for v in result.variants
    ]
    summary: dict[str, Any] = {
        "feature": result.feature,
        "magnitude": result.magnitude,
        "sequences": config.sequences,
        "variants": variants,
    }
    return StageOutput([result.json_path, result.plot_path], summary)


def section(summary: Summary, outputs: list[str]) -> Section:
    if "skipped" in summary:
        return Section(
            "Steering with null baselines",
            f"Nothing was steered: {summary['skipped']} (set steering.feature to steer one).",
            status="warn",
        )
    table = [
        [
            "intervention",
            "Δ P(reg)",
            "SEM",
            "null mean ± sd",
            "z",
            "outside null",
            "Δ generated rate",
        ]
    ]
    verdicts = []
    for v in summary["variants"]:
        p = v["p_regulation"]
        effect = p["effect"]
        gen = v.get("generation") or {}
        gen_delta = (gen.get("effect") or {}).get("delta")
        table.append(
            [
                v["name"],
                fmt(effect.get("delta")),
                fmt(effect.get("sem")),
                f"{fmt(p['null_mean'])} ± {fmt(p['null_std'])}",
                fmt(p["z"], 2),
                "yes" if p["outside_null"] else "no",
                fmt(gen_delta),
            ]
        )
        verdicts.append(p["outside_null"])
    n_out = sum(verdicts)
    finding = (
        f"Steering feature {summary['feature']}: {n_out} of {len(verdicts)} interventions move "
        f"P(regulation) outside ±2 SEM of the random-direction null"
        + (" — a null result, as the seed card reports." if n_out == 0 else ".")
        + f" Measured on {sequences_phrase(summary.get('sequences', 'own'))}."
    )
    return Section("Steering with null baselines", finding, table=table, figures=figures(outputs))


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistic: the largest |z| against the random-direction null of
    steering with the pair's top exclusive feature (NaN when nothing was steered)."""
    zs = [v["p_regulation"].get("z") for v in summary.get("variants", [])]
    zs = [abs(float(z)) for z in zs if z is not None and math.isfinite(float(z))]
    return {
        "steering z": Statistic(
            "largest |z| of P(regulation) under steering vs random directions",
            max(zs) if zs else float("nan"),
        )
    }


ANALYSIS = Analysis(
    name="steering",
    description="feature steering with null baselines",
    config=SteeringStudyConfig,
    stage=stage,
    section=section,
    after=("feature-diff",),
    statistics=statistics,
)
