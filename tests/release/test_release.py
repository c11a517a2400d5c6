"""The release: built through the study's stages at a tiny size, verified file by file and
load path by load path, its cards' snippets run, and a study started from it."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from interpgpt.artifacts.names import CHECKPOINT, MODEL_CARD, MODEL_WEIGHTS
from interpgpt.artifacts.release import MANIFEST, Release, why_differs
from interpgpt.cli import main
from interpgpt.errors import UserError
from interpgpt.io import file_sha256, read_json
from interpgpt.release.build import MODEL_FILES, build_release, release_stages
from interpgpt.release.verify import verify_release
from interpgpt.study.config import load_study_config, open_release
from interpgpt.study.pipeline import run_stages, study_stages
from interpgpt.study.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_RELEASE = [
    "release=off",
    "corpus.n_tasks=120",
    "corpus.examples_per_task=4",
    "train.steps=8",
    "train.n_samples=0",
    "behaviour.limit=4",
    "behaviour.auroc_tasks=4",
    "behaviour.max_new_tokens=24",
    "sae.std_layers=1",
    "sae.adhd_layers=1",
    "sae.k=4",
    "sae.d_sae=32",
    "sae.tokens=512",
    "sae.batch_size=256",
    "sae.eval_tokens=256",
    "sae.buffer_tokens=1024",
    "feature_diff.layer=1",
    "crosscoder.layer=1",
]
"""A release at the tiny preset on a budget that only tests its plumbing."""
MODELS = ("standard", "adhd", "standard-twin", "adhd-twin")
RELEASED = {"train-standard", "train-adhd", "train-standard-twin", "train-adhd-twin", "sae"}
RELEASED |= {"sae@standard-twin", "sae@adhd-twin"}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("release-build")
    config = load_study_config(None, TINY_RELEASE, "tiny")
    out = root / "release"  # the cards' snippets name the folder `release/`
    build_release(config, out, root / "work", Console(quiet=True), check_tasks=6)
    return out


def test_the_build_writes_four_models_their_saes_and_the_manifest(release):
    manifest = read_json(release / MANIFEST)
    assert set(manifest["models"]) == set(MODELS)
    assert {n for n, s in manifest["stages"].items() if "summary" in s} == RELEASED
    assert {"corpus", "tokenizer", "export"} <= set(manifest["stages"])
    assert manifest["commit"]["sha"] and manifest["study"]["preset"] == "tiny"
    assert set(manifest["inputs"]) == {"corpus_sha256", "tokenizer_sha256"}
    for name, model in manifest["models"].items():
        assert sorted(p.name for p in (release / name).iterdir()) == sorted(
            [*MODEL_FILES, MODEL_CARD]
        )
        assert model["weights_sha256"] == file_sha256(release / name / MODEL_WEIGHTS)
        assert model["steps"] == 8 and model["tokens"] > 0 and model["wall_seconds"] > 0
        assert model["cpu"] and model["torch"] and model["threads"] >= 1
        assert set(model["behaviour"]) == {"seen", "unseen"} and model["targets"]
        assert len(model["init_sha256"]) == 64
    models = manifest["models"]
    for variant in ("standard", "adhd"):  # a twin: its partner's init, another data order
        twin = models[f"{variant}-twin"]
        assert twin["init_sha256"] == models[variant]["init_sha256"]
        assert twin["data_seed"] != models[variant]["data_seed"]
    assert models["standard"]["init_sha256"] == models["adhd"]["init_sha256"]
    saes = [p.parent for p in release.rglob("cfg.json") if "sae" in p.parts]
    assert {p.relative_to(release).parts[0] for p in saes} == {"sae", "controls"}
    assert not list(release.rglob("*.pt"))  # the bundles are made by `export`, not stored
    assert set(manifest["files"]) == {
        p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()
    } - {MANIFEST}


def test_verify_passes_on_the_release(release, capsys):
    result = verify_release(release)
    assert [m.name for m in result.models] == list(MODELS)
    for m in result.models:
        assert m.logit_diff["huggingface"] <= 1e-4 and m.logit_diff["pytorch"] <= 1e-6
    assert len(result.saes) == 7  # std L1, adhd L1 and its seed twin; 2 per control pair
    main(["release", "verify", str(release), "--no-behaviour"])
    assert "release verified: " in capsys.readouterr().out


def test_the_build_command_resumes_its_work_dir(release, tmp_path, capsys):
    """`interpgpt release build` on the finished work dir trains nothing again and writes
    the same models."""
    out = tmp_path / "release"
    argv = ["release", "build", "--preset", "tiny", "--work", str(release.parent / "work")]
    argv += ["--out", str(out), "--check-tasks", "6"]
    main([*argv, *(a for setting in TINY_RELEASE for a in ("--set", setting))])
    printed = capsys.readouterr().out
    assert "running" not in printed and "release →" in printed
    first, second = read_json(release / MANIFEST), read_json(out / MANIFEST)
    assert second["stages"] == first["stages"]
    for name in MODELS:
        assert (
            second["files"][f"{name}/{MODEL_WEIGHTS}"] == first["files"][f"{name}/{MODEL_WEIGHTS}"]
        )
    with pytest.raises(SystemExit) as done:
        main(["release", "verify", str(tmp_path / "nothing")])
    assert done.value.code == 2
    assert (
        capsys.readouterr().err.strip().startswith(f"error: {tmp_path / 'nothing'}: not a release")
    )


@pytest.mark.parametrize(
    "rel, edit",
    [
        ("adhd/model.safetensors", lambda b: b[:-1] + bytes([b[-1] ^ 1])),
        ("standard-twin/config.json", lambda b: b.replace(b'"rms_norm_eps"', b'"rms_norm_EPS"')),
        ("sae/adhd_L1_hook_resid_post/sae_weights.safetensors", lambda b: b[:-4]),
    ],
)
def test_a_corrupted_or_edited_file_fails_verify_naming_it(release, tmp_path, capsys, rel, edit):
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    path = copy / rel
    path.write_bytes(edit(path.read_bytes()))
    with pytest.raises(SystemExit) as done:
        main(["release", "verify", str(copy)])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: sha256 differs from {MANIFEST} (corrupted or edited)"


def test_an_unlisted_or_missing_file_fails_verify(release, tmp_path):
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    (copy / "adhd" / "notes.txt").write_text("extra")
    with pytest.raises(UserError, match=r"adhd/notes\.txt: not listed in MANIFEST\.json"):
        Release.open(copy).check_files()
    (copy / "adhd" / "notes.txt").unlink()
    (copy / "standard" / MODEL_CARD).unlink()
    with pytest.raises(UserError, match=r"standard/README\.md: listed in MANIFEST\.json but"):
        Release.open(copy).check_files()


def test_the_model_cards_loading_snippets_run(release, monkeypatch):
    """Each card's three loading paths, run as written from the repository root (the
    folder holding `release/`); the bash block is the `export` that makes the bundles."""
    monkeypatch.chdir(release.parent)
    card = (release / "adhd" / MODEL_CARD).read_text()
    blocks = re.findall(r"```(python|bash)\n(.*?)```", card, re.S)
    assert [lang for lang, _ in blocks] == ["python", "bash", "python", "python"]
    for lang, code in blocks:
        if lang == "bash":
            argv = code.split()
            assert argv[0] == "interpgpt"
            main(argv[1:])
            continue
        namespace: dict = {}
        exec(compile(code, "<card>", "exec"), namespace)
        assert namespace["model"] is not None
    for heading in ("## What is this model for?", "## Measured behaviour", "## Limitations"):
        assert heading in card
    assert "Budget actually used" in card and "Architecture" in card


def _stages_output(config, ws: Workspace, release: Release | None, only=None) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=400, color_system=None)
    stages = release_stages(study_stages(config))
    stages = [s for s in stages if only is None or s.name in only]
    run_stages(stages, config, ws, set(), console, release)
    return buffer.getvalue()


def test_the_study_starts_from_the_release_and_retrains_what_a_setting_changes(release, tmp_path):
    config = load_study_config(None, TINY_RELEASE, "tiny")
    ws = Workspace(tmp_path / "study")
    printed = _stages_output(config, ws, Release.open(release))
    assert "retrains" not in printed
    for name in RELEASED:
        record = read_json(ws.path("stages", f"{name}.json"))
        assert record["release"] == str(release), name
    manifest = read_json(release / MANIFEST)
    run = read_json(ws.path("runs", "adhd-twin", "config.json"))
    assert run["init_sha256"] == manifest["models"]["adhd-twin"]["init_sha256"]
    assert run["train"]["corpus"] == str(ws.corpus)
    assert (ws.path("sae", "adhd_L1_hook_resid_post", "cfg.json")).is_file()
    # A changed training setting retrains the model, with one line saying why (what reads
    # it follows: test_why_a_stage_differs_follows_its_inputs).
    changed = load_study_config(None, [*TINY_RELEASE, "train.steps=10"], "tiny")
    some = {"corpus", "tokenizer", "train-adhd"}
    printed = _stages_output(changed, ws, Release.open(release), some)
    lines = [line for line in printed.splitlines() if " retrains: " in line]
    assert lines == ["train-adhd retrains: steps is 10 (release: 8)"]
    record = read_json(ws.path("stages", "train-adhd.json"))
    assert "release" not in record and record["summary"]["steps"] == 10
    # In that finished study dir, another training setting restarts the run dir rather than
    # refusing its checkpoint's settings.
    assert ws.path("runs", "adhd", CHECKPOINT).is_file()
    again = load_study_config(None, [*TINY_RELEASE, "train.steps=12"], "tiny")
    _stages_output(again, ws, None, some)
    assert read_json(ws.path("stages", "train-adhd.json"))["summary"]["steps"] == 12


def test_why_a_stage_differs_follows_its_inputs():
    theirs = {
        "tokenizer": {"settings": {"vocab_size": 8192}, "upstream": {}},
        "train-adhd": {"settings": {"steps": 8}, "upstream": {"tokenizer": "a"}},
    }
    ours = json.loads(json.dumps(theirs))
    assert why_differs("train-adhd", ours, theirs) is None
    ours["tokenizer"]["settings"]["vocab_size"] = 4096
    ours["train-adhd"]["upstream"]["tokenizer"] = "b"
    assert why_differs("train-adhd", ours, theirs) == (
        "upstream tokenizer: vocab_size is 4096 (release: 8192)"
    )
    ours["train-adhd"]["upstream"] = {"tokenizer": "a", "corpus": "c"}
    assert why_differs("train-adhd", ours, theirs) == "it reads corpus, unlike the release's"
    assert why_differs("sae", {"sae": ours["tokenizer"]}, theirs) == "the release has no stage sae"


def test_the_release_setting(tmp_path, monkeypatch, release):
    monkeypatch.chdir(tmp_path)
    assert open_release(load_study_config(None, [], None)) is None  # auto, no ./release
    os.symlink(release, tmp_path / "release")
    assert open_release(load_study_config(None, [], None)).root == Path("release")
    assert open_release(load_study_config(None, ["release=off"], None)) is None
    assert open_release(load_study_config(None, [f"release={release}"], None)).root == release
    with pytest.raises(UserError, match=r"^release=nowhere: no MANIFEST\.json there"):
        load_study_config(None, ["release=nowhere"], None)
    with pytest.raises(UserError, match=r"twins=false: the release ships each model's"):
        build_release(load_study_config(None, ["twins=false"], None), tmp_path / "r")
