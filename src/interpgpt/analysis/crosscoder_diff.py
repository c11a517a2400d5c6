"""Crosscoder model diff: which latents one model of a pair uses and the other does not.

A BatchTopK crosscoder (`interpgpt.crosscoder`) reads both models at one layer and gives
each latent j a decoder row per model, d_j^std and d_j^adhd (normalised units). Per
latent (Lindsey et al. 2024; Minder, Dumas et al. 2025, arXiv 2504.02922):

- relative decoder norm r_j = ‖d_j^adhd‖ / (‖d_j^std‖ + ‖d_j^adhd‖) and the decoder
  cosine cos(d_j^std, d_j^adhd);
- class: standard-only when r_j < `exclusive_margin`, ADHD-only when r_j >
  1 − `exclusive_margin`, shared otherwise; a latent active on no evaluated token is
  dead and in no class;
- Latent Scaling (`crosscoder.scaling`): ν^ε_j and ν^r_j, the other model's β over the
  claimed model's, for its reconstruction error with the latent added back and for its
  reconstruction. An exclusive latent is *confirmed* when both |ν| stay below
  `max_nu_error` / `max_nu_reconstruction`: the other model carries under that share of
  it in its error (no Complete Shrinkage) and in its reconstruction (no Latent
  Decoupling). Norms alone over-report exclusive latents; the paper's point.
- activation frequency over all tokens and at the onset predictors (`<|steps|>`/`<|sep|>`
  before a step, `EncodedSet.onset_predictor_mask`) of each variant's held-out sequences.
  A crosscoder latent is a function of both models' activations at a token, so there
  is no "frequency in one model": both models read the standard sequences, then both
  read the ADHD ones, and the frequencies are per sequence set.

The latents leaning most towards each model (confirmed first, then by r_j) get a card's
worth of data (`dashboard.LatentCard`: top contexts with per-token activations, a sample
of non-zero activations, both decoder norms, each model's promoted and suppressed
tokens). Given a feature diff's output, each selected SAE feature is mapped to the
crosscoder latent whose decoder row in the SAE's model is closest in cosine.

`diff_models` is the diff of any two models through their crosscoder, without files;
the study runs it on the matched pair and on the standard model and its data-order twin,
the null: training noise alone also makes "exclusive" latents, and a pair's count means
something only beside its twin's. `crosscoder_diff` (`interpgpt crosscoder diff`) writes
crosscoder_diff.json; `stage` trains and diffs both in the study.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interpgpt.analysis import dashboard
from interpgpt.analysis.controls import MATCH_THRESHOLD, Statistic
from interpgpt.analysis.protocol import Analysis, Section, StageOutput, Summary, Workspace, fmt
from interpgpt.artifacts.load import load_pair
from interpgpt.constants import VARIANTS, Split
from interpgpt.corpus.evalset import EncodedSet, load_eval_set
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.crosscoder import (
    BatchTopKCrosscoder,
    CrosscoderHyperparams,
    CrosscoderTrainConfig,
    check_models,
    train_crosscoder,
)
from interpgpt.crosscoder.diff import (
    DiffCounts,
    LatentClasses,
    LatentTable,
    Thresholds,
    classify,
    latent_table,
)
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, read_json, write_json
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.sae import QUALITY_FILE
from interpgpt.sae.topk import TopKSAE
from interpgpt.settings import SettingError, at_least, check_choices, in_range, inputs

CROSSCODER_DIFF_JSON = "crosscoder_diff.json"
CROSSCODER_DASHBOARD = "dashboard.html"
KINDS = {"shared": "shared", "std_only": "standard-only", "adhd_only": "ADHD-only", "dead": "dead"}
"""Class -> the label a dashboard card shows."""


@dataclass(frozen=True, kw_only=True)
class DiffSettings:
    """How the diff reads, thresholds and shows latents (shared by the command and study)."""

    split: Split = "test"
    """Corpus split of the held-out sequences."""
    limit: int | None = 300
    """Held-out tasks per variant (one phrasing each); None for all."""
    exclusive_margin: float = 0.1
    """Standard-only when the relative decoder norm is below this, ADHD-only above 1 minus it."""
    max_nu_error: float = 0.1
    """Confirmed exclusive: |ν^ε| (other model's error β over the claimed model's) below this."""
    # Looser than ν^ε: other latents active with j project onto d_j by chance, which on
    # planted data spreads ν^r of truly exclusive latents over about ±0.1.
    max_nu_reconstruction: float = 0.2
    """... and |ν^r| (the same for the reconstructions) below this."""
    top_n: int = 10
    """Latents per side (leaning most to each model) with contexts and tokens."""
    n_contexts: int = 5
    """Top-activating contexts per shown latent."""
    context_tokens: int = 10
    """Tokens of context before the activating token."""
    top_tokens: int = 10
    """Promoted and suppressed tokens per model of each shown latent."""
    eval_batch: int = 32
    """Sequences per forward pass."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, limit=1, top_n=0, n_contexts=0, context_tokens=0, top_tokens=1, eval_batch=1)
        in_range(self, "exclusive_margin", 0.0, 0.5)
        for name in ("max_nu_error", "max_nu_reconstruction"):
            if not getattr(self, name) > 0:
                raise SettingError(name, f"must be positive (got {getattr(self, name)})")

    def thresholds(self) -> Thresholds:
        return Thresholds(self.exclusive_margin, self.max_nu_error, self.max_nu_reconstruction)

    def diff_settings(self) -> dict[str, Any]:
        """The values of the `DiffSettings` fields (without a subclass's)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DiffSettings)}


@dataclass(frozen=True, kw_only=True)
class _DiffInputs:
    """What `crosscoder diff` reads and writes (first in `--help`)."""

    crosscoder_dir: Path = inputs.argument()
    """Crosscoder directory (cfg.json + crosscoder_weights.safetensors)."""
    std: Path = inputs.option()
    """The crosscoder's first model (run or export dir), as it was trained."""
    adhd: Path = inputs.option()
    """The crosscoder's second model (run or export dir), as it was trained."""
    corpus: Path = inputs.option()
    """Corpus directory; its held-out split supplies the sequences."""
    out: Path = inputs.option()
    """Directory for crosscoder_diff.json."""
    feature_diff: Path | None = None
    """A feature diff's feature_diff.json (or its directory): map its features to latents."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""


@dataclass(frozen=True, kw_only=True)
class CrosscoderDiffConfig(DiffSettings, _DiffInputs):
    """The diff of a pair through its crosscoder (`interpgpt crosscoder diff`)."""


@dataclass(frozen=True, kw_only=True)
class CrosscoderStudyConfig(DiffSettings, CrosscoderHyperparams):
    """The study's `[crosscoder]` section: training, diff and the layer."""

    layer: int = 2
    """Block whose hook_resid_post the study's crosscoders read."""

    def __post_init__(self) -> None:
        DiffSettings.__post_init__(self)
        CrosscoderHyperparams.__post_init__(self)
        at_least(self, layer=0)


