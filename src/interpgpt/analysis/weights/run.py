"""The matched pair in weight space, outside in: how far each model moved from the init they
share, whether weight matching finds the ADHD model's heads at other indices, and whether
the two models are linearly mode-connected (the techniques: `weights.compare`).

The shared init is rebuilt, not assumed: both models train from `train.initial_model`
(preset and seed alone) and each run dir's config.json records its hash (`init_sha256`).
Both recorded hashes must be equal and the init rebuilt from the standard run's preset and
seed must hash to them; otherwise the command refuses. So the models must be given as *run
dirs*: an export dir keeps the training config but not the init's hash, and is refused with
the run dir it was exported from named.

With `--corpus`, the held-out loss along the line between the two models is measured on
the first `limit` test tasks of each variant, before and after permuting the ADHD model's
heads by the matching. With `--headswap`, the weight matching is set beside the head-swap
inventory's within-layer matching (from attention profiles, read from its headswap.json):
the share of heads given the same partner, and which of its moved heads the weights agree on.

In the study (stage "weights", after the export and the head-swap inventory) it reads the
run dirs, the corpus and the inventory's headswap.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interpgpt.analysis import plots
from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    figures,
    fmt,
)
from interpgpt.analysis.weights.compare import (
    HeadMatching,
    LossLine,
    MatchingAgreement,
    WeightComparison,
    compare_weights,
    heldout_batches,
    matching_agreement,
)
from interpgpt.analysis.weights.config import WeightsConfig
from interpgpt.artifacts.load import load_pair
from interpgpt.artifacts.names import EXPORT_INFO, RUN_CONFIG
from interpgpt.constants import VARIANTS
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, read_json, write_json
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.settings import SettingError
from interpgpt.train.batches import Batch
from interpgpt.train.config import TrainConfig
from interpgpt.train.recipe import initial_model, state_sha256

WEIGHTS_JSON = "weights.json"
CHANGE_MAP = "weight_change.png"
INTERPOLATION_PLOT = "interpolation.png"
HEADSWAP_JSON = "headswap.json"
"""The head-swap inventory's file (named here too: analyses do not import each other)."""


# ---------------------------------------------------------------------------- the shared init


@dataclass
class SharedInit:
    """The initial weights models trained from, rebuilt and checked against their runs."""

    model: TaskGPT
    sha256: str
    """`train.state_sha256` of the rebuilt weights, equal to the init_sha256 runs recorded."""
    preset: str
    seed: int
    data_seeds: dict[str, int | None] = field(default_factory=dict)
    """Per model, the data-order seed its run recorded (filled in by `shared_init`)."""


def run_config(run_dir: Path) -> dict[str, Any]:
    """A run dir's config.json; an export dir or anything else is a UserError naming it."""
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such run directory")
    if (run_dir / EXPORT_INFO).is_file():
        source = read_json(run_dir / EXPORT_INFO).get("source")
        raise UserError(
            f"{run_dir}: an export dir does not record the initial weights' hash; pass the run "
            f"dir it was exported from ({source})"
        )
    blob = read_json(run_dir / RUN_CONFIG)
    if not isinstance(blob, dict) or "train" not in blob or "model" not in blob:
        raise UserError(f"{run_dir / RUN_CONFIG}: not a run config of `interpgpt train`")
    return blob


def rebuild_init(run_dir: Path) -> SharedInit:
    """The run's initial weights, rebuilt as training built them (`train.initial_model` of
    its preset, width overrides and seed) and checked against its recorded init_sha256."""
    path = run_dir / RUN_CONFIG
    blob = run_config(run_dir)
    recorded = blob.get("init_sha256")
    if not recorded:
        raise UserError(f"{path}: records no init_sha256, so the shared init cannot be checked")
    train = blob["train"]
    try:
        widths = {k: train.get(k) for k in ("d_model", "d_mlp")}  # absent before they existed
        config = TrainConfig(preset=train["preset"], seed=train["seed"], **widths)
    except (KeyError, TypeError, SettingError) as err:
        raise UserError(f"{path}: cannot rebuild the init from its train section ({err})") from None
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state as it was
        model = initial_model(config).eval()
    digest = state_sha256(model)
    if digest != recorded:
        raise UserError(
            f"{path}: the init rebuilt from preset {config.preset!r} and seed {config.seed} "
            f"hashes to {digest[:12]}…, the run recorded {recorded[:12]}…"
        )
    return SharedInit(model, digest, config.preset, config.seed)


