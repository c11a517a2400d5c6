"""Speedrun: idle minutes of this machine until a model of the pair meets the behaviour targets.

The question is not a loss but the study's own behaviour targets (`TARGETS`) on held-out
test tasks of seen and unseen families, measured with the behaviour stage's metrics
(`analysis.behaviour.run.behaviour_of`: greedy decoding, on-topic, object mention,
Spearman, parse, regulation, onset AUROC against the Bayes value).

Two kinds of run, both on the study's default corpus and tokenizer (`data`):

- `levers`: each recipe of `RECIPES` trains the standard model for the same idle-machine
  budget (`--minutes`), and is judged at its end: an A/B at equal wall-clock.
- `curve`: one recipe and variant, a budget in minutes, evaluated every `--every`
  minutes; it stops at the first evaluation where every target holds.

Minutes are idle minutes. Before a run trains, its seconds per step are measured on its
own first batches (`CALIBRATION_STEPS`, after `WARMUP_STEPS`) and the run's step budget
is minutes x 60 / that; a run should be started on an idle machine for this to mean
anything. Training gives the same bytes whatever else runs (the thread count is fixed
and recorded), so the quality reached at a step count does not depend on load, and the
minutes reported are steps x the calibrated seconds per step. The seconds the run itself
spent training are recorded beside them, with the load average at each evaluation.
Evaluation time is not counted.

`report` (also run after each kind) writes the speedrun section of bench/results.md and
the curves, bench/speedrun.png. Every run's records live in its run dir under `--root`
as speedrun.json, written after each evaluation: an interrupted `make speedrun` resumes
each run from its checkpoint and skips finished ones.

    python bench/speedrun.py levers --minutes 5 --seeds 0
    python bench/speedrun.py curve --recipe muon-wsd --variant adhd --minutes 30 --every 5
    python bench/speedrun.py report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import BENCH_DIR, RESULTS, machine, markers, now, write_section
from matplotlib.figure import Figure

from interpgpt.analysis.behaviour.run import HeldOut, behaviour_of, held_out
from interpgpt.analysis.behaviour.targets import BOTH, TARGETS, check_targets
from interpgpt.analysis.behaviour.targets import auroc_gap as _auroc_gap
from interpgpt.analysis.behaviour.targets import metric_of as _metric
from interpgpt.artifacts.load import LoadedModel, load_safetensors
from interpgpt.artifacts.names import CHECKPOINT
from interpgpt.corpus.build import build_corpus
from interpgpt.corpus.tokenizer import TaskTokenizer, train_tokenizer
from interpgpt.device import bf16_native
from interpgpt.io import to_jsonable
from interpgpt.model.config import GenerationConfig
from interpgpt.study.config import StudyConfig
from interpgpt.train.batches import grouped_indices, load_splits
from interpgpt.train.config import TrainConfig
from interpgpt.train.distributed import init_distributed
from interpgpt.train.loop import start_state, train
from interpgpt.train.recipe import autocast_enabled, initial_model

PLOT = BENCH_DIR / "speedrun.png"
NUMERICS = {True: "bf16 autocast", False: "fp32"}
"""How a run trains (`TrainConfig.autocast` where the CPU has native bf16); runs recorded
before this field trained in fp32 (on an EPYC without native bf16)."""
RECORD = "speedrun.json"
SECTION = "speedrun"  # its section of results.md, between <!-- speedrun:begin/end -->
BEGIN, END = markers(SECTION)
WARMUP_STEPS, CALIBRATION_STEPS = 48, 48


# ----------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """A training recipe: TrainConfig fields that differ from the speedrun's base."""

    words: str
    """What it is, for the table."""
    settings: dict[str, Any]


BASE = {"optimizer": "adamw", "schedule": "cosine"}
"""The recipe the pair was trained with before the speedrun (TrainConfig's old defaults)."""