# ---------------------------------------------------------------------------- measuring


@dataclass
class SequenceActs:
    """Both models' activations on one variant's held-out sequences, real tokens only."""

    eset: EncodedSet
    x: Float[Tensor, "n model d_model"]
    """Normalised activations, in (row, position) order."""
    rows: Int[Tensor, " n"]
    pos: Int[Tensor, " n"]
    onset: Bool[Tensor, " n"]
    """Onset predictors."""


@torch.no_grad()
def sequence_activations(
    crosscoder: BatchTopKCrosscoder, models: Sequence[TaskGPT], eset: EncodedSet, batch_size: int
) -> SequenceActs:
    """Run both models on `eset` up to the crosscoder's hook; keep the real tokens."""
    hook, layer = crosscoder.cfg.hook_name, crosscoder.cfg.layer
    stop = layer + 1 if layer + 1 < models[0].cfg.n_layer else None
    device = crosscoder.W_dec.device
    xs, rows, pos, onset = [], [], [], []
    offset = 0
    for batch in eset.batches(batch_size):
        ids = batch.ids.to(device)
        acts = torch.stack(
            [m.run_with_cache(ids, names_filter=[hook], stop_at_layer=stop)[1][hook]
             for m in models], dim=-2,
        )  # fmt: skip
        valid = batch.valid
        xs.append(crosscoder.normalise(acts[valid.to(device)].float()))
        r, p = valid.nonzero(as_tuple=True)
        rows.append(r + offset)
        pos.append(p)
        onset.append(batch.onset_predictor_mask()[valid])
        offset += len(batch)
    return SequenceActs(eset, torch.cat(xs), torch.cat(rows), torch.cat(pos), torch.cat(onset))


