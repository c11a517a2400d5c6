"""Three linear probes on the residual stream, each with a causal check.

Probes (Alain & Bengio 2016; Belinkov 2022 on their pitfalls) read a property off the
residual stream with a linear classifier. Readability is not use, so each probe is
followed by a causal check: the probe's direction is projected out of the residual at
that layer and the matching behaviour is measured, against random subspaces of the
same rank (cf. INLP, Ravfogel et al. 2020, and amnesic probing, Elazar et al. 2021).

The three properties, on every layer's residual (`hook_embed` and every
`blocks.{layer}.hook_resid_post`):

- onset: is this position an onset predictor (the `<|steps|>`/`<|sep|>` position whose
  next token starts a step)? Over all real positions. Behaviour: the next-token loss at
  the onset predictors (predicting each step's first token).
- regulation: is the next step a regulation action? At onset predictors. Behaviour:
  P(first token of a regulation action) at the onset predictors.
- step_index: which step comes next (0-based, the last class meaning "this or later")?
  At onset predictors. Behaviour: the next-token loss at step ends (positions whose next
  token is `<|sep|>` or `<|end|>`), i.e. the continue-or-stop decision, which needs to
  know how many steps have been written. Its projection is applied at every real
  position (the step count is a property of the whole step, and the step ends are not
  onset predictors); the other two project where they were trained.

Probes are softmax regressions (two classes for the binary probes) with an L2 penalty,
fitted by L-BFGS on centred, globally rescaled activations, so the weight rows stay
directions of the residual stream. The held-out tasks are split *by task* into
probe-train and probe-test. Baseline: predicting the majority class of probe-train.

Projection (`projection_hooks`, built from `interventions.project_out` and
`add_direction`): x' = x - (x - mu) Q Q^T with Q an orthonormal basis of the probe's
discriminative subspace (the row space of the class-centred weight matrix: rank 1 for a
binary probe, at most classes - 1 for step_index) and mu the probe-train mean. It removes
all variation of x along Q while keeping the mean, so afterwards the probe's logits are
constant and it can only predict one class.

In the study (stage "probes", after the export) both models of a pair are probed on the
same inputs, the ADHD held-out sequences (`STUDY_SEQUENCES`), into
`analysis/probes_standard` and `analysis/probes_adhd`. The same inputs make the seed
controls' accuracy gap a difference between models: probed on their own variants, any
two models (a model and its twin too) differ by the step-index probe's accuracy on the
two sequence sets, and the standard sequences have no regulation step to probe for.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.interventions import (
    Hook,
    ResidualCache,
    add_direction,
    apply_hooks,
    project_out,
    resid_block,
    resumed_logits,
)
from interpgpt.analysis.plots import LinePanel, Series, save_line_plot
from interpgpt.analysis.probes.config import ProbesConfig
from interpgpt.analysis.probes.fit import (
    LinearProbe,
    PositionTable,
    collect_positions,
    fit_probe,
    probe_sites,
    split_by_task,
)
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    figures,
    fmt,
)
from interpgpt.artifacts.load import load_model
from interpgpt.constants import VARIANTS, Variant
from interpgpt.corpus.evalset import EncodedSet, load_eval_set
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.device import resolve_device
from interpgpt.io import provenance, write_json

PROBES_JSON = "three_probes.json"
PROBES_PLOT = "probes.png"
PROBE_NAMES: tuple[str, ...] = ("onset", "regulation", "step_index")


@dataclass
class CausalCheck:
    """Projecting a probe's subspace out of one layer, against random subspaces."""

    layer: str
    hook_name: str
    positions: str
    """Where the projection was applied."""
    rank: int
    accuracy_after_projection: float
    """The probe's held-out accuracy on projected activations: it can then predict only
    one class, so this is that class's share of probe-test."""
    refit_accuracy_after_projection: float
    """A new probe fitted on projected activations (amnesic probing): how much of the
    property is still linearly readable from other directions."""
    behaviour: str
    clean: float
    delta: float
    """Mean of projected minus clean behaviour, per position."""
    random_deltas: list[float]
    random_mean: float
    random_std: float
    z: float
    """(delta - random_mean) / random_std."""


@dataclass
class ProbeResult:
    """One probe over all layers."""

    name: str
    positions: str
    n_classes: int
    n_train: int
    n_test: int
    accuracy: list[float] = field(default_factory=list)
    """Held-out accuracy per layer (embed first)."""
    baseline: float = float("nan")
    """Majority class of probe-train, scored on probe-test."""
    skipped: str | None = None
    """Why the probe was not fitted (e.g. a single class), else None."""
    causal: list[CausalCheck] = field(default_factory=list)


