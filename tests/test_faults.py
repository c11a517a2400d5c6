"""Faults and bad input through `main()` as a user calls it: each is exit code 2 and one
line naming the file, with no traceback and no partial output; Ctrl-C is exit code 130."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from interpgpt.artifacts.names import CHECKPOINT, METRICS, MODEL_WEIGHTS
from interpgpt.cli import app, main
from interpgpt.io import atomic_dir, exclusive_lock
from interpgpt.study.config import load_study_config
from interpgpt.study.pipeline import LOCK
from tests.test_cli import leaf_commands

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


def test_a_long_run_shows_life_from_its_first_steps(
    tiny_corpus, tiny_tokenizer_path, tmp_path, capsys, monkeypatch
):
    """A run of a million steps (evaluated every 200,000) stopped after 12: metrics.jsonl
    holds the first log record, a progress line has said how it goes, and a checkpoint
    taken on the clock (here: every step) lets it resume."""
    monkeypatch.setattr("interpgpt.train.loop.CHECKPOINT_SECONDS", 0.0, raising=False)
    out = tmp_path / "run"
    argv = ["train", "--corpus", tiny_corpus, "--tokenizer", tiny_tokenizer_path, "--out", out,
            "--preset", "tiny", "--steps", "1000000", "--stop-after-steps", "12",
            "--n-samples", "0", "--no-progress"]  # fmt: skip
    code, lines = run(argv, capsys)
    assert code == 0, lines
    assert (out / METRICS).is_file(), f"nothing written: {sorted(os.listdir(out))}"
    assert [json.loads(line)["step"] for line in (out / METRICS).open()] == [10]
    assert any(line.startswith("step 10/1,000,000: loss ") for line in lines), lines
    with safe_open(str(out / CHECKPOINT), framework="pt") as checkpoint:
        assert checkpoint.metadata()["step"] == "12"


def test_clock_checkpoints_and_metrics_leave_the_weights_alone(
    tiny_corpus, tiny_tokenizer_path, tmp_path, capsys, monkeypatch
):
    from interpgpt.train import loop

    argv = ["train", "--corpus", tiny_corpus, "--tokenizer", tiny_tokenizer_path,
            "--preset", "tiny", "--steps", "6", "--log-every", "1", "--eval-every", "6",
            "--n-samples", "0", "--no-progress"]  # fmt: skip
    weights = []
    for seconds, name in ((0.0, "clock"), (1e9, "steps")):
        monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", seconds)
        monkeypatch.setattr(loop, "METRICS_SECONDS", seconds)
        code, lines = run([*argv, "--out", tmp_path / name], capsys)
        assert code == 0, lines
        weights.append((tmp_path / name / MODEL_WEIGHTS).read_bytes())
    assert weights[0] == weights[1]


def writers(with_force: bool) -> list[tuple[list[str], list[str], bool]]:
    """(command path, required arguments but --out, whether --out is a file) of every
    command with --out (and --force, if asked): its required inputs need not exist, since
    a bad or existing output is refused before any is read."""
    root = typer.main.get_command(app)
    found = []
    for path, _ in leaf_commands():
        command = root
        for word in path:
            command = command.get_command(typer.Context(command), word)
        opts = {o for p in command.params for o in p.opts}
        if "--out" not in opts or path == ["study"]:  # the study resumes its --out
            continue
        if with_force and "--force" not in opts:
            continue
        args: list[str] = []
        for p in command.params:
            if p.required and p.param_type_name == "argument":
                args.append("1")
            elif p.required and "--out" not in p.opts:
                args += [p.opts[0], "1"]  # a number parses as any type
        help_out = next(p.help or "" for p in command.params if "--out" in p.opts)
        if with_force and help_out.startswith("Parent directory"):
            continue  # `sae train`: --out holds other SAEs too (tested below)
        found.append((path, args, "tokenizer.json" in help_out))
    return found


WRITERS = writers(with_force=True)
ALL_WRITERS = writers(with_force=False)


@pytest.mark.parametrize(
    ("path", "args", "is_file"), WRITERS, ids=[" ".join(p) for p, _, _ in WRITERS]
)
def test_no_command_replaces_an_output_without_force(path, args, is_file, tmp_path, capsys):
    out = tmp_path / "out"
    if is_file:
        out.write_text("earlier")
    else:
        out.mkdir()
        (out / "earlier.json").write_text("earlier")
    code, lines = run([*path, *args, "--out", out], capsys)
    one_line_error(code, lines, str(out), "--force")
    assert (out if is_file else out / "earlier.json").read_text() == "earlier"


def test_force_replaces_and_a_rerun_removes_its_stale_temps(
    tiny_run_dirs, tiny_corpus, tmp_path, capsys
):
    out = tmp_path / "kl"
    pair = [tiny_run_dirs["standard"], tiny_run_dirs["adhd"]]
    argv = ["kl", *pair, "--corpus", tiny_corpus, "--out", out, "--limit", "2"]
    code, lines = run(argv, capsys)
    assert code == 0, lines
    stale = out / ".kl.json.killed.tmp"  # what `atomic_path` leaves when killed
    stale.write_text("half")
    code, lines = run([*argv, "--force"], capsys)
    assert code == 0, lines
    assert (out / "kl.json").is_file() and not stale.exists()


SAE_SMALL = ["--k", "4", "--d-sae", "64", "--tokens", "2048", "--batch-size", "1024",
             "--eval-tokens", "500", "--buffer-tokens", "2048"]  # fmt: skip


def test_sae_train_refuses_to_replace_an_sae_without_force(
    tiny_run_dirs, tiny_corpus, tmp_path, capsys
):
    """`sae train` adds an SAE to --out (a parent dir), refuses to replace one there
    without --force, and with it replaces it whole, removing a killed run's temps."""
    out = tmp_path / "saes"
    (out / "other_L0_hook_resid_post").mkdir(parents=True)  # another SAE is no obstacle
    argv = ["sae", "train", tiny_run_dirs["adhd"], "--layer", "1", "--corpus", tiny_corpus,
            "--out", out, *SAE_SMALL]  # fmt: skip
    code, lines = run(argv, capsys)
    assert code == 0, lines
    sae = out / "adhd_L1_hook_resid_post"
    weights = (sae / "sae_weights.safetensors").read_bytes()
    code, lines = run(argv, capsys)
    one_line_error(code, lines, str(out), sae.name, "--force")
    assert (sae / "sae_weights.safetensors").read_bytes() == weights
    stale = [out / f".{sae.name}.killed", sae / ".quality.json.killed.tmp"]
    stale[0].mkdir()
    stale[1].write_text("half")
    code, lines = run([*argv, "--force"], capsys)
    assert code == 0, lines
    assert {p.name for p in sae.iterdir()} == {"cfg.json", "quality.json",
                                               "sae_weights.safetensors"}  # fmt: skip
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in out.iterdir()) == [sae.name, "other_L0_hook_resid_post"]


