"""Tokenizer: notebook parity, round trips, literal specials, token roles, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from seed_notebook import PAIRED, SeedNotebook
from tokenizers import Tokenizer
from typer.testing import CliRunner

from interpgpt.cli import app
from interpgpt.corpus.build import build_corpus
from interpgpt.corpus.config import DEFAULT_VOCAB_SIZE, CorpusConfig, TokenizerConfig
from interpgpt.corpus.regulation import REGULATION_ACTIONS, is_regulation
from interpgpt.corpus.tokenizer import (
    SPECIAL_TOKENS,
    Example,
    TaskTokenizer,
    VocabBudget,
    build_tokenizer,
    regulation_first_tokens,
    train_tokenizer,
)
from interpgpt.errors import UserError
from interpgpt.settings import SettingError
from interpgpt.study.stages import tokenizer_section, tokenizer_stage
from interpgpt.study.workspace import Workspace


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tok")
    build_corpus(CorpusConfig(out=root / "corpus", seed=0, n_tasks=200, examples_per_task=4))
    return train_tokenizer(
        TokenizerConfig(corpus=root / "corpus", out=root / "tokenizer.json", vocab_size=1024)
    )


@pytest.fixture(scope="module")
def tok(tok_file: Path) -> TaskTokenizer:
    return TaskTokenizer.from_file(tok_file)


def test_file_usable_as_in_notebook(tok_file: Path, tok: TaskTokenizer) -> None:
    raw = Tokenizer.from_file(str(tok_file))
    special_ids = {n: raw.token_to_id(n) for n in SPECIAL_TOKENS}
    assert list(special_ids.values()) == [0, 1, 2, 3, 4]
    assert tok.special_ids == special_ids
    assert (tok.task_id, tok.steps_id, tok.sep_id, tok.end_id, tok.pad_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size <= 1024 + len(SPECIAL_TOKENS)
    notebook = SeedNotebook(raw)
    for pair in PAIRED:
        for variant in ("standard", "adhd"):
            ex = pair[variant]
            ours = tok.encode_example(ex["task"], ex["steps"])
            assert ours == notebook.encode_example(ex)
            assert tok.roles(ours).task_range == tuple(notebook.token_roles(ours)["task_range"])
            padded = [*ours, tok.pad_id, tok.pad_id]
            reference = notebook.token_roles(padded)
            roles = tok.roles(padded)
            assert roles.special_positions == tuple(reference["special_positions"])
            assert tok.decode_example(padded) == Example(ex["task"], tuple(ex["steps"]))
            assert roles.step_is_regulation == tuple(is_regulation(s) for s in ex["steps"])


def test_regulation_vocabulary_is_the_actions_first_tokens(tok: TaskTokenizer) -> None:
    first = regulation_first_tokens(tok)
    assert list(first) == sorted(first)  # sorted(first) is the list of regulation token ids
    assert sorted(a for actions in first.values() for a in actions) == sorted(REGULATION_ACTIONS)
    for token, actions in first.items():
        assert token >= len(SPECIAL_TOKENS)  # never a special token
        assert all(tok.encode_text(a)[0] == token for a in actions)


def test_training_is_deterministic(tok_file: Path, tmp_path: Path) -> None:
    config = TokenizerConfig(
        corpus=tok_file.parent / "corpus", out=tmp_path / "t.json", vocab_size=1024
    )
    again = train_tokenizer(config)
    assert again.read_bytes() == tok_file.read_bytes()
    assert TaskTokenizer.from_file(again).sha256 == TaskTokenizer.from_file(tok_file).sha256


def test_save_load_round_trip(tok: TaskTokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "copy.json")
    copy = TaskTokenizer.from_file(path)
    assert copy.sha256 == tok.sha256
    assert copy.encode_text("Deep clean the garage") == tok.encode_text("Deep clean the garage")


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_text_round_trip(tok: TaskTokenizer, text: str) -> None:
    ids = tok.encode_text(text)
    assert tok.decode_text(ids) == text
    assert not set(ids) & set(tok.special_ids.values())


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(st.sampled_from([*SPECIAL_TOKENS, "<", "|", ">", "<|", "x", "é"]), max_size=12)
)
def test_literal_specials_stay_text(tok: TaskTokenizer, parts: list[str]) -> None:
    text = "".join(parts)
    ids = tok.encode_text(text)
    assert tok.decode_text(ids) == text
    assert not set(ids) & set(tok.special_ids.values())


def test_task_named_like_a_special(tok: TaskTokenizer) -> None:
    ids = tok.encode_example("<|sep|>", ["<|end|>", "b"])
    assert ids.count(tok.sep_id) == 1 and ids.count(tok.end_id) == 1
    assert tok.decode_example(ids) == Example("<|sep|>", ("<|end|>", "b"))


def test_roles_known_example(tok: TaskTokenizer) -> None:
    task, steps = "Clean the kitchen", ["Wash dishes", "sip water", "Wipe counters"]
    t, s = (len(tok.encode_text(x)) for x in (task, steps[0]))
    r = len(tok.encode_text(steps[1]))
    ids = tok.encode_example(task, steps)
    roles = tok.roles(ids)
    steps_at = 1 + t
    onsets = (steps_at + 1, steps_at + 2 + s, steps_at + 3 + s + r)
    assert roles.task_range == tuple(range(1, 1 + t))
    assert roles.step_onsets == onsets
    assert roles.onset_predictors == tuple(o - 1 for o in onsets)
    assert roles.step_spans == (
        (onsets[0], onsets[1] - 1),
        (onsets[1], onsets[2] - 1),
        (onsets[2], len(ids) - 1),
    )
    assert roles.step_is_regulation == (False, True, False)
    assert roles.end_position == len(ids) - 1
    assert [ids[p] for p in roles.onset_predictors] == [tok.steps_id, tok.sep_id, tok.sep_id]


def test_roles_truncated_and_prompt(tok: TaskTokenizer) -> None:
    last = "Pay each bill on the list"
    ids = tok.encode_example("Pay the bills", ["Open statements", "pause", last])
    cut = ids[:-2]  # generation stopped mid-step, no <|end|>
    assert len(tok.encode_text(last)) > 1
    roles = tok.roles(cut)
    assert roles.end_position is None and len(roles.step_onsets) == 3
    assert roles.step_spans[-1][1] == len(cut)
    assert tok.decode_example(cut).steps[:2] == ("Open statements", "pause")
    prompt = tok.encode_prompt("Pay the bills")
    assert prompt == ids[: len(prompt)] and prompt[-1] == tok.steps_id
    assert tok.roles(prompt).step_onsets == ()
    assert tok.decode_example(prompt) == Example("Pay the bills", ())


def test_batch_masks_match_roles(tok: TaskTokenizer) -> None:
    seqs = [tok.encode_example(p["adhd"]["task"], p["adhd"]["steps"]) for p in PAIRED[:4]]
    width = max(map(len, seqs))
    batch = torch.tensor([s + [tok.pad_id] * (width - len(s)) for s in seqs])
    predictors, onsets = tok.onset_predictor_mask(batch), tok.step_onset_mask(batch)
    for row, seq in enumerate(seqs):
        roles = tok.roles(seq)
        assert predictors[row].nonzero().flatten().tolist() == list(roles.onset_predictors)
        assert onsets[row].nonzero().flatten().tolist() == list(roles.step_onsets)


def test_budget_known_answer() -> None:
    """BPE on one repeated word learns "aa" then "aaaa" and stops: two merges on the 256
    bytes, far below the budget it was allowed."""
    budget = build_tokenizer(iter([["aaaa"] * 5]), vocab_size=1000).budget()
    assert budget == VocabBudget(bpe_tokens=258, merges=2, budget=DEFAULT_VOCAB_SIZE)
    assert budget.describe() == "uses 258 of 8,192 tokens (2 merges)"


def test_budget_counts_learned_tokens_without_specials(tok: TaskTokenizer) -> None:
    budget = tok.budget()
    assert budget.bpe_tokens == tok.vocab_size - len(SPECIAL_TOKENS)
    assert budget.merges == budget.bpe_tokens - 256  # every merge adds one token to the bytes
    assert 256 < budget.bpe_tokens <= 1024 and budget.budget == DEFAULT_VOCAB_SIZE


def test_study_stage_records_and_reports_the_budget(tok_file: Path, tmp_path: Path) -> None:
    (tmp_path / "corpus").symlink_to(tok_file.parent / "corpus")
    output = tokenizer_stage(Workspace(tmp_path), TokenizerConfig(vocab_size=1024))
    budget = TaskTokenizer.from_file(tok_file).budget()
    assert output.summary["budget"] == {
        "bpe_tokens": budget.bpe_tokens,
        "merges": budget.merges,
        "budget": 8192,
    }
    section = tokenizer_section(output.summary, [str(p) for p in output.outputs])
    assert (
        section.finding
        == f"The tokenizer uses {budget.bpe_tokens:,} of 8,192 tokens ({budget.merges:,} merges)."
    )


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        TaskTokenizer.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match=r"bad\.json: not a valid tokenizer"):
        TaskTokenizer.from_file(bad)


@pytest.mark.parametrize("vocab_size", [256, DEFAULT_VOCAB_SIZE + 1])
def test_vocab_size_is_validated(vocab_size: int) -> None:
    with pytest.raises(SettingError) as info:
        TokenizerConfig(vocab_size=vocab_size)
    assert info.value.field == "vocab_size"


def test_cli_tokenizer(tok_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "tokenizer.json"
    args = ["tokenizer", "--corpus", str(tok_file.parent / "corpus"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--vocab-size", "1024"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == tok_file.read_bytes()
    assert f"the tokenizer {TaskTokenizer.from_file(out).budget().describe()}" in result.output


def test_cli_tokenizer_bad_input(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    for variant in ("standard", "adhd"):
        (corpus / variant).mkdir(parents=True)
        (corpus / variant / "train.jsonl").write_text(
            '{"task_id": 1, "task": "a", "steps": ["b"], "complexity": 1}\n{broken\n'
        )
    out = tmp_path / "tokenizer.json"
    cmd = [sys.executable, "-m", "interpgpt", "tokenizer", "--corpus", str(corpus)]
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "standard/train.jsonl:2: malformed JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists() and list(tmp_path.glob(".tokenizer.json*")) == []
    missing = [*cmd[:-1], str(tmp_path / "nope"), "--out", str(out)]
    done = subprocess.run(missing, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "corpus directory not found" in done.stderr