@dataclass
class ProbesResult:
    """What `run_probes` wrote."""

    json_path: Path
    plot_path: Path
    layers: list[str]
    probes: list[ProbeResult]
    """In `PROBE_NAMES` order."""

    def probe(self, name: str) -> ProbeResult:
        return next(p for p in self.probes if p.name == name)


def projection_hooks(
    site: str,
    basis: Float[Tensor, "d_model rank"],
    mean: Float[Tensor, " d_model"],
    positions: Tensor | None = None,
) -> list[Hook]:
    """x' = x - (x - mean) Q Q^T as two hooks of the intervention mechanism: directional
    ablation (x - x Q Q^T) followed by adding back the mean's component (mean Q Q^T), so
    the ablated coordinates sit at their typical value rather than at zero."""
    basis = basis.float()
    kept = basis @ (basis.T @ mean.float().to(basis.device))
    return [project_out(site, basis.T, positions), add_direction(site, kept, 1.0, positions)]


def random_subspace(d_model: int, rank: int, gen: torch.Generator) -> Tensor:
    """An orthonormal basis of a uniformly random rank-`rank` subspace."""
    q, _ = torch.linalg.qr(torch.randn(d_model, rank, generator=gen, dtype=torch.float64))
    return q.float()


# -------------------------------------------------------------------- probe datasets


POSITIONS = {
    "onset": "all real positions",
    "regulation": "onset predictors",
    "step_index": "onset predictors",
}
INTERVENE = {
    "onset": "all real positions",
    "regulation": "onset predictors",
    # The step index is a property of every position of a step, and the behaviour it
    # should drive (stopping) is read at step ends, not at the onset predictors.
    "step_index": "all real positions",
}
SHORT = {"onset": "loss@onset", "regulation": "P(reg)@onset", "step_index": "loss@step end"}
BEHAVIOURS = {
    "onset": "next-token loss at onset predictors (nats)",
    "regulation": "P(first token of a regulation action) at onset predictors",
    "step_index": "next-token loss at step ends (next token <|sep|> or <|end|>) (nats)",
}


@dataclass
class ProbeData:
    """The positions one probe reads and their labels."""

    select: Bool[Tensor, " n"]
    labels: Int[Tensor, " n"]
    n_classes: int


def probe_data(table: PositionTable, name: str, max_step_index: int) -> ProbeData:
    onsets = table.is_onset_predictor
    if name == "onset":
        return ProbeData(torch.ones_like(onsets), onsets.long(), 2)
    if name == "regulation":
        return ProbeData(onsets, table.next_is_regulation.long(), 2)
    if name == "step_index":
        return ProbeData(onsets, table.step_index.clamp(max=max_step_index - 1), max_step_index)
    raise ValueError(f"unknown probe {name!r}")


def fit_layers(
    table: PositionTable,
    name: str,
    train: Tensor,
    config: ProbesConfig,
) -> tuple[ProbeResult, dict[str, LinearProbe]]:
    """Fit the probe on every layer's residual and score it on the held-out tasks."""
    data = probe_data(table, name, config.max_step_index)
    tr, te = data.select & train, data.select & ~train
    y_tr, y_te = data.labels[tr], data.labels[te]
    result = ProbeResult(name, POSITIONS[name], data.n_classes, int(tr.sum()), int(te.sum()))
    if len(y_tr.unique()) < 2 or len(y_te) == 0:
        result.skipped = (
            f"probe-train has {len(y_tr.unique())} class(es) and probe-test "
            f"{len(y_te)} positions; nothing to learn or score"
        )
        return result, {}
    majority = int(torch.bincount(y_tr, minlength=data.n_classes).argmax())
    result.baseline = float((y_te == majority).float().mean())
    probes = {}
    for site, acts in table.acts.items():
        probe = fit_probe(acts[tr], y_tr, data.n_classes, config.weight_decay, config.max_iter)
        probes[site] = probe
        result.accuracy.append(probe.accuracy(acts[te], y_te))
    return result, probes


# ---------------------------------------------------------------------- causal check


def _intervention_mask(name: str, batch: EncodedSet) -> Tensor:
    return batch.valid if INTERVENE[name] == "all real positions" else batch.onset_predictor_mask()