@dataclass
class PairDiff:
    """The diff of two models through their crosscoder."""

    table: LatentTable
    classes: LatentClasses
    counts: DiffCounts
    data: dict[str, SequenceActs]
    """Sequence variant -> the activations it was measured on."""


def diff_models(
    crosscoder: BatchTopKCrosscoder,
    models: Sequence[TaskGPT],
    sets: Mapping[str, EncodedSet],
    settings: DiffSettings,
) -> PairDiff:
    """The diff of any two models through their crosscoder, without files: latent
    table, classes and headline counts (the study's pair and its twin null)."""
    data = {v: sequence_activations(crosscoder, models, s, settings.eval_batch)
            for v, s in sets.items()}  # fmt: skip
    table = latent_table(
        crosscoder, {v: a.x for v, a in data.items()}, {v: a.onset for v, a in data.items()}
    )
    classes = classify(table, settings.thresholds())
    return PairDiff(table, classes, classes.counts(), data)


# ---------------------------------------------------------------------------- cards


def shown_latents(diff: PairDiff, top_n: int) -> list[int]:
    """Per side, the `top_n` live latents leaning most to that model: confirmed exclusive
    first, then by relative norm (lowest for standard, highest for ADHD)."""
    rel, live = diff.table.rel_norm, diff.table.live
    confirmed = diff.classes.confirmed
    candidates = [j for j in range(len(rel)) if live[j]]
    std_side = sorted(candidates, key=lambda j: (not confirmed[j], float(rel[j]), j))
    adhd_side = sorted(candidates, key=lambda j: (not confirmed[j], -float(rel[j]), j))
    shown = std_side[:top_n] + [j for j in adhd_side[:top_n] if j not in std_side[:top_n]]
    return shown


@torch.no_grad()
def latent_activations(
    crosscoder: BatchTopKCrosscoder, acts: SequenceActs, latents: list[int], chunk: int = 4096
) -> Float[Tensor, "batch pos n_latents"]:
    """The activations of `latents` at every position of the sequences (0 at padding)."""
    grid = torch.zeros(*acts.eset.ids.shape, len(latents))
    if latents:
        f = torch.cat([crosscoder.encode(x)[:, latents].cpu() for x in acts.x.split(chunk)])
        grid[acts.rows, acts.pos] = f
    return grid


def latent_rows(diff: PairDiff) -> list[dict[str, Any]]:
    """Every latent's numbers as crosscoder_diff.json lists them."""
    t, s = diff.table, diff.table.scaling
    nu = {target: s.nu(target).tolist() for target in s.beta}
    beta = {target: b.T.tolist() for target, b in s.beta.items()}  # (d_latent, model)
    return [
        {
            "latent": j,
            "class": diff.classes.labels[j],
            "confirmed": bool(diff.classes.confirmed[j]),
            "norm_std": float(t.norms[j, 0]),
            "norm_adhd": float(t.norms[j, 1]),
            "rel_norm": float(t.rel_norm[j]),
            "cosine": float(t.cosine[j]),
            "own": ("std", "adhd")[int(s.own[j])],
            "beta": {target: b[j] for target, b in beta.items()},
            **{f"nu_{target}": values[j] for target, values in nu.items()},
            "n_active": int(s.n_active[j]),
            "freq": {v: float(f[j]) for v, f in t.freq.items()},
            "onset_freq": {v: float(f[j]) for v, f in t.onset_freq.items()},
        }
        for j in range(len(t.rel_norm))
    ]