RECIPES: dict[str, Recipe] = {
    "adamw-cosine": Recipe("AdamW, cosine decay (before the speedrun)", {}),
    "muon-cosine": Recipe("Muon on block matrices + AdamW, cosine", {"optimizer": "muon"}),
    "adamw-wsd": Recipe("AdamW, warmup-stable-decay", {"schedule": "wsd"}),
    "muon-wsd": Recipe(
        "Muon + AdamW, warmup-stable-decay", {"optimizer": "muon", "schedule": "wsd"}
    ),
    "muon-wsd-lr6e-3": Recipe(
        "Muon + AdamW, wsd, lr 6e-3", {"optimizer": "muon", "schedule": "wsd", "lr": 6e-3}
    ),
    "muon-wsd-lr1.5e-3": Recipe(
        "Muon + AdamW, wsd, lr 1.5e-3", {"optimizer": "muon", "schedule": "wsd", "lr": 1.5e-3}
    ),
    "muon-wsd-b64": Recipe(
        "Muon + AdamW, wsd, batch 64", {"optimizer": "muon", "schedule": "wsd", "batch_size": 64}
    ),
    "muon-wsd-b16": Recipe(
        "Muon + AdamW, wsd, batch 16", {"optimizer": "muon", "schedule": "wsd", "batch_size": 16}
    ),
    "muon-wsd-d192": Recipe(
        "Muon + AdamW, wsd, d_model 192 (d_head 24, d_mlp 512)",
        {"optimizer": "muon", "schedule": "wsd", "d_model": 192, "d_mlp": 512},
    ),
    "muon-wsd-d96": Recipe(
        "Muon + AdamW, wsd, d_model 96 (d_head 12, d_mlp 256)",
        {"optimizer": "muon", "schedule": "wsd", "d_model": 96, "d_mlp": 256},
    ),
}


# ----------------------------------------------------------------------------- targets
# `TARGETS` and `check_targets` live in `interpgpt.analysis.behaviour.targets` (the release
# build checks its models against them too).


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Data:
    corpus: Path
    tokenizer: Path
    held: HeldOut


def prepare_data(root: Path, limit: int, auroc_tasks: int) -> Data:
    """The study's default corpus and tokenizer (built once under `root/data`), and the
    held-out test tasks every evaluation reads."""
    study = StudyConfig()
    corpus, tokenizer = root / "data" / "corpus", root / "data" / "tokenizer.json"
    if not (corpus / "tasks.jsonl").is_file():
        build_corpus(dataclasses.replace(study.section("corpus"), out=corpus))
    if not tokenizer.is_file():
        train_tokenizer(
            dataclasses.replace(study.section("tokenizer"), corpus=corpus, out=tokenizer)
        )
    return Data(corpus, tokenizer, held_out(corpus, limit, auroc_tasks))


# ----------------------------------------------------------------------------- a run


def run_config(
    data: Data, recipe: str, variant: str, seed: int, out: Path, preset: str
) -> TrainConfig:
    settings = {**BASE, **RECIPES[recipe].settings}
    return TrainConfig(
        corpus=data.corpus,
        tokenizer=data.tokenizer,
        out=out,
        variant=variant,  # type: ignore[arg-type]
        preset=preset,
        seed=seed,
        n_samples=0,
        progress=False,
        resume=True,
        **settings,
    )


def run_dir(root: Path, kind: str, recipe: str, variant: str, seed: int) -> Path:
    return root / kind / f"{recipe}-{variant}-s{seed}"


def seconds_per_step(config: TrainConfig, autocast: bool | None = None) -> float:
    """Mean seconds of the run's own optimizer steps `WARMUP_STEPS` to `+ CALIBRATION_STEPS`,
    in this process, on its current load. The warm-up spans three length-grouping windows:
    each batch width is a new shape whose kernels and buffers are built on first use (a
    first calibration with 3 warm-up steps measured 0.76 s a step, a later one of the same
    recipe 0.53). `autocast` forces bf16 autocast on or off (None: the run's own, bf16
    where native); on, it autocasts even where bf16 is emulated, as every CPU run did
    before `device.bf16_native`."""
    config = dataclasses.replace(config, steps=config.steps or 1000).resolved()
    dist = init_distributed(config.device)
    tokenizer = TaskTokenizer.from_file(config.tokenizer)
    train_set, val_set = load_splits(config.corpus, config.variant, tokenizer)
    model = initial_model(config).to(dist.device)
    state = start_state(model, config, dist, tokenizer, train_set, val_set)
    if autocast is not None:
        state.stepper.autocast = autocast
    times = []
    for k in range(WARMUP_STEPS + CALIBRATION_STEPS):
        start = time.perf_counter()
        state.train_step()
        if k >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return statistics.fmean(times)


