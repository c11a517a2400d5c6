"""Known answers: does each model carry the break rule's variables, and does it use them?

The ADHD corpus plants a rule whose state is known at every step (`corpus.regulation`,
`RULE_VARIABLES`). This analysis asks the questions an interpretability method should
answer about it, on models whose answer is known in advance:

- where the variables live (`probing`): per variable and residual site, a ridge probe
  beside its shuffled-label control (selectivity), for the standard model, the ADHD model
  and, when given, the ADHD model's data-order twin, all on the same held-out ADHD
  sequences at the rule's decision points;
- whether `remaining` is used (`interchange`): interchange interventions along each
  model's own `remaining` probe direction and along a direction learned by distributed
  alignment search (DAS, 1-D), scored against the rule's counterfactual and against
  random directions.

`known_answers` is the core (models and an evaluation set in, results out);
`run_known_answers` reads the files, writes known_answers.json and the two figures; the
study stage probes the study's models (the twin when the study trains twins). Method and
statistics: docs/methods/known-answers.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from interpgpt.analysis.known_answers.config import KnownAnswersConfig
from interpgpt.analysis.known_answers.interchange import (
    LayerInterchange,
    Pairs,
    interchange_layers,
    sample_pairs,
)
from interpgpt.analysis.known_answers.probing import (
    VARIABLES,
    DecisionPoints,
    VariableProbes,
    decision_points,
    probe_variables,
    split_by_task,
)
from interpgpt.analysis.plots import LinePanel, Series, save_line_plot
from interpgpt.analysis.protocol import (
    Analysis,
    Layout,
    Section,
    StageOutput,
    Summary,
    figures,
    fmt,
)
from interpgpt.artifacts.load import check_roles, load_model
from interpgpt.constants import Variant, model_name
from interpgpt.corpus.evalset import EncodedSet, load_eval_set
from interpgpt.corpus.tokenizer import regulation_first_tokens
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import provenance, write_json

KNOWN_ANSWERS_JSON = "known_answers.json"
PROBES_PLOT = "variable_probes.png"
INTERCHANGE_PLOT = "interchange.png"
SEQUENCES: Variant = "adhd"
"""Every model reads the ADHD held-out sequences: the only ones with breaks to decide."""


@dataclass
class ModelAnswers:
    """One model's probes and interchanges."""

    name: str
    """Its role: standard, adhd, adhd-twin."""
    probes: VariableProbes
    rule_agreement: float
    """Share of probe-test decision points where the model's clean decision (P(regulation
    next) > 1/2) is the rule's: how well it learned the rule at all."""
    interchange: list[LayerInterchange] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule_agreement": self.rule_agreement,
            "probes": {v.variable: v for v in self.probes.scores},
            "interchange": [
                {
                    **dataclasses.asdict(layer),
                    "random_iia_flip": layer.random_iia_flip,
                    "random_sign_agreement": layer.random_sign_agreement,
                }
                for layer in self.interchange
            ],
        }


@dataclass
class KnownAnswers:
    """Every model's answers on the same decision points and pairs."""

    layers: list[str]
    n_points: int
    n_train_tasks: int
    n_test_tasks: int
    pairs: Pairs
    models: list[ModelAnswers]

    def model(self, name: str) -> ModelAnswers:
        return next(m for m in self.models if m.name == name)


def known_answers(
    models: dict[str, Any],
    eset: EncodedSet,
    reg_ids: list[int],
    *,
    train_fraction: float = 0.7,
    n_pairs: int = 256,
    n_random: int = 5,
    interchange_at: Literal["all", "best"] = "all",
    das_steps: int = 0,
    das_at: Literal["all", "best"] = "best",
    das_pairs: int = 512,
    seed: int = 0,
    batch_size: int = 32,
) -> KnownAnswers:
    """Probe every model (name -> TaskGPT, one tokenizer) for `VARIABLES` at the decision
    points of `eset`, and intervene on `remaining` along each model's own probe direction
    and, with `das_steps`, along a direction learned from it (`learn_direction`, on
    `das_pairs` pairs of probe-train points) at the best `remaining` site or every site.
    Every model sees the same points, probe split and pairs."""
    answers: list[ModelAnswers] = []
    train: torch.Tensor | None = None
    pairs: Pairs | None = None
    das_train: Pairs | None = None
    points: DecisionPoints | None = None
    for name, model in models.items():
        points = decision_points(model, eset, reg_ids, batch_size)
        if train is None or pairs is None:
            train = split_by_task(points.task, train_fraction, seed)
            gen = torch.Generator().manual_seed(seed)
            pairs = sample_pairs(points, ~train, n_pairs, gen)
            das_train = sample_pairs(points, train, das_pairs, gen) if das_steps else None
        probes = probe_variables(points, train, seed)
        agree = ((points.p_regulation > 0.5) == points.fires)[~train]
        answer = ModelAnswers(name, probes, float(agree.double().mean()))
        remaining = probes.probes.get("remaining", {})
        every = list(remaining)
        best = [every[probes.get("remaining").best]] if every else []
        sites = best if interchange_at == "best" else every
        directions = {site: remaining[site].direction() for site in sites}
        gen = torch.Generator().manual_seed(seed + 1)  # the same random directions per model
        answer.interchange = interchange_layers(
            model, eset, points, pairs, directions, reg_ids, n_random, gen, batch_size,
            das_pairs=das_train, das_steps=das_steps,
            das_sites=sites if das_at == "all" else best,
        )  # fmt: skip
        answers.append(answer)
    if points is None or train is None or pairs is None:
        raise ValueError("known_answers needs at least one model")
    return KnownAnswers(
        layers=points.layers,
        n_points=len(points),
        n_train_tasks=len(points.task[train].unique()),
        n_test_tasks=len(points.task[~train].unique()),
        pairs=pairs,
        models=answers,
    )


