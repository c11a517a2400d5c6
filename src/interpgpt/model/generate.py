"""Sampling task decompositions: KV-cached, batched, seeded, and transparent to hooks.

`generate_ids` is the one decoding loop. Prompts are sorted by length and cut into
batches (less padding); each batch is left-padded, with `attention_mask` False at the
pads, so every row's rotary positions start at its first real token and a padded row
computes what it would alone. The prompt fills a preallocated `KVCache` in one forward;
each later step feeds only the newest token (incremental decoding, as in GPT-2's
`past_key_values`). A row that samples `<|end|>` is finished: it draws nothing more, and
the batch drops its finished rows (`KVCache.select`) once a few have gathered, so long
generations do not pay for rows that are done.

The prompt forward is the model's own. With a hook attached to the model (e.g. `with
model.hooks(fwd_hooks=...)` around the call), every later step calls the model too, so
the intervention applies throughout generation: the hooks see the prompt forward (batch,
prompt_pos, ...) and then one-position forwards (rows not yet dropped, 1, ...). Without
hooks, the steps run `decode.Decoder`: the same computation with the model's constants
folded into its weights, no module calls and fewer than half the tensor operations (a
step at these batch sizes costs mostly per-operation overhead). Only then is the prompt
forward's last position alone unembedded.

Sampling is seeded by a `torch.Generator` (same seed, prompts and batch size -> same
outputs); temperature 0 is greedy argmax. `sample_decompositions` wraps the loop for
tasks: it builds `<|task|>task<|steps|>` prompts and parses the continuation into steps.
`SampleConfig` is `GenerationConfig` plus the model and the tasks: the options of
`interpgpt generate`, so each sampling setting is written once.

`generate_head_masked` runs the same loop for many head ablations at once: one row per
(condition, prompt), each row's heads scaled by its own `decode.HeadMask` in the prompt
forward (hooks on `hook_z`) and in every decoder step. Its rows sample with common
random numbers (Glasserman & Yao 1992): every condition's row of prompt i uses the
Gumbel noise of stream i (`StreamSampler`), so conditions differ by their heads, not by
their draws, and a row's output does not depend on which rows share its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.model.config import GenerationConfig
from interpgpt.model.fast import decode
from interpgpt.model.fast.decode import HeadMask
from interpgpt.model.taskgpt import KVCache, TaskGPT

DROP_FRACTION = 0.125
"""A batch drops its finished rows once this fraction of them has finished. Dropping
copies every remaining row's KV cache (`KVCache.select`), so dropping at each finish
costs more than decoding a few finished rows, whose outputs are ignored, for a while."""

Draw = Callable[[Tensor, list[int]], Tensor]
"""Next tokens from the alive rows' logits (batch d_vocab) and their rows' indices in the
batch as it started."""


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


def _scaled(logits: Float[Tensor, "batch d_vocab"], config: GenerationConfig) -> Tensor:
    """logits / temperature in fp32, -inf outside each row's top k."""
    logits = logits.float() / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = logits.topk(config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def sample_next(
    logits: Float[Tensor, "batch d_vocab"], config: GenerationConfig, generator: torch.Generator
) -> Tensor:
    """Next token per row: argmax at temperature 0, else top-k / temperature sampling."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    probs = _scaled(logits, config).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class StreamSampler:
    """Top-k / temperature sampling with common random numbers: the rows of one stream
    share every random draw.

    By the Gumbel-max trick, argmax(logits / T + g) with g i.i.d. standard Gumbel over
    the vocabulary is a draw from softmax(logits / T) (Maddison et al. 2014). Stream s
    draws its g from its own generator, seeded from (seed, s) by numpy's `SeedSequence`;
    its t-th draw serves every row of the stream at decoding step t. So two rows of one
    stream with the same logits sample the same token, and a row's draws depend on its
    stream and step only: not on its position in the batch, the other streams, or rows
    that finished. Temperature 0 is greedy argmax, without draws.
    """

    def __init__(
        self, config: GenerationConfig, streams: Sequence[int], d_vocab: int, device: torch.device
    ):
        self.config, self.streams, self.d_vocab = config, list(streams), d_vocab
        self.generators = {
            s: torch.Generator(device=device).manual_seed(_stream_seed(config.seed, s))
            for s in set(self.streams)
        }
        self.device = device

    def gumbel(self, rows: list[int]) -> Float[Tensor, "batch d_vocab"]:
        """Each row's standard Gumbel noise for this step; draws once per live stream."""
        live = sorted({self.streams[r] for r in rows})
        uniform = torch.empty(len(live), self.d_vocab, device=self.device)
        for i, stream in enumerate(live):
            uniform[i].uniform_(generator=self.generators[stream])
        # g = -log(-log u); u at the smallest normal float keeps g finite
        noise = uniform.clamp_(min=torch.finfo(uniform.dtype).tiny).log_().neg_().log_().neg_()
        slot = {stream: i for i, stream in enumerate(live)}
        index = torch.tensor([slot[self.streams[r]] for r in rows], device=self.device)
        return noise.index_select(0, index)

    def __call__(self, logits: Float[Tensor, "batch d_vocab"], rows: list[int]) -> Tensor:
        if self.config.temperature == 0:
            return logits.argmax(dim=-1)
        return _scaled(logits, self.config).add_(self.gumbel(rows)).argmax(dim=-1)


def _stream_seed(seed: int, stream: int) -> int:
    """The seed of stream `stream`'s generator under sampling seed `seed`: distinct streams
    and seeds give well-mixed, independent seeds (numpy's `SeedSequence` hash)."""
    return int(np.random.SeedSequence([seed % 2**64, stream]).generate_state(1)[0])


@torch.no_grad()
def _generate_batch(
    model: TaskGPT,
    prompts: list[list[int]],
    config: GenerationConfig,
    end_id: int | None,
    pad_id: int,
    draw: Draw,
    decoder: decode.Decoder | None,
    heads: HeadMask | None = None,
) -> list[list[int]]:
    """Generated ids (prompt excluded) for one batch of prompts; steps after the prompt
    run `decoder` when given, else the model. heads: a head mask per prompt."""
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
    alive = list(range(len(prompts)))  # the prompt of each row of the cache
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)  # finished, not dropped
    token = torch.empty(0, dtype=torch.long, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.autocast):
        logits = _prompt_logits(model, ids.to(device), mask.to(device), cache, decoder, heads)
        for t in range(budget):
            running = (~done).nonzero().squeeze(1) if bool(done.any()) else None
            rows = alive if running is None else [alive[i] for i in running.tolist()]
            sampled = draw((logits if running is None else logits[running]).float(), rows)
            for row, tok in zip(rows, sampled.tolist(), strict=True):
                out[row].append(tok)
            if t == budget - 1:
                break
            token = sampled if running is None else token.index_put((running,), sampled)
            if end_id is not None:
                done |= token == end_id  # a finished row keeps feeding its end_id
                n_done = int(done.sum())
                if n_done == len(alive):
                    break
                if n_done >= DROP_FRACTION * len(alive):
                    keep = (~done).nonzero().squeeze(1)
                    cache.select(keep)
                    heads = heads.select(keep) if heads is not None else None
                    alive, token, done = [alive[i] for i in keep.tolist()], token[keep], done[keep]
            logits = _step_logits(model, token, cache, decoder, heads)
    return out