THROUGHPUT = "throughput.json"


def pad_share(data: Data, variant: str, config: TrainConfig, steps: int = 480) -> float:
    """Share of the padded batch positions of the first `steps` batches that are padding:
    the most that packing sequences (no pad compute) could save."""
    assert config.batch_size is not None
    tokenizer = TaskTokenizer.from_file(data.tokenizer)
    train_set, _ = load_splits(data.corpus, variant, tokenizer)  # type: ignore[arg-type]
    n_ctx = initial_model(config).cfg.n_ctx
    lengths = [min(n, n_ctx + 1) - 1 for n in train_set.lengths]
    real = padded = 0
    for step in range(steps):
        rows = [
            lengths[k]
            for k in grouped_indices(
                config.data_seed or 0,
                step,
                config.batch_size,
                train_set.lengths,
                config.group_by_length,
            )
        ]
        real, padded = real + sum(rows), padded + max(rows) * len(rows)
    return 1 - real / padded


def pair_speedup(one: float, side_by_side: list[float]) -> float:
    """Steps a second of processes side by side (their seconds per step) over those of one
    process at the machine's threads (`one`): the pair's speed-up over training one model
    after the other."""
    return sum(1 / s for s in side_by_side) * one


def throughput(data: Data, root: Path, recipe: str) -> dict[str, Any]:
    """Levers that change seconds per step only, measured now (start it on an idle
    machine): AdamW with bf16 autocast forced on against fp32 (bf16 native or emulated,
    as the record says), and the pair as two single-thread processes side by side instead
    of one two-thread process after the other."""
    found: dict[str, Any] = {"machine": machine(), "recipe": recipe, "measured": now()}
    for variant in BOTH:
        base = run_config(data, recipe, variant, 0, root / "throughput", "small")
        old = run_config(data, "adamw-cosine", variant, 0, root / "throughput", "small")
        threads = torch.get_num_threads()
        row: dict[str, Any] = {
            "threads": threads,
            "seconds_per_step": seconds_per_step(base),
            "bf16_native": bf16_native(torch.device("cpu")),
            "adamw_fp32": seconds_per_step(old, autocast=False),
            "adamw_bf16": seconds_per_step(old, autocast=True),
        }
        side = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--root",
                    str(root),
                    "sps",
                    "--recipe",
                    recipe,
                    "--variant",
                    variant,
                    "--threads",
                    "1",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        row["side_by_side_1_thread"] = [float(p.communicate()[0].split()[-1]) for p in side]
        row["side_by_side_speedup"] = pair_speedup(
            row["seconds_per_step"], row["side_by_side_1_thread"]
        )
        row["pad_share"] = pad_share(data, variant, base.resolved())
        found[variant] = row
        print(variant, json.dumps(row), flush=True)
    write_record(root, found, THROUGHPUT)
    return found


def evaluate(config: TrainConfig, data: Data, batch_size: int) -> dict[str, Any]:
    """The behaviour metrics of the run's checkpoint, per subset (JSON-able)."""
    config = config.resolved()
    model = initial_model(config)
    weights = load_safetensors(config.out / CHECKPOINT)
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
    )
    model.eval()
    loaded = LoadedModel(
        model, TaskTokenizer.from_file(config.tokenizer), config.out, config.variant, config.variant
    )
    generation = GenerationConfig(max_new_tokens=240, temperature=0.0, batch_size=batch_size)
    return to_jsonable(behaviour_of(loaded, data.held, generation, shown=2))


def read_record(out: Path) -> dict[str, Any] | None:
    path = out / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(out: Path, record: dict[str, Any], name: str = RECORD) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out / name)


