"""Sampling task decompositions: KV-cached, batched, seeded, and transparent to hooks.

`generate_ids` is the one decoding loop. Prompts are sorted by length and cut into
batches (less padding); each batch is left-padded, with `attention_mask` False at the
pads, so every row's rotary positions start at its first real token and a padded row
computes what it would alone. The prompt fills a preallocated `KVCache` in one forward;
each later step feeds only the newest token (incremental decoding, as in GPT-2's
`past_key_values`). A row that samples `<|end|>` is finished and dropped from the batch
(`KVCache.select`), so long generations do not pay for rows that are done.

The prompt forward is the model's own. With a hook attached to the model (e.g. `with
model.hooks(fwd_hooks=...)` around the call), every later step calls the model too, so
the intervention applies throughout generation: the hooks see the prompt forward (batch,
prompt_pos, ...) and then one-position forwards (batch_alive, 1, ...). Without hooks, the
steps run `decode.Decoder`: the same computation with the model's constants folded into
its weights, no module calls and fewer than half the tensor operations (a step at these
batch sizes costs mostly per-operation overhead). Only then is the prompt forward's last
position alone unembedded.

Sampling is seeded by a `torch.Generator` (same seed, prompts and batch size -> same
outputs); temperature 0 is greedy argmax. `sample_decompositions` wraps the loop for
tasks: it builds `<|task|>task<|steps|>` prompts and parses the continuation into steps.
`SampleConfig` is `GenerationConfig` plus the model and the tasks: the options of
`interpgpt generate`, so each sampling setting is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.model.config import GenerationConfig
from interpgpt.model.fast import decode
from interpgpt.model.taskgpt import KVCache, TaskGPT


@dataclass(frozen=True)
class Decomposition:
    """One sampled decomposition of a task."""

    task: str
    """The task the prompt asked for."""
    steps: tuple[str, ...]
    """The generated steps, split at <|sep|>, stripped of surrounding whitespace."""
    parsed: bool
    """True if generation ended with <|end|>, produced at least one step, every step is
    non-empty, and no other special token appeared among the steps."""
    ids: tuple[int, ...]
    """The whole sequence: prompt then generated ids (through <|end|> when produced)."""
    prompt_len: int
    """How many of `ids` are the prompt."""


def sample_next(
    logits: Float[Tensor, "batch d_vocab"], config: GenerationConfig, generator: torch.Generator
) -> Tensor:
    """Next token per row: argmax at temperature 0, else top-k / temperature sampling."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = logits.topk(config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def _generate_batch(
    model: TaskGPT,
    prompts: list[list[int]],
    config: GenerationConfig,
    end_id: int | None,
    pad_id: int,
    generator: torch.Generator,
    decoder: decode.Decoder | None,
) -> list[list[int]]:
    """Generated ids (prompt excluded) for one batch of prompts; steps after the prompt
    run `decoder` when given, else the model."""
    device = model.embed.weight.device
    width = max(len(p) for p in prompts)
    budget = min(config.max_new_tokens, model.cfg.n_ctx - width)
    out: list[list[int]] = [[] for _ in prompts]
    if budget <= 0:
        return out
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = True
    dtype = torch.bfloat16 if config.autocast else model.embed.weight.dtype
    cache = KVCache.empty(model.cfg, len(prompts), width + budget, device, dtype)
    alive = list(range(len(prompts)))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.autocast):
        logits = _prompt_logits(model, ids.to(device), mask.to(device), cache, decoder)
        for t in range(budget):
            token = sample_next(logits.float(), config, generator)
            for row, tok in zip(alive, token.tolist(), strict=True):
                out[row].append(tok)
            if t == budget - 1:
                break
            if end_id is not None:
                running = token != end_id
                if not bool(running.all()):
                    keep = running.nonzero().squeeze(1)
                    if keep.numel() == 0:
                        break
                    cache.select(keep)
                    alive = [alive[i] for i in keep.tolist()]
                    token = token[keep]
            if decoder is None:
                logits = model(token[:, None], cache=cache)[:, -1]
            else:
                logits = decoder.step(token, cache)
    return out