def shared_init(runs: Mapping[str, Path]) -> SharedInit:
    """The init every run (name -> run dir) recorded, rebuilt once from the first; refuses
    runs that recorded different inits."""
    configs = {name: run_config(path) for name, path in runs.items()}
    hashes = {name: blob.get("init_sha256") for name, blob in configs.items()}
    if len(set(hashes.values())) > 1:
        listed = ", ".join(f"{runs[n]}: {str(h)[:12]}…" for n, h in hashes.items())
        raise UserError(f"the runs do not share an init (init_sha256 {listed})")
    init = rebuild_init(next(iter(runs.values())))
    init.data_seeds = {name: blob.get("data_seed") for name, blob in configs.items()}
    return init


# ---------------------------------------------------------------------------- the head-swap file


@dataclass
class HeadswapMatching:
    """The head-swap inventory's within-layer matching, as its headswap.json records it."""

    partners: list[list[int]]
    """partners[layer][head]: the ADHD head matched to the standard head."""
    moved: set[tuple[int, int]]
    """(layer, head) of the standard heads the inventory calls moved."""


def read_headswap(path: Path, n_layer: int, n_head: int) -> HeadswapMatching:
    """The within-layer matching of a headswap.json, for models of n_layer × n_head heads."""
    blob = read_json(path)
    try:
        entries = blob["matching"]["within_layer"]
        pairs = [(tuple(e["std"]), tuple(e["adhd"]), bool(e.get("moved"))) for e in entries]
    except (KeyError, TypeError):
        raise UserError(f"{path}: no matching.within_layer; expected a headswap.json") from None
    partners = [[-1] * n_head for _ in range(n_layer)]
    for (layer, head), (partner_layer, partner), _ in pairs:
        if not (partner_layer == layer and 0 <= layer < n_layer and 0 <= head < n_head):
            raise UserError(f"{path}: head L{layer}H{head} does not fit {n_layer}×{n_head} heads")
        partners[layer][head] = partner
    if any(sorted(p) != list(range(n_head)) for p in partners):
        raise UserError(f"{path}: the within-layer matching is not one permutation per layer")
    return HeadswapMatching(partners, {std for std, _, moved in pairs if moved})


# ---------------------------------------------------------------------------- entry point


@dataclass
class WeightsResult:
    """What `run_weights` computed and wrote."""

    comparison: WeightComparison
    """Change from init, head matching, interpolation losses."""
    init: SharedInit
    """The shared init, rebuilt and checked."""
    agreement: MatchingAgreement | None
    """The weight matching against the head-swap inventory's (None: no headswap.json)."""
    n_tasks: dict[str, int] = field(default_factory=dict)
    """Held-out sequences per variant behind the interpolation losses."""
    files: dict[str, Path] = field(default_factory=dict)
    """Artifact name -> path written."""

    @property
    def headline(self) -> dict[str, float | int | None]:
        share = self.agreement.share if self.agreement is not None else None
        return {**self.comparison.headline, "headswap_agreement": share}


def run_weights(config: WeightsConfig) -> WeightsResult:
    """Compare the pair's weights with their shared init and with each other; writes JSON and
    PNGs."""
    device = resolve_device(config.device)
    init = shared_init({"standard": config.standard, "adhd": config.adhd})
    pair = load_pair(config.standard, config.adhd, device, config.same_variant)
    std, adhd = pair.standard.model, pair.adhd.model
    eval_sets: dict[str, list[Batch]] | None = None
    n_tasks: dict[str, int] = {}
    if config.corpus is not None:
        eval_sets = {}
        for variant in VARIANTS:
            data = load_eval_set(
                config.corpus, pair.tokenizer, variant, config.split, config.limit, std.cfg.n_ctx
            )
            eval_sets[variant] = heldout_batches(data, pair.tokenizer.pad_id, config.batch_size)
            n_tasks[variant] = len(data)
    comparison = compare_weights(
        std,
        adhd,
        init=init.model.to(device),
        eval_sets=eval_sets,
        alphas=np.linspace(0.0, 1.0, config.points).tolist(),
        names=("standard", "adhd"),
    )
    agreement = None
    if config.headswap is not None:
        inventory = read_headswap(config.headswap, std.cfg.n_layer, std.cfg.n_head)
        agreement = matching_agreement(comparison.matching, inventory.partners, inventory.moved)
    result = WeightsResult(comparison, init, agreement, n_tasks)
    result.files = write_outputs(result, config)
    return result