def latent_contexts(
    grids: Mapping[str, Float[Tensor, "batch pos n_latents"]],
    diff: PairDiff,
    i: int,
    tokenizer: TaskTokenizer,
    settings: DiffSettings,
) -> list[dashboard.Context]:
    """The strongest contexts of shown latent `i` over every sequence set, labelled."""
    contexts = []
    for name, grid in grids.items():
        eset = diff.data[name].eset
        found = dashboard.top_contexts(
            grid[..., i], eset.ids, tokenizer, settings.n_contexts, settings.context_tokens,
            lengths=eset.lengths,
        )  # fmt: skip
        contexts += [dataclasses.replace(c, label=f"{name} sequences, {c.label}") for c in found]
    contexts.sort(key=lambda c: -c.activations[c.focus])
    return contexts[: settings.n_contexts]


def latent_cards(
    crosscoder: BatchTopKCrosscoder,
    models: Sequence[TaskGPT],
    tokenizer: TaskTokenizer,
    diff: PairDiff,
    latents: list[int],
    settings: DiffSettings,
    rows: list[dict[str, Any]],
) -> list[dashboard.LatentCard]:
    """A dashboard card's data per latent: contexts over both sequence sets, a sample of
    non-zero activations, its numbers (`rows`, from `latent_rows`), and each model's
    promoted/suppressed tokens of the latent's decoder row in that model (raw units,
    through that model's own unembedding)."""
    grids = {v: latent_activations(crosscoder, acts, latents) for v, acts in diff.data.items()}
    names = crosscoder.cfg.names
    cards = []
    for i, j in enumerate(latents):
        row = rows[j]
        tokens = {
            name: dashboard.output_tokens(
                crosscoder.W_dec[j, m].detach() / crosscoder.cfg.scales[m],
                models[m], tokenizer, settings.top_tokens,
            )
            for m, name in enumerate(names)
        }  # fmt: skip
        stats: dict[str, float | str] = {
            "class": row["class"] + (", confirmed" if row["confirmed"] else ""),
            f"decoder norm {names[0]}": row["norm_std"],
            f"decoder norm {names[1]}": row["norm_adhd"],
            "relative norm": row["rel_norm"],
            "cosine": row["cosine"],
            "ν error": row["nu_error"],
            "ν reconstruction": row["nu_reconstruction"],
            **{f"freq {v} seqs": f for v, f in row["freq"].items()},
            **{f"onset freq {v} seqs": f for v, f in row["onset_freq"].items()},
        }
        cards.append(
            dashboard.LatentCard(
                latent=j,
                title=f"latent {j} — {KINDS[row['class']]}",
                kind=KINDS[row["class"]],
                stats=stats,
                contexts=latent_contexts(grids, diff, i, tokenizer, settings),
                activations=dashboard.activation_sample(
                    torch.cat([grid[..., i].flatten() for grid in grids.values()])
                ),
                promoted={name: t.promoted for name, t in tokens.items()},
                suppressed={name: t.suppressed for name, t in tokens.items()},
            )
        )
    return cards


# ---------------------------------------------------------------------------- SAE features