def _prompt_logits(
    model: TaskGPT, ids: Tensor, mask: Tensor, cache: KVCache, decoder: decode.Decoder | None
) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits after the prompt, filling `cache`. Without hooks (a decoder),
    only the last position is unembedded."""
    if decoder is None:
        return model(ids, attention_mask=mask, cache=cache)[:, -1]
    resid = model(ids, attention_mask=mask, cache=cache, stop_at_layer=model.cfg.n_layer)
    return model.unembed(resid[:, -1])


def generate_ids(
    model: TaskGPT,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    *,
    end_id: int | None = None,
    pad_id: int = 0,
) -> list[list[int]]:
    """Continuations of `prompts` (prompt excluded), in the order given.

    A row stops after generating `end_id`, after `config.max_new_tokens`, or when the
    sequence fills the model's context. `pad_id` fills left padding (masked out).
    """
    prompts = [list(p) for p in prompts]
    n_ctx = model.cfg.n_ctx
    for k, prompt in enumerate(prompts):
        if not prompt:
            raise UserError(f"prompt {k} is empty; a prompt needs at least one token")
        if len(prompt) > n_ctx:
            raise UserError(
                f"prompt {k} has {len(prompt)} tokens, longer than the model context of "
                f"{n_ctx}; shorten it"
            )
    if config.device is not None:
        model = model.to(resolve_device(config.device))
    device = model.embed.weight.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    decoder = decode.Decoder(model) if decode.usable(model) and not config.autocast else None
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), config.batch_size):
        chunk = order[start : start + config.batch_size]
        batch = _generate_batch(
            model, [list(prompts[k]) for k in chunk], config, end_id, pad_id, generator, decoder
        )
        for k, ids in zip(chunk, batch, strict=True):
            results[k] = ids
    return results


def parse_steps(tokenizer, generated: Sequence[int]) -> tuple[tuple[str, ...], bool]:
    """Steps of a generated continuation, and whether it parses (see `Decomposition`)."""
    generated = list(generated)
    ended = tokenizer.end_id in generated
    body = generated[: generated.index(tokenizer.end_id)] if ended else generated
    pieces: list[list[int]] = [[]]
    stray = False
    for tok in body:
        if tok == tokenizer.sep_id:
            pieces.append([])
        elif tok in tokenizer.special_ids.values():
            stray = True
        else:
            pieces[-1].append(tok)
    steps = tuple(tokenizer.decode_text(p).strip() for p in pieces)
    if steps == ("",):
        steps = ()
    return steps, ended and not stray and bool(steps) and all(steps)


def sample_decompositions(
    model: TaskGPT,
    tokenizer,
    tasks: Sequence[str],
    config: GenerationConfig,
    n_samples: int = 1,
) -> list[Decomposition]:
    """`n_samples` decompositions per task, task-major (task 0's samples first)."""
    if n_samples < 1:
        raise UserError(f"--n must be >= 1, got {n_samples}")
    prompts = []
    for task in tasks:
        prompt = tokenizer.encode_prompt(task)
        if len(prompt) > model.cfg.n_ctx:
            raise UserError(
                f"task {task[:40]!r} encodes to {len(prompt)} prompt tokens, longer than the "
                f"model context of {model.cfg.n_ctx}; shorten it"
            )
        prompts += [prompt] * n_samples
    generated = generate_ids(
        model, prompts, config, end_id=tokenizer.end_id, pad_id=tokenizer.pad_id
    )
    out = []
    for k, (prompt, new) in enumerate(zip(prompts, generated, strict=True)):
        steps, parsed = parse_steps(tokenizer, new)
        task = tasks[k // n_samples]
        out.append(Decomposition(task, steps, parsed, tuple(prompt + new), len(prompt)))
    return out
