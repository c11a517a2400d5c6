"""`interpgpt release build`: train the release through the study's own stages and write it.

The build runs the study's stages that a release satisfies (every stage with
`Analysis.from_release`: the training of the standard and ADHD models and of each one's
data-order twin, and the study's SAE stages) with what they read (corpus, tokenizer,
export), in a work dir laid out like a study dir, so a killed build resumes where it
stopped (training resumes from its checkpoint, bit-identically on CPU). It then measures
every model's behaviour on the held-out test tasks, checks it against the behaviour
targets (`analysis.behaviour.targets`), and writes the release: one Hugging Face folder
per model with its model card, the SAEs at the paths the study keeps them, and
`MANIFEST.json` (`interpgpt.artifacts.release`).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from interpgpt.analysis.behaviour.metrics import content_words, names_content, summarise
from interpgpt.analysis.behaviour.run import TABLE_HEADER, behaviour_of, held_out, table_rows
from interpgpt.analysis.behaviour.targets import check_targets
from interpgpt.analysis.protocol import Analysis
from interpgpt.artifacts import convert
from interpgpt.artifacts.load import LoadedModel, load_model
from interpgpt.artifacts.modelcard import ModelCard, ReleaseFacts, render_release_card
from interpgpt.artifacts.names import (
    GENERATION_CONFIG,
    HF_CONFIG,
    MODEL_CARD,
    MODEL_WEIGHTS,
    RUN_CONFIG,
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG,
    TOKENIZER_FILE,
)
from interpgpt.artifacts.release import (
    MANIFEST,
    MANIFEST_FORMAT,
    corpus_sha256,
    portable,
    tree_files,
    tree_sha256,
)
from interpgpt.constants import VARIANTS, model_name
from interpgpt.corpus.build import STATS_FILE, read_tasks
from interpgpt.corpus.evalset import load_records
from interpgpt.corpus.regulation import is_regulation
from interpgpt.errors import UserError
from interpgpt.io import (
    check_writable,
    config_hash,
    file_sha256,
    package_versions,
    read_json,
    to_jsonable,
    write_json,
    write_text,
)
from interpgpt.model.generate import GenerationConfig, sample_decompositions
from interpgpt.release.config import CHECK_TASKS, WORK_DIR
from interpgpt.study.config import StudyConfig, check_study_config
from interpgpt.study.pipeline import run_stages, stage_basis, study_stages
from interpgpt.study.workspace import Workspace

MODEL_FILES = (
    HF_CONFIG,
    MODEL_WEIGHTS,
    GENERATION_CONFIG,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG,
    SPECIAL_TOKENS_MAP,
)
"""A released model's folder: the Hugging Face files of its export (not the TL bundle or
the raw state dict, which `interpgpt export` makes from these) and its card."""


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    seconds: float


def release_stages(stages: list[Analysis[Any]]) -> list[Analysis[Any]]:
    """The stages a release holds (those with `from_release`) and every stage they read,
    in study order."""
    by_name = {s.name: s for s in stages}
    wanted: set[str] = set()
    todo = [s.name for s in stages if s.from_release is not None]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += list(by_name[name].after)
    return [s for s in stages if s.name in wanted]


def build_release(
    config: StudyConfig,
    out: Path,
    work: Path = WORK_DIR,
    console: Console | None = None,
    check_tasks: int = CHECK_TASKS,
) -> BuildResult:
    """Train (or resume) the release's stages in `work`, then write the release to `out`."""
    check_study_config(config)
    console = console or Console()
    if not config.twins:
        raise UserError("twins=false: the release ships each model's data-order twin")
    _check_out(out)
    check_writable(work, "--work")
    started = time.perf_counter()
    stages = release_stages(study_stages(config))
    ws = Workspace(work)
    write_json(ws.path("study_config.json"), config.to_json())
    records = run_stages(stages, config, ws, set(), console)
    bases: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    for stage in stages:
        bases[stage.name] = stage_basis(stage, config.section(stage.settings_key), hashes)
        hashes[stage.name] = config_hash(bases[stage.name])
    tmp = out.parent / f".{out.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest_stages = {n: {"hash": hashes[n], **b} for n, b in bases.items()}
        models = _write_models(config, ws, stages, tmp, out, check_tasks, manifest_stages)
        for stage in stages:
            if stage.from_release is not None and not stage.name.startswith("train-"):
                manifest_stages[stage.name] |= _write_saes(records[stage.name], ws, tmp)
        write_text(tmp / MODEL_CARD, _readme(out, models, manifest_stages))
        manifest = {
            "format": MANIFEST_FORMAT,
            "commit": _commit(),
            "study": config.to_json(),
            "inputs": {
                "corpus_sha256": corpus_sha256(ws.corpus),
                "tokenizer_sha256": file_sha256(ws.tokenizer),
            },
            "check": {
                "tasks": _check_set(ws.corpus, check_tasks),
                "max_new_tokens": config.section("behaviour").max_new_tokens,
            },
            "build": {
                "wall_seconds": round(sum(r.get("seconds", 0.0) for r in records.values()), 1),
                "this_run_seconds": round(time.perf_counter() - started, 1),
                **_machine(),
            },
            "models": models,
            "stages": manifest_stages,
        }
        manifest["files"] = tree_sha256(tmp)
        write_json(tmp / MANIFEST, manifest)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BuildResult(out, manifest, time.perf_counter() - started)


