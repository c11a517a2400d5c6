"""The study's stages, in order: each calls one pipeline module's entry point.

A stage function reads the study config and earlier stages' outputs from the
study directory, runs its module, and returns the files it wrote plus a small
summary of headline numbers (kept in its stage record, so the report can be
rebuilt without rerunning anything). The stage list at the bottom is the study.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from interpgpt.model import preset
from interpgpt.study import Stage, StageOutput, StudyConfig, StudyContext

VARIANTS = ("standard", "adhd")
SAE_EXPANSION = 8  # the seed card's d_sae / d_model = 4096 / 512


def corpus_dir(ctx: StudyContext) -> Path:
    return ctx.path("corpus")


def tokenizer_file(ctx: StudyContext) -> Path:
    return ctx.path("tokenizer.json")


def run_dir(ctx: StudyContext, variant: str) -> Path:
    return ctx.path("runs", variant)


def export_dir(ctx: StudyContext, variant: str) -> Path:
    return ctx.path("export", variant)


def analysis_dir(ctx: StudyContext, name: str) -> Path:
    return ctx.path("analysis", name)


def sae_dir(ctx: StudyContext, variant: str, layer: int) -> Path:
    from interpgpt.sae.topk import sae_dir_name

    return ctx.path("sae", sae_dir_name(variant, layer))


# ----------------------------------------------------------------------------- data


def build_corpus_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.corpus import CorpusConfig, build_corpus

    section = ctx.config.corpus
    overrides = (
        {} if section.regulation_rate is None else {"regulation_rate": section.regulation_rate}
    )
    config = CorpusConfig(
        seed=ctx.config.seed,
        n_tasks=section.tasks,
        examples_per_task=section.examples_per_task,
        **overrides,
    )
    summary = build_corpus(config, corpus_dir(ctx))
    return StageOutput(
        [summary.stats_file, summary.tasks_file],
        {
            "n_tasks": summary.n_tasks,
            "n_examples": summary.n_examples,
            "spearman": summary.spearman,
            "regulation_rate": summary.regulation_rate,
        },
    )


def tokenizer_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.tokenizer import TaskTokenizer, train_tokenizer

    path = train_tokenizer(corpus_dir(ctx), tokenizer_file(ctx))
    tokenizer = TaskTokenizer.from_file(path)
    return StageOutput([path], {"vocab_size": tokenizer.vocab_size, "sha256": tokenizer.sha256})


def train_stage(variant: str):
    def run(ctx: StudyContext) -> StageOutput:
        from interpgpt.train import TrainConfig, train

        section = ctx.config.train
        config = TrainConfig(
            corpus=corpus_dir(ctx),
            tokenizer=tokenizer_file(ctx),
            out=run_dir(ctx, variant),
            variant=variant,
            preset=ctx.config.preset,
            steps=section.steps,
            batch_size=section.batch_size,
            lr=section.lr,
            seed=ctx.config.seed,
            device=ctx.config.device,
            resume=True,
        )
        result = train(config)
        return StageOutput(
            [result.run_dir / "model.safetensors"],
            {
                "val_loss": result.val_loss,
                "steps": result.steps,
                "tokens_per_second": result.tokens_per_second,
                "seconds": result.seconds,
                "samples": result.samples,
            },
        )

    return run


def behaviour_stage(ctx: StudyContext) -> StageOutput:
    """Sampled decompositions of held-out tasks: parse rate and regulation use per model."""
    from interpgpt.behaviour import BehaviourConfig, measure_behaviour

    config = BehaviourConfig(
        models={v: run_dir(ctx, v) for v in VARIANTS},
        corpus=corpus_dir(ctx),
        out=analysis_dir(ctx, "behaviour"),
        limit=ctx.config.analysis.ablation_tasks,
        seed=ctx.config.seed,
        device=ctx.config.device,
    )
    result = measure_behaviour(config)
    return StageOutput([result.json_path], result.summary)


def export_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.export import ExportConfig, export

    outputs, summary = [], {}
    for variant in VARIANTS:
        result = export(
            ExportConfig(
                run_dir=run_dir(ctx, variant), out_dir=export_dir(ctx, variant), overwrite=True
            )
        )
        outputs.append(result.out_dir / "hooked_transformer.pt")
        summary[variant] = {
            "n_parameters": result.n_parameters,
            "max_abs_logit_diff": result.max_abs_logit_diff,
        }
    return StageOutput(outputs, summary)


# ----------------------------------------------------------------------------- phase 1


def headswap_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.analysis.headswap import HeadswapConfig, run_headswap

    result = run_headswap(
        HeadswapConfig(
            standard=export_dir(ctx, "standard"),
            adhd=export_dir(ctx, "adhd"),
            corpus=corpus_dir(ctx),
            out=analysis_dir(ctx, "headswap"),
            limit=ctx.config.analysis.eval_tasks,
            seed=ctx.config.seed,
            device=ctx.config.device,
        )
    )
    inv = result.inventory
    matches = sorted(inv.within_layer, key=lambda m: m.cosine - m.same_index, reverse=True)
    moved = [m for m in matches if m.moved]
    summary = {
        "n_tasks": result.n_tasks,
        "moved": [_match_summary(m) for m in moved],
        "strongest": _match_summary(moved[0] if moved else matches[0]),
        "layers": [dataclasses.asdict(s) for s in inv.layers],
    }
    return StageOutput(list(result.files.values()), summary)


def _match_summary(match) -> dict[str, Any]:
    return {
        "label": match.label,
        "std": list(match.std),
        "adhd": list(match.adhd),
        "cosine": match.cosine,
        "same_index": match.same_index,
        "partner_same_index": match.partner_same_index,
    }


def logit_lens_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.analysis.logit_lens import LogitLensConfig, run_logit_lens

    result = run_logit_lens(
        LogitLensConfig(
            standard=export_dir(ctx, "standard"),
            adhd=export_dir(ctx, "adhd"),
            corpus=corpus_dir(ctx),
            out=analysis_dir(ctx, "logit_lens"),
            limit=ctx.config.analysis.eval_tasks,
            device=ctx.config.device,
        )
    )
    curves = {name: dataclasses.asdict(curve) for name, curve in result.curves.items()}
    summary = {
        "curves": curves,
        "regulation_step_share": result.regulation_step_share,
        "n_positions": result.n_positions,
    }
    return StageOutput(list(result.files.values()), summary)


def ablation_heads(ctx: StudyContext) -> str:
    """The configured heads, or the ADHD partner of the strongest moved head."""
    heads = ctx.config.analysis.ablation_heads
    if heads != "auto":
        return heads
    layer, head = ctx.summary("headswap")["strongest"]["adhd"]
    return f"L{layer}H{head}"


def ablation_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.analysis.ablation import AblationConfig, run_ablation

    heads = ablation_heads(ctx)
    result = run_ablation(
        AblationConfig(
            model=export_dir(ctx, "adhd"),
            corpus_dir=corpus_dir(ctx),
            out_dir=analysis_dir(ctx, "ablation"),
            heads=heads,
            seeds=ctx.config.analysis.ablation_seeds,
            limit=ctx.config.analysis.ablation_tasks,
            device=ctx.config.device,
        )
    )
    summary = {
        "heads": heads,
        "baseline": [s.spearman for s in result.baseline],
        "target": [s.spearman for s in result.ablated[result.target.label]],
        "median_delta": result.median_delta,
        "target_label": result.target.label,
        "comparisons": {k: dataclasses.asdict(v) for k, v in result.comparisons.items()},
    }
    return StageOutput([result.json_path, result.figure_path], summary)


def patching_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.analysis.patching import PatchingConfig, run_patching

    result = run_patching(
        PatchingConfig(
            model=export_dir(ctx, "adhd"),
            corpus_dir=corpus_dir(ctx),
            out_dir=analysis_dir(ctx, "patching"),
            site="all",
            n_pairs=ctx.config.analysis.patch_pairs,
            device=ctx.config.device,
        )
    )
    summary = {
        "clean_metric": result.clean_metric,
        "corrupted_metric": result.corrupted_metric,
        "correlation": result.correlation,
    }
    return StageOutput([result.json_path, *result.figures], summary)


# ----------------------------------------------------------------------------- phase 5


def sae_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.sae.training import TrainAllConfig, train_all

    section = ctx.config.sae
    overrides = {} if section.tokens is None else {"tokens": section.tokens}
    result = train_all(
        TrainAllConfig(
            corpus=corpus_dir(ctx),
            out=ctx.path("sae"),
            std=export_dir(ctx, "standard"),
            adhd=export_dir(ctx, "adhd"),
            std_layers=section.std_layers,
            adhd_layers=section.adhd_layers,
            k=section.k,
            d_sae=section.d_sae or SAE_EXPANSION * preset(ctx.config.preset).d_model,
            seed=ctx.config.seed,
            device=ctx.config.device,
            **overrides,
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


def feature_diff_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.sae.diff import FeatureDiffConfig, feature_diff

    result = feature_diff(
        FeatureDiffConfig(
            sae_dir=sae_dir(ctx, "adhd", ctx.config.sae.diff_layer),
            std=export_dir(ctx, "standard"),
            adhd=export_dir(ctx, "adhd"),
            corpus=corpus_dir(ctx),
            out=analysis_dir(ctx, "feature_diff"),
            limit=ctx.config.analysis.eval_tasks,
            device=ctx.config.device,
        )
    )
    top = [
        {
            "feature": f,
            "adhd_rate": float(result.adhd.onset_rate[f]),
            "std_rate": float(result.standard.onset_rate[f]),
        }
        for f in result.selected[:10]
    ]
    summary = {"n_selected": len(result.selected), "top": top}
    return StageOutput([result.json_path, result.markdown_path], summary)


def steering_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.sae.steering import SteeringConfig, steer

    diff_json = analysis_dir(ctx, "feature_diff") / "feature_diff.json"
    result = steer(
        SteeringConfig(
            sae_dir=sae_dir(ctx, "adhd", ctx.config.sae.diff_layer),
            std=export_dir(ctx, "standard"),
            adhd=export_dir(ctx, "adhd"),
            corpus=corpus_dir(ctx),
            out=analysis_dir(ctx, "steering"),
            feature="auto",
            diff_file=diff_json,
            n_null=ctx.config.sae.n_null,
            seed=ctx.config.seed,
            device=ctx.config.device,
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
    summary = {"feature": result.feature, "magnitude": result.magnitude, "variants": variants}
    return StageOutput([result.json_path, result.plot_path], summary)


def probes_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.analysis.probes import ProbesConfig, run_probes

    outputs, summary = [], {}
    for variant in VARIANTS:
        result = run_probes(
            ProbesConfig(
                model=export_dir(ctx, variant),
                corpus=corpus_dir(ctx),
                out=analysis_dir(ctx, f"probes_{variant}"),
                variant=variant,
                limit=ctx.config.analysis.eval_tasks,
                seed=ctx.config.seed,
                device=ctx.config.device,
            )
        )
        outputs += [result.json_path, result.plot_path]
        summary[variant] = [dataclasses.asdict(p) for p in result.probes]
    return StageOutput(outputs, summary)


def report_stage(ctx: StudyContext) -> StageOutput:
    from interpgpt.report import write_report
    from interpgpt.report_sections import build_report

    html_path, md_path = write_report(build_report(ctx), ctx.out)
    return StageOutput([html_path, md_path], {"html": str(html_path)})


def _section(name: str):
    return lambda config: dataclasses.asdict(getattr(config, name))


def _train_config(config: StudyConfig) -> dict[str, Any]:
    return {**dataclasses.asdict(config.train), "device": config.device}


def _analysis(config: StudyConfig) -> dict[str, Any]:
    return dataclasses.asdict(config.analysis)


def _sae(config: StudyConfig) -> dict[str, Any]:
    return dataclasses.asdict(config.sae)


def _nothing(config: StudyConfig) -> dict[str, Any]:
    return {}


STAGES: list[Stage] = [
    Stage("corpus", "paired standard/ADHD corpus", build_corpus_stage, _section("corpus")),
    Stage("tokenizer", "shared byte-level BPE", tokenizer_stage, _nothing, ("corpus",)),
    Stage(
        "train-standard",
        "train the standard model",
        train_stage("standard"),
        _train_config,
        ("tokenizer",),
    ),
    Stage("train-adhd", "train the ADHD model", train_stage("adhd"), _train_config, ("tokenizer",)),
    Stage(
        "behaviour",
        "sampled decompositions of held-out tasks",
        behaviour_stage,
        _analysis,
        ("train-standard", "train-adhd"),
    ),
    Stage(
        "export",
        "HF / TransformerLens / raw exports",
        export_stage,
        _nothing,
        ("train-standard", "train-adhd"),
    ),
    Stage("headswap", "head-swap inventory", headswap_stage, _analysis, ("export",)),
    Stage("logit-lens", "regulation logit lens + DLA", logit_lens_stage, _analysis, ("export",)),
    Stage("ablation", "causal head ablation with nulls", ablation_stage, _analysis, ("headswap",)),
    Stage("patching", "activation + attribution patching", patching_stage, _analysis, ("export",)),
    Stage("sae", "TopK SAEs with quality gates", sae_stage, _sae, ("export",)),
    Stage("feature-diff", "cross-model SAE feature diff", feature_diff_stage, _sae, ("sae",)),
    Stage(
        "steering", "feature steering with null baselines", steering_stage, _sae, ("feature-diff",)
    ),
    Stage("probes", "three linear probes + causal check", probes_stage, _analysis, ("export",)),
    Stage(
        "report",
        "report.html and report.md",
        report_stage,
        _nothing,
        (
            "behaviour",
            "headswap",
            "logit-lens",
            "ablation",
            "patching",
            "sae",
            "feature-diff",
            "steering",
            "probes",
        ),
        always=True,
    ),
]
