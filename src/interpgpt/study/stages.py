"""The study's stages, in order, as data: its own stages (the corpus, the tokenizer, the
two models, their exports and SAEs) defined here, and the registered analyses
(`interpgpt.analysis.registry`) among them, each after the stages it reads.

A stage reads earlier stages' files through the `Workspace`, runs one module's entry
point with its config section, and returns the files it wrote plus a small summary of
headline numbers (kept in its stage record, so the report is rebuilt without rerunning
anything). `STUDY_DEFAULTS` holds the study's settings where they differ from the
commands' defaults.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from interpgpt.analysis.protocol import Analysis, Section, StageOutput, Summary, fmt
from interpgpt.analysis.registry import analyses
from interpgpt.artifacts.config import ExportConfig
from interpgpt.artifacts.export import export
from interpgpt.artifacts.names import MODEL_WEIGHTS, RUN_CONFIG, TL_BUNDLE
from interpgpt.artifacts.release import ReleasedStage, localised, restore_run_dir
from interpgpt.constants import VARIANTS, Variant, model_name
from interpgpt.corpus.build import build_corpus
from interpgpt.corpus.config import CorpusConfig, TokenizerConfig
from interpgpt.corpus.tokenizer import TaskTokenizer, VocabBudget, train_tokenizer
from interpgpt.errors import UserError
from interpgpt.io import read_json
from interpgpt.model.config import GPTConfig
from interpgpt.sae.config import TrainAllConfig
from interpgpt.sae.training import train_all
from interpgpt.study.workspace import Workspace
from interpgpt.train.checkpoint import checkpoint_differs
from interpgpt.train.config import TrainConfig
from interpgpt.train.loop import train

EVAL_TASKS = 300
"""Held-out tasks of the teacher-forced analyses (head-swap, logit lens, probes, known
answers, diff)."""
SAMPLED_TASKS = 150
"""Held-out tasks whose decompositions are sampled (behaviour, ablation)."""
TWIN_DATA_SEED_OFFSET = 1000
"""A data-order twin trains with data seed `seed + TWIN_DATA_SEED_OFFSET`: its partner's
initial weights (`seed`), another order of the same batches."""

STUDY_DEFAULTS: dict[str, dict[str, Any]] = {
    "export": {"overwrite": True},
    "train": {"resume": True},
    "behaviour": {"limit": SAMPLED_TASKS},
    "headswap": {"limit": EVAL_TASKS},
    "logit_lens": {"limit": EVAL_TASKS},
    "ablation": {"heads": "auto", "limit": SAMPLED_TASKS},
    "sae": {"seed_twins": True},
    "feature_diff": {"limit": EVAL_TASKS},
    "crosscoder": {"limit": EVAL_TASKS},
    "probes": {"limit": EVAL_TASKS},
    "known_answers": {"limit": EVAL_TASKS},
}

PRESET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # Two layers: the SAEs, the feature diff and the crosscoder read the ones it has.
    "tiny": {
        "sae": {"std_layers": (0, 1), "adhd_layers": (1,)},
        "feature_diff": {"layer": 1},
        "crosscoder": {"layer": 1},
    },
}
"""Study defaults of a preset whose shape the `STUDY_DEFAULTS` do not fit."""


# ----------------------------------------------------------------------------- corpus


def corpus_stage(ws: Workspace, config: CorpusConfig) -> StageOutput:
    summary = build_corpus(dataclasses.replace(config, out=ws.corpus, force=True))
    return StageOutput(
        [summary.stats_file, summary.tasks_file],
        {
            "n_tasks": summary.n_tasks,
            "n_examples": summary.n_examples,
            "spearman": summary.spearman,
            "regulation_rate": summary.regulation_rate,
        },
    )


def corpus_section(summary: Summary, outputs: list[str]) -> Section:
    tasks = summary["n_tasks"]
    split = ", ".join(f"{n:,} {name}" for name, n in tasks.items())
    return Section(
        "Corpus",
        f"{sum(tasks.values()):,} tasks ({split}), {summary['n_examples']:,} examples per "
        f"variant; the number of standard steps follows task complexity "
        f"(Spearman {fmt(summary['spearman'])}).",
        rows=[
            ("Spearman(complexity, standard step count)", fmt(summary["spearman"])),
            ("regulation share of ADHD steps", fmt(summary["regulation_rate"])),
        ],
    )


def tokenizer_stage(ws: Workspace, config: TokenizerConfig) -> StageOutput:
    path = train_tokenizer(
        dataclasses.replace(config, corpus=ws.corpus, out=ws.tokenizer, force=True)
    )
    tokenizer = TaskTokenizer.from_file(path)
    return StageOutput(
        [path],
        {
            "vocab_size": tokenizer.vocab_size,
            "sha256": tokenizer.sha256,
            "budget": dataclasses.asdict(tokenizer.budget()),
        },
    )


def tokenizer_section(summary: Summary, outputs: list[str]) -> Section:
    """How much of the BPE budget the trained tokenizer fills: a corpus with few distinct
    words stops BPE short of it."""
    budget = VocabBudget(**summary["budget"])
    return Section(
        "Tokenizer",
        f"The tokenizer {budget.describe()}.",
        rows=[
            ("BPE tokens (bytes + merges)", f"{budget.bpe_tokens:,} of {budget.budget:,}"),
            ("merges", f"{budget.merges:,}"),
            ("sha256", summary["sha256"][:12]),
        ],
    )


# ----------------------------------------------------------------------------- models


def train_stage_name(variant: Variant, twin: bool = False, replicate: int = 0) -> str:
    """The stage that trains a model: `train-<model_name>`."""
    return f"train-{model_name(variant, twin, replicate)}"


def train_stage(
    variant: Variant, twin: bool = False, replicate: int = 0
) -> Callable[[Workspace, TrainConfig], StageOutput]:
    """The stage training `variant`'s model; its data-order twin (data seed `seed +
    TWIN_DATA_SEED_OFFSET`); or the model of replicate pair `replicate` (init and data
    seed `seed + replicate`: another matched pair, like the first), or that model's twin
    (init seed `seed + replicate`, data seed that + TWIN_DATA_SEED_OFFSET). Its summary
    holds the run's init hash and data seed, as the run dir's config.json records them, so
    the report can check that a twin shares its partner's initial weights."""

    def run(ws: Workspace, config: TrainConfig) -> StageOutput:
        seed, data_seed = config.seed, config.data_seed
        if replicate:
            seed += replicate
            data_seed = None if data_seed is None else data_seed + replicate
        if twin:
            data_seed = seed + TWIN_DATA_SEED_OFFSET
        name = model_name(variant, twin, replicate)
        run_config = dataclasses.replace(
            config,
            corpus=ws.corpus,
            tokenizer=ws.tokenizer,
            out=ws.path("runs", name),
            variant=variant,
            seed=seed,
            data_seed=data_seed,
        )
        if config.resume and checkpoint_differs(run_config.resolved()):
            # The study's own run dir, trained under other settings (the stage reruns
            # because they changed): start afresh rather than refuse to resume.
            shutil.rmtree(run_config.out)
        result = train(run_config)
        written = read_json(result.run_dir / RUN_CONFIG) if result.finished else {}
        return StageOutput(
            [result.run_dir / MODEL_WEIGHTS],
            {
                "val_loss": result.val_loss,
                "steps": result.steps,
                "tokens_per_second": result.tokens_per_second,
                "seconds": result.seconds,
                "samples": result.samples,
                "init_sha256": written.get("init_sha256"),
                "data_seed": written.get("data_seed"),
                "resumed_from": result.resumed_from,
            },
        )

    return run


def train_from_release(ws: Workspace, config: TrainConfig, released: ReleasedStage) -> StageOutput:
    """A train stage satisfied from a release: the run dir rebuilt from the released
    Hugging Face weights (the very tensors) and the run config recorded with them."""
    name = released.entry["model"]
    for rel in released.entry["files"]:
        released.release.checked(rel)
    out = ws.path("runs", name)
    shutil.rmtree(out, ignore_errors=True)  # no checkpoint of other settings stays behind
    run_config = localised(released.release.manifest["models"][name]["run_config"], ws.root)
    weights = restore_run_dir(released.release.root / name, run_config, out)
    return StageOutput([weights], released.summary(ws.root))


def copy_from_release(ws: Workspace, config: Any, released: ReleasedStage) -> StageOutput:
    """A stage satisfied from a release by copying its files (the SAEs)."""
    return StageOutput(released.copy_files(ws.root), released.summary(ws.root))


def export_stage(ws: Workspace, config: ExportConfig) -> StageOutput:
    """Export every model this study trained: both models, and the data-order twins and
    replicate pairs when the study has them."""
    names = [model_name(v) for v in VARIANTS]
    names += [
        stage.removeprefix("train-")
        for stage in ws.records
        if stage.startswith("train-") and stage.removeprefix("train-") not in names
    ]
    outputs: list[Path] = []
    summary: dict[str, Any] = {}
    for name in names:
        result = export(
            dataclasses.replace(config, model=ws.path("runs", name), out=ws.path("export", name))
        )
        outputs.append(result.out_dir / TL_BUNDLE)
        summary[name] = {
            "n_parameters": result.n_parameters,
            "max_abs_logit_diff": result.max_abs_logit_diff,
        }
    return StageOutput(outputs, summary)


TWINS_TITLE = "Data-order seed twins"


def _label(variant: Variant) -> str:
    """A variant as prose writes it."""
    return "ADHD" if variant == "adhd" else variant


def _trained(record: dict[str, Any]) -> Summary:
    """A train stage's init hash, data seed, final loss and steps; a record written before
    train summaries held the init hash and data seed reads them from the run dir."""
    summary = record["summary"]
    if "init_sha256" not in summary:
        run_dir = Path(record["outputs"][0]).parent
        summary = {**summary, **read_json(run_dir / RUN_CONFIG)}
    keys = ("init_sha256", "data_seed", "val_loss", "steps")
    return {key: summary[key] for key in keys}


def twins_section(records: dict[str, dict[str, Any]]) -> Section:
    """Each model beside its data-order twin, from the train stages' records (by stage
    name; the replicate pairs' twins too where they were trained): a twin must share its
    partner's init hash and differ in data seed."""
    table = [["model", "init sha256", "data seed", "val loss", "steps"]]
    checks: list[str] = []
    ok = True
    replicates = [0]
    while train_stage_name(VARIANTS[0], True, replicates[-1] + 1) in records:
        replicates.append(replicates[-1] + 1)
    for replicate, variant in ((r, v) for r in replicates for v in VARIANTS):
        model, twin = (
            _trained(records[train_stage_name(variant, t, replicate)]) for t in (False, True)
        )
        names = [model_name(variant, t, replicate) for t in (False, True)]
        for name, run in zip(names, (model, twin), strict=True):
            sha = run["init_sha256"]
            row = [fmt(run["data_seed"]), fmt(run["val_loss"]), fmt(run["steps"])]
            table.append([name, sha[:12] if sha else "n/a", *row])
        same_init = bool(model["init_sha256"]) and model["init_sha256"] == twin["init_sha256"]
        other_order = model["data_seed"] != twin["data_seed"]
        ok = ok and same_init and other_order
        shares = "shares" if same_init else "does NOT share"
        order = "differs" if other_order else "is the SAME"
        which = f"the {_label(variant)} twin" if not replicate else f"{names[1]}"
        checks.append(
            f"{which} {shares} its partner's init sha256 and its data seed "
            f"{order} ({fmt(twin['data_seed'])} vs {fmt(model['data_seed'])})"
        )
    finding = "; ".join(checks)
    close = ", so each model-vs-twin difference is training-order noise alone." if ok else "."
    return Section(
        TWINS_TITLE,
        finding[0].upper() + finding[1:] + close,
        table=table,
        status="ok" if ok else "warn",
    )


# ----------------------------------------------------------------------------- SAEs


def sae_stage(ws: Workspace, config: TrainAllConfig) -> StageOutput:
    result = train_all(
        dataclasses.replace(
            config,
            corpus=ws.corpus,
            out=ws.saes,
            standard=ws.export("standard"),
            adhd=ws.export("adhd"),
        )
    )
    saes = [
        {
            "model": r.model_name,
            "layer": r.layer,
            "path": str(r.path),
            "seconds": r.seconds,
            **dataclasses.asdict(r.quality),
        }
        for r in result.results
    ]
    return StageOutput([result.summary_path], {"saes": saes, "passed": result.passed})


def sae_section(summary: Summary, outputs: list[str]) -> Section:
    table = [["SAE", "FVE", "dead %", "L0", "MSE", "CE increase", "gates"]]
    for s in summary["saes"]:
        table.append(
            [
                f"{s['model']} L{s['layer']}",
                fmt(s["fve"]),
                f"{100 * s['dead_fraction']:.2f}",
                fmt(s["l0"], 3),
                fmt(s["mse"]),
                fmt(s.get("ce_increase")),
                "pass" if s.get("passed") else "FAIL",
            ]
        )
    passed = sum(bool(s.get("passed")) for s in summary["saes"])
    fves = [s["fve"] for s in summary["saes"]]
    finding = (
        f"{passed} of {len(summary['saes'])} SAEs pass the card's gates (FVE ≥ 0.87, dead < 2%); "
        f"FVE {fmt(min(fves))}–{fmt(max(fves))}."
    )
    return Section(
        "TopK sparse autoencoders",
        finding,
        table=table,
        status="ok" if summary.get("passed") else "warn",
    )


def check_sae(sae: TrainAllConfig, sections: Mapping[str, Any], n_layer: int) -> None:
    """The SAE layers exist in the preset."""
    for name in ("std_layers", "adhd_layers"):
        bad = [layer for layer in getattr(sae, name) if not 0 <= layer < n_layer]
        if bad:
            raise UserError(f"sae.{name}={bad}: the preset has layers 0..{n_layer - 1}")


# ----------------------------------------------------------------------------- the list

PIPELINE: list[Analysis[Any]] = [
    Analysis("corpus", "paired standard/ADHD corpus", CorpusConfig, corpus_stage, corpus_section),
    Analysis(
        "tokenizer",
        "shared byte-level BPE",
        TokenizerConfig,
        tokenizer_stage,
        tokenizer_section,
        ("corpus",),
    ),
    Analysis(
        train_stage_name("standard"),
        "train the standard model",
        TrainConfig,
        train_stage("standard"),
        None,
        ("tokenizer",),
        study_section="train",
        from_release=train_from_release,
    ),
    Analysis(
        train_stage_name("adhd"),
        "train the ADHD model",
        TrainConfig,
        train_stage("adhd"),
        None,
        ("tokenizer",),
        study_section="train",
        from_release=train_from_release,
    ),
    Analysis(
        "export",
        "HF / TransformerLens / raw exports",
        ExportConfig,
        export_stage,
        None,
        tuple(train_stage_name(v) for v in VARIANTS),
    ),
    Analysis(
        "sae",
        "TopK SAEs with quality gates",
        TrainAllConfig,
        sae_stage,
        sae_section,
        ("export",),
        check=check_sae,
        from_release=copy_from_release,
    ),
]
"""The study's own stages, in order: the data, the two models, their exports and SAEs."""


def interleave(pipeline: list[Analysis[Any]], analyses: list[Analysis[Any]]) -> list[Analysis[Any]]:
    """The analyses in their registered order, each preceded by the pipeline stages it reads
    (directly or through an earlier analysis) and those before them; the pipeline stages
    no analysis reads come last."""
    order = {stage.name: i for i, stage in enumerate(pipeline)}
    needs: dict[str, int] = {}
    """Stage -> the index of the last pipeline stage it reads."""
    stages: list[Analysis[Any]] = []
    done = 0
    for analysis in analyses:
        needs[analysis.name] = max(
            (order.get(name, needs.get(name, -1)) for name in analysis.after), default=-1
        )
        stages += pipeline[done : needs[analysis.name] + 1]
        done = max(done, needs[analysis.name] + 1)
        stages.append(analysis)
    return stages + pipeline[done:]


STAGES: list[Analysis[Any]] = interleave(PIPELINE, analyses())
"""The study's stages in order, without the data-order twins (`twins` off): the registered
analyses (`interpgpt.analysis.registry`) among the pipeline's own stages."""

TWIN_STAGES: list[Analysis[Any]] = [
    Analysis(
        train_stage_name(variant, twin=True),
        f"train the {_label(variant)} model's data-order twin",
        TrainConfig,
        train_stage(variant, twin=True),
        None,
        ("tokenizer",),
        study_section="train",
        from_release=train_from_release,
    )
    for variant in VARIANTS
]
"""The twins' training stages: with the study's `twins` on, they follow the two models'
training and the export stage reads them too (`interpgpt.study.pipeline.study_stages`)."""


def replicate_stages(replicates: int, twins: bool = False) -> list[Analysis[Any]]:
    """The training stages of replicate pairs 1 .. replicates - 1 (init seed `seed + N`),
    and with `twins` each replicate model's data-order twin."""
    return [
        Analysis(
            train_stage_name(variant, twin=twin, replicate=n),
            f"train the {_label(variant)} model{' twin' if twin else ''} of replicate pair {n}",
            TrainConfig,
            train_stage(variant, twin=twin, replicate=n),
            None,
            ("tokenizer",),
            study_section="train",
            from_release=train_from_release,
        )
        for n in range(1, replicates)
        for twin in ((False, True) if twins else (False,))
        for variant in VARIANTS
    ]


def check_sections(sections: dict[str, Any], model: GPTConfig) -> None:
    """Cross-section checks against the preset's shape, before any stage runs: each stage's
    own `check`, in the order of the stages."""
    checked: set[str] = set()
    for stage in STAGES:
        key = stage.settings_key
        if stage.check is not None and key in sections and key not in checked:
            checked.add(key)
            stage.check(sections[key], sections, model.n_layer)