def test_sae_train_all_refuses_before_training_and_writes_whole_dirs(
    tiny_run_dirs, tiny_corpus, tmp_path, capsys
):
    out = tmp_path / "saes"
    earlier = out / "adhd_L1_hook_resid_post"
    earlier.mkdir(parents=True)
    (earlier / "cfg.json").write_text("earlier")
    argv = ["sae", "train-all", "--adhd", tiny_run_dirs["adhd"], "--adhd-layers", "1",
            "--corpus", tiny_corpus, "--out", out, *SAE_SMALL]  # fmt: skip
    code, lines = run(argv, capsys)
    one_line_error(code, lines, str(out), earlier.name, "--force")
    assert (earlier / "cfg.json").read_text() == "earlier"
    assert sorted(p.name for p in out.iterdir()) == [earlier.name], "written before refusing"
    stale = out / ".sae_summary.json.killed.tmp"
    stale.write_text("half")
    code, lines = run([*argv, "--force"], capsys)
    assert code == 0, lines
    assert (earlier / "cfg.json").read_text() != "earlier" and not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == [earlier.name, "sae_summary.json"]
    (out / earlier.name).rename(out / "moved")  # the summary alone is an output too
    code, lines = run(argv, capsys)
    one_line_error(code, lines, "sae_summary.json", "--force")


