"""The crosscoder diff's command config, entry point and JSON (`crosscoder_diff`,
`interpgpt crosscoder diff`), and its study stage and report section (`stage`, `section`,
`ANALYSIS`): the matched pair's crosscoder beside the standard model and its data-order
twin's, the null."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interpgpt.analysis import dashboard
from interpgpt.analysis.controls import Statistic
from interpgpt.analysis.crosscoder_diff.config import (
    CrosscoderDiffConfig,
    CrosscoderStudyConfig,
)
from interpgpt.analysis.crosscoder_diff.features import map_sae_features, mapped_summary
from interpgpt.analysis.crosscoder_diff.latents import (
    PairDiff,
    diff_models,
    latent_cards,
    latent_rows,
    shown_latents,
)
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    fmt,
    layer_in_preset,
)
from interpgpt.artifacts.load import load_pair
from interpgpt.constants import VARIANTS
from interpgpt.corpus.evalset import EncodedSet, load_eval_set
from interpgpt.crosscoder.config import CrosscoderTrainConfig
from interpgpt.crosscoder.diff import DiffCounts
from interpgpt.crosscoder.model import BatchTopKCrosscoder, check_models
from interpgpt.crosscoder.training import train_crosscoder
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, read_json, write_json
from interpgpt.sae.training import QUALITY_FILE

CROSSCODER_DIFF_JSON = "crosscoder_diff.json"
CROSSCODER_DASHBOARD = "dashboard.html"


# ---------------------------------------------------------------------------- entry point


@dataclass
class CrosscoderDiffResult:
    """What `crosscoder_diff` wrote and found."""

    json_path: Path
    diff: PairDiff
    cards: list[dashboard.LatentCard]
    """Card data of the shown latents."""
    dashboard_path: Path
    """dashboard.html: a card per shown latent and a sortable table of every latent."""
    sae_features: list[dict[str, Any]] | None = None
    """The feature diff's features mapped to latents (`map_sae_features`), if asked."""

    @property
    def counts(self) -> DiffCounts:
        return self.diff.counts


def crosscoder_diff(config: CrosscoderDiffConfig) -> CrosscoderDiffResult:
    """Diff the pair through its crosscoder; write crosscoder_diff.json under `config.out`."""
    device = resolve_device(config.device)
    pair = load_pair(config.std, config.adhd, device, config.same_variant)
    crosscoder = BatchTopKCrosscoder.load(config.crosscoder_dir).to(device)
    models = [pair.standard.model, pair.adhd.model]
    check_models(crosscoder, models, [config.std, config.adhd], config.crosscoder_dir)
    n_ctx = models[0].cfg.n_ctx
    sets: dict[str, EncodedSet] = {
        v: load_eval_set(config.corpus, pair.tokenizer, v, config.split, config.limit, n_ctx)
        for v in VARIANTS
    }
    diff = diff_models(crosscoder, models, sets, config)
    shown = shown_latents(diff, config.top_n)
    rows = latent_rows(diff)
    cards = latent_cards(crosscoder, models, pair.tokenizer, diff, shown, config, rows)
    mapped = (
        map_sae_features(config.feature_diff, crosscoder, diff) if config.feature_diff else None
    )
    blob = result_json(config, crosscoder, diff, rows, cards, mapped)
    json_path = write_json(Path(config.out) / CROSSCODER_DIFF_JSON, blob)
    dashboard_path = dashboard.write_dashboard(
        Path(config.out) / CROSSCODER_DASHBOARD,
        "Crosscoder model diff: latents",
        cards,
        [table_row(r) for r in rows],
        dashboard_intro(blob),
    )
    return CrosscoderDiffResult(json_path, diff, cards, dashboard_path, mapped)


