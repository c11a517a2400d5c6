"""Generation throughput: `generate_ids` vs `HookedTransformer.generate` on the same weights.

Two workloads, both greedy fp32 with a KV cache on both sides (TransformerLens's default
`use_past_kv_cache=True`), identical tokens checked. No hooks are attached, so ours runs
`decode.Decoder` after the prompt (with hooks it would call the model at every step, as
TransformerLens does):

1. Fixed length: a random-weight `small` TaskGPT and its `convert.to_hooked_transformer`
   twin decode the same prompts for a fixed number of new tokens (no stop token), so
   both do identical work per row: the per-step cost of the two decoders.
2. Decompositions: the analyses' real workload. A `small` model trained briefly here on
   a generated corpus decomposes every held-out ADHD task, stopping at `<|end|>`, at
   the library's default batch (64) and length cap (`GenerationConfig.max_new_tokens`).
   Rows end at different lengths; ours retires finished rows from the batch and its
   KV cache, TransformerLens's `generate(stop_at_eos=True)` decodes every row until the
   last one ends. Throughput counts generated tokens up to and including `<|end|>` on
   both sides. Prompts are batched in groups of equal token length for both (a tensor
   prompt to `HookedTransformer.generate` carries no padding mask).
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from interpgpt.artifacts.convert import to_hooked_transformer
from interpgpt.model.config import GenerationConfig, preset
from interpgpt.model.generate import generate_ids
from interpgpt.model.taskgpt import TaskGPT

BATCH, PROMPT, NEW = 32, 12, 64
TRAIN_STEPS = 200


def _best(fn, repeats: int = 2) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _tl_generate(tl_model, prompts: torch.Tensor, new: int, eos: int | None) -> torch.Tensor:
    with torch.no_grad():
        return tl_model.generate(
            prompts, max_new_tokens=new, do_sample=False, stop_at_eos=eos is not None,
            eos_token_id=eos, verbose=False,
        )[:, prompts.shape[1]:]  # fmt: skip


def fixed_length() -> dict:
    torch.manual_seed(0)
    model = TaskGPT(preset("small")).eval()
    tl_model = to_hooked_transformer(model)
    prompts = torch.randint(5, model.cfg.vocab_size, (BATCH, PROMPT))
    config = GenerationConfig(max_new_tokens=NEW, temperature=0.0, batch_size=BATCH)

    def ours():
        return generate_ids(model, prompts.tolist(), config)

    same = torch.tensor(ours()).equal(_tl_generate(tl_model, prompts, NEW, None))
    tokens = BATCH * NEW
    ours_rate = tokens / _best(ours)
    peer_rate = tokens / _best(lambda: _tl_generate(tl_model, prompts, NEW, None))
    return {
        "name": "generate tokens/s (small, fixed length) vs TL generate",
        "ours": ours_rate, "peer": peer_rate, "unit": "tokens/s", "ratio": ours_rate / peer_rate,
        "notes": f"random weights, batch {BATCH}, prompt {PROMPT}, {NEW} new tokens, no stop "
        f"token, greedy fp32; identical tokens: {same}",
    }  # fmt: skip


def _trained_small_model(work: Path):
    """A `small` ADHD model trained for a few hundred steps on a default-size corpus."""
    from interpgpt.artifacts.load import load_model
    from interpgpt.corpus.build import build_corpus
    from interpgpt.corpus.config import CorpusConfig, TokenizerConfig
    from interpgpt.corpus.tokenizer import train_tokenizer
    from interpgpt.train.config import TrainConfig
    from interpgpt.train.loop import train

    build_corpus(CorpusConfig(out=work / "corpus", seed=0, examples_per_task=8))
    tokenizer = train_tokenizer(
        TokenizerConfig(corpus=work / "corpus", out=work / "tokenizer.json")
    )
    config = TrainConfig(
        corpus=work / "corpus", tokenizer=tokenizer, out=work / "adhd", variant="adhd",
        preset="small", steps=TRAIN_STEPS, n_samples=0, progress=False,
    )  # fmt: skip
    return load_model(train(config).run_dir), work / "corpus"


def _equal_length_batches(prompts: list[list[int]], batch: int) -> list[list[list[int]]]:
    by_length: dict[int, list[list[int]]] = defaultdict(list)
    for prompt in prompts:
        by_length[len(prompt)].append(prompt)
    return [
        group[start : start + batch]
        for _, group in sorted(by_length.items())
        for start in range(0, len(group), batch)
    ]


def decompositions() -> dict:
    from interpgpt.corpus.evalset import load_records

    with tempfile.TemporaryDirectory() as tmp:
        loaded, corpus = _trained_small_model(Path(tmp))
        records = load_records(corpus, "adhd", "test")
    model, tok = loaded.model.eval(), loaded.tokenizer
    tl_model = to_hooked_transformer(model)
    config = GenerationConfig(temperature=0.0)
    prompts = [tok.encode_prompt(r["task"]) for r in records]
    batches = _equal_length_batches(prompts, config.batch_size)
    new = config.max_new_tokens

    def ours():
        return [generate_ids(model, b, config, end_id=tok.end_id, pad_id=tok.pad_id)
                for b in batches]  # fmt: skip

    def peer():
        return [_tl_generate(tl_model, torch.tensor(b), new, tok.end_id) for b in batches]

    ours_out, peer_out = ours(), peer()
    same = all(
        row == peer_rows[i, : len(row)].tolist()
        for rows, peer_rows in zip(ours_out, peer_out, strict=True)
        for i, row in enumerate(rows)
    )
    lengths = [len(row) for rows in ours_out for row in rows]
    tokens = sum(lengths)
    ours_rate, peer_rate = tokens / _best(ours), tokens / _best(peer)
    return {
        "name": "generate decompositions tokens/s (small, trained) vs TL generate",
        "ours": ours_rate, "peer": peer_rate, "unit": "tokens/s", "ratio": ours_rate / peer_rate,
        "notes": f"{len(prompts)} held-out ADHD tasks in {len(batches)} equal-length batches "
        f"(<= {config.batch_size}), stop at <|end|>, cap {new}; generated lengths mean "
        f"{tokens / len(lengths):.0f}, max {max(lengths)}; {TRAIN_STEPS}-step small model "
        f"trained here; greedy fp32; identical tokens: {same}",
    }  # fmt: skip


def run() -> list[dict]:
    return [fixed_length(), decompositions()]


if __name__ == "__main__":
    for row in run():
        print(row)