def test_atomic_dir_replaces_whole_or_leaves_nothing(tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


# ------------------------------------------------------------------ the fault matrix
# Every command that writes, given a missing, truncated or non-UTF-8 input, or an output
# with a file in the way: exit code 2, one line naming the file, no traceback, no output.
# (Permission denial is not tested: the sandbox runs as root, which may write anywhere.)

FAULTS = ("missing", "truncated", "non-utf8")


def broken_copy(source: Path, target: Path, fault: str, file: str) -> Path:
    """A copy of the file or directory `source` at `target` with the fault in `file`
    (a path relative to it, "" for the file itself); "missing" is a path with nothing."""
    if fault == "missing":
        return target
    (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
    bad = target / file if file else target
    data = bad.read_bytes()
    # weights cut in half; a text file inside its first record, which a command reading
    # only the first few records (`kl --limit 2`) reads too
    cut = data[: len(data) // 2] if bad.suffix == ".safetensors" else data[:100]
    bad.write_bytes(cut if fault == "truncated" else b"\xff\xfe" + data)
    return target


MODEL_COMMANDS = {  # {m}: the broken model, {a}: the good ADHD model
    "export": ["export", "{m}", "--no-verify"],
    "kl": ["kl", "{m}", "{a}", "--corpus", "{c}", "--limit", "2"],
    "behaviour": ["behaviour", "{m}", "{a}", "--corpus", "{c}"],
    "weights": ["weights", "{m}", "{a}"],
    "headswap": ["headswap", "{m}", "{a}", "--corpus", "{c}"],
    "diff-lens": ["diff-lens", "{m}", "{a}", "--corpus", "{c}"],
    "logit-lens": ["logit-lens", "{m}", "{a}", "--corpus", "{c}"],
    "ablate": ["ablate", "{m}", "--corpus", "{c}", "--heads", "L0H0"],
    "patch": ["patch", "{m}", "--corpus", "{c}"],
    "probes": ["probes", "{m}", "--corpus", "{c}"],
    "sae train": ["sae", "train", "{m}", "--layer", "1", "--corpus", "{c}"],
    "crosscoder train": ["crosscoder", "train", "{m}", "{a}", "--layer", "1", "--corpus", "{c}"],
}
MODEL_FILE = {"truncated": MODEL_WEIGHTS, "non-utf8": "config.json"}

TINY_RUN = ["--preset", "tiny", "--steps", "2", "--n-samples", "0", "--no-progress"]
DATA_COMMANDS = {  # {c}: the corpus, {t}: the tokenizer, one of them broken
    "tokenizer": ["tokenizer", "--corpus", "{c}"],
    "train": ["train", "--corpus", "{c}", "--tokenizer", "{t}", *TINY_RUN],
    "kl": ["kl", "{s}", "{a}", "--corpus", "{c}", "--limit", "2"],
}


def assert_refused_without_output(argv: list, out: Path, capsys, *names) -> None:
    code, lines = run([*argv, "--out", out], capsys)
    one_line_error(code, lines, *map(str, names))
    assert not out.exists(), "a partial output was left"
    assert not list(out.parent.glob(f".{out.name}*")), "a temp was left"


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_broken_model_is_one_line_and_no_output(
    command, fault, tiny_run_dirs, tiny_corpus, tmp_path, capsys
):
    model = broken_copy(
        tiny_run_dirs["standard"], tmp_path / "model", fault, MODEL_FILE.get(fault, "")
    )
    words = {"{m}": model, "{a}": tiny_run_dirs["adhd"], "{c}": tiny_corpus}
    argv = [words.get(w, w) for w in MODEL_COMMANDS[command]]
    named = model / MODEL_FILE[fault] if fault in MODEL_FILE else model
    assert_refused_without_output(argv, tmp_path / "out", capsys, named)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(
    ("command", "broken"), [("tokenizer", "{c}"), ("train", "{c}"), ("train", "{t}"), ("kl", "{c}")]
)
def test_a_broken_corpus_or_tokenizer_is_one_line_and_no_output(
    command, broken, fault, tiny_run_dirs, tiny_corpus, tiny_tokenizer_path, tmp_path, capsys
):
    split = "standard/train.jsonl" if command != "kl" else "standard/test.jsonl"
    if broken == "{c}":
        inputs = {
            "{c}": broken_copy(tiny_corpus, tmp_path / "corpus", fault, split),
            "{t}": tiny_tokenizer_path,
        }
        named = tmp_path / "corpus" / (split if fault != "missing" else "")
    else:
        inputs = {
            "{c}": tiny_corpus,
            "{t}": broken_copy(tiny_tokenizer_path, tmp_path / "tok.json", fault, ""),
        }
        named = tmp_path / "tok.json"
    words = {**inputs, "{s}": tiny_run_dirs["standard"], "{a}": tiny_run_dirs["adhd"]}
    argv = [words.get(w, w) for w in DATA_COMMANDS[command]]
    out = tmp_path / ("tok-out.json" if command == "tokenizer" else "out")
    assert_refused_without_output(argv, out, capsys, named)


@pytest.mark.parametrize(
    ("path", "args", "is_file"), ALL_WRITERS, ids=[" ".join(p) for p, _, _ in ALL_WRITERS]
)
def test_a_file_in_the_way_of_the_output_is_found_first(path, args, is_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    outs = [blocker / "below"] if is_file else [blocker, blocker / "below"]
    for out in outs:
        code, lines = run([*path, *args, "--out", out], capsys)
        one_line_error(code, lines, str(out), "is a file")
    assert blocker.read_text() == "x"


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: a real file system that runs out of space (ENOSPC) on the first
    model-sized write. Mounting needs root (the sandbox and CI run as root)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("command", ["export", "train"])
def test_a_full_disk_is_one_line_and_no_output(
    command, full_disk, tiny_run_dirs, tiny_corpus, tiny_tokenizer_path, capsys
):
    argv = {
        "export": ["export", tiny_run_dirs["standard"]],
        "train": ["train", "--corpus", tiny_corpus, "--tokenizer", tiny_tokenizer_path, *TINY_RUN],
    }[command]
    out = full_disk / command
    code, lines = run([*argv, "--out", out], capsys)
    if command == "train":  # the run's progress lines come first, then the one error line
        assert not any("Traceback" in line for line in lines), lines
        lines = [line for line in lines if line.startswith("error: ")]
    one_line_error(code, lines, "no space left on the device")
    if command == "export":  # written beside --out and renamed: nothing is left
        assert not out.exists() and not list(full_disk.glob(f".{out.name}*"))
    else:  # a run dir resumes: what is there is whole, never a half-written file
        assert not list(out.rglob("*.tmp*")), list(out.rglob("*"))