def table_row(row: dict[str, Any]) -> dict[str, Any]:
    """A latent's row as the dashboard's sortable table shows it: one number per column
    (the per-sequence-set frequencies flattened; the raw β pairs stay in the JSON)."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat |= {f"{key} {k}": v for k, v in value.items() if not isinstance(v, list)}
        else:
            flat[key] = value
    return flat


def dashboard_intro(blob: dict[str, Any]) -> str:
    """The dashboard's opening paragraphs: what the crosscoder is and how latents are
    classed, from the diff's own record."""
    counts = blob["counts"]
    return (
        f"BatchTopK crosscoder at {blob['crosscoder'].get('hook_name', '')} "
        f"({blob['crosscoder'].get('d_latent')} latents, k {blob['crosscoder'].get('k')}) "
        f"on {blob['models']['std']} and {blob['models']['adhd']}. Of "
        f"{counts['n_live']} live latents, {counts['n_shared']} are shared, "
        f"{counts['n_std_only']} standard-only ({counts['n_std_only_confirmed']} confirmed) "
        f"and {counts['n_adhd_only']} ADHD-only ({counts['n_adhd_only_confirmed']} "
        "confirmed).\n\n"
        "Cards: the most exclusive latents first. Contexts: the latent on the held-out "
        "sequences, the outlined token the activating one. Promoted/suppressed tokens: the "
        "latent's decoder row for each model through that model's final norm gain and "
        "unembedding. The table lists every latent: relative decoder norm "
        "|d_adhd| / (|d_std| + |d_adhd|), decoder cosine, Latent Scaling ratios."
    )


DEFINITIONS = {
    "rel_norm": "‖d_adhd‖ / (‖d_std‖ + ‖d_adhd‖), decoder rows in normalised units",
    "cosine": "cos(d_std, d_adhd)",
    "beta": "target -> [β_std, β_adhd], β^m = Σ_t f(t)⟨d, y^m(t)⟩ / (‖d‖² Σ_t f(t)²) with "
    "d the decoder row of `own` (the larger norm); targets: error = x^m − x̂^m + f d^m, "
    "reconstruction = x̂^m − b_dec^m, activation = x^m − b_dec^m (Minder, Dumas et al. 2025)",
    "nu_*": "β of the other model over β of `own` for that target",
    "confirmed": "exclusive class and |nu_error| < max_nu_error and |nu_reconstruction| < "
    "max_nu_reconstruction",
    "freq": "sequence variant -> fraction of its real tokens where the latent is active "
    "(both models read each variant's sequences)",
    "onset_freq": "the same at the onset predictors (<|steps|>/<|sep|> before a step)",
}


