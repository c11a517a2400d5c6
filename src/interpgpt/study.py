"""`interpgpt study`: the whole matched-pair study as a resumable pipeline of stages.

corpus → tokenizer → train both models → export → phase-1 analyses → SAEs →
feature diff → steering → probes → report. Each stage writes its artifacts under
the study directory and a record `stages/<name>.json` holding the hash of the
config that produced them (its own config section plus the hashes of the stages
it reads). A stage whose record matches the current hash and whose outputs all
exist is skipped, so a killed study resumes where it stopped; `--force STAGE`
reruns one stage (and, through the hash chain, everything downstream of it).
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from interpgpt.io import UserError, config_hash, read_json, write_json

STAGE_RECORDS = "stages"


@dataclass
class CorpusSection:
    tasks: int = 2400
    """Tasks in the pool (split 80/10/10 by task)."""
    examples_per_task: int = 24
    """Phrasings sampled per task and variant."""
    regulation_rate: float | None = None
    """Share of ADHD steps that are regulation actions (None: the corpus default)."""


@dataclass
class TrainSection:
    steps: int | None = None
    """Optimizer steps per model (None: the preset's default budget)."""
    batch_size: int | None = None
    """Sequences per step (None: the preset's default)."""
    lr: float | None = None
    """Peak learning rate (None: the preset's default)."""


@dataclass
class AnalysisSection:
    eval_tasks: int = 300
    """Held-out test tasks used by the teacher-forced analyses (head-swap, logit lens, probes)."""
    ablation_tasks: int = 150
    """Held-out tasks whose decompositions are generated for the ablation metric."""
    ablation_seeds: int = 5
    """Sampling seeds of the ablation experiment."""
    ablation_heads: str = "auto"
    """Heads to ablate in the ADHD model, e.g. "L3H5"; auto = the strongest moved head."""
    patch_pairs: int = 16
    """Clean/corrupted prompt pairs for activation patching."""


@dataclass
class SAESection:
    std_layers: tuple[int, ...] = (0, 1, 2, 3)
    """Layers of the standard model that get an SAE (the seed card's set)."""
    adhd_layers: tuple[int, ...] = (1, 2, 3)
    """Layers of the ADHD model that get an SAE."""
    k: int = 40
    """Active latents per token (TopK)."""
    d_sae: int | None = None
    """Dictionary size (None: the seed card's expansion, 8 x d_model = 4096 for `full`)."""
    tokens: int | None = None
    """Training activations per SAE (None: the trainer's default)."""
    diff_layer: int = 2
    """Layer of the ADHD SAE used for the cross-model feature diff and steering."""
    n_null: int = 20
    """Random directions in each steering null."""


@dataclass
class StudyConfig:
    """Everything that determines the study's results. `--set section.field=value` overrides."""

    preset: str = "small"
    """Model preset of both models: full, small or tiny."""
    seed: int = 0
    """Seed of the corpus, both models' shared init, and every sampled analysis."""
    device: str = "auto"
    """Where models run: auto (CUDA when present), cpu or cuda."""
    corpus: CorpusSection = field(default_factory=CorpusSection)
    train: TrainSection = field(default_factory=TrainSection)
    analysis: AnalysisSection = field(default_factory=AnalysisSection)
    sae: SAESection = field(default_factory=SAESection)


def _coerce(value: str, hint: Any, key: str) -> Any:
    """Parse a `--set` string into the field's declared (resolved) type."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null", ""):
            return None
        hint, origin = args[0], typing.get_origin(args[0])
    try:
        if origin is tuple:
            return tuple(int(v) for v in value.split(",") if v.strip())
        if hint is bool:
            return value.lower() in ("1", "true", "yes", "on")
        return hint(value)
    except ValueError:
        raise UserError(f"--set {key}={value}: expected a value of type {hint}") from None


def apply_overrides(config: Any, overrides: dict[str, Any], source: str) -> Any:
    """Set dotted keys (`sae.k`) on a nested dataclass; unknown keys are UserErrors."""
    for key, value in overrides.items():
        target, *rest = key.split(".", 1)
        fields = {f.name: f for f in dataclasses.fields(config)}
        hints = typing.get_type_hints(type(config))
        if target not in fields:
            raise UserError(f"{source}: unknown study setting {key!r}; known: {sorted(fields)}")
        if rest:  # "sae.k" = 32 is the section "sae" with {"k": 32}
            value = {rest[0]: value}
        if isinstance(value, dict):
            apply_overrides(getattr(config, target), value, source)
        else:
            if isinstance(value, str):
                value = _coerce(value, hints[target], key)
            elif isinstance(value, list):
                value = tuple(value)
            setattr(config, target, value)
    return config


def load_study_config(
    config_file: Path | None, settings: list[str], preset: str | None
) -> StudyConfig:
    config = StudyConfig()
    if config_file is not None:
        if not config_file.is_file():
            raise UserError(f"{config_file}: study config not found")
        try:
            data = tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"{config_file}: not valid TOML ({err})") from None
        apply_overrides(config, data, str(config_file))
    if preset is not None:
        config.preset = preset
    for setting in settings:
        if "=" not in setting:
            raise UserError(f"--set {setting}: expected key=value, e.g. --set sae.k=32")
        key, value = setting.split("=", 1)
        apply_overrides(config, {key.strip(): value.strip()}, "--set")
    return config


@dataclass
class Stage:
    """One step of the study: what it reads, what config it depends on, how it runs."""

    name: str
    description: str
    run: Callable[[StudyContext], StageOutput]
    config: Callable[[StudyConfig], Any]
    after: tuple[str, ...] = ()
    always: bool = False
    """Rerun every time (the report: cheap, and it reads every other stage)."""


@dataclass
class StageOutput:
    outputs: list[Path]
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyContext:
    config: StudyConfig
    out: Path
    console: Console
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def summary(self, stage: str) -> dict[str, Any]:
        return self.records.get(stage, {}).get("summary", {})


@dataclass
class StudyResult:
    out: Path
    records: dict[str, dict[str, Any]]
    seconds: float


def stage_hash(stage: Stage, config: StudyConfig, hashes: dict[str, str]) -> str:
    upstream = {name: hashes[name] for name in stage.after}
    shared = {"preset": config.preset, "seed": config.seed}
    return config_hash({"stage": stage.config(config), "shared": shared, "upstream": upstream})


def is_current(record_file: Path, digest: str) -> bool:
    if not record_file.is_file():
        return False
    record = read_json(record_file)
    return record.get("hash") == digest and all(Path(p).exists() for p in record["outputs"])


def status_table(stages: list[Stage], status: dict[str, str], seconds: dict[str, float]) -> Table:
    table = Table(title="interpgpt study", show_lines=False)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("what it does")
    styles = {"done": "green", "skipped": "cyan", "running": "yellow", "pending": "dim"}
    for stage in stages:
        state = status[stage.name]
        took = f"{seconds[stage.name]:.0f}s" if stage.name in seconds else ""
        table.add_row(stage.name, f"[{styles[state]}]{state}[/]", took, stage.description)
    return table


def run_stages(
    stages: list[Stage], ctx: StudyContext, force: set[str]
) -> dict[str, dict[str, Any]]:
    """Run the stages in order, skipping the current ones; return every stage's record."""
    unknown = force - {s.name for s in stages}
    if unknown:
        raise UserError(
            f"--force {sorted(unknown)}: no such stage; stages: {[s.name for s in stages]}"
        )
    hashes: dict[str, str] = {}
    status = {s.name: "pending" for s in stages}
    seconds: dict[str, float] = {}
    for stage in stages:
        digest = stage_hash(stage, ctx.config, hashes)
        hashes[stage.name] = digest
        record_file = ctx.path(STAGE_RECORDS, f"{stage.name}.json")
        if not stage.always and stage.name not in force and is_current(record_file, digest):
            ctx.records[stage.name] = read_json(record_file)
            status[stage.name] = "skipped"
            continue
        status[stage.name] = "running"
        ctx.console.print(status_table(stages, status, seconds))
        started = time.perf_counter()
        output = stage.run(ctx)
        seconds[stage.name] = time.perf_counter() - started
        record = {
            "hash": digest,
            "outputs": [str(p) for p in output.outputs],
            "summary": output.summary,
            "seconds": seconds[stage.name],
        }
        write_json(record_file, record)
        ctx.records[stage.name] = record
        status[stage.name] = "done"
    ctx.console.print(status_table(stages, status, seconds))
    return ctx.records


def check_study_config(config: StudyConfig) -> None:
    """Refuse settings that could only fail late (after training), naming the setting."""
    from interpgpt.model import PRESETS

    if config.preset not in PRESETS:
        raise UserError(f"--preset {config.preset!r}: choose one of {sorted(PRESETS)}")
    n_layer = PRESETS[config.preset].n_layer
    for name in ("std_layers", "adhd_layers"):
        bad = [layer for layer in getattr(config.sae, name) if not 0 <= layer < n_layer]
        if bad:
            raise UserError(
                f"sae.{name}={bad}: the {config.preset} preset has layers 0..{n_layer - 1}"
            )
    if config.sae.diff_layer not in config.sae.adhd_layers:
        raise UserError(
            f"sae.diff_layer={config.sae.diff_layer} must be one of sae.adhd_layers "
            f"{list(config.sae.adhd_layers)} (the diff uses the ADHD SAE at that layer)"
        )


def run_study(
    config: StudyConfig, out: Path, force: set[str] | None = None, console: Console | None = None
) -> StudyResult:
    """Run (or resume) the study into `out`; returns every stage's record."""
    from interpgpt.stages import STAGES

    check_study_config(config)
    console = console or Console()
    ctx = StudyContext(config=config, out=Path(out), console=console)
    write_json(ctx.path("study_config.json"), config)
    started = time.perf_counter()
    records = run_stages(STAGES, ctx, force or set())
    return StudyResult(Path(out), records, time.perf_counter() - started)