def _step_logits(
    model: TaskGPT,
    token: Tensor,
    cache: KVCache,
    decoder: decode.Decoder | None,
    heads: HeadMask | None,
) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits after one new token per row: the decoder's step, else the model."""
    if decoder is not None:
        return decoder.step(token, cache, heads)
    with _masked(model, heads):
        return model(token[:, None], cache=cache)[:, -1]


def _masked(model: TaskGPT, heads: HeadMask | None):
    """The model with `heads` attached as hooks on `hook_z` (nothing without)."""
    return nullcontext() if heads is None else model.hooks(fwd_hooks=heads.hooks())


def _prompt_logits(
    model: TaskGPT,
    ids: Tensor,
    mask: Tensor,
    cache: KVCache,
    decoder: decode.Decoder | None,
    heads: HeadMask | None,
) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits after the prompt, filling `cache`. Without hooks (a decoder),
    only the last position is unembedded."""
    with _masked(model, heads):
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
    prompts = _checked(model, prompts)
    model = _placed(model, config)
    generator = torch.Generator(device=model.embed.weight.device).manual_seed(config.seed)

    def draw(logits: Tensor, rows: list[int]) -> Tensor:
        return sample_next(logits, config, generator)

    decoder = _decoder(model, config)
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), config.batch_size):
        chunk = order[start : start + config.batch_size]
        batch = _generate_batch(
            model, [prompts[k] for k in chunk], config, end_id, pad_id, draw, decoder
        )
        for k, ids in zip(chunk, batch, strict=True):
            results[k] = ids
    return results


def generate_head_masked(
    model: TaskGPT,
    prompts: Sequence[Sequence[int]],
    keep: Float[Tensor, "condition layer head"],
    config: GenerationConfig,
    *,
    fill: Float[Tensor, "layer head d_head"] | None = None,
    end_id: int | None = None,
    pad_id: int = 0,
) -> list[list[list[int]]]:
    """Continuations of every prompt under every head mask, [condition][prompt].

    Condition c decodes with `HeadMask(keep[c], fill)` (keep 1: the head as trained, 0:
    its `hook_z` replaced by 0 or `fill`); all its rows share one batch with the other
    conditions' rows, so one call decodes every condition. Prompt i's row in every
    condition samples with the noise of stream i (`StreamSampler`): with all-ones masks
    two conditions give the same outputs. `config.batch_size` caps the rows of a batch
    (conditions x prompts; at least one prompt's conditions); a batch holds every
    condition of its prompts. Stops as `generate_ids`.
    """
    prompts = _checked(model, prompts)
    n_layer, n_head = model.cfg.n_layer, model.cfg.n_head
    if keep.dim() != 3 or tuple(keep.shape[1:]) != (n_layer, n_head):
        raise ValueError(
            f"head masks of shape {tuple(keep.shape)} do not fit a model of {n_layer} layers "
            f"of {n_head} heads: expected (condition, {n_layer}, {n_head})"
        )
    model = _placed(model, config)
    device = model.embed.weight.device
    keep = keep.to(device, torch.float32)
    fill = fill.to(device, torch.float32) if fill is not None else None
    decoder = _decoder(model, config)
    n_condition = keep.shape[0]
    n_batches = -(-len(prompts) // max(1, config.batch_size // n_condition))
    per_batch = -(-len(prompts) // n_batches)  # batches of even size
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
    results: list[list[list[int]]] = [[[] for _ in prompts] for _ in range(n_condition)]
    for start in range(0, len(order), per_batch):
        rows = [(c, k) for c in range(n_condition) for k in order[start : start + per_batch]]
        streams = [k for _, k in rows]
        draw = StreamSampler(config, streams, model.cfg.vocab_size, device)
        heads = HeadMask(keep[torch.tensor([c for c, _ in rows], device=device)], fill)
        batch = _generate_batch(
            model, [prompts[k] for k in streams], config, end_id, pad_id, draw, decoder, heads
        )
        for (c, k), ids in zip(rows, batch, strict=True):
            results[c][k] = ids
    return results


def _checked(model: TaskGPT, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
    """The prompts as lists, each non-empty and within the model's context."""
    checked = [list(p) for p in prompts]
    n_ctx = model.cfg.n_ctx
    for k, prompt in enumerate(checked):
        if not prompt:
            raise UserError(f"prompt {k} is empty; a prompt needs at least one token")
        if len(prompt) > n_ctx:
            raise UserError(
                f"prompt {k} has {len(prompt)} tokens, longer than the model context of "
                f"{n_ctx}; shorten it"
            )
    return checked


def _placed(model: TaskGPT, config: GenerationConfig) -> TaskGPT:
    """The model on `config.device` (where it is for None)."""
    return model if config.device is None else model.to(resolve_device(config.device))


def _decoder(model: TaskGPT, config: GenerationConfig) -> decode.Decoder | None:
    """The unhooked decoder when the model allows it (`decode.usable`), else None."""
    return decode.Decoder(model) if decode.usable(model) and not config.autocast else None


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
    prompts = [p for p in _task_prompts(model, tokenizer, tasks) for _ in range(n_samples)]
    generated = generate_ids(
        model, prompts, config, end_id=tokenizer.end_id, pad_id=tokenizer.pad_id
    )
    tasks = [task for task in tasks for _ in range(n_samples)]
    return _decompositions(tokenizer, tasks, prompts, generated)


def sample_decompositions_masked(
    model: TaskGPT,
    tokenizer,
    tasks: Sequence[str],
    keep: Float[Tensor, "condition layer head"],
    config: GenerationConfig,
    *,
    fill: Float[Tensor, "layer head d_head"] | None = None,
) -> list[list[Decomposition]]:
    """One decomposition per task under every head mask, [condition][task], all decoded
    together with common random numbers (`generate_head_masked`)."""
    prompts = _task_prompts(model, tokenizer, tasks)
    generated = generate_head_masked(
        model, prompts, keep, config, fill=fill, end_id=tokenizer.end_id, pad_id=tokenizer.pad_id
    )
    return [_decompositions(tokenizer, tasks, prompts, condition) for condition in generated]


def _task_prompts(model: TaskGPT, tokenizer, tasks: Sequence[str]) -> list[list[int]]:
    """`<|task|>task<|steps|>` per task, each within the model's context."""
    prompts = []
    for task in tasks:
        prompt = tokenizer.encode_prompt(task)
        if len(prompt) > model.cfg.n_ctx:
            raise UserError(
                f"task {task[:40]!r} encodes to {len(prompt)} prompt tokens, longer than the "
                f"model context of {model.cfg.n_ctx}; shorten it"
            )
        prompts.append(prompt)
    return prompts


def _decompositions(
    tokenizer, tasks: Sequence[str], prompts: list[list[int]], generated: list[list[int]]
) -> list[Decomposition]:
    """Each generated continuation parsed, with its task and prompt."""
    out = []
    for task, prompt, new in zip(tasks, prompts, generated, strict=True):
        steps, parsed = parse_steps(tokenizer, new)
        out.append(Decomposition(task, steps, parsed, tuple(prompt + new), len(prompt)))
    return out
