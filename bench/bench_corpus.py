"""Corpus generation speed: `build_corpus` vs a naive writer over the same task pool.

Ours: phrasings JSON-escaped once per task, records assembled by string joins, one
buffered write per file, stats accumulated on the way (`interpgpt.corpus.build`).

Peer (naive baseline, written here): the same tasks, split and sampling rules, but each
example recomputes its plan, builds a dict of plain strings, is serialised with
`json.dumps` and written with one `write` call per line; it computes no statistics and
does not shuffle, so it does strictly less work than ours.

Both write 2 x n_tasks x examples_per_task records (standard + ADHD) to a temp dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from interpgpt.corpus.build import (
    PHRASINGS,
    assign_splits,
    build_corpus,
    hold_out,
    phrase,
    select_tasks,
    split_path,
    swap_objects,
)
from interpgpt.corpus.config import CorpusConfig
from interpgpt.corpus.regulation import REGULATION_ACTIONS
from interpgpt.corpus.taskpool import STEP_COUNTS, TaskSpec, families, plan


def _naive_example(
    spec: TaskSpec, rng: random.Random, config: CorpusConfig, with_p: bool
) -> tuple[dict, dict]:
    task = phrase(spec.task, rng.randrange(len(PHRASINGS)))
    phases = plan(spec.phases, rng.choice(STEP_COUNTS[spec.complexity]))
    standard = [rng.choice(p.standard) for p in phases]
    content = [(rng.choice(m), 2 if p.effortful else 1) for p in phases for m in p.micro]
    budget, noise = config.budget(spec.complexity), config.break_noise
    adhd, p_break, load, last = [content[0][0]], [0.0], content[0][1], None
    for step, effort in content[1:]:
        fires = load >= budget
        p_break.append(1 - noise if fires else noise)
        if fires != (rng.random() < noise):
            last = rng.choice([a for a in REGULATION_ACTIONS if a != last])
            adhd.append(last)
            p_break.append(0.0)
            load = 0
        adhd.append(step)
        load += effort
    head = {"task_id": spec.pool_index, "task": task}
    adhd_record = {**head, "steps": adhd, "complexity": spec.complexity}
    if with_p:
        adhd_record["p_break"] = p_break
    return {**head, "steps": standard, "complexity": spec.complexity}, adhd_record


def naive_corpus(config: CorpusConfig, out_dir: Path) -> None:
    """The peer: per-example dicts, json.dumps and one write per line."""
    splits = assign_splits(select_tasks(config), hold_out(families(), config), config)
    splits["train"] = swap_objects(splits["train"], config)
    for split, specs in splits.items():
        paths = [split_path(out_dir, v, split) for v in ("standard", "adhd")]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        with paths[0].open("w") as f_std, paths[1].open("w") as f_adhd:
            for spec in specs:
                rng = random.Random(config.seed * 1_000_003 + spec.pool_index)
                for _ in range(config.examples_per_task):
                    std, adhd = _naive_example(spec, rng, config, split != "train")
                    f_std.write(json.dumps(std, ensure_ascii=False) + "\n")
                    f_adhd.write(json.dumps(adhd, ensure_ascii=False) + "\n")


def _timed(fn: Any, *args: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process); CPU is robust to a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def run(n_tasks: int = 2000, examples_per_task: int = 500) -> dict[str, Any]:
    config = CorpusConfig(seed=0, n_tasks=n_tasks, examples_per_task=examples_per_task)
    with tempfile.TemporaryDirectory() as tmp:
        ours, ours_cpu = _timed(build_corpus, dataclasses.replace(config, out=Path(tmp) / "ours"))
    with tempfile.TemporaryDirectory() as tmp:
        peer, peer_cpu = _timed(naive_corpus, config, Path(tmp) / "peer")
    pairs = n_tasks * examples_per_task
    return {
        "name": "corpus generation",
        "ours": round(ours, 2),
        "peer": round(peer, 2),
        "unit": f"s for {pairs:,} paired examples",
        "ratio": round(peer / ours, 2),
        "notes": "wall seconds; peer = same sampling, per-example json.dumps + write per "
        "line, no stats, no shuffle; ratio = peer / ours (higher is better for ours); "
        f"CPU seconds ours {ours_cpu:.1f}, peer {peer_cpu:.1f}",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--examples-per-task", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(run(args.tasks, args.examples_per_task), indent=2))
