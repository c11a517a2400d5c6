"""Report sections built from the study's stage records: one builder per analysis.

Each builder reads one stage's summary (the headline numbers the stage recorded)
and the figures it wrote, and states in one sentence what the numbers show —
a null or failed result as plainly as a positive one. To put a new analysis in
the report, add a stage for it and a builder here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interpgpt.io import package_versions, to_jsonable
from interpgpt.report import Report, Section

Summary = dict[str, Any]


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def figures(outputs: list[str]) -> list[Path]:
    return [Path(p) for p in outputs if str(p).endswith(".png")]


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


def training_section(records: dict[str, dict]) -> Section:
    rows = []
    for variant in ("standard", "adhd"):
        s = records.get(f"train-{variant}", {}).get("summary", {})
        if s:
            rows.append(
                (
                    f"{variant} model",
                    f"val loss {fmt(s['val_loss'])} after {s['steps']} steps, "
                    f"{s['tokens_per_second']:,.0f} tokens/s, {s['seconds'] / 60:.1f} min",
                )
            )
    behaviour = records.get("behaviour", {}).get("summary", {})
    table = [
        [
            "model",
            "parse rate",
            "outputs with regulation",
            "regulation step share",
            "mean steps",
            "Spearman(complexity, steps)",
        ]
    ]
    for name, b in behaviour.items():
        table.append(
            [
                name,
                fmt(b["parse_rate"]),
                fmt(b["regulating_outputs"]),
                fmt(b["regulation_step_share"]),
                fmt(b["mean_steps"], 2),
                fmt(b["spearman_complexity_steps"]),
            ]
        )
        for example in b.get("examples", [])[:1]:
            rows.append((f"{name}: {example['task']}", " | ".join(example["steps"])))
    std, adhd = behaviour.get("standard", {}), behaviour.get("adhd", {})
    finding = (
        f"Both models decompose held-out tasks ({fmt(std.get('parse_rate'))} / "
        f"{fmt(adhd.get('parse_rate'))} of samples parse); the ADHD model regulates in "
        f"{fmt(adhd.get('regulating_outputs'))} of its outputs, the standard model in "
        f"{fmt(std.get('regulating_outputs'))}."
        if behaviour
        else "Training ran; behaviour was not measured."
    )
    return Section("Models and their behaviour", finding, rows=rows, table=table)


def headswap_section(summary: Summary, outputs: list[str]) -> Section:
    strongest = summary["strongest"]
    table = [
        [
            "layer",
            "matched mean cos",
            "same-index mean cos",
            "gap [95% CI]",
            "p (perm.)",
            "moved heads",
        ]
    ]
    for s in summary["layers"]:
        ci = s.get("gap_ci")
        ci_text = f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""
        table.append(
            [
                str(s["layer"]),
                fmt(s["matched_mean"]),
                fmt(s["same_index_mean"]),
                fmt(s["gap"]) + ci_text,
                fmt(s.get("p_matched")),
                str(s["n_moved"]),
            ]
        )
    moved = summary["moved"]
    finding = (
        f"{len(moved)} head{'s' if len(moved) != 1 else ''} moved; "
        f"strongest: {strongest['label']}, cos "
        f"{fmt(strongest['cosine'])} vs same-index {fmt(strongest['same_index'])}."
        if moved
        else "No head moved: every head's best within-layer partner is at its own index "
        f"(best pair {strongest['label']}, cos {fmt(strongest['cosine'])})."
    )
    rows = [
        (m["label"], f"cos {fmt(m['cosine'])} vs same-index {fmt(m['same_index'])}")
        for m in moved[:8]
    ]
    return Section("Head-swap inventory", finding, rows=rows, table=table, figures=figures(outputs))


def layer_jump(layers: list[int], probs: list[float]) -> dict[str, Any]:
    """The largest ratio between consecutive transformer layers (the embedding excluded),
    the quantity the seed card reports (0.014 -> 0.251 between layers 1 and 2)."""
    pairs = [
        (probs[i + 1] / probs[i], layers[i], layers[i + 1], probs[i], probs[i + 1])
        for i in range(len(layers) - 1)
        if layers[i] >= 0 and probs[i] > 0
    ]
    if not pairs:
        return {}
    ratio, start, end, p_from, p_to = max(pairs)
    return {"ratio": ratio, "from_layer": start, "to_layer": end, "p_from": p_from, "p_to": p_to}


def logit_lens_section(summary: Summary, outputs: list[str]) -> Section:
    curves = summary["curves"]
    adhd, std = curves.get("adhd", {}), curves.get("standard", {})
    jump = layer_jump(adhd.get("layers", []), adhd.get("p_regulation", []))
    share = summary.get("regulation_step_share")
    table = [["layer", *[str(layer) for layer in adhd.get("layers", [])]]]
    for name, curve in curves.items():
        table.append([name, *[fmt(p) for p in curve["p_regulation"]]])
    finding = (
        f"ADHD P(regulation) at step-onset predictors jumps {fmt(jump.get('ratio'), 2)}× between "
        f"layers {jump.get('from_layer')} and {jump.get('to_layer')} "
        f"({fmt(jump.get('p_from'))} → {fmt(jump.get('p_to'))}); final layer "
        f"{fmt(adhd['p_regulation'][-1])} vs {fmt(share)} regulation steps in the ADHD test set; "
        f"the standard model peaks at {fmt(max(std.get('p_regulation', [math.nan])))}."
    )
    return Section("Regulation logit lens", finding, table=table, figures=figures(outputs))


def ablation_section(summary: Summary, outputs: list[str]) -> Section:
    delta = summary["median_delta"].get(summary["target_label"])
    nulls = {k: v for k, v in summary["median_delta"].items() if k != summary["target_label"]}
    comparisons = summary.get("comparisons", {})
    overall = comparisons.get("all") or next(iter(comparisons.values()), {})
    finding = (
        f"Ablating {summary['heads']} in the ADHD model changes Spearman(complexity, steps) by a "
        f"median {fmt(delta)} over {len(summary['baseline'])} seeds; it ranks "
        f"{overall.get('rank', 'n/a')} of {overall.get('n_null', 0) + 1} against null heads "
        f"(one-sided p {fmt(overall.get('p_empirical'))})."
    )
    rows = [
        ("baseline Spearman per seed", ", ".join(fmt(v) for v in summary["baseline"])),
        ("ablated Spearman per seed", ", ".join(fmt(v) for v in summary["target"])),
    ]
    rows += [(f"null {k}", fmt(v)) for k, v in list(nulls.items())[:12]]
    return Section("Causal head ablation", finding, rows=rows, figures=figures(outputs))


def patching_section(summary: Summary, outputs: list[str]) -> Section:
    corr = summary.get("correlation") or {}
    corr_text = (
        ", ".join(f"{k} {fmt(v)}" for k, v in corr.items()) if isinstance(corr, dict) else fmt(corr)
    )
    finding = (
        f"Regulation logit difference: clean {fmt(summary['clean_metric'])}, corrupted "
        f"{fmt(summary['corrupted_metric'])}; attribution patching vs exact: {corr_text}."
    )
    return Section("Activation patching", finding, figures=figures(outputs))


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


def feature_diff_section(summary: Summary, outputs: list[str]) -> Section:
    table = [["feature", "ADHD onset rate", "standard onset rate"]]
    for t in summary["top"]:
        table.append([str(t["feature"]), fmt(t["adhd_rate"]), fmt(t["std_rate"])])
    top = summary["top"][0] if summary["top"] else None
    finding = (
        f"{summary['n_selected']} SAE features fire at ADHD step onsets and almost never at "
        f"standard ones; the top one, {top['feature']}, fires at {fmt(top['adhd_rate'])} vs "
        f"{fmt(top['std_rate'])}."
        if top
        else "No SAE feature is specific to ADHD step onsets at the stated thresholds."
    )
    md = [Path(p) for p in outputs if str(p).endswith(".md")]
    rows = [("contexts", str(md[0]))] if md else []
    return Section("Cross-model feature diff", finding, rows=rows, table=table)


def steering_section(summary: Summary, outputs: list[str]) -> Section:
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
    )
    return Section("Steering with null baselines", finding, table=table, figures=figures(outputs))


def probes_section(summary: Summary, outputs: list[str]) -> Section:
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
        "residual stream; the causal column projects the probe direction out against random "
        "directions."
    )
    return Section("Three probes", finding, table=table, figures=figures(outputs))


BUILDERS: dict[str, Callable[[Summary, list[str]], Section]] = {
    "corpus": corpus_section,
    "headswap": headswap_section,
    "logit-lens": logit_lens_section,
    "ablation": ablation_section,
    "patching": patching_section,
    "sae": sae_section,
    "feature-diff": feature_diff_section,
    "steering": steering_section,
    "probes": probes_section,
}


def safe_section(name: str, builder, record: dict | None) -> Section:
    if not record:
        return Section(name, f"The {name} stage did not run.", status="missing")
    try:
        return builder(record["summary"], record["outputs"])
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return Section(name, f"The {name} summary could not be read ({err!r}).", status="warn")


def headlines(sections: list[Section]) -> list[str]:
    return [f"{s.title}: {s.finding}" for s in sections if s.status != "missing"]


def build_report(ctx) -> Report:
    records = ctx.records
    sections = [safe_section("corpus", corpus_section, records.get("corpus"))]
    sections.append(training_section(records))
    sections += [
        safe_section(name, builder, records.get(name))
        for name, builder in BUILDERS.items()
        if name != "corpus"
    ]
    timing = {name: round(r.get("seconds", 0.0), 1) for name, r in records.items()}
    config = {"study": to_jsonable(ctx.config), "stage_seconds": timing}
    title = f"InterpGPT matched-pair study ({ctx.config.preset} preset)"
    return Report(title, headlines(sections), sections, config, package_versions())
