"""Behaviour of a trained pair on held-out tasks: do the models decompose as trained?

For each model, sample decompositions of the test-split tasks and measure the
share that parse (end with `<|end|>`, no empty step), the share of outputs that
contain at least one regulation action, the share of generated steps that are
regulation actions, and Spearman(task complexity, generated step count). These
are the quality targets of training (the ADHD model regulates, the standard one
does not) and the baseline every causal analysis compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from interpgpt.analysis.data import load_records
from interpgpt.artifacts import load_model
from interpgpt.corpus import is_regulation
from interpgpt.generate import Decomposition, GenerationConfig, sample_decompositions
from interpgpt.io import provenance, write_json

BEHAVIOUR_JSON = "behaviour.json"


@dataclass
class BehaviourConfig:
    models: dict[str, Path]
    """Model label -> run or export dir (e.g. {"standard": ..., "adhd": ...})."""
    corpus: Path
    """Corpus dir; its test split supplies the held-out tasks and their complexity."""
    out: Path
    """Output dir for behaviour.json."""
    limit: int | None = 150
    """Held-out tasks to decompose (None: all)."""
    temperature: float = 1.0
    """Sampling temperature."""
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
    models = {}
    for name, path in config.models.items():
        loaded = load_model(path)
        outputs = sample_decompositions(loaded.model, loaded.tokenizer, tasks, generation)
        models[name] = summarise(outputs, complexity, config.examples_shown)
    json_path = write_json(
        Path(config.out) / BEHAVIOUR_JSON,
        {"provenance": provenance(config), "n_tasks": len(tasks), "models": models},
    )
    return BehaviourResult(json_path, models)