def calibrated(
    data: Data,
    out: Path,
    base: TrainConfig,
    *,
    kind: str,
    recipe: str,
    minutes: float,
    steps: int | None = None,
) -> dict[str, Any]:
    """The run's record; a new run's is made here, with its seconds per step measured now
    and its step budget (`steps`, or `minutes` of those)."""
    record = read_record(out)
    if record is not None:
        return record
    sps = seconds_per_step(base)
    record = {
        "kind": kind,
        "recipe": recipe,
        "words": RECIPES[recipe].words,
        "settings": {**BASE, **RECIPES[recipe].settings},
        "variant": base.variant,
        "seed": base.seed,
        "preset": base.preset,
        "minutes_budget": minutes,
        "seconds_per_step": sps,
        "steps": steps or max(1, round(minutes * 60 / sps)),
        "machine": machine(),
        "numerics": NUMERICS[autocast_enabled(base, torch.device("cpu"))],
        "torch_threads": torch.get_num_threads(),
        "load_at_calibration": os.getloadavg()[0],
        "n_tasks": data.held.n_tasks,
        "started": now(),
        "evals": [],
        "done": False,
    }
    write_record(out, record)
    return record


def recalibrate(data: Data, root: Path) -> None:
    """Measure again, in this process, the seconds per step of every run under `root`, once
    per recipe, variant and seed, and keep the new figure as `seconds_per_step_idle`
    (with the load average then): for runs calibrated while something else ran. Their
    step budgets stay as they were; the minutes reported use the new figure."""
    for path in sorted(root.glob(f"*/*/{RECORD}")):
        record = json.loads(path.read_text())
        base = run_config(
            data,
            record["recipe"],
            record["variant"],
            record["seed"],
            path.parent / "calibrate",
            record["preset"],
        )
        load = os.getloadavg()[0]
        record["seconds_per_step_idle"] = seconds_per_step(base)
        record["load_at_recalibration"] = load
        write_record(path.parent, record)
        print(
            f"{path.parent.name}: {record['seconds_per_step']:.3f} -> "
            f"{record['seconds_per_step_idle']:.3f} s/step (load {load:.2f})",
            flush=True,
        )


def idle_seconds_per_step(record: dict[str, Any]) -> float:
    return record.get("seconds_per_step_idle") or record["seconds_per_step"]


def minutes(record: dict[str, Any], evaluation: dict[str, Any]) -> float:
    """Idle minutes of training up to an evaluation."""
    return evaluation["step"] * idle_seconds_per_step(record) / 60


def speedrun(
    data: Data,
    *,
    kind: str,
    recipe: str,
    variant: str,
    seed: int,
    minutes: float,
    every: float | None,
    root: Path,
    preset: str = "small",
    eval_batch: int = 64,
    steps: int | None = None,
) -> dict[str, Any]:
    """One run: calibrate, train for `minutes` of idle time (or exactly `steps`), evaluate
    every `every` minutes (None: at the end only) and stop at the first evaluation where
    every target holds."""
    out = run_dir(root, kind, recipe, variant, seed)
    base = run_config(data, recipe, variant, seed, out / "run", preset)
    record = calibrated(data, out, base, kind=kind, recipe=recipe, minutes=minutes, steps=steps)
    if record.get("done"):
        return record
    steps = record["steps"]
    every_steps = steps if every is None else max(1, round(steps * every / minutes))
    # A lever run (one evaluation, at its end) checkpoints every 100 steps, so a killed one
    # loses little; a curve checkpoints at its evaluations, which read the checkpoint.
    checkpoints = every_steps if every is not None else min(steps, 100)
    config = dataclasses.replace(
        base, steps=steps, eval_every=every_steps, checkpoint_every=checkpoints
    )
    cfg = config.resolved()
    params = sum(p.numel() for p in initial_model(cfg).parameters())
    done_steps = record["evals"][-1]["step"] if record["evals"] else 0
    while not record["done"]:
        # The last segment absorbs the rounding: 3,213 steps every 803 evaluate at 3,213,
        # not at 3,212 and again one step later.
        stop = done_steps + every_steps
        stop = steps if steps - stop < every_steps / 2 else stop
        started = time.perf_counter()
        result = train(dataclasses.replace(config, stop_after_steps=stop))
        behaviour = evaluate(config, data, eval_batch)
        met = check_targets(variant, behaviour)
        done_steps = result.steps
        record["evals"].append(
            {
                "step": done_steps,
                "tokens": result.tokens_seen,
                "tokens_per_parameter": result.tokens_seen / params,
                "idle_minutes": done_steps * record["seconds_per_step"] / 60,
                "segment_wall_seconds": time.perf_counter() - started,
                "load": os.getloadavg()[0],
                "train_threads": torch.get_num_threads(),
                "val_loss": result.val_loss if result.finished else last_val_loss(cfg.out),
                "behaviour": behaviour,
                "targets": met,
            }
        )
        record["parameters"] = params
        record["done"] = all(met.values()) or done_steps >= steps
        record["reached"] = all(met.values())
        write_record(out, record)
        print(
            f"{out.name}: step {done_steps}/{steps}, {sum(met.values())}/{len(met)} targets",
            flush=True,
        )
    return record