def _read_mask(name: str, batch: EncodedSet, tokenizer) -> Bool[Tensor, "batch pos"]:
    """Where probe `name`'s behaviour is read (see `BEHAVIOURS`)."""
    if name in ("onset", "regulation"):
        return batch.onset_predictor_mask()
    # step_index: the continue-or-stop decision at the end of each step
    mask = torch.zeros_like(batch.ids, dtype=torch.bool)
    mask[:, :-1] = (batch.ids[:, 1:] == tokenizer.sep_id) | (batch.ids[:, 1:] == tokenizer.end_id)
    return mask


@dataclass
class ReadBatch:
    """One batch of sequences cut after the last position its behaviour reads (under
    causal attention no later position reaches it)."""

    ids: Int[Tensor, "batch pos"]
    read: Bool[Tensor, "batch pos"]
    """Where the behaviour is read."""
    where: Bool[Tensor, "batch pos"]
    """Where a projection is applied (`INTERVENE`)."""
    next_ids: Int[Tensor, " n"]
    """The next token at each read position, row-major: the loss's target."""
    index: Int[Tensor, " n"]
    """Each read position's place among all of the set's, row-major."""


class BehaviourReader:
    """Per-position values of one probe's behaviour on one model and set, clean or with a
    subspace projected out at a residual site.

    The values are those of a full forward under `projection_hooks`, read at the
    behaviour's positions (the reference in tests/analysis/test_probes.py), computed with
    less: everything upstream of the site is the same for the clean run and for every
    subspace, so the residual stream at the site is kept per batch (one site at a time)
    and only the blocks after it run (`interventions.resumed_logits`); only the positions
    read are unembedded; and the sequences are batched in order of their last read
    position, so a batch is cut close to each of its rows' end instead of padded to the
    longest of a random draw.
    """

    def __init__(self, model, eset: EncodedSet, name: str, tokenizer, reg_ids: list[int],
                 batch_size: int = 32):  # fmt: skip
        self.model, self.name, self.reg_ids = model, name, reg_ids
        device = next(model.parameters()).device
        read = _read_mask(name, eset, tokenizer)
        where = _intervention_mask(name, eset)
        next_ids = eset.ids.roll(-1, dims=1)
        index = torch.full(read.shape, -1, dtype=torch.long)
        index[read] = torch.arange(int(read.sum()))
        widths = (read * (torch.arange(read.shape[1]) + 1)).amax(1)  # last read position + 1
        rows = widths.nonzero()[:, 0]
        rows = rows[torch.argsort(widths[rows], stable=True)]
        self.n = int(read.sum())
        self.batches: list[ReadBatch] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            cut = (chunk[:, None], torch.arange(int(widths[chunk].max())))
            ids, read_b, where_b = eset.ids[cut], read[cut], where[cut]
            self.batches.append(
                ReadBatch(ids.to(device), read_b.to(device), where_b.to(device),
                          next_ids[cut][read_b].to(device), index[cut][read_b])
            )  # fmt: skip
        self.resid = ResidualCache(model, [b.ids for b in self.batches])
        """The clean residual stream entering a block, per batch (one block at a time)."""

    @torch.no_grad()
    def values(
        self, site: str | None = None, basis: Tensor | None = None, mean: Tensor | None = None
    ) -> Float[Tensor, " n"]:
        """The behaviour at every read position, row-major; with `basis` and `mean`, with
        the subspace projected out at `site` (at the probe's `INTERVENE` positions)."""
        n_layer = self.model.cfg.n_layer
        block = n_layer if site is None else resid_block(site, n_layer)
        values = torch.zeros(self.n, dtype=torch.float64)
        for b, resid in zip(self.batches, self.resid(block), strict=True):
            hooks = []
            if site is not None and basis is not None and mean is not None:
                hooks = projection_hooks(site, basis, mean, b.where)
            logits = resumed_logits(self.model, resid, block, b.read, hooks).float()
            if self.name == "regulation":
                value = logits.softmax(-1)[:, self.reg_ids].sum(-1)
            else:
                value = F.cross_entropy(logits, b.next_ids, reduction="none")
            values[b.index] = value.double().cpu()
        return values


def behaviour(
    model,
    eset: EncodedSet,
    name: str,
    tokenizer,
    reg_ids: list[int],
    hook_name: str | None = None,
    basis: Tensor | None = None,
    mean: Tensor | None = None,
    batch_size: int = 32,
) -> Float[Tensor, " n"]:
    """Per-position values of probe `name`'s behaviour, optionally with `basis` projected
    out at `hook_name` (at the probe's positions). (One call; `BehaviourReader` keeps what
    the runs with other subspaces share.)"""
    reader = BehaviourReader(model, eset, name, tokenizer, reg_ids, batch_size)
    return reader.values(hook_name, basis, mean)