@dataclass
class KnownAnswersResult:
    """What `run_known_answers` wrote."""

    json_path: Path
    probes_plot: Path
    interchange_plot: Path
    answers: KnownAnswers


def run_known_answers(config: KnownAnswersConfig) -> KnownAnswersResult:
    """Load the models, run `known_answers` on the held-out ADHD sequences, write
    known_answers.json, variable_probes.png and interchange.png under `config.out`."""
    device = resolve_device(config.device)
    paths = {"standard": config.standard, "adhd": config.adhd}
    if config.twin is not None:
        paths[model_name("adhd", twin=True)] = config.twin
    loaded = {name: load_model(path) for name, path in paths.items()}
    check_roles(loaded["standard"], loaded["adhd"], config.same_variant)
    tokenizer = loaded["adhd"].tokenizer
    for name, model in loaded.items():
        if model.tokenizer.sha256 != tokenizer.sha256:
            raise UserError(f"{paths[name]}: trained with another tokenizer than {config.adhd}")
    models = {name: m.model.to(device).eval() for name, m in loaded.items()}
    n_ctx = min(m.cfg.n_ctx for m in models.values())
    eset = load_eval_set(config.corpus, tokenizer, SEQUENCES, config.split, config.limit, n_ctx)
    answers = known_answers(
        models,
        eset,
        sorted(regulation_first_tokens(tokenizer)),
        train_fraction=config.train_fraction,
        n_pairs=config.n_pairs,
        n_random=config.n_random,
        interchange_at=config.interchange_at,
        das_steps=config.das_steps,
        das_at=config.das_at,
        das_pairs=config.das_pairs,
        seed=config.seed,
        batch_size=config.batch_size,
    )
    out = Path(config.out)
    blob = {
        "layers": answers.layers,
        "sequences": f"{SEQUENCES} {config.split}: decision points (onset predictors after a "
        "content step)",
        "n_points": answers.n_points,
        "split": {"train_tasks": answers.n_train_tasks, "test_tasks": answers.n_test_tasks},
        "n_pairs": len(answers.pairs.base),
        "models": {m.name: m.to_json() for m in answers.models},
        "provenance": provenance(config),
    }
    json_path = write_json(out / KNOWN_ANSWERS_JSON, blob)
    return KnownAnswersResult(
        json_path,
        plot_probes(out / PROBES_PLOT, answers),
        plot_interchange(out / INTERCHANGE_PLOT, answers),
        answers,
    )


# ------------------------------------------------------------------------------ figures


def plot_probes(path: Path, answers: KnownAnswers) -> Path:
    """Probe-test score by layer, one panel per variable, each model beside its control."""
    x = list(range(len(answers.layers)))
    panels = []
    for variable in VARIABLES:
        series = []
        for m in answers.models:
            scores = m.probes.get(variable)
            if not scores.skipped:
                series.append(Series(x, scores.score, m.name, "o"))
                series.append(Series(x, scores.control, f"{m.name} shuffled"))
        metric = "accuracy" if variable == "effort" else "R²"
        panels.append(
            LinePanel(series, variable, "layer", metric, xticks=x, xticklabels=answers.layers)
        )
    return save_line_plot(path, panels, suptitle="probes for the break rule's variables",
                          sharey=False, panel_size=(4.0, 3.5))  # fmt: skip