def last_val_loss(train_dir: Path) -> float | None:
    metrics = train_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    losses = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    vals = [r["val_loss"] for r in losses if "val_loss" in r]
    return vals[-1] if vals else None


# ----------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pair(b: dict[str, Any], key: str) -> str:
    return " / ".join(_fmt((b.get(s) or {}).get(key)) for s in ("seen", "unseen"))


def row(record: dict[str, Any]) -> list[str]:
    last = record["evals"][-1]
    reached = record.get("reached")
    first = next((e for e in record["evals"] if all(e["targets"].values())), None)
    b, variant = last["behaviour"], record["variant"]
    gap = (
        " / ".join(_fmt(_auroc_gap(s)(b)) for s in ("seen", "unseen")) if variant == "adhd" else "–"
    )
    regulates = _pair(b, "regulating_outputs") if variant == "standard" else "–"
    held = sum(last["targets"].values())
    when = (
        f"**{minutes(record, first):.1f}**"
        if reached and first
        else f"cap {record['minutes_budget']:.1f}"
    )
    return [
        record["recipe"],
        variant,
        str(record["seed"]),
        record["kind"],
        record.get("numerics", NUMERICS[False]),
        when,
        f"{last['step']:,}",
        f"{last['tokens_per_parameter']:.1f}",
        f"{idle_seconds_per_step(record):.3f}",
        _fmt(last["val_loss"]),
        _pair(b, "on_topic_rate"),
        _pair(b, "object_mention_rate"),
        _pair(b, "spearman_complexity_steps"),
        _pair(b, "parse_rate"),
        gap,
        regulates,
        f"{held}/{len(last['targets'])}",
    ]


HEADER = [
    "recipe",
    "model",
    "seed",
    "run",
    "numerics",
    "idle min to target",
    "steps",
    "tokens/param",
    "s/step (idle)",
    "val loss",
    "on-topic seen / unseen",
    "object mention seen / unseen",
    "Spearman seen / unseen",
    "parse seen / unseen",
    "AUROC gap seen / unseen",
    "regulates seen / unseen",
    "targets held",
]


def _tasks(record: dict[str, Any]) -> str:
    n = record.get("n_tasks", {})
    return f"{n.get('seen', '?')} seen- and {n.get('unseen', '?')} unseen-family tasks"


def records(root: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(root.glob(f"*/*/{RECORD}"))]
    return [r for r in found if r.get("evals")]