def result_json(
    config: CrosscoderDiffConfig,
    crosscoder: BatchTopKCrosscoder,
    diff: PairDiff,
    rows: list[dict[str, Any]],
    cards: list[dashboard.LatentCard],
    mapped: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """crosscoder_diff.json (schema: the keys below; `DEFINITIONS` says what they mean)."""
    cfg = crosscoder.cfg
    quality_file = Path(config.crosscoder_dir) / QUALITY_FILE
    quality = read_json(quality_file) if quality_file.is_file() else None
    if quality is not None:
        quality.pop("provenance", None)
        quality.get("train", {}).pop("history", None)
    margin = config.exclusive_margin
    return {
        "crosscoder": {
            "dir": str(config.crosscoder_dir),
            **{k: v for k, v in cfg.to_json().items() if k not in ("architecture",)},
            "threshold": float(crosscoder.threshold),
        },
        "models": {"std": cfg.names[0], "adhd": cfg.names[1]},
        "sequences": {
            "split": config.split,
            "limit": config.limit,
            "n_tasks": {v: len(a.eset) for v, a in diff.data.items()},
            "n_tokens": diff.table.n_tokens,
            "n_onset_predictors": diff.table.n_onsets,
        },
        "thresholds": {
            "std_only": f"rel_norm < {margin}",
            "adhd_only": f"rel_norm > {1 - margin}",
            "exclusive_margin": margin,
            "max_nu_error": config.max_nu_error,
            "max_nu_reconstruction": config.max_nu_reconstruction,
        },
        "definitions": DEFINITIONS,
        "counts": diff.counts._asdict(),
        "quality": quality,
        "latents": rows,
        "cards": [dataclasses.asdict(c) for c in cards],
        "sae_features": mapped,
        "provenance": provenance(config),
    }


# ---------------------------------------------------------------------------- in the study


def _study_feature_diff(ws: Layout, layer: int) -> Path | None:
    """The study's feature diff (this pair's) when it read an SAE at the crosscoder's layer."""
    path = ws.analysis("feature_diff") / "feature_diff.json"
    if not path.is_file():
        return None
    try:
        return path if int(read_json(path)["sae"]["layer"]) == layer else None
    except (UserError, KeyError, TypeError, ValueError):
        return None


def _model_names(std: Path, adhd: Path) -> tuple[str, str]:
    """The two models' names in the crosscoder's files: their export names, each with its
    role where one model plays both (the files need two names)."""
    if std.name != adhd.name:
        return std.name, adhd.name
    return f"{std.name} (standard role)", f"{adhd.name} (adhd role)"


def _train_and_diff(ws: Layout, config: CrosscoderStudyConfig, name: str, std: Path,
                    adhd: Path, feature_diff: Path | None = None, same_variant: bool = False,
                    ) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """One crosscoder on (std, adhd) under analysis/crosscoder/<name>/, and its diff (with
    `feature_diff`'s features mapped to its latents); `same_variant` for a model and its
    twin."""
    out = ws.analysis("crosscoder") / name
    trained = train_crosscoder(
        CrosscoderTrainConfig(
            std=std, adhd=adhd, corpus=ws.corpus, out=out / "crosscoder", layer=config.layer,
            model_names=_model_names(std, adhd), same_variant=same_variant,
            **config.hyperparams(),
        )
    )  # fmt: skip
    result = crosscoder_diff(
        CrosscoderDiffConfig(
            crosscoder_dir=trained.path, std=std, adhd=adhd, corpus=ws.corpus, out=out,
            device=config.device, feature_diff=feature_diff, same_variant=same_variant,
            **config.diff_settings(),
        )
    )  # fmt: skip
    quality = trained.quality
    summary = {
        "top_adhd": top_adhd_latent(result),
        "models": [std.name, adhd.name],
        **result.counts._asdict(),
        "fve": [m.fve for m in quality.models],
        "ce_increase": [m.ce_increase for m in quality.models],
        "dead_fraction": quality.dead_fraction,
        "l0": quality.l0,
        "train_seconds": trained.seconds,
        "diff_file": str(result.json_path),
        "sae_features": mapped_summary(result.sae_features),
    }
    return result.json_path, summary


def top_adhd_latent(result: CrosscoderDiffResult) -> dict[str, Any] | None:
    """The live latent leaning most to the ADHD model (confirmed ADHD-only first, then by
    relative decoder norm) and the tokens of its strongest context, for the report."""
    t, classes = result.diff.table, result.diff.classes
    live = [j for j in range(len(t.rel_norm)) if t.live[j]]
    if not live:
        return None
    best = min(live, key=lambda j: (not classes.confirmed[j], -float(t.rel_norm[j]), j))
    card = next((c for c in result.cards if c.latent == best), None)
    context = ""
    if card is not None and card.contexts:
        ctx = card.contexts[0]
        focus = ctx.focus if ctx.focus >= 0 else len(ctx.tokens) - 1
        context = "".join(ctx.tokens[: focus + 1]).strip()[-80:]
        context += f" ⟦{ctx.tokens[focus].strip()}⟧"
    return {
        "latent": best,
        "class": classes.labels[best],
        "confirmed": bool(classes.confirmed[best]),
        "rel_norm": float(t.rel_norm[best]),
        "context": context,
    }


def stage(ws: Layout, config: CrosscoderStudyConfig) -> StageOutput:
    """Crosscoder diff of the exported pair and, when the standard model's data-order twin
    was exported, of the standard model and its twin (the null shown in the section; the
    seed controls run the stage on both control pairs too, where it is not repeated)."""
    std, adhd, twin = ws.export("standard"), ws.export("adhd"), ws.export("standard", twin=True)
    feature_diff = _study_feature_diff(ws, config.layer)
    path, pair = _train_and_diff(
        ws, config, "pair", std, adhd, feature_diff, same_variant=config.same_variant
    )
    outputs = [path, path.parent / CROSSCODER_DASHBOARD]
    summary: dict[str, Any] = {
        "layer": config.layer,
        "d_latent": config.d_latent,
        "k": config.k,
        "exclusive_margin": config.exclusive_margin,
        "max_nu_error": config.max_nu_error,
        "max_nu_reconstruction": config.max_nu_reconstruction,
        "pair": pair,
        "twin": None,
    }
    if twin.exists() and not ws.pair:
        path, summary["twin"] = _train_and_diff(ws, config, "twin", std, twin, same_variant=True)
        outputs += [path, path.parent / CROSSCODER_DASHBOARD]
    return StageOutput(outputs, summary)


def statistics(summary: Summary, outputs: list[str]) -> dict[str, Statistic]:
    """The seed controls' statistics: how many latents the crosscoder confirms as exclusive
    to one model (Latent Scaling agreeing with the decoder norms), and how many it calls
    exclusive by norm alone."""
    pair = summary["pair"]
    return {
        "confirmed": Statistic("confirmed model-exclusive crosscoder latents", _confirmed(pair)),
        "exclusive": Statistic(
            "crosscoder latents exclusive by decoder norm", pair["n_std_only"] + pair["n_adhd_only"]
        ),
    }


def _confirmed(s: Summary) -> int:
    return int(s["n_std_only_confirmed"]) + int(s["n_adhd_only_confirmed"])


def section(summary: Summary, outputs: list[str]) -> Section:
    pair, twin = summary["pair"], summary.get("twin")
    margin = summary["exclusive_margin"]
    finding = (
        f"Of {pair['n_live']} live crosscoder latents at layer {summary['layer']}, "
        f"{pair['n_adhd_only']} are ADHD-only (relative decoder norm > {1 - margin:g}; "
        f"{pair['n_adhd_only_confirmed']} confirmed by Latent Scaling) and "
        f"{pair['n_std_only']} standard-only (< {margin:g}; {pair['n_std_only_confirmed']} "
        "confirmed)"
    )
    if twin is None:
        finding += (
            "; the twin null is missing (no exported data-order twin of the standard model: "
            "run the study with twins on), so these counts have no seed-noise reference."
        )
        status = "warn"
    else:
        beyond = _confirmed(pair) > _confirmed(twin)
        finding += (
            f"; the standard model against its data-order twin gives "
            f"{twin['n_std_only'] + twin['n_adhd_only']} exclusive, {_confirmed(twin)} "
            f"confirmed, so the pair's confirmed count is "
            f"{'above' if beyond else 'not above'} the twin null."
        )
        status = "ok" if beyond else "warn"
    top = pair.get("top_adhd")
    if top:
        finding += (
            f" The latent leaning most to the ADHD model, {top['latent']} ({top['class']}"
            f"{', confirmed' if top['confirmed'] else ''}; relative norm "
            f"{fmt(top['rel_norm'])}), fires most strongly on: {top['context'] or 'n/a'}."
        )
    mapped = pair.get("sae_features")
    if mapped and mapped["n_features"]:
        finding += (
            f" Of the feature diff's {mapped['n_features']} ADHD-only SAE features, "
            f"{mapped['n_matched']} have a crosscoder latent at decoder cosine ≥ "
            f"{fmt(mapped['threshold'])} (median best cosine {fmt(mapped['median_cosine'])}); "
            f"{mapped['n_to_exclusive']} of those latents are exclusive "
            f"({mapped['n_to_confirmed']} confirmed)."
        )
    table = [["crosscoder", "live", "shared", "standard-only (conf.)", "ADHD-only (conf.)",
              "FVE", "dead %"]]  # fmt: skip
    for name, s in (("pair", pair), ("twin", twin)):
        if s is None:
            continue
        table.append(
            [
                f"{name}: {' vs '.join(s['models'])}",
                str(s["n_live"]),
                str(s["n_shared"]),
                f"{s['n_std_only']} ({s['n_std_only_confirmed']})",
                f"{s['n_adhd_only']} ({s['n_adhd_only_confirmed']})",
                " / ".join(fmt(f) for f in s["fve"]),
                f"{100 * s['dead_fraction']:.1f}",
            ]
        )
    rows = [(f"{Path(p).parent.name} diff", p) for p in outputs if p.endswith(".json")]
    pages = [(f"{Path(p).parent.name} dashboard", Path(p)) for p in outputs if p.endswith(".html")]
    return Section(
        "Crosscoder model diff", finding, rows=rows, table=table, pages=pages, status=status
    )


ANALYSIS = Analysis(
    name="crosscoder",
    description="BatchTopK crosscoder diff with Latent Scaling and the twin null",
    config=CrosscoderStudyConfig,
    stage=stage,
    section=section,
    after=("export", "feature-diff"),
    statistics=statistics,
    check=layer_in_preset("crosscoder"),
)