@dataclass
class CausalContext:
    """What every causal check of one model shares."""

    model: Any  # TaskGPT
    eset: EncodedSet
    tokenizer: Any  # TaskTokenizer
    reg_ids: list[int]
    table: PositionTable
    test_mask: Tensor
    config: ProbesConfig
    gen: torch.Generator
    clean: dict[str, Tensor] = field(default_factory=dict)
    readers: dict[str, BehaviourReader] = field(default_factory=dict)

    def reader(self, name: str) -> BehaviourReader:
        """Probe `name`'s reader, kept so every subspace reuses its cached residuals."""
        if name not in self.readers:
            self.readers[name] = BehaviourReader(
                self.model, self.eset, name, self.tokenizer, self.reg_ids, self.config.batch_size
            )
        return self.readers[name]


def causal_check(
    ctx: CausalContext, name: str, label: str, site: str, probe: LinearProbe
) -> CausalCheck:
    """Project the probe's subspace out at `site`; compare with random subspaces."""
    reader = ctx.reader(name)
    if name not in ctx.clean:
        ctx.clean[name] = reader.values()
    clean = ctx.clean[name]

    def delta(basis: Tensor) -> float:
        return float((reader.values(site, basis, probe.mean) - clean).mean())

    basis = probe.subspace()
    rank = basis.shape[1]
    effect = delta(basis)
    null = np.array(
        [delta(random_subspace(basis.shape[0], rank, ctx.gen)) for _ in range(ctx.config.n_random)]
    )
    data = probe_data(ctx.table, name, ctx.config.max_step_index)
    te = data.select & ctx.test_mask
    tr = data.select & ~ctx.test_mask
    hooks = projection_hooks(site, basis, probe.mean)
    x_tr, x_te = (apply_hooks(hooks, ctx.table.acts[site][m]) for m in (tr, te))
    refit = fit_probe(x_tr, data.labels[tr], data.n_classes, ctx.config.weight_decay,
                      ctx.config.max_iter)  # fmt: skip
    std = float(null.std(ddof=1))
    gap = effect - float(null.mean())
    return CausalCheck(
        layer=label,
        hook_name=site,
        positions=INTERVENE[name],
        rank=rank,
        accuracy_after_projection=probe.accuracy(x_te, data.labels[te]),
        refit_accuracy_after_projection=refit.accuracy(x_te, data.labels[te]),
        behaviour=BEHAVIOURS[name],
        clean=float(clean.mean()),
        delta=effect,
        random_deltas=null.tolist(),
        random_mean=float(null.mean()),
        random_std=std,
        z=gap / std if std > 0 else (0.0 if gap == 0 else math.copysign(math.inf, gap)),
    )


# ------------------------------------------------------------------------ entry point


def probe_layers(ctx: CausalContext, name: str, train: Tensor) -> ProbeResult:
    """Fit one probe on every layer, then run its causal check(s)."""
    result, probes = fit_layers(ctx.table, name, train, ctx.config)
    if result.skipped:
        return result
    sites = probe_sites(ctx.model.cfg.n_layer)
    chosen = list(range(len(sites)))
    if ctx.config.causal_layers == "best":
        chosen = [int(np.argmax(result.accuracy))]  # ties: the earliest layer
    for i in chosen:
        label, site = sites[i]
        result.causal.append(causal_check(ctx, name, label, site, probes[site]))
    return result