def write_report(root: Path, results: Path = RESULTS, plot: Path = PLOT) -> None:
    runs = records(root)
    if not runs:
        print(f"no speedrun records under {root}")
        return
    machines = sorted({r["machine"] for r in runs})
    lines = [
        "## Speedrun: idle minutes to the behaviour targets",
        "",
        "Generated by `make speedrun` (bench/speedrun.py); curves in `bench/speedrun.png`. "
        "Minutes are idle-machine minutes (steps x seconds per step calibrated on the idle "
        "machine at the run's start); `cap N` means the targets did not all hold within the "
        "run's N-minute budget, and the row shows the values at its end. `levers` runs are "
        "judged at the end of an equal budget; `curve` runs stop at the first evaluation where "
        "every target holds. `numerics`: bf16 autocast where the CPU runs bf16 natively, "
        "else fp32; minutes compare only between rows of the same numerics (and CPU). "
        "Held-out test tasks per run: "
        + "; ".join(sorted({_tasks(r) for r in runs}))
        + ", decoded greedily.",
        "",
        f"Machine: {'; '.join(machines)}  ",
        f"Updated: {now()}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    order = {name: k for k, name in enumerate(RECIPES)}
    runs.sort(
        key=lambda r: (r["kind"], r["variant"] != "standard", order.get(r["recipe"], 99), r["seed"])
    )
    lines += ["| " + " | ".join(row(r)) + " |" for r in runs]
    lines.append("")
    lines.append(
        "Targets: " + "; ".join(f"{t.words} ({', '.join(t.variants)})" for t in TARGETS) + "."
    )
    lines += throughput_table(root)
    write_section(SECTION, lines, results)
    write_plot(runs, plot)
    print(f"wrote {results} and {plot}")


def throughput_table(root: Path) -> list[str]:
    """Rows for the levers that change seconds per step only (`throughput`)."""
    path = root / THROUGHPUT
    if not path.is_file():
        return []
    found = json.loads(path.read_text())
    lines = [
        "",
        f"Levers that change only the seconds per step (`speedrun.py throughput`, "
        f"{found['measured']}, idle; {found['machine']}):",
        "",
        "| lever | model | seconds per step | gain |",
        "|---|---|---|---|",
    ]
    for variant in BOTH:
        r = found[variant]
        recipe = found["recipe"]
        # Records before `bf16_native` was kept measured emulated bf16 only.
        bf16 = r.get("adamw_bf16", r.get("adamw_bf16_emulated"))
        native = "native" if r.get("bf16_native") else "emulated"
        faster = (
            f"bf16 {r['adamw_fp32'] / bf16:.2f}x faster"
            if bf16 < r["adamw_fp32"]
            else f"fp32 {bf16 / r['adamw_fp32']:.2f}x faster"
        )
        lines += [
            f"| bf16 autocast, {native} here (AdamW) | {variant} | "
            f"{bf16:.3f} vs fp32 {r['adamw_fp32']:.3f} | {faster} |",
            f"| the pair as two 1-thread processes side by side ({recipe}) | {variant} | "
            f"{' and '.join(f'{s:.3f}' for s in r['side_by_side_1_thread'])} vs "
            f"{r['seconds_per_step']:.3f} at {r['threads']} threads, one after the other | "
            f"{r['side_by_side_speedup']:.2f}x the throughput |",
            f"| packing (no compute on padding) | {variant} | padding is "
            f"{100 * r['pad_share']:.1f}% of a length-grouped batch | at most "
            f"{1 / (1 - r['pad_share']):.3f}x, not built |",
        ]
    return lines


def write_plot(runs: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(10, 4))
    topic, gap = fig.subplots(1, 2)
    for r in runs:
        numerics = r.get("numerics", NUMERICS[False]).split()[0]
        label = f"{r['recipe']} {r['variant']} s{r['seed']} ({r['kind']}, {numerics})"
        at = [minutes(r, e) for e in r["evals"]]
        style = "o-" if len(at) > 1 else "o"
        topic.plot(
            at,
            [_metric("unseen", "on_topic_rate")(e["behaviour"]) for e in r["evals"]],
            style,
            label=label,
            ms=4,
        )
        if r["variant"] == "adhd":
            gap.plot(
                at,
                [_auroc_gap("unseen")(e["behaviour"]) for e in r["evals"]],
                style,
                label=label,
                ms=4,
            )
    topic.axhline(0.90, color="grey", ls="--", lw=1)
    gap.axhline(0.05, color="grey", ls="--", lw=1)
    topic.set(
        xlabel="idle minutes",
        ylabel="on-topic rate, unseen families",
        title="Standard and ADHD models",
    )
    gap.set(
        xlabel="idle minutes",
        ylabel="Bayes AUROC - model AUROC, unseen",
        title="ADHD onset AUROC gap",
    )
    topic.legend(fontsize=6)
    if gap.get_legend_handles_labels()[0]:  # an ADHD run was plotted (not the target line)
        gap.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("runs/speedrun"))
    parser.add_argument("--limit", type=int, default=150, help="test tasks per subset")
    parser.add_argument("--auroc-tasks", type=int, default=300, help="ADHD records per subset")
    parser.add_argument("--preset", default="small")
    sub = parser.add_subparsers(dest="kind", required=True)
    levers = sub.add_parser("levers", help="every recipe, standard model, equal idle minutes")
    levers.add_argument("--minutes", type=float, default=5.0)
    levers.add_argument("--recipes", default=",".join(RECIPES))
    levers.add_argument("--seeds", default="0")
    curve = sub.add_parser("curve", help="one recipe and model until the targets hold")
    curve.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    curve.add_argument("--variant", default="standard", choices=BOTH)
    curve.add_argument("--minutes", type=float, default=30.0)
    curve.add_argument("--every", type=float, default=5.0)
    curve.add_argument("--seed", type=int, default=0)
    for runner in (levers, curve):
        runner.add_argument(
            "--train-threads",
            type=int,
            default=None,
            help="torch threads while training (calibration keeps the machine's): a run's "
            "quality at a step count does not depend on it, its minutes come from calibration",
        )
    sub.add_parser("report", help="write the table and the plot from the records")
    sub.add_parser("recalibrate", help="measure every run's seconds per step again, idle")
    rate = sub.add_parser("throughput", help="levers that change seconds per step only")
    rate.add_argument("--recipe", default="muon-wsd", choices=sorted(RECIPES))
    sps = sub.add_parser("sps", help="print one recipe's seconds per step")
    sps.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    sps.add_argument("--variant", default="standard", choices=BOTH)
    sps.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.kind == "sps":
        if args.threads:
            torch.set_num_threads(args.threads)
        data = prepare_data(args.root, 1, 1)
        config = run_config(data, args.recipe, args.variant, 0, args.root / "sps", args.preset)
        print(seconds_per_step(config))
        return
    if args.kind == "throughput":
        throughput(prepare_data(args.root, 1, 1), args.root, args.recipe)
    elif args.kind == "recalibrate":
        recalibrate(prepare_data(args.root, args.limit, args.auroc_tasks), args.root)
    elif args.kind != "report":
        data = prepare_data(args.root, args.limit, args.auroc_tasks)
        common = {"root": args.root, "preset": args.preset}
        if args.kind == "levers":
            runs = [(int(s), r) for s in args.seeds.split(",") for r in args.recipes.split(",")]
            for seed, recipe in runs:  # every calibration first, while the machine is idle
                out = run_dir(args.root, "levers", recipe, "standard", seed)
                base = run_config(data, recipe, "standard", seed, out / "run", args.preset)
                calibrated(data, out, base, kind="levers", recipe=recipe, minutes=args.minutes)
            if args.train_threads:
                torch.set_num_threads(args.train_threads)
            for seed, recipe in runs:
                speedrun(
                    data,
                    kind="levers",
                    recipe=recipe,
                    variant="standard",
                    seed=seed,
                    minutes=args.minutes,
                    every=None,
                    **common,
                )
        else:
            out = run_dir(args.root, "curve", args.recipe, args.variant, args.seed)
            base = run_config(data, args.recipe, args.variant, args.seed, out / "run", args.preset)
            calibrated(data, out, base, kind="curve", recipe=args.recipe, minutes=args.minutes)
            if args.train_threads:
                torch.set_num_threads(args.train_threads)
            speedrun(
                data,
                kind="curve",
                recipe=args.recipe,
                variant=args.variant,
                seed=args.seed,
                minutes=args.minutes,
                every=args.every,
                **common,
            )
    write_report(args.root)


if __name__ == "__main__":
    main()