def plot_interchange(path: Path, answers: KnownAnswers) -> Path:
    """Flip-pair IIA and sign agreement by layer, each model beside its random directions."""
    panels = []
    for stat, title in (("iia_flip", "IIA (flip pairs)"), ("sign_agreement", "sign agreement")):
        series = []
        for m in answers.models:
            if not m.interchange:
                continue
            x = [answers.layers.index(layer.layer) for layer in m.interchange]
            probe = [getattr(layer.probe, stat) for layer in m.interchange]
            null = [
                float(torch.tensor([getattr(r, stat) for r in layer.random]).nanmean())
                for layer in m.interchange
            ]
            series += [Series(x, probe, m.name, "o"), Series(x, null, f"{m.name} random")]
            learned = [(i, getattr(layer.das, stat))
                       for i, layer in zip(x, m.interchange, strict=True)
                       if layer.das is not None]  # fmt: skip
            if learned:
                series.append(
                    Series([i for i, _ in learned], [v for _, v in learned], f"{m.name} DAS", "s")
                )
        x_all = list(range(len(answers.layers)))
        panels.append(
            LinePanel(series, title, "layer", "share", xticks=x_all, xticklabels=answers.layers)
        )
    return save_line_plot(
        path, panels, suptitle="interchange on remaining (probe direction; DAS: learned)"
    )


# ---------------------------------------------------------------------------- in the study


def stage(ws: Layout, config: KnownAnswersConfig) -> StageOutput:
    """The study's two models and, when the study trained it, the ADHD model's twin."""
    twin = ws.export("adhd", twin=True)
    result = run_known_answers(
        dataclasses.replace(
            config,
            standard=ws.export("standard"),
            adhd=ws.export("adhd"),
            twin=twin if twin.is_dir() and ws.model("adhd") == "adhd" else None,
            corpus=ws.corpus,
            out=ws.analysis("known_answers"),
        )
    )
    models: Summary = {}
    for m in result.answers.models:
        best = m.probes.get("remaining").best
        layer = next((x for x in m.interchange if x.layer == m.probes.layers[best]), None)
        models[m.name] = {
            "rule_agreement": m.rule_agreement,
            "probes": [dataclasses.asdict(v) for v in m.probes.scores],
            "interchange_best": None
            if layer is None
            else {
                "layer": layer.layer,
                "iia_flip": layer.probe.iia_flip,
                "sign_agreement": layer.probe.sign_agreement,
                "random_iia_flip": layer.random_iia_flip,
                "random_sign_agreement": layer.random_sign_agreement,
                "das": None if layer.das is None else dataclasses.asdict(layer.das),
                "das_cosine": layer.das_cosine,
            },
        }
    outputs = [result.json_path, result.probes_plot, result.interchange_plot]
    return StageOutput(outputs, {"layers": result.answers.layers, "models": models})


def section(summary: Summary, outputs: list[str]) -> Section:
    layers = summary["layers"]
    table = [["model", "variable", "metric", "best layer", "score", "shuffled", "selectivity"]]
    for name, m in summary["models"].items():
        for v in m["probes"]:
            if v.get("skipped"):
                table.append([name, v["variable"], v["metric"], "—", "skipped", "", ""])
                continue
            i = v["best"]
            table.append(
                [
                    name,
                    v["variable"],
                    v["metric"],
                    layers[i],
                    fmt(v["score"][i]),
                    fmt(v["control"][i]),
                    fmt(v["selectivity"][i]),
                ]
            )
    rows = []
    for name, m in summary["models"].items():
        rows.append((f"{name}: decides as the rule does", fmt(m["rule_agreement"])))
        best = m.get("interchange_best")
        if best:
            rows.append(
                (
                    f"{name}: interchange on remaining at {best['layer']} (IIA flip pairs, "
                    "sign agreement; random directions)",
                    f"{fmt(best['iia_flip'])}, {fmt(best['sign_agreement'])}; "
                    f"{fmt(best['random_iia_flip'])}, {fmt(best['random_sign_agreement'])}",
                )
            )
        if best and best.get("das"):
            rows.append(
                (
                    f"{name}: interchange at {best['layer']} along the learned (DAS) direction "
                    "(IIA flip pairs, sign agreement; |cosine| with the probe's)",
                    f"{fmt(best['das']['iia_flip'])}, {fmt(best['das']['sign_agreement'])}; "
                    f"{fmt(best['das_cosine'])}",
                )
            )
    adhd = summary["models"].get("adhd", {})
    rem = next((v for v in adhd.get("probes", []) if v["variable"] == "remaining"), None)
    read = (
        f"the ADHD model's best remaining probe reaches R² {fmt(rem['score'][rem['best']])} "
        f"at {layers[rem['best']]}"
        if rem and not rem.get("skipped")
        else "the remaining probe could not be fitted"
    )
    finding = (
        "Ridge probes for the break rule's variables at its decision points, beside "
        f"shuffled-label controls, on every model over the same ADHD sequences: {read}; "
        "the rows compare its interchange interventions with the rule's prediction."
    )
    return Section("Known answers: the break rule's variables", finding, rows=rows,
                   table=table, figures=figures(outputs))  # fmt: skip


ANALYSIS = Analysis(
    name="known-answers",
    description="probes and interchange interventions for the planted break rule",
    config=KnownAnswersConfig,
    stage=stage,
    section=section,
    after=("export",),
)
