"""Behaviour of a trained pair on held-out tasks: do the models decompose as trained?

For each model, sample one decomposition of every test-split task (the prompt
`<|task|> task <|steps|>`, KV-cached sampling in `model.generate`) and measure the
share that parse (end with `<|end|>`, no empty step), the share of parsed outputs that
contain at least one regulation action, the share of generated steps that are
regulation actions, the mean step count, and Spearman(task complexity, generated step
count). These are the quality targets of training (the ADHD model regulates, the
standard one does not, and both write more steps for more complex tasks, as the seed
model card reports) and the baseline every causal analysis compares against: a head
ablation (`analysis.ablation`) is read as a change of the same Spearman correlation.

In the study this stage runs right after training and its report section, "Models and
their behaviour", also shows each model's training run (validation loss, steps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from interpgpt.analysis.protocol import Analysis, Section, StageOutput, Summary, Workspace, fmt
from interpgpt.artifacts.load import load_model
from interpgpt.constants import VARIANTS, Variant
from interpgpt.corpus.build import is_regulation
from interpgpt.corpus.evalset import load_records
from interpgpt.io import provenance, write_json
from interpgpt.model.generate import Decomposition, GenerationConfig, sample_decompositions
from interpgpt.settings import at_least, inputs

BEHAVIOUR_JSON = "behaviour.json"
TRAINING_KEYS = ("val_loss", "steps", "tokens_per_second", "seconds")
"""What the behaviour stage copies from each training stage's summary for its section."""


@dataclass(frozen=True)
class BehaviourConfig:
    """Sampled decompositions of held-out tasks by both models of a pair
    (`interpgpt behaviour`, study `[behaviour]`)."""

    standard: Path = inputs.argument()
    """Run or export dir of the standard model."""
    adhd: Path = inputs.argument()
    """Run or export dir of the ADHD model."""
    corpus: Path = inputs.option()
    """Corpus dir; its test split supplies the held-out tasks and their complexity."""
    out: Path = inputs.option()
    """Output dir for behaviour.json."""
    limit: int | None = 150
    """Held-out tasks to decompose (None: all)."""
    temperature: float = 1.0
    """Sampling temperature (0: greedy)."""
    top_k: int | None = None
    """Top-k sampling cut-off (None: full distribution)."""
    seed: int = 0
    """Sampling seed."""
    max_new_tokens: int = 240
    """Generated tokens per task at most (ADHD decompositions run to ~150 tokens)."""
    examples_shown: int = 3
    """Sampled decompositions per model kept in the JSON for reading."""
    device: str = "auto"
    """auto, cpu or cuda."""

    def __post_init__(self) -> None:
        at_least(self, limit=1, temperature=0, top_k=1, max_new_tokens=1, examples_shown=0)

    @property
    def models(self) -> dict[Variant, Path]:
        """Model label -> run or export dir."""
        return {"standard": self.standard, "adhd": self.adhd}


@dataclass
class ModelBehaviour:
    n: int
    parse_rate: float
    """Share of outputs that end with <|end|> and have no empty step."""
    regulating_outputs: float
    """Share of parsed outputs with at least one regulation action."""
    regulation_step_share: float
    """Share of generated steps (parsed outputs) that are regulation actions."""
    mean_steps: float
    spearman_complexity_steps: float
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BehaviourResult:
    json_path: Path
    models: dict[str, ModelBehaviour]
    n_tasks: int = 0
    """Held-out tasks decomposed by each model."""

    @property
    def summary(self) -> dict[str, Any]:
        return {name: vars(b) for name, b in self.models.items()}


def summarise(outputs: list[Decomposition], complexity: list[int], shown: int) -> ModelBehaviour:
    parsed = [(d, c) for d, c in zip(outputs, complexity, strict=True) if d.parsed]
    steps = [s for d, _ in parsed for s in d.steps]
    counts = [len(d.steps) for d, _ in parsed]
    rho = spearmanr([c for _, c in parsed], counts).statistic if len(parsed) > 2 else float("nan")
    return ModelBehaviour(
        n=len(outputs),
        parse_rate=len(parsed) / max(len(outputs), 1),
        regulating_outputs=float(np.mean([any(map(is_regulation, d.steps)) for d, _ in parsed]))
        if parsed
        else 0.0,
        regulation_step_share=sum(map(is_regulation, steps)) / max(len(steps), 1),
        mean_steps=float(np.mean(counts)) if counts else 0.0,
        spearman_complexity_steps=float(rho),
        examples=[{"task": d.task, "steps": list(d.steps)} for d, _ in parsed[:shown]],
    )


def measure_behaviour(config: BehaviourConfig) -> BehaviourResult:
    """Sample one decomposition per held-out task from each model and summarise."""
    records = load_records(config.corpus, "standard", "test", config.limit)
    tasks = [r["task"] for r in records]
    complexity = [int(r["complexity"]) for r in records]
    generation = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_k=config.top_k,
        seed=config.seed,
        device=None if config.device == "auto" else config.device,
    )
    models: dict[str, ModelBehaviour] = {}
    for name, path in config.models.items():
        loaded = load_model(path)
        outputs = sample_decompositions(loaded.model, loaded.tokenizer, tasks, generation)
        models[name] = summarise(outputs, complexity, config.examples_shown)
    json_path = write_json(
        Path(config.out) / BEHAVIOUR_JSON,
        {"provenance": provenance(config), "n_tasks": len(tasks), "models": models},
    )
    return BehaviourResult(json_path, models, len(tasks))


# ---------------------------------------------------------------------------- in the study


def stage(ws: Workspace, config: BehaviourConfig) -> StageOutput:
    """Both trained models (run dirs) on the corpus's test tasks; the summary also carries
    each training run's headline numbers, which the section shows."""
    result = measure_behaviour(
        dataclasses.replace(
            config,
            standard=ws.run("standard"),
            adhd=ws.run("adhd"),
            corpus=ws.corpus,
            out=ws.analysis("behaviour"),
        )
    )
    training = {}
    for variant in VARIANTS:
        trained = ws.summary(f"train-{variant}")
        if trained:
            training[variant] = {key: trained.get(key) for key in TRAINING_KEYS}
    return StageOutput([result.json_path], {"models": result.summary, "training": training})


def section(summary: Summary, outputs: list[str]) -> Section:
    rows = []
    for variant, s in summary.get("training", {}).items():
        rows.append(
            (
                f"{variant} model",
                f"val loss {fmt(s['val_loss'])} after {s['steps']} steps, "
                f"{s['tokens_per_second']:,.0f} tokens/s, {s['seconds'] / 60:.1f} min",
            )
        )
    behaviour = summary.get("models", {})
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


ANALYSIS = Analysis(
    name="behaviour",
    description="sampled decompositions of held-out tasks",
    config=BehaviourConfig,
    stage=stage,
    section=section,
    after=("train-standard", "train-adhd"),
)