def _check_out(out: Path) -> None:
    check_writable(out, "--out")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(f"--out {out}: exists and is not a release; refusing to replace it")


# ----------------------------------------------------------------------------- models


def _check_set(corpus: Path, n: int) -> list[dict[str, Any]]:
    """The first `n` unseen-family test tasks (task text and complexity)."""
    tasks = read_tasks(corpus)
    rows = []
    for record in load_records(corpus, "standard", "test"):
        info = tasks.get(record["task_id"])
        if info is not None and info.family_held_out:
            rows.append({"task": record["task"], "complexity": int(record["complexity"])})
    return rows[:n]


def check_behaviour(
    loaded: LoadedModel, check: list[dict[str, Any]], max_new_tokens: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Greedy decompositions of the check tasks: their parse, on-topic and object-mention
    rates, and the tasks it got wrong (unparsed, or no step names the task)."""
    generation = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    outputs = sample_decompositions(
        loaded.model, loaded.tokenizer, [c["task"] for c in check], generation
    )
    measured = summarise(outputs, [c["complexity"] for c in check], 0)
    wrong = []
    for d in outputs:
        named = any(
            names_content(s, content_words(d.task)) for s in d.steps if not is_regulation(s)
        )
        if not d.parsed or not named:
            why = "does not parse" if not d.parsed else "no step names the task"
            wrong.append({"task": d.task, "steps": list(d.steps), "why": why})
    keys = ("n", "parse_rate", "on_topic_rate", "object_mention_rate")
    return {k: getattr(measured, k) for k in keys}, wrong


def _write_models(
    config: StudyConfig,
    ws: Workspace,
    stages: list[Analysis[Any]],
    tmp: Path,
    out: Path,
    check_tasks: int,
    manifest_stages: dict[str, Any],
) -> dict[str, Any]:
    """Each trained model's folder and card; its manifest entry by name."""
    behaviour = config.section("behaviour")
    held = held_out(ws.corpus, behaviour.limit, behaviour.auroc_tasks)
    generation = GenerationConfig(
        max_new_tokens=behaviour.max_new_tokens,
        temperature=behaviour.temperature,
        top_k=behaviour.top_k,
        seed=behaviour.seed,
        batch_size=behaviour.batch_size,
    )
    check = _check_set(ws.corpus, check_tasks)
    machine = _machine()
    models: dict[str, Any] = {}
    for stage in stages:
        if not stage.name.startswith("train-"):
            continue
        name = stage.name.removeprefix("train-")
        record = ws.records[stage.name]
        run = read_json(ws.path("runs", name, RUN_CONFIG))
        folder = tmp / name
        folder.mkdir()
        for file in MODEL_FILES:
            shutil.copyfile(ws.path("export", name, file), folder / file)
        loaded = load_model(ws.path("runs", name))
        measured = to_jsonable(behaviour_of(loaded, held, generation, behaviour.examples_shown))
        checked, wrong = check_behaviour(loaded, check, behaviour.max_new_tokens)
        targets = check_targets(run["variant"], measured)
        entry = {
            "variant": run["variant"],
            "twin": name.endswith("-twin"),
            "seed": run["train"]["seed"],
            "data_seed": run["data_seed"],
            "init_sha256": run["init_sha256"],
            "steps": run["steps"],
            "tokens": run["tokens_seen"],
            "val_loss": run["val_loss"],
            "wall_seconds": round(record["seconds"], 1),
            "resumed_from_step": record["summary"].get("resumed_from", 0),
            "cpu": machine["cpu"],
            "torch": run["provenance"]["versions"].get("torch"),
            "threads": run["torch_threads"],
            "weights_sha256": file_sha256(folder / MODEL_WEIGHTS),
            "behaviour": measured,
            "targets": targets,
            "check": checked,
            "run_config": portable(run, ws.root),
        }
        write_text(folder / MODEL_CARD, _card(loaded, run, entry, name, out, ws, wrong))
        models[name] = entry
        files = [f"{name}/{f}" for f in (*MODEL_FILES, MODEL_CARD)]
        manifest_stages[stage.name] |= {
            "model": name,
            "summary": portable(record["summary"], ws.root),
            "outputs": [f"runs/{name}/{MODEL_WEIGHTS}"],
            "files": files,
        }
    return models


def _counterpart(name: str) -> str:
    """A model's pair partner: the other variant, or for a twin the model it twins."""
    if name.endswith("-twin"):
        return name.removesuffix("-twin")
    return model_name(VARIANTS[1] if name.startswith(VARIANTS[0]) else VARIANTS[0])


def _card(
    loaded: LoadedModel,
    run: dict[str, Any],
    entry: dict[str, Any],
    name: str,
    out: Path,
    ws: Workspace,
    wrong: list[dict[str, Any]],
) -> str:
    paths = {"corpus", "tokenizer", "out"}
    card = ModelCard(
        cfg=loaded.model.cfg,
        n_parameters=convert.count_parameters(loaded.model),
        variant=run["variant"],
        val_loss=run["val_loss"],
        location=f"{out.name}/{name}",
        train={k: v for k, v in run["train"].items() if k not in paths},
        corpus_stats=read_json(ws.corpus / STATS_FILE),
        tokenizer_vocab=loaded.tokenizer.vocab_size,
        steps=run["steps"],
        tokens_seen=run["tokens_seen"],
    )
    budget = [
        ("Optimizer steps", f"{entry['steps']:,}"),
        ("Training tokens", f"{entry['tokens']:,}"),
        ("Wall time", f"{entry['wall_seconds'] / 60:.1f} min"),
        ("CPU", entry["cpu"]),
        ("Torch threads", entry["threads"]),
        ("torch", entry["torch"]),
        ("Init seed / data seed", f"{entry['seed']} / {entry['data_seed']}"),
        ("Init sha256", f"`{entry['init_sha256'][:16]}…`"),
    ]
    facts = ReleaseFacts(
        name=name,
        counterpart=_counterpart(name),
        budget=budget,
        behaviour_header=list(TABLE_HEADER),
        behaviour_rows=table_rows({name: entry["behaviour"]}),
        targets=entry["targets"],
        wrong=wrong[:3],
    )
    return render_release_card(card, facts)


# ----------------------------------------------------------------------------- SAEs


def _write_saes(record: dict[str, Any], ws: Workspace, tmp: Path) -> dict[str, Any]:
    """Copy an SAE stage's files to the same relative paths in the release; its manifest
    entry's outputs, files and summary."""
    root = ws.root.resolve()
    outputs = [Path(p).resolve().relative_to(root).as_posix() for p in record["outputs"]]
    files = list(outputs)
    for sae in record["summary"]["saes"]:
        folder = Path(sae["path"]).resolve()
        files += [(folder / f).relative_to(root).as_posix() for f in tree_files(folder)]
    for rel in files:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, tmp / rel)
    return {"summary": portable(record["summary"], root), "outputs": outputs, "files": files}