def write_outputs(result: WeightsResult, config: WeightsConfig) -> dict[str, Path]:
    comparison, init = result.comparison, result.init
    blob = {
        "init": {
            "sha256": init.sha256,
            "preset": init.preset,
            "seed": init.seed,
            "data_seed": init.data_seeds,
        },
        "headline": result.headline,
        "relative_change": comparison.deltas,
        "relative_change_is": "‖W − W0‖_F / ‖W0‖_F against the shared init",
        "matching": _matching_json(comparison.matching),
        "head_distance": comparison.head_distance,
        "interpolation": _interpolation_json(comparison.interpolation, result.n_tasks),
        "headswap": _agreement_json(result.agreement, config.headswap),
        "provenance": provenance(config),
    }
    files = {
        "weights": write_json(config.out / WEIGHTS_JSON, blob),
        "change_map": _plot_change(comparison, config.out / CHANGE_MAP),
    }
    if comparison.interpolation:
        files["interpolation"] = _plot_interpolation(
            comparison.interpolation, config.out / INTERPOLATION_PLOT
        )
    return files


def _matching_json(matching: HeadMatching) -> dict[str, Any]:
    return {
        "similarity": "mean over W_Q, W_K, W_V, W_O of the cosine of the two heads' slices",
        "perms": matching.perms,
        "perms_are": "perms[layer][i]: the ADHD head matched to standard head i",
        "off_diagonal": matching.off_diagonal,
        "moved": [f"std L{layer}H{i} → adhd L{layer}H{j}" for layer, i, j in matching.moved],
        "matched_mean": matching.matched_mean,
        "same_index_mean": matching.same_index_mean,
        "similarity_matrix": matching.similarity,
        "similarity_matrix_axes": "(layer, standard head, ADHD head)",
    }


def _line_json(line: LossLine) -> dict[str, Any]:
    return {
        "loss": line.loss,
        "by_set": line.by_set,
        "barrier": line.barrier,
        "barriers_by_set": line.barriers_by_set,
    }


def _interpolation_json(lines: dict[str, LossLine] | None, n_tasks: dict[str, int]):
    if lines is None:
        return None
    return {
        "alphas": lines["before"].alphas,
        "alpha_is": "0: the standard model, 1: the ADHD model (its heads aligned in 'after')",
        "n_tasks": n_tasks,
        "loss_is": "training objective on held-out sequences, nats/token, token-weighted",
        **{when: _line_json(line) for when, line in lines.items()},
    }


def _agreement_json(agreement: MatchingAgreement | None, path: Path | None):
    if agreement is None:
        return None
    return {
        "file": path,
        "share": agreement.share,
        "heads": [
            {
                "head": h.label,
                "weights": h.weights,
                "headswap": h.other,
                "headswap_moved": h.other_moved,
                "agree": h.agree,
            }
            for h in agreement.heads
        ],
        "moved_agreeing": agreement.moved_agreeing,
    }


def _plot_change(comparison: WeightComparison, path: Path) -> Path:
    panels = []
    for name, deltas in (comparison.deltas or {}).items():
        n_layer, n_head = deltas.heads.shape
        panels.append(
            plots.HeatmapPanel(
                np.concatenate([deltas.heads, deltas.mlp[:, None]], axis=1),
                title=f"{name} (whole model {deltas.total:.3f})",
                xlabel="component",
                ylabel="layer",
                xticklabels=[f"H{h}" for h in range(n_head)] + ["MLP"],
                yticklabels=[f"L{layer}" for layer in range(n_layer)],
                annotate=n_head <= 16,
            )
        )
    return plots.save_heatmaps(
        path,
        panels,
        suptitle="relative change from the shared init, ‖W − W0‖ / ‖W0‖",
        colorbar_label="relative change",
    )


