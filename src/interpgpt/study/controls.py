"""The seed controls in the study: every analysis that compares the pair is run again on
control pairs, and the `controls` stage puts each statistic beside its seed null.

Control pairs. Each variant's data-order twin (`interpgpt.study.stages.TWIN_STAGES`)
forms a pair with its partner: `standard-twin` (the twin in the standard role, the
standard model in the ADHD role) and `adhd-twin` (the ADHD model in the standard role,
its twin in the ADHD role). A model plays the ADHD role in exactly one run, so an
analysis that measures its ADHD-role model alone (`Statistic.of == "model"`) sees the
ADHD model (matched pair), its twin and the standard model. Replicate pair N
(`--replicates`) is another matched pair trained from init seed `seed + N`.

A head's index means nothing across inits: the same job sits at other indices in a
model from another init seed. So for each replicate pair the head-swap inventory also
runs between each variant's model and its replicate (alignment pair `align-<variant>-rN`:
the same sequences through both, heads paired one-to-one within a layer), and a named
head of a replicate pair (a moved head, a target head) counts as recurring only when it
is the partner of the matched pair's head (`Statistic.named_in`, `translate_named`).
Heads are paired by attention profile unless another basis-free head signature pairs
more of a same-init twin's heads with their own index and undoes a planted permutation
(`alignment_choice`, `analysis.headswap.signatures`); the choice and every signature's
hit rates go into controls.json and the report.

An analysis is repeated on a pair by running its very stage code in the pair's
workspace (`Workspace.for_pair`, the stage named `<stage>@<pair>`), together with the
stages it reads that depend on the models (the SAEs for the feature diff). The
`controls` stage then reads every run's statistics (`Analysis.statistics`), applies
`interpgpt.analysis.controls.RULE` and writes `analysis/controls/controls.json`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from interpgpt.analysis.controls import (
    BEYOND,
    CONTROLS_JSON,
    RULE,
    Finding,
    Statistic,
    model_distance,
    replicate_recurrence,
    translate_named,
    write_controls,
)
from interpgpt.analysis.headswap.inventory import head_alignment
from interpgpt.analysis.headswap.signatures import BASELINE, Adoption, adopt
from interpgpt.analysis.protocol import Analysis, Section, StageOutput, Summary, fmt
from interpgpt.constants import VARIANTS, model_name
from interpgpt.study.workspace import Workspace

STUDY_LEVEL = ("corpus", "tokenizer", "export")
"""Stages that are the study's, not a pair's: they are never repeated on a control pair
(nor is any `train-*` stage)."""


def twin_pairs(replicate: str = "") -> dict[str, dict[str, str]]:
    """The control pairs of a matched pair (the first, or replicate pair `replicate`,
    "rN"): control pair -> which model plays each role. A replicate's pairs are named
    `standard-twin-rN` and `adhd-twin-rN`."""
    n = int(replicate.removeprefix("r")) if replicate else 0
    suffix = f"-{replicate}" if replicate else ""
    standard, adhd = (model_name(v, replicate=n) for v in VARIANTS)
    return {
        f"standard-twin{suffix}": {"standard": model_name("standard", True, n), "adhd": standard},
        f"adhd-twin{suffix}": {"standard": adhd, "adhd": model_name("adhd", True, n)},
    }


TWIN_PAIRS: dict[str, dict[str, str]] = twin_pairs()
"""The first matched pair's control pairs. The key is also the variant whose seed null it
is (`within_variant`)."""


PAIR_SETTINGS: dict[str, dict[str, Any]] = {"sae": {"std_layers": ()}}
"""Settings a stage takes on a control pair: of the SAEs, a pair needs only those the
feature diff reads (the ADHD role's), not the standard role's."""


def replicate_pairs(replicates: int) -> dict[str, dict[str, str]]:
    """Replicate pair `rN` -> its models (`<variant>-rN`), for N = 1 .. replicates - 1."""
    return {
        f"r{n}": {v: model_name(v, replicate=n) for v in VARIANTS} for n in range(1, replicates)
    }


def alignment_pair(variant: str, replicate: str) -> str:
    """The alignment pair of `variant`'s model and its replicate `replicate` ("rN")."""
    return f"align-{variant}-{replicate}"


def alignment_pairs(replicates: int) -> dict[str, dict[str, str]]:
    """Alignment pair `align-<variant>-rN` -> its roles: the matched pair's model of that
    variant in the standard role, replicate N's in the ADHD role."""
    return {
        alignment_pair(v, f"r{n}"): {"standard": v, "adhd": model_name(v, replicate=n)}
        for n in range(1, replicates)
        for v in VARIANTS
    }


ALIGNMENT_STAGE = "headswap"
"""The stage run on the alignment pairs: its inventory pairs heads across inits."""


def alignment_stages(stages: Sequence[Analysis[Any]], replicates: int) -> list[Analysis[Any]]:
    """The head-swap inventory on every alignment pair (none without replicate pairs)."""
    (headswap,) = (s for s in stages if s.name == ALIGNMENT_STAGE)
    return [_on_pair(headswap, pair, roles) for pair, roles in alignment_pairs(replicates).items()]


ALIGNED_BY = {
    "profile": "attention profile (head-swap inventory, Hungarian within each layer)",
    "cka": "linear CKA of the heads' hook_z (head-swap inventory, Hungarian within each layer)",
}
"""What each basis-free head signature (`headswap.signatures.BASIS_FREE`) aligns by."""


def alignment_choice(records: dict[str, dict[str, Any]]) -> Adoption | None:
    """The head signature the alignment pairs heads by, chosen on the known answers the
    head-swap runs recorded (`headswap.signatures.adopt`): the identity hit rate on the
    twin pairs (same init, so head h's partner is head h), pooled over both, and the worst
    planted-permutation hit rate of any run. None when a twin pair's run is missing."""
    runs = [records.get(pair_stage_name(ALIGNMENT_STAGE, pair)) for pair in TWIN_PAIRS]
    scores = [(r or {}).get("summary", {}).get("signatures") for r in runs]
    if not all(scores):
        return None
    every = [records.get(ALIGNMENT_STAGE, {}).get("summary", {}).get("signatures"), *scores]
    planted = [s["planted"] for s in every if s]
    names = scores[0]["same_index"]
    return adopt(
        {n: sum(s["same_index"][n] for s in scores) / len(scores) for n in names},
        {n: min(p[n] for p in planted) for n in names},
    )


def _aligned_by(records: dict[str, dict[str, Any]]) -> str:
    choice = alignment_choice(records)
    return BASELINE if choice is None else choice.adopted


def _twin_identity(records: dict[str, dict[str, Any]], variant: str) -> list[int] | None:
    """[heads kept at their own index, heads] when the alignment's matching pairs
    `variant`'s model with its data-order twin: same init, so the identity is the true
    alignment and this is the matching's hit rate where the answer is known."""
    alignment = _pair_alignment(records, f"{variant}-twin")
    if alignment is None:
        return None
    return [sum(twin == own for twin, own in alignment.items()), len(alignment)]


def _pair_alignment(records: dict[str, dict[str, Any]], pair: str) -> dict[str, str] | None:
    """The head-swap inventory's alignment of pair `pair` (its ADHD-role heads -> its
    standard-role heads) by the adopted signature, or None when that run is missing or
    unreadable."""
    record = records.get(pair_stage_name(ALIGNMENT_STAGE, pair))
    if not record:
        return None
    try:
        return head_alignment(record["outputs"], _aligned_by(records))
    except (KeyError, TypeError, ValueError, OSError):
        return None


def pair_stage_name(name: str, pair: str) -> str:
    return f"{name}@{pair}"


def _pair_dependent(stages: Sequence[Analysis[Any]]) -> list[Analysis[Any]]:
    """The stages to repeat on each control pair: every analysis with statistics, and
    every stage they read (transitively) that is not the study's or a training run."""
    by_name = {s.name: s for s in stages}
    wanted: set[str] = set()
    todo = [s.name for s in stages if s.statistics is not None]
    while todo:
        name = todo.pop()
        if name in wanted or name in STUDY_LEVEL or name.startswith("train-"):
            continue
        wanted.add(name)
        todo += [a for a in by_name[name].after if a in by_name]
    return [s for s in stages if s.name in wanted]


def _on_pair(stage: Analysis[Any], pair: str, roles: dict[str, str]) -> Analysis[Any]:
    """`stage` run in control pair `pair`'s workspace: unreported, after the export and
    the pair's own runs of the stages it reads."""

    def run(ws: Workspace, config: Any) -> StageOutput:
        config = dataclasses.replace(config, **PAIR_SETTINGS.get(stage.name, {}))
        if any(f.name == "same_variant" for f in dataclasses.fields(config)):
            config = dataclasses.replace(config, same_variant=True)  # twins share a variant
        return stage.stage(ws.for_pair(pair, roles), config)

    after = [
        a if a in STUDY_LEVEL or a.startswith("train-") else pair_stage_name(a, pair)
        for a in stage.after
    ]
    return dataclasses.replace(
        stage,
        name=pair_stage_name(stage.name, pair),
        description=f"{stage.description} ({pair})",
        stage=run,
        section=None,
        after=tuple(dict.fromkeys([*after, "export"])),
        study_section=stage.settings_key,
    )


def control_stages(
    stages: Sequence[Analysis[Any]], pairs: dict[str, dict[str, str]]
) -> list[Analysis[Any]]:
    """The pair-dependent stages, repeated on each control pair, in study order per pair."""
    repeated = _pair_dependent(stages)
    return [_on_pair(s, pair, roles) for pair, roles in pairs.items() for s in repeated]


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class ControlsConfig:
    """The seed controls (study `[controls]`): every cross-model statistic beside the same
    statistic between a model and its data-order twin, with a verdict."""

    shown: int = 6
    """Components listed per vector statistic in the report (the beyond ones first)."""


def _statistics(
    analysis: Analysis[Any], record: dict[str, Any] | None
) -> dict[str, Statistic] | None:
    """An analysis run's statistics, or None when the run is missing or unreadable."""
    if not record or analysis.statistics is None:
        return None
    try:
        return analysis.statistics(record["summary"], record["outputs"])
    except (KeyError, TypeError, ValueError, IndexError, StopIteration, OSError):
        return None


def findings(
    analyses: Sequence[Analysis[Any]],
    records: dict[str, dict[str, Any]],
    replicates: Sequence[str] = (),
    replicate_twins: bool = False,
) -> tuple[list[Finding], list[str]]:
    """Every statistic of every analysis beside its seed null (from the stage records),
    and a line for each statistic that could not be compared. With `replicate_twins`, each
    replicate pair's statistic is also judged against that pair's own twins."""
    out: list[Finding] = []
    missing: list[str] = []

    def nulls_of(analysis: Analysis[Any], replicate: str = "") -> dict[str, Any]:
        """Per control pair (by the first pair's names), its statistics or None."""
        return {
            base: _statistics(analysis, records.get(pair_stage_name(analysis.name, pair)))
            for base, pair in zip(TWIN_PAIRS, twin_pairs(replicate), strict=True)
        }

    alignments = {
        (r, v): _pair_alignment(records, alignment_pair(v, r)) for r in replicates for v in VARIANTS
    }
    checks = {v: _twin_identity(records, v) for v in VARIANTS}
    for analysis in analyses:
        if analysis.statistics is None:
            continue
        main = _statistics(analysis, records.get(analysis.name))
        nulls = nulls_of(analysis)
        reps = {
            r: _statistics(analysis, records.get(pair_stage_name(analysis.name, r)))
            for r in replicates
        }
        rep_nulls = {r: nulls_of(analysis, r) for r in replicates} if replicate_twins else {}
        if main is None or any(n is None for n in nulls.values()):
            absent = [n for n, s in [(analysis.name, main), *nulls.items()] if s is None]
            missing.append(f"{analysis.name}: no statistics from {', '.join(absent)}")
            continue
        for key, stat in main.items():
            twin = _twin_values(nulls, key)
            if twin is None:
                missing.append(f"{analysis.name}: {stat.description}: a control pair lacks it")
                continue
            rep = [s[key] for s in reps.values() if s is not None and key in s]
            named = []
            for r, r_stats in reps.items():
                if r_stats is None or key not in r_stats:
                    continue
                if stat.named_in is None:
                    named.append(set(r_stats[key].named))
                elif (alignment := alignments[r, stat.named_in]) is not None:
                    named.append(translate_named(r_stats[key].named, alignment))
                elif stat.named:
                    missing.append(
                        f"{analysis.name}: {stat.description}: recurrence in {r} needs its "
                        f"alignment pair {alignment_pair(stat.named_in, r)}"
                    )
            found = _finding(analysis.name, stat, twin, rep, named)
            if found.recurrence and stat.named_in is not None:
                check = {"aligned_by": ALIGNED_BY[_aligned_by(records)],
                         "twin_heads_at_own_index": checks[stat.named_in]}  # fmt: skip
                found = dataclasses.replace(found, recurrence_check=check)
            controls = {}
            for r, r_nulls in rep_nulls.items():
                r_stat, r_twin = (reps[r] or {}).get(key), _twin_values(r_nulls, key)
                if r_stat is None or r_twin is None:
                    missing.append(f"{analysis.name}: {stat.description}: {r} or its twins lack it")
                    continue
                controls[r] = _finding(analysis.name, r_stat, r_twin, [], [])
            if controls:
                found = dataclasses.replace(found, replicate_controls=controls)
            if controls and stat.of == "model":
                # A replicate's distance needs its standard model in the ADHD role, which
                # only that replicate's standard-twin control pair runs.
                found = dataclasses.replace(
                    found, replicates=[c.cross_variant for c in controls.values()]
                )
            out.append(found)
    return out, missing


def _twin_values(nulls: dict[str, Any], key: str) -> dict[str, Statistic] | None:
    """Statistic `key` in every control pair, or None when one lacks it."""
    twin = {p: n[key] for p, n in nulls.items() if n is not None and key in n}
    return twin if len(twin) == len(TWIN_PAIRS) else None


def _finding(
    analysis: str,
    stat: Statistic,
    twin: dict[str, Statistic],
    reps: list[Statistic],
    named: list[set[str]],
) -> Finding:
    """One statistic's record. Of the pair: the matched pair's value, each control pair's.
    Of the model: the distance between the ADHD and the standard model's values (the
    standard model plays the ADHD role in the standard-twin pair), beside the distance
    between the ADHD model's and its twin's. `named`: per replicate pair, the components
    it names, in the matched pair's names."""
    recurrence = None
    if stat.named and named:
        recurrence = {n: replicate_recurrence(named, n) for n in stat.named}
    if stat.of == "model":
        standard, twin_of_adhd = twin["standard-twin"], twin["adhd-twin"]
        return Finding(
            finding=stat.description,
            statistic=f"{stat.description}: distance ({stat.distance}) between two models' values",
            cross_variant=model_distance(stat.value, standard.value, stat.distance),
            within_variant={"adhd": model_distance(stat.value, twin_of_adhd.value, stat.distance)},
            components=stat.components if stat.distance == "abs" else None,
            analysis=analysis,
            recurrence=recurrence,
        )
    cis = {p: s.ci for p, s in twin.items()}
    has_ci = stat.ci is not None and all(ci is not None for ci in cis.values())
    return Finding(
        finding=stat.description,
        statistic=stat.description,
        cross_variant=stat.value,
        within_variant={p.removesuffix("-twin"): s.value for p, s in twin.items()},
        replicates=[r.value for r in reps],
        cross_ci=stat.ci if has_ci else None,
        within_ci={p.removesuffix("-twin"): ci for p, ci in cis.items()} if has_ci else None,
        components=stat.components,
        analysis=analysis,
        recurrence=recurrence,
    )


def controls_stage(
    analyses: Sequence[Analysis[Any]], replicates: Sequence[str], replicate_twins: bool = False
):
    """The `controls` stage over `analyses` (the study's stages) and replicate pairs (with
    `replicate_twins`, each judged against its own twins too)."""

    def run(ws: Workspace, config: ControlsConfig) -> StageOutput:
        found, missing = findings(analyses, ws.records, replicates, replicate_twins)
        pairs = dict(TWIN_PAIRS)
        for r in replicates if replicate_twins else ():
            pairs |= twin_pairs(r)
        choice = alignment_choice(ws.records)
        alignment = None if choice is None else dataclasses.asdict(choice)
        path = write_controls(
            ws.analysis("controls") / CONTROLS_JSON,
            found,
            {"replicate_pairs": list(replicates), "twin_pairs": pairs, "missing": missing},
            head_alignment=alignment,
        )
        rows = [_summary_row(f, config.shown) for f in found]
        summary = {"findings": rows, "missing": missing, "rule": RULE, "head_alignment": alignment}
        return StageOutput([path], summary)

    return run


def _summary_row(finding: Finding, shown: int) -> dict[str, Any]:
    """A finding as the report shows it: numbers for a scalar, counts for a vector."""
    record = finding.to_json()
    row = {
        "analysis": finding.analysis,
        "statistic": finding.statistic,
        "verdict": record["verdict"],
    }
    if finding.is_vector:
        per = finding.verdicts()
        row |= {
            "n_beyond": per.n_beyond,
            "n_defined": per.n_defined,
            "beyond": list(per.beyond[:shown]),
            "cross_variant": record["cross_variant"],
            "within_variant": record["within_variant"],
            "components": list(per.names),
        }
    else:
        row |= {
            "cross_variant": record["cross_variant"],
            "within_variant": record["within_variant"],
            "replicates": record["replicates"],
        }
    for key in ("recurrence", "recurrence_check"):
        if key in record:
            row[key] = record[key]
    if "replicate_controls" in record:
        row["replicate_controls"] = record["replicate_controls"]
    return row


def verdict_text(row: dict[str, Any]) -> str:
    """One finding's verdict in words: `beyond`/`within` (cross vs twins), or, for a vector
    statistic, how many components are beyond and which; and, where the replicate pairs
    have their own twins, in how many of them the statistic is beyond too."""
    if isinstance(row["verdict"], list):
        names = ", ".join(row["beyond"])
        which = f" ({names})" if names else ""
        text = f"{row['n_beyond']} of {row['n_defined']} beyond seed noise{which}"
    elif row["verdict"] is None:
        text = "no verdict (undefined value)"
    else:
        twins = ", ".join(fmt(v) for v in row["within_variant"].values())
        text = f"{row['verdict']} ({fmt(row['cross_variant'])} vs twins {twins})"
    controls = row.get("replicate_controls")
    if controls:
        vector = isinstance(row["verdict"], list)
        beyond = sum(
            (c.get("n_beyond", 0) > 0) if vector else c["verdict"] == BEYOND for c in controls
        )
        what = "with a component beyond" if vector else "beyond"
        text += f"; {what} its own twins in {beyond} of {len(controls)} replicate pairs"
    return text + recurrence_text(row.get("recurrence"), row.get("recurrence_check"))


def recurrence_text(
    recurrence: dict[str, Any] | None, check: dict[str, Any] | None = None, shown: int = 6
) -> str:
    """The named components' recurrence in the replicate pairs, most recurrent first, and
    how often the alignment behind it finds the known answer (a same-init twin's heads)."""
    if not recurrence:
        return ""
    ranked = sorted(recurrence.items(), key=lambda item: -item[1][0])
    listed = ", ".join(f"{name} in {count} of {n}" for name, (count, n) in ranked[:shown])
    more = f" and {len(ranked) - shown} more" if len(ranked) > shown else ""
    text = f"; named heads recurring in replicate pairs (aligned across inits): {listed}{more}"
    kept = (check or {}).get("twin_heads_at_own_index")
    if kept:
        text += (
            f" (the alignment keeps {kept[0]} of {kept[1]} heads of a same-init twin at "
            "their own index)"
        )
    return text


def controls_section(summary: Summary, outputs: list[str]) -> Section:
    """The verdict table: one row per statistic, and the rule stated once."""
    rows = summary["findings"]
    header = ["analysis", "statistic", "standard vs ADHD", "std vs twin", "ADHD vs twin"]
    table = [[*header, "verdict"]]
    n_beyond = 0
    for row in rows:
        within = row["within_variant"]
        if isinstance(row["verdict"], list):
            cells = ["per component"] * 3
            n_beyond += row["n_beyond"] > 0
        else:
            cells = [fmt(row["cross_variant"])]
            cells += [fmt(within.get("standard")), fmt(within.get("adhd"))]
            n_beyond += row["verdict"] == "beyond seed noise"
        table.append([row["analysis"], row["statistic"], *cells, verdict_text(row)])
    finding = (
        f"{n_beyond} of {len(rows)} statistics are beyond seed noise (for a per-component "
        f"statistic: at least one component). Rule: {summary['rule']}."
    )
    if summary.get("missing"):
        finding += f" Not compared: {'; '.join(summary['missing'])}."
    if summary.get("head_alignment"):
        finding += " " + alignment_text(summary["head_alignment"])
    status = "warn" if summary.get("missing") else "ok"
    return Section("Seed controls", finding, table=table, status=status)


def alignment_text(choice: dict[str, Any]) -> str:
    """The alignment's signature and the known answers that chose it, in one sentence."""
    rates = ", ".join(
        f"{name} {fmt(rate)} (planted {fmt(choice['planted'][name])})"
        for name, rate in choice["identity"].items()
    )
    return (
        f"Heads are aligned across inits by {choice['adopted']}: {choice['reason']}. Share of "
        f"a same-init twin's heads paired with their own index, per head signature: {rates}."
    )


def headline_verdicts(summary: Summary) -> dict[str, str]:
    """Per analysis, its statistics' verdicts in one line, for the report's headlines."""
    per: dict[str, list[str]] = {}
    for row in summary.get("findings", []):
        per.setdefault(row["analysis"], []).append(f"{row['statistic']}: {verdict_text(row)}")
    return {name: "; ".join(items) for name, items in per.items()}


def controls_analysis(
    analyses: Sequence[Analysis[Any]],
    after: Sequence[str],
    replicates: Sequence[str],
    replicate_twins: bool = False,
) -> Analysis[ControlsConfig]:
    """The `controls` stage, reading every stage in `after`."""
    return Analysis(
        "controls",
        "every finding beside its seed null, with a verdict",
        ControlsConfig,
        controls_stage(analyses, replicates, replicate_twins),
        controls_section,
        tuple(after),
    )


__all__ = [
    "ALIGNMENT_STAGE",
    "STUDY_LEVEL",
    "TWIN_PAIRS",
    "ControlsConfig",
    "alignment_pair",
    "alignment_pairs",
    "alignment_stages",
    "control_stages",
    "controls_analysis",
    "controls_section",
    "findings",
    "headline_verdicts",
    "pair_stage_name",
    "replicate_pairs",
    "twin_pairs",
    "verdict_text",
]