def map_sae_features(
    feature_diff: Path, crosscoder: BatchTopKCrosscoder, diff: PairDiff
) -> list[dict[str, Any]]:
    """Each selected feature of a feature diff -> the latent whose decoder row in the SAE's
    model (by name; both models when the name is not one of the crosscoder's) is closest
    in cosine."""
    path = feature_diff / "feature_diff.json" if feature_diff.is_dir() else feature_diff
    blob = read_json(path)
    try:
        sae_dir, features = Path(blob["sae"]["dir"]), [int(r["feature"]) for r in blob["features"]]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: not a feature diff (no sae.dir or features)") from None
    # A study records the SAE dir relative to where it ran: try the file's ancestors.
    found = [p / sae_dir for p in path.resolve().parents if (p / sae_dir).is_dir()]
    sae = TopKSAE.load(sae_dir if sae_dir.is_absolute() or not found else found[0])
    if sae.cfg.hook_name != crosscoder.cfg.hook_name:
        raise UserError(
            f"{path}: its SAE reads {sae.cfg.hook_name}, the crosscoder "
            f"{crosscoder.cfg.hook_name}; map features of an SAE at the crosscoder's layer"
        )
    names = crosscoder.cfg.names
    models = [names.index(sae.cfg.model_name)] if sae.cfg.model_name in names else [0, 1]
    decoders = torch.nn.functional.normalize(crosscoder.W_dec.detach().cpu(), dim=-1)
    rows = []
    for feature in features:
        direction = torch.nn.functional.normalize(sae.W_dec[feature].detach(), dim=0)
        cos = decoders[:, models] @ direction  # (d_latent, n)
        best = int(cos.max(1).values.argmax())
        m = models[int(cos[best].argmax())]
        rows.append(
            {
                "feature": feature,
                "model": names[m],
                "latent": best,
                "cosine": float(cos[best].max()),
                "class": diff.classes.labels[best],
                "confirmed": bool(diff.classes.confirmed[best]),
                "rel_norm": float(diff.table.rel_norm[best]),
            }
        )
    return rows


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
    pair = load_pair(config.std, config.adhd, device)
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


def _study_feature_diff(ws: Workspace, layer: int) -> Path | None:
    """The study's feature diff (this pair's) when it read an SAE at the crosscoder's layer."""
    path = ws.analysis("feature_diff") / "feature_diff.json"
    if not path.is_file():
        return None
    try:
        return path if int(read_json(path)["sae"]["layer"]) == layer else None
    except (UserError, KeyError, TypeError, ValueError):
        return None


def mapped_summary(mapped: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """How the feature diff's ADHD-only features sit in the crosscoder: how many have a
    latent at decoder cosine >= MATCH_THRESHOLD (the SAE-seed matching threshold), and of
    those how many latents are exclusive (and confirmed)."""
    if mapped is None:
        return None
    close = [m for m in mapped if m["cosine"] >= MATCH_THRESHOLD]
    return {
        "n_features": len(mapped),
        "threshold": MATCH_THRESHOLD,
        "n_matched": len(close),
        "n_to_exclusive": sum(m["class"] != "shared" for m in close),
        "n_to_confirmed": sum(m["confirmed"] for m in close),
        "median_cosine": median([m["cosine"] for m in mapped]) if mapped else None,
    }


def _train_and_diff(ws: Workspace, config: CrosscoderStudyConfig, name: str, std: Path,
                    adhd: Path, feature_diff: Path | None = None,
                    ) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """One crosscoder on (std, adhd) under analysis/crosscoder/<name>/, and its diff (with
    `feature_diff`'s features mapped to its latents)."""
    out = ws.analysis("crosscoder") / name
    trained = train_crosscoder(
        CrosscoderTrainConfig(
            std=std, adhd=adhd, corpus=ws.corpus, out=out / "crosscoder", layer=config.layer,
            model_names=(std.name, adhd.name), **config.hyperparams(),
        )
    )  # fmt: skip
    result = crosscoder_diff(
        CrosscoderDiffConfig(
            crosscoder_dir=trained.path, std=std, adhd=adhd, corpus=ws.corpus, out=out,
            device=config.device, feature_diff=feature_diff, **config.diff_settings(),
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


def stage(ws: Workspace, config: CrosscoderStudyConfig) -> StageOutput:
    """Crosscoder diff of the exported pair and, when the standard model's data-order twin
    was exported, of the standard model and its twin (the null shown in the section; the
    seed controls run the stage on both control pairs too, where it is not repeated)."""
    std, adhd, twin = ws.export("standard"), ws.export("adhd"), ws.export("standard", twin=True)
    feature_diff = _study_feature_diff(ws, config.layer)
    path, pair = _train_and_diff(ws, config, "pair", std, adhd, feature_diff)
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
        path, summary["twin"] = _train_and_diff(ws, config, "twin", std, twin)
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
)