# ----------------------------------------------------------------------------- provenance


def _commit() -> dict[str, Any]:
    """The repository's commit and whether its work tree had changes (None outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"sha": None, "dirty": None}
    return {"sha": head, "dirty": bool(status.strip())}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
    }


def _readme(out: Path, models: dict[str, Any], stages: dict[str, Any]) -> str:
    """The release's own README: what is in it and the commands that load and check it."""
    lines = [
        "# InterpGPT matched-pair release",
        "",
        "Four models trained with one recipe from one initial state (standard, ADHD, and",
        "the data-order twin of each), each a Hugging Face `LlamaForCausalLM` folder with",
        "its model card, and the study's TopK SAEs in SAELens layout. `MANIFEST.json`",
        "records how each was made and the sha256 of every file.",
        "",
        "| model | variant | steps | val loss | init sha256 |",
        "|---|---|---|---|---|",
    ]
    for name, m in models.items():
        loss = f"{m['val_loss']:.4f}" if m["val_loss"] is not None else "n/a"
        lines.append(
            f"| [`{name}/`]({name}/README.md) | {m['variant']} | {m['steps']:,} | {loss} "
            f"| `{m['init_sha256'][:12]}` |"
        )
    saes = [f for s in stages.values() for f in s.get("files", []) if f.endswith("cfg.json")]
    lines += ["", "SAEs (`SAE.load_from_disk(folder)`):", ""]
    lines += [f"- `{Path(f).parent.as_posix()}/`" for f in saes]
    lines += [
        "",
        "```bash",
        f"interpgpt release verify {out.name}   # every sha256, three loading paths, behaviour",
        f"interpgpt export {out.name}/adhd --out export/adhd   # + TransformerLens bundle",
        "```",
    ]
    return "\n".join(lines) + "\n"