def run_probes(config: ProbesConfig) -> ProbesResult:
    """Fit the three probes on every layer, check them causally, and write
    three_probes.json and probes.png under `config.out`."""
    device = resolve_device(config.device)
    loaded = load_model(config.model)
    model = loaded.model.to(device).eval()
    variant: Variant = "adhd"
    if config.variant != "auto":
        variant = config.variant
    elif loaded.variant == "standard":
        variant = "standard"
    eset = load_eval_set(
        config.corpus, loaded.tokenizer, variant, config.split, config.limit, model.cfg.n_ctx
    )
    table = collect_positions(model, eset, config.batch_size)
    train = split_by_task(table.task, config.train_fraction, config.seed)
    ctx = CausalContext(
        model,
        eset,
        loaded.tokenizer,
        sorted(regulation_first_tokens(loaded.tokenizer)),
        table,
        ~train,
        config,
        torch.Generator().manual_seed(config.seed),
    )
    probes = [probe_layers(ctx, name, train) for name in PROBE_NAMES]
    layers = [label for label, _ in probe_sites(model.cfg.n_layer)]
    out = Path(config.out)
    blob = {
        "model": str(config.model),
        "variant": variant,
        "layers": layers,
        "split": {
            "rule": "by task_id: no task in both probe-train and probe-test",
            "train_tasks": len(table.task[train].unique()),
            "test_tasks": len(table.task[~train].unique()),
        },
        "baseline": "majority class of probe-train, scored on probe-test",
        "projection": "x' = x - (x - mu) Q Q^T at the probe's positions; Q spans the "
        "class-centred probe weights, mu is the probe-train mean",
        "z": "(delta - random_mean) / random_std over random subspaces of the same rank",
        "probes": {p.name: p for p in probes},
        "provenance": provenance(config),
    }
    json_path = write_json(out / PROBES_JSON, blob)
    plot_path = plot_probes(out / PROBES_PLOT, layers, probes, loaded.name)
    return ProbesResult(json_path, plot_path, layers, probes)


def plot_probes(path: Path, layers: list[str], probes: list[ProbeResult], name: str) -> Path:
    """Held-out accuracy per layer, one panel per probe, the baseline dashed."""
    x = list(range(len(layers)))
    panels = []
    for probe in probes:
        series = []
        if not probe.skipped:
            series = [
                Series(x, probe.accuracy, "probe (held-out)", "o"),
                Series(x, [probe.baseline] * len(x), "majority baseline"),
            ]
        title = probe.name + (" (skipped)" if probe.skipped else "")
        panels.append(LinePanel(series, title, "layer", "accuracy", xticks=x, xticklabels=layers))
    return save_line_plot(path, panels, suptitle=f"linear probes: {name}")


# ---------------------------------------------------------------------------- in the study


STUDY_SEQUENCES: Variant = "adhd"
"""The held-out sequences the study probes both models of a pair on (see the module
docstring): the one variant where all three probes are defined."""


def stage(ws: Layout, config: ProbesConfig) -> StageOutput:
    """Both exported models on the same held-out sequences, `STUDY_SEQUENCES`."""
    outputs: list[Path] = []
    summary: Summary = {}
    for variant in VARIANTS:
        result = run_probes(
            dataclasses.replace(
                config,
                model=ws.export(variant),
                corpus=ws.corpus,
                out=ws.analysis(f"probes_{variant}"),
                variant=STUDY_SEQUENCES,
            )
        )
        outputs += [result.json_path, result.plot_path]
        summary[variant] = [dataclasses.asdict(p) for p in result.probes]
    return StageOutput(outputs, summary)


def section(summary: Summary, outputs: list[str]) -> Section:
    table = [["model", "probe", "best layer", "held-out acc", "baseline", "causal z"]]
    for variant, probes in summary.items():
        for p in probes:
            if p.get("skipped"):
                continue
            acc = p["accuracy"]
            best = max(range(len(acc)), key=lambda i: acc[i])
            causal = p.get("causal") or []
            z = causal[0].get("z") if causal else None
            table.append(
                [variant, p["name"], str(best), fmt(acc[best]), fmt(p["baseline"]), fmt(z, 2)]
            )
    finding = (
        "Linear probes read step onset, next-step regulation and step index from the "
        f"residual stream of both models on the same {STUDY_SEQUENCES} held-out sequences; "
        "the causal column projects the probe direction out against random directions."
    )
    return Section("Three probes", finding, table=table, figures=figures(outputs))


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistic: per probe, the largest difference between the two
    models' held-out accuracies at any layer (NaN for a probe that could not be fit)."""
    names: list[str] = []
    gaps: list[float] = []
    adhd = {p["name"]: p for p in summary["adhd"]}
    for probe in summary["standard"]:
        other = adhd.get(probe["name"], {})
        a, b = probe.get("accuracy") or [], other.get("accuracy") or []
        names.append(probe["name"])
        same = len(a) == len(b) and len(a) > 0
        gaps.append(float(np.abs(np.subtract(a, b)).max()) if same else float("nan"))
    return {
        "accuracy gap": Statistic(
            "largest |held-out accuracy difference| over layers, per probe",
            gaps,
            components=names,
        )
    }


ANALYSIS = Analysis(
    name="probes",
    description="three linear probes + causal check",
    config=ProbesConfig,
    stage=stage,
    section=section,
    after=("export",),
    statistics=statistics,
)
