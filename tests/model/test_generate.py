"""Generation: the KV-cached batched loop equals the naive reference, seeding, hooks, parsing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from interpgpt.errors import UserError
from interpgpt.model.config import GenerationConfig, SampleConfig, preset
from interpgpt.model.generate import (
    StreamSampler,
    generate_head_masked,
    generate_ids,
    parse_steps,
    sample_decompositions,
)
from interpgpt.model.taskgpt import TaskGPT
from interpgpt.settings import SettingError

GREEDY = GenerationConfig(max_new_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def random_model() -> TaskGPT:
    torch.manual_seed(0)
    return TaskGPT(preset("tiny", vocab_size=97, n_ctx=32)).eval()


@pytest.fixture(scope="module")
def sharp_model() -> TaskGPT:
    """Weights large enough that ablating heads moves the next-token distribution (at the
    default init a tiny model's heads barely matter, and shared draws hide that)."""
    torch.manual_seed(0)
    return TaskGPT(preset("tiny", vocab_size=97, n_ctx=32, init_std=0.2)).eval()


@torch.no_grad()
def naive_greedy(model: TaskGPT, prompt: list[int], n: int, end_id: int | None) -> list[int]:
    """Reference: no cache, the whole sequence re-run for every new token."""
    ids = list(prompt)
    for _ in range(min(n, model.cfg.n_ctx - len(prompt))):
        token = int(model(torch.tensor([ids]))[0, -1].argmax())
        ids.append(token)
        if token == end_id:
            break
    return ids[len(prompt) :]


def test_kv_cached_greedy_equals_naive_loop(random_model):
    prompt = [5, 17, 3, 88, 41]
    assert generate_ids(random_model, [prompt], GREEDY) == [
        naive_greedy(random_model, prompt, 12, None)
    ]


def test_left_padded_batch_equals_per_prompt(random_model):
    prompts = [[5, 17, 3, 88, 41, 2, 9], [60], [11, 12, 13], [70, 71, 72, 73]]
    reference = [naive_greedy(random_model, p, 12, None) for p in prompts]
    batched = generate_ids(
        random_model, prompts, GenerationConfig(max_new_tokens=12, temperature=0)
    )
    assert batched == reference
    singles = [generate_ids(random_model, [p], GREEDY)[0] for p in prompts]
    assert singles == reference


def test_rows_stop_at_end_and_at_context(random_model):
    prompts = [[5, 17, 3], [60, 61]]
    free = generate_ids(random_model, prompts, GREEDY)
    end_id = free[0][2]  # a token the first row emits: it must stop at its first occurrence
    stopped = generate_ids(random_model, prompts, GREEDY, end_id=end_id)
    assert stopped[0] == free[0][: free[0].index(end_id) + 1]
    for row, ids in enumerate(stopped):
        assert ids == naive_greedy(random_model, prompts[row], 12, end_id)
        assert end_id not in ids[:-1]
    long = [list(range(1, 30))]  # 29 of 32 context positions used: only 3 can follow
    assert len(generate_ids(random_model, long, GREEDY)[0]) == 3


def test_sampling_is_seeded(random_model):
    prompts = [[5, 17, 3]] * 6
    config = GenerationConfig(max_new_tokens=10, temperature=1.0, seed=7, batch_size=4)
    first = generate_ids(random_model, prompts, config)
    assert first == generate_ids(random_model, prompts, config)
    other = generate_ids(random_model, prompts, GenerationConfig(max_new_tokens=10, seed=8))
    assert first != other
    assert len({tuple(x) for x in first}) > 1  # rows of one batch draw independently


def test_top_k_one_is_greedy(random_model):
    prompts = [[5, 17, 3], [9]]
    sampled = generate_ids(random_model, prompts, GenerationConfig(max_new_tokens=8, top_k=1))
    assert sampled == generate_ids(
        random_model, prompts, GenerationConfig(max_new_tokens=8, temperature=0)
    )


def test_stream_sampler_draws_from_the_softmax_and_shares_draws_within_a_stream():
    """Gumbel-max on per-stream noise: the frequencies of softmax(logits / T) within top k
    over many streams; rows of one stream draw alike, wherever they sit in the batch."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    config = GenerationConfig(temperature=0.7, top_k=4, seed=3)
    n = 4000
    sampler = StreamSampler(config, range(n), 6, torch.device("cpu"))
    tokens = sampler(logits.expand(n, 6), list(range(n)))
    top = (logits[:4] / 0.7).softmax(-1)
    freq = torch.bincount(tokens, minlength=6).float() / n
    assert freq[4:].sum() == 0  # outside the top k
    torch.testing.assert_close(freq[:4], top, atol=0.03, rtol=0)  # ~4 standard errors
    streams = [5, 9, 5, 2, 9]  # the batch's rows, as it started
    twice = StreamSampler(config, streams, 6, torch.device("cpu"))
    alone = StreamSampler(config, [9], 6, torch.device("cpu"))
    for _ in range(20):  # rows 0 and 3 finished: the others' draws stay their stream's
        noise = twice.gumbel([1, 2, 4])
        assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
        assert torch.equal(noise[0], alone.gumbel([0])[0])
    tokens = twice(torch.zeros(5, 6), list(range(5))).tolist()
    assert tokens[0] == tokens[2] and tokens[1] == tokens[4]


def test_head_masked_rows_share_draws_across_conditions(sharp_model):
    """Sampling with common random numbers: a condition whose heads all stay reproduces
    the baseline rows, whatever else shares the batch, however it is cut, and whichever
    rows finish first."""
    prompts = [[5, 17, 3], [60, 61], [11, 12, 13, 14], [5, 17, 3]]
    config = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=4)
    keep = torch.ones(3, 2, 4)
    keep[1, 0, :3] = keep[1, 1, 1:] = 0.0
    free = generate_head_masked(sharp_model, prompts, keep, config)
    assert free[0] == free[2]  # the all-ones condition is the baseline, draw for draw
    assert free[1] != free[0]  # the ablation did something
    assert free[0][0] != free[0][3]  # same prompt, other stream: other draws
    end_id = free[0][0][2]
    runs = generate_head_masked(sharp_model, prompts, keep, config, end_id=end_id)
    assert len({len(ids) for ids in runs[0]}) > 1  # rows dropped out at different steps
    for stopped, whole in zip(runs, free, strict=True):  # the rows left keep their draws
        assert stopped == [w[: w.index(end_id) + 1] if end_id in w else w for w in whole]
    alone = generate_head_masked(sharp_model, prompts, keep[:1], config, end_id=end_id)
    assert alone[0] == runs[0]
    cut = dataclasses.replace(config, batch_size=3)  # a batch of one prompt per condition
    assert generate_head_masked(sharp_model, prompts, keep, cut, end_id=end_id) == runs
    other_seed = dataclasses.replace(config, seed=5)
    assert generate_head_masked(sharp_model, prompts, keep, other_seed, end_id=end_id) != runs
    with pytest.raises(ValueError, match="do not fit"):
        generate_head_masked(sharp_model, prompts, torch.ones(2, 3, 4), config)


def test_head_masked_model_path_equals_the_decoder_path(sharp_model):
    """With a hook attached generation calls the model, the masks riding on `hook_z`."""
    prompts = [[5, 17, 3], [60, 61, 62, 63]]
    keep = torch.ones(2, 2, 4)
    keep[1, 1, 0] = keep[1, 0, 2] = 0.0
    fill = torch.randn(2, 4, 8)
    fast = generate_head_masked(sharp_model, prompts, keep, GREEDY, fill=fill)
    with sharp_model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: None)]):
        hooked = generate_head_masked(sharp_model, prompts, keep, GREEDY, fill=fill)
    assert hooked == fast and fast[0] == generate_ids(sharp_model, prompts, GREEDY)


def test_hooks_see_the_incremental_forward_passes(random_model):
    shapes = []

    def record(tensor, hook):
        shapes.append(tuple(tensor.shape[:2]))

    with random_model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", record)]):
        out = generate_ids(random_model, [[1, 2, 3], [4, 5]], GREEDY)
    assert shapes[0] == (2, 3)  # the left-padded prompt forward
    assert all(shape == (2, 1) for shape in shapes[1:])  # then one token at a time
    assert len(shapes) == len(out[0])  # the last token is sampled, never fed back

    def zero_attention(tensor, hook):
        return torch.zeros_like(tensor)

    with random_model.hooks(fwd_hooks=[("blocks.0.hook_attn_out", zero_attention)]):
        ablated = generate_ids(random_model, [[5, 17, 3, 88, 41]], GREEDY)
    assert ablated != out  # interventions change generation
    assert not random_model.hook_dict["blocks.0.hook_attn_out"].fwd_hooks  # and are removed


def test_prompt_longer_than_context_is_a_user_error(random_model):
    with pytest.raises(UserError, match="longer than the model context"):
        generate_ids(random_model, [list(range(33))], GREEDY)
    with pytest.raises(SettingError, match="temperature"):
        GenerationConfig(temperature=-1.0)


def test_sample_config_needs_a_task_and_keeps_the_sampling_fields():
    with pytest.raises(SettingError) as info:
        SampleConfig()
    assert info.value.field == "task"
    with pytest.raises(SettingError) as info:
        SampleConfig(task=("Clean the kitchen",), n=0)
    assert info.value.field == "n"
    with pytest.raises(SettingError) as info:
        SampleConfig(task=("Clean the kitchen",), top_k=0)
    assert info.value.field == "top_k"
    config = SampleConfig(task=("a",), temperature=0.0)
    assert isinstance(config, GenerationConfig) and config.max_new_tokens == 128


def test_cli_generate_without_a_task_names_the_option(tmp_path, capsys):
    from interpgpt.cli import main

    with pytest.raises(SystemExit) as done:
        main(["generate", str(tmp_path), "--n", "2"])
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: --task: ")


def test_parse_steps(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok.encode_example("Clean the kitchen", ["Wash dishes", "sip water", "Sweep floor"])
    generated = ids[ids.index(tok.steps_id) + 1 :]
    assert parse_steps(tok, generated) == (("Wash dishes", "sip water", "Sweep floor"), True)
    assert parse_steps(tok, generated[:-1])[1] is False  # no <|end|>
    empty_step = [*tok.encode_text("Wash"), tok.sep_id, tok.sep_id, tok.end_id]
    assert parse_steps(tok, empty_step) == (("Wash", "", ""), False)
    stray = [*tok.encode_text("Wash"), tok.task_id, tok.end_id]
    assert parse_steps(tok, stray)[1] is False
    assert parse_steps(tok, [tok.end_id]) == ((), False)


def test_trained_models_decompose_held_out_tasks(tiny_pair, tiny_corpus):
    from interpgpt.corpus.build import load_split

    tasks = sorted({r.task for r in load_split(tiny_corpus, "standard", "test")})[:4]
    loaded = tiny_pair["adhd"]
    config = GenerationConfig(max_new_tokens=96, temperature=0.8, seed=0)
    samples = sample_decompositions(loaded.model, loaded.tokenizer, tasks, config, n_samples=2)
    assert [s.task for s in samples] == [t for t in tasks for _ in range(2)]
    for sample in samples:
        prompt = loaded.tokenizer.encode_prompt(sample.task)
        assert list(sample.ids[: sample.prompt_len]) == prompt
        assert sample.parsed == (
            sample.ids[-1] == loaded.tokenizer.end_id and bool(sample.steps) and all(sample.steps)
        )
    assert any(s.parsed for s in samples)  # 150 tiny steps already learn the format
