"""Faults and bad input through `main()` as a user calls it: each is exit code 2 and one
line naming the file, with no traceback and no partial output; Ctrl-C is exit code 130."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from interpgpt.artifacts.names import CHECKPOINT, MODEL_WEIGHTS
from interpgpt.cli import main
from interpgpt.io import exclusive_lock
from interpgpt.study.config import load_study_config
from interpgpt.study.pipeline import LOCK

SRC = Path(__file__).resolve().parents[1] / "src"


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and output lines of `interpgpt ARGV` (returning normally is exit code 0)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).strip().splitlines()


def one_line_error(code: int, lines: list[str], *needles: str) -> str:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines
    return lines[0]


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def test_corpus_and_tokenizer_refuse_to_overwrite(tiny_corpus, tiny_tokenizer_path, capsys):
    before = tiny_tokenizer_path.read_bytes()
    code, lines = run(["tokenizer", "--corpus", tiny_corpus, "--out", tiny_tokenizer_path], capsys)
    one_line_error(code, lines, str(tiny_tokenizer_path), "--force")
    assert tiny_tokenizer_path.read_bytes() == before
    stats = (tiny_corpus / "stats.json").read_bytes()
    code, lines = run(["corpus", "--out", tiny_corpus, "--n-tasks", "50"], capsys)
    one_line_error(code, lines, str(tiny_corpus), "--force")
    assert (tiny_corpus / "stats.json").read_bytes() == stats


def test_non_utf8_corpus_names_the_file(tiny_corpus, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    bad = corpus / "standard" / "train.jsonl"
    bad.write_bytes(bad.read_bytes()[:200] + b"\xff\xfe" + bad.read_bytes()[200:])
    out = tmp_path / "tok.json"
    code, lines = run(["tokenizer", "--corpus", corpus, "--out", out], capsys)
    one_line_error(code, lines, str(bad), "UTF-8")
    assert not out.exists()


def test_missing_and_truncated_model(tiny_run_dirs, tmp_path, capsys):
    code, lines = run(["generate", tmp_path / "nowhere", "--task", "tidy"], capsys)
    one_line_error(code, lines, "nowhere")
    run_dir = copy_run(tiny_run_dirs["standard"], tmp_path)
    weights = run_dir / MODEL_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    code, lines = run(["generate", run_dir, "--task", "tidy"], capsys)
    one_line_error(code, lines, str(weights))


def test_nan_weights_are_refused_naming_the_file(tiny_run_dirs, tmp_path, capsys):
    run_dir = copy_run(tiny_run_dirs["standard"], tmp_path)
    weights = run_dir / MODEL_WEIGHTS
    state = load_file(str(weights))
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(weights))
    code, lines = run(["generate", run_dir, "--task", "tidy"], capsys)
    one_line_error(code, lines, str(weights), "NaN")
    out = tmp_path / "export"
    code, lines = run(["export", run_dir, "--out", out], capsys)
    one_line_error(code, lines, str(weights), "NaN")
    assert not out.exists() and not list(tmp_path.glob(".export.*"))


def test_truncated_checkpoint_on_resume(tiny_corpus, tiny_tokenizer_path, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a')  # cut short
    argv = ["train", "--corpus", tiny_corpus, "--tokenizer", tiny_tokenizer_path, "--out", out]
    code, lines = run([*argv, "--preset", "tiny", "--resume", "--no-progress"], capsys)
    one_line_error(code, lines, str(out / CHECKPOINT), "truncated")


@pytest.mark.parametrize("command", ["kl", "train"])
def test_an_unwritable_out_is_found_before_the_work(
    command, tiny_run_dirs, tiny_corpus, tiny_tokenizer_path, tmp_path, capsys
):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    inputs = {
        "kl": [tiny_run_dirs["standard"], tiny_run_dirs["adhd"], "--corpus", tiny_corpus],
        "train": ["--corpus", tiny_corpus, "--tokenizer", tiny_tokenizer_path],
    }[command]
    for out in (blocker, blocker / "below"):
        started = time.perf_counter()
        code, lines = run([command, *inputs, "--out", out], capsys)
        one_line_error(code, lines, str(out), "is a file")
        assert time.perf_counter() - started < 5, "refused only after the work"
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["generate", "m", "--task", "t", "--temperature", "nan"], "--temperature"),
        (["train", "--corpus", "c", "--tokenizer", "t", "--out", "o", "--steps", "10**9"], None),
        (["train", "--corpus", "c", "--tokenizer", "t", "--out", "o", "--lr", "nan"], "--lr"),
        *(
            (
                [
                    "steer",
                    "s",
                    *[f"--{k}" for k in ()],
                    "--standard",
                    "a",
                    "--adhd",
                    "b",
                    "--corpus",
                    "c",
                    "--out",
                    "o",
                    "--diff-file",
                    "d",
                    "--scale",
                    scale,
                ],
                "--scale",
            )
            for scale in ("nan", "-1e30", "inf")
        ),
    ],
)
def test_nan_and_absurd_settings(argv, needle, capsys):
    argv = [str(10**9) if a == "10**9" else a for a in argv]
    needle = needle or "--steps"
    code, lines = run(argv, capsys)
    one_line_error(code, lines, needle)


def test_study_checks_force_before_writing_and_holds_a_lock(tmp_path, capsys):
    out = tmp_path / "study"
    code, lines = run(["study", "--preset", "tiny", "--out", out, "--force", "nosuch"], capsys)
    one_line_error(code, lines, "--force nosuch")
    assert not out.exists()
    with exclusive_lock(out / LOCK, "held by the test"):
        code, lines = run(["study", "--preset", "tiny", "--out", out], capsys)
    one_line_error(code, lines, "another study")
    assert not (out / "study_config.json").exists()


def test_tiny_preset_study_defaults_fit_it():
    config = load_study_config(None, [], "tiny")  # refused before the fix
    assert max(config.sections["sae"].std_layers) < 2
    # a layer the user chose stays theirs, and is still checked
    config = load_study_config(None, ["sae.adhd_layers=0,1", "feature_diff.layer=0"], "tiny")
    assert config.sections["sae"].adhd_layers == (0, 1)


def test_export_removes_its_stale_temp_dirs(tiny_run_dirs, tmp_path, capsys):
    out = tmp_path / "export"
    stale = tmp_path / ".export.killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    code, lines = run(["export", tiny_run_dirs["standard"], "--out", out, "--no-verify"], capsys)
    assert code == 0, lines
    assert not stale.exists() and (out / MODEL_WEIGHTS).is_file()


def test_ctrl_c_exits_130_saying_what_was_kept(tiny_corpus, tiny_tokenizer_path, tmp_path):
    out = tmp_path / "run"
    argv = [
        "train",
        "--corpus",
        tiny_corpus,
        "--tokenizer",
        tiny_tokenizer_path,
        "--out",
        out,
        "--preset",
        "tiny",
        "--steps",
        "100000",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "1000",
        "--n-samples",
        "0",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = "import sys; from interpgpt.cli import main; main(sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, argv)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("interrupted: ") and "--resume" in lines[-1], stderr
    assert "Traceback" not in stderr
