"""Generation throughput: `generate_ids` vs `HookedTransformer.generate` on the same weights.

A `small`-preset TaskGPT with random weights, converted with
`convert.to_hooked_transformer`; both decode the same batch of prompts greedily for a
fixed number of new tokens (no stop token, so both do identical work), fp32, KV cache
on for both (TransformerLens's default `use_past_kv_cache=True`).
"""

from __future__ import annotations

import time

import torch

from interpgpt.convert import to_hooked_transformer
from interpgpt.generate import GenerationConfig, generate_ids
from interpgpt.model import TaskGPT, preset

BATCH, PROMPT, NEW = 32, 12, 64


def _time(fn) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run() -> dict:
    torch.manual_seed(0)
    cfg = preset("small")
    model = TaskGPT(cfg).eval()
    tl_model = to_hooked_transformer(model)
    prompts = torch.randint(5, cfg.vocab_size, (BATCH, PROMPT))
    config = GenerationConfig(max_new_tokens=NEW, temperature=0.0, batch_size=BATCH)

    def ours():
        return generate_ids(model, prompts.tolist(), config)

    def peer():
        with torch.no_grad():
            return tl_model.generate(
                prompts, max_new_tokens=NEW, do_sample=False, stop_at_eos=False, verbose=False
            )

    same = torch.tensor(ours()).equal(peer()[:, PROMPT:])
    tokens = BATCH * NEW
    ours_rate, peer_rate = tokens / _time(ours), tokens / _time(peer)
    return {
        "name": "generate tokens/s (small) vs TL generate",
        "ours": ours_rate,
        "peer": peer_rate,
        "unit": "tokens/s",
        "ratio": ours_rate / peer_rate,
        "notes": f"batch {BATCH}, prompt {PROMPT}, {NEW} new tokens, greedy fp32; "
        f"identical tokens: {same}",
    }


if __name__ == "__main__":
    print(run())
