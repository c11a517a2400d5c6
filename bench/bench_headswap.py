"""Head-swap inventory speed and memory: batched hook reduction vs the seed notebook.

Ours (`interpgpt.analysis.headswap.inventory`): length-sorted batches of held-out sequences
through TaskGPT's special-mass forward (`headswap_profiles.special_mass`: the mass on
the specials comes out of the fused attention kernel as an extra value column, no
pattern is materialised, the last block stops after its attention, linears on oneDNN),
reduced to per-example bin sums; then cosines and Hungarian matching. oneDNN builds a
kernel per new shape on first use, so the first of our runs is also reported (cold).

Peer (the seed notebook `002`, its code from tests/seed_notebook.py): one
`run_with_cache` per prompt on a HookedTransformer of the same weights (every hook
cached), each prompt's full (layer, head, T, T) attention kept, and the `profile()`
Python loop over query positions, per head and model. The peer is timed on a subset of
tasks and scaled linearly to the full set (both of its stages are per prompt, so its
cost is linear in tasks); ours runs on the full set. Equality is checked on the
subset: max |ours − peer| over every profile bin of every head of both models.

Models: the `small` preset (6 layers x 8 heads, the seed cards' head grid), random
init (timing does not depend on training), fp32 so results are identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interpgpt.analysis.headswap.config import HeadswapConfig
from interpgpt.analysis.headswap.inventory import MODELS, attention_profile_sums, build_inventory
from interpgpt.artifacts.convert import to_hooked_transformer
from interpgpt.corpus.build import build_corpus
from interpgpt.corpus.config import CorpusConfig, TokenizerConfig
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.corpus.tokenizer import TaskTokenizer, train_tokenizer
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT

# The seed notebook's reference code lives once, in tests/seed_notebook.py (the tests
# check our profiles against it); the bench is run as a script, so put tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seed_notebook import cache_attn, profile


def notebook_profiles(tl_model, data, rows: range) -> tuple[np.ndarray, int]:
    """The notebook's cache_attn + profile (its code, with our encoded ids and roles)."""
    records = []
    for row in rows:
        ids = data.ids[row, : data.lengths[row]].tolist()
        records.append(
            {
                # The notebook's record layout; profile()'s `which` only picks the key.
                "std_attn": cache_attn(tl_model, ids),
                "roles": {"special_positions": data.roles[row].special_positions},
            }
        )
    L, H = tl_model.cfg.n_layers, tl_model.cfg.n_heads
    profiles = np.array([[profile(records, i, h, "std") for h in range(H)] for i in range(L)])
    kept_bytes = sum(r["std_attn"].numel() * r["std_attn"].element_size() for r in records)
    return profiles, kept_bytes


def build_inputs(root: Path, n_tasks: int):
    """A corpus with n_tasks held-out tasks, the shared tokenizer, two random small models."""
    config = CorpusConfig(seed=0, n_tasks=int(n_tasks / 0.8) + 1, examples_per_task=1,
                          val_fraction=0.1, test_fraction=0.8)  # fmt: skip
    build_corpus(dataclasses.replace(config, out=root / "corpus"))
    train_tokenizer(TokenizerConfig(corpus=root / "corpus", out=root / "tokenizer.json"))
    tokenizer = TaskTokenizer.from_file(root / "tokenizer.json")
    models = {}
    for seed, name in enumerate(MODELS):
        torch.manual_seed(seed)
        models[name] = TaskGPT(preset("small", vocab_size=tokenizer.vocab_size)).eval()
    data = load_eval_set(root / "corpus", tokenizer, "standard", limit=n_tasks, max_len=256)
    return models, data


def time_ours(models, data, batch_size: int) -> tuple[float, dict, int]:
    special = data.special_mask()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    sums = {
        name: attention_profile_sums(model, data.ids, data.lengths, special, batch_size=batch_size)
        for name, model in models.items()
    }
    config = HeadswapConfig(null_samples=0, bootstrap_samples=0)
    build_inventory(sums, config)
    seconds = time.perf_counter() - start
    rss_delta_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return seconds, sums, rss_delta_kib


def run(
    n_tasks: int = 1000,
    peer_tasks: int = 20,
    batch_size: int = 16,
    threads: int | None = 1,
    repeats: int = 3,
) -> dict[str, Any]:
    """`threads`: torch intra-op threads for both sides (None: torch's default). One thread
    keeps timings reproducible on a shared machine, where oversubscribed threads spin."""
    torch.set_grad_enabled(False)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(n_tasks, peer_tasks, batch_size, torch.get_num_threads(), repeats)
    finally:
        torch.set_num_threads(previous_threads)


def _run(n_tasks: int, peer_tasks: int, batch_size: int, threads: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        models, data = build_inputs(Path(tmp), n_tasks)
    # Best of `repeats` on both sides (as timeit does): this machine may be shared.
    runs = [time_ours(models, data, batch_size) for _ in range(repeats)]
    ours, sums, rss_kib = min(r[0] for r in runs), runs[0][1], runs[0][2]
    cold = runs[0][0]
    start = time.perf_counter()
    build_inventory(sums, HeadswapConfig())
    stats_seconds = time.perf_counter() - start

    subset = range(min(peer_tasks, len(data)))
    tl_models = {name: to_hooked_transformer(model) for name, model in models.items()}
    peer_subset, kept = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        peer_profiles, kept = {}, 0
        for name, tl_model in tl_models.items():
            peer_profiles[name], kept_bytes = notebook_profiles(tl_model, data, subset)
            kept += kept_bytes
        peer_subset = min(peer_subset, time.perf_counter() - start)
    peer = peer_subset * len(data) / len(subset)

    small = data.subset(slice(0, len(subset)))
    special = small.special_mask()
    diff = max(
        np.abs(
            attention_profile_sums(m, small.ids, small.lengths, special).profiles().numpy()
            - peer_profiles[name]
        ).max()
        for name, m in models.items()
    )
    return {
        "name": "head-swap inventory (small preset, 2 x 48 heads)",
        "ours": round(ours, 2),
        "peer": round(peer, 1),
        "unit": f"s for {len(data):,} held-out tasks",
        "ratio": round(peer / ours, 1),
        "notes": (
            f"peer = seed notebook cache_attn + profile() on HookedTransformer, timed on "
            f"{len(subset)} tasks ({peer_subset:.1f} s) and scaled linearly; best of {repeats} "
            f"runs on both sides; "
            f"max |ours - peer| over all profile bins = {diff:.1e}; "
            f"ours first (cold) run {cold:.2f} s, "
            f"peak-RSS delta {rss_kib / 1024:.0f} MiB, "
            f"peer keeps {kept / 2**20:.0f} MiB of full attention for {len(subset)} tasks "
            f"(~{kept * len(data) / len(subset) / 2**30:.1f} GiB at {len(data):,}); "
            f"bootstrap + permutation null (1000 each): {stats_seconds:.2f} s extra; "
            f"batch {batch_size}, fp32, {threads} torch thread(s)"
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--peer-tasks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(
        json.dumps(
            run(args.tasks, args.peer_tasks, args.batch_size, args.threads, args.repeats), indent=2
        )
    )