def _plot_interpolation(lines: dict[str, LossLine], path: Path) -> Path:
    """One panel for all held-out sequences, one per evaluation set; before and after."""
    panels = []
    for name in ["all", *lines["before"].by_set]:
        series = []
        for when, line in lines.items():
            loss = line.loss if name == "all" else line.by_set[name]
            barrier = line.barrier if name == "all" else line.barriers_by_set[name]
            series.append(plots.Series(line.alphas, loss, f"{when} (barrier {barrier:.3g})", "o"))
        panels.append(
            plots.LinePanel(
                series,
                title=f"{name} held-out sequences",
                xlabel="α (0: standard, 1: ADHD)",
                ylabel="loss (nats/token)",
            )
        )
    return plots.save_line_plot(
        path,
        panels,
        suptitle="loss along the line between the models, before / after aligning ADHD heads",
        sharey=False,
    )


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: WeightsConfig) -> StageOutput:
    inventory = ws.analysis("headswap") / HEADSWAP_JSON
    result = run_weights(
        dataclasses.replace(
            config,
            standard=ws.run("standard"),
            adhd=ws.run("adhd"),
            corpus=ws.corpus,
            headswap=inventory if inventory.is_file() else None,
            out=ws.analysis("weights"),
        )
    )
    matching = result.comparison.matching
    summary = {
        "headline": result.headline,
        "layers": [
            {"layer": layer, "perm": perm, "matched_mean": m, "same_index_mean": s}
            for layer, (perm, m, s) in enumerate(
                zip(matching.perms, matching.matched_mean, matching.same_index_mean, strict=True)
            )
        ],
        "headswap_moved_agreeing": result.agreement.moved_agreeing if result.agreement else None,
    }
    return StageOutput(list(result.files.values()), summary)


def section(summary: Summary, outputs: list[str]) -> Section:
    head = summary["headline"]
    layers = summary["layers"]
    n_heads = sum(len(s["perm"]) for s in layers)
    agreement = head.get("headswap_agreement")
    agrees = (
        f", agreeing with the head-swap inventory's matching on {fmt(agreement)} of heads"
        if agreement is not None
        else ""
    )
    barrier = (
        f"; the loss barrier on the line between them is {fmt(head['barrier_before'])} nats/token, "
        f"{fmt(head['barrier_after'])} after aligning the ADHD heads"
        if head.get("barrier_before") is not None
        else ""
    )
    finding = (
        f"From their shared init the standard model moved {fmt(head['relative_change_standard'])} "
        f"and the ADHD model {fmt(head['relative_change_adhd'])} (‖W − W0‖ / ‖W0‖); weight "
        f"matching puts {head['off_diagonal_heads']} of {n_heads} heads off the diagonal"
        f"{agrees}{barrier}."
    )
    rows = [(key.replace("_", " "), fmt(value)) for key, value in head.items()]
    table = [["layer", "ADHD head matched to standard head 0…", "matched cos", "same-index cos"]]
    for s in layers:
        perm = " ".join(map(str, s["perm"]))
        table.append([str(s["layer"]), perm, fmt(s["matched_mean"]), fmt(s["same_index_mean"])])
    return Section("Weight space", finding, rows=rows, table=table, figures=figures(outputs))


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistics: the heads weight matching puts off the diagonal, the
    loss barrier on the straight line between the two models (before aligning heads), and
    how differently far the two moved from their shared init."""
    head = summary["headline"]
    off = [
        f"L{s['layer']}H{i}" for s in summary["layers"] for i, j in enumerate(s["perm"]) if i != j
    ]

    def number(key: str) -> float:
        value = head.get(key)
        return float("nan") if value is None else float(value)

    change = abs(number("relative_change_adhd") - number("relative_change_standard"))
    return {
        "off-diagonal": Statistic(
            "heads weight matching puts off the diagonal (count)",
            len(off),
            named=off,
            named_in="standard",
        ),
        "barrier": Statistic(
            "loss barrier between the two models (nats/token)", number("barrier_before")
        ),
        "change": Statistic("|difference| in relative change from the shared init", change),
    }


ANALYSIS = Analysis(
    name="weights",
    description="change from the shared init, head matching, linear mode connectivity",
    config=WeightsConfig,
    stage=stage,
    section=section,
    after=("export", "headswap"),
    statistics=statistics,
)
