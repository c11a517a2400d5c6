"""The public Python API (`interpgpt.__all__`) and the README's Python quick start."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import interpgpt
from interpgpt.artifacts.load import LoadedModel, ModelPair

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_public_name_resolves():
    for name in interpgpt.__all__:
        assert getattr(interpgpt, name) is not None, name
    assert set(interpgpt.__all__) <= set(dir(interpgpt))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        interpgpt.no_such_name  # noqa: B018


def test_import_interpgpt_loads_no_torch():
    """The command line imports the package root, so it must stay cheap."""
    code = "import sys, interpgpt; print(sorted({'torch', 'transformer_lens'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_load_pair_defaults_to_cpu_and_takes_a_device_name(tiny_run_dirs):
    pair = interpgpt.load_pair(tiny_run_dirs["standard"], tiny_run_dirs["adhd"])
    assert isinstance(pair, ModelPair) and isinstance(pair.adhd, LoadedModel)
    assert next(pair.standard.model.parameters()).device == torch.device("cpu")
    assert (pair.standard.variant, pair.adhd.variant) == ("standard", "adhd")
    named = interpgpt.load_pair(tiny_run_dirs["standard"], tiny_run_dirs["adhd"], "cpu")
    assert named.tokenizer.sha256 == pair.tokenizer.sha256


def quick_start() -> str:
    """The first python block after the README's "Python quick start" heading."""
    text = README.read_text()
    section = text[text.index("## Python quick start") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the quick start has no python block"
    return match.group(1)


def test_the_readme_quick_start_runs_on_a_study_layout(
    tiny_corpus, tiny_run_dirs, tmp_path, monkeypatch, capsys
):
    """The quick start as written, in a directory laid out as `make study` leaves it (the
    session's tiny corpus and pair in place of the study's)."""
    study = tmp_path / "runs" / "study"
    (study / "runs").mkdir(parents=True)
    (study / "corpus").symlink_to(tiny_corpus, target_is_directory=True)
    for variant, run_dir in tiny_run_dirs.items():
        (study / "runs" / variant).symlink_to(run_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    exec(compile(quick_start(), str(README), "exec"), {"__name__": "__readme__"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    kl, layer, curve = lines
    assert kl.startswith("symmetric KL at step onsets: ") and float(kl.split(": ")[1]) > 0
    assert re.fullmatch(r"mean ADHD - standard residual is largest at layer [01]", layer)
    assert curve.startswith("ADHD P(regulation) per layer: ")
    probs = ast.literal_eval(curve.split(": ", 1)[1])
    assert len(probs) == 2 and all(0 <= p <= 1 for p in probs)  # the tiny preset's 2 layers
