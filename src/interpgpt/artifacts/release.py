"""A release on disk: `MANIFEST.json` and the files it lists, read back, checked and restored.

A release (`interpgpt release build`) is a folder of trained models in Hugging Face layout
(`<model>/config.json`, `model.safetensors`, `tokenizer.json`, ...), their SAEs in SAELens
layout at the paths the study keeps them (`sae/...`, `controls/<pair>/sae/...`), and
`MANIFEST.json`: the sha256 of every file, and for every stage of the study that built it
the settings it ran with and the hashes of the stages it read (the study's own
`stages/<stage>.json` basis). A study whose stage has the same basis is satisfied from the
release (`interpgpt.study.pipeline`): this module says whether it is, and why not, and
restores a training run's run dir from the released Hugging Face weights.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from interpgpt.artifacts import convert
from interpgpt.artifacts.load import gpt_config_from_llama, load_safetensors
from interpgpt.artifacts.names import (
    HF_CONFIG,
    MODEL_WEIGHTS,
    RUN_CONFIG,
    TOKENIZER_FILE,
)
from interpgpt.errors import UserError
from interpgpt.io import atomic_path, file_sha256, read_json, write_json

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1

Basis = dict[str, Any]
"""What a stage's hash is made of: {"settings": {...}, "upstream": {stage: hash}}."""


def corpus_sha256(corpus: Path) -> str:
    """One sha256 over a corpus's data files (every `*.jsonl`, by relative path), so two
    corpus dirs hash equal exactly when their examples are byte-identical."""
    digest = hashlib.sha256()
    for path in sorted(Path(corpus).rglob("*.jsonl")):
        digest.update(f"{path.relative_to(corpus).as_posix()}:{file_sha256(path)};".encode())
    return digest.hexdigest()


def tree_sha256(root: Path) -> dict[str, str]:
    """Every file under `root` but the manifest -> its sha256, by relative POSIX path."""
    return {rel: file_sha256(Path(root) / rel) for rel in tree_files(root)}


def tree_files(root: Path) -> list[str]:
    """Every file under `root` but the manifest, by relative POSIX path, sorted."""
    return [
        p.relative_to(root).as_posix()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
    ]


STUDY_ROOT = "$STUDY"
"""How the manifest writes the study dir that built it, in paths of records and configs."""


def portable(obj: Any, study: Path) -> Any:
    """`obj` (JSON) with every string path under `study` rewritten from `STUDY_ROOT`."""
    return _rewrite(obj, str(Path(study).resolve()), STUDY_ROOT)


def localised(obj: Any, study: Path) -> Any:
    """A `portable` value with `STUDY_ROOT` replaced by `study`."""
    return _rewrite(obj, STUDY_ROOT, str(study))


def _rewrite(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return new + obj[len(old) :] if obj == old or obj.startswith(old + "/") else obj
    if isinstance(obj, dict):
        return {k: _rewrite(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, old, new) for v in obj]
    return obj


def why_differs(name: str, ours: dict[str, Basis], theirs: dict[str, Basis]) -> str | None:
    """Why stage `name`'s basis here (`ours`, every stage's) is not the release's
    (`theirs`), in a few words, following a differing upstream stage to its own cause
    ("train.steps is 400 (release: 1200)", "upstream export reads train-adhd-twin, unlike
    the release's"); None when the bases are equal."""
    if name not in theirs:
        return f"the release has no stage {name}"
    mine, release = ours[name], theirs[name]
    keys = sorted(set(mine["settings"]) | set(release["settings"]))
    changed = [
        f"{key} is {mine['settings'].get(key)!r} (release: {release['settings'].get(key)!r})"
        for key in keys
        if mine["settings"].get(key) != release["settings"].get(key)
    ]
    if changed:
        return "; ".join(changed[:3]) + ("; ..." if len(changed) > 3 else "")
    up, their_up = mine["upstream"], release["upstream"]
    if set(up) != set(their_up):
        extra, gone = sorted(set(up) - set(their_up)), sorted(set(their_up) - set(up))
        reads = [f"reads {', '.join(extra)}"] if extra else []
        reads += [f"does not read {', '.join(gone)}"] if gone else []
        return f"it {' and '.join(reads)}, unlike the release's"
    for upstream, digest in up.items():
        if digest != their_up[upstream]:
            cause = why_differs(upstream, ours, theirs) or "differs from the release's"
            return f"upstream {upstream}: {cause.removeprefix('it ')}"
    return None


@dataclass
class Release:
    """A release folder and its manifest."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> Release:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise UserError(f"{root}: not a release (no {MANIFEST}); `interpgpt release build`")
        manifest = read_json(path)
        if manifest.get("format") != MANIFEST_FORMAT:
            raise UserError(f"{path}: manifest format {manifest.get('format')!r}, expected 1")
        return cls(root, manifest)

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        """Stage name -> {"hash", "settings", "upstream", and, for a released stage,
        "summary", "outputs" (relative to the study dir) and "files"}."""
        return self.manifest["stages"]

    def bases(self) -> dict[str, Basis]:
        """Every stage's basis, as `why_differs` compares it."""
        return {n: {k: s[k] for k in ("settings", "upstream")} for n, s in self.stages.items()}

    def stage(self, name: str) -> ReleasedStage | None:
        """Stage `name`'s outputs as released, or None (the release holds only its basis,
        or nothing)."""
        return ReleasedStage(self, name) if "summary" in self.stages.get(name, {}) else None

    def check_files(self) -> int:
        """Every file the manifest lists has its sha256, and no other file is there; the
        first that does not raises, naming it. Returns the number of files checked."""
        listed: dict[str, str] = self.manifest["files"]
        for rel, expected in listed.items():
            path = self.root / rel
            if not path.is_file():
                raise UserError(f"{path}: listed in {MANIFEST} but missing")
            if file_sha256(path) != expected:
                raise UserError(f"{path}: sha256 differs from {MANIFEST} (corrupted or edited)")
        for rel in tree_files(self.root):
            if rel not in listed:
                raise UserError(f"{self.root / rel}: not listed in {MANIFEST}")
        return len(listed)

    def inputs_differ(self, study: Path) -> str | None:
        """Why the study's corpus or tokenizer is not the one the release was trained on
        (byte for byte), or None."""
        inputs = self.manifest["inputs"]
        tokenizer = study / TOKENIZER_FILE
        if tokenizer.is_file() and file_sha256(tokenizer) != inputs["tokenizer_sha256"]:
            return f"{tokenizer}: sha256 differs from the release's tokenizer"
        corpus = study / "corpus"
        if corpus.is_dir() and corpus_sha256(corpus) != inputs["corpus_sha256"]:
            return f"{corpus}: its examples differ from the release's corpus"
        return None

    def checked(self, rel: str) -> Path:
        """Released file `rel`, after checking its sha256 against the manifest."""
        path = self.root / rel
        expected = self.manifest["files"].get(rel)
        if expected is None or not path.is_file() or file_sha256(path) != expected:
            raise UserError(f"{path}: missing, unlisted or not as {MANIFEST} records it")
        return path

    def copy(self, rel: str, study: Path) -> Path:
        """Copy released file `rel` (checked) to the same relative path in the study dir:
        a copy, not a link, so a study that later retrains never writes into the release."""
        source, target = self.checked(rel), study / rel
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        return target


@dataclass(frozen=True)
class ReleasedStage:
    """One stage of the study as the release holds it."""

    release: Release
    name: str

    @property
    def entry(self) -> dict[str, Any]:
        return self.release.stages[self.name]

    def summary(self, study: Path) -> dict[str, Any]:
        """The stage record's summary, its paths in `study`, marked as from the release."""
        return {**localised(self.entry["summary"], study), "release": str(self.release.root)}

    def copy_files(self, study: Path) -> list[Path]:
        """Copy the stage's files into `study`; returns its outputs there."""
        for rel in self.entry["files"]:
            self.release.copy(rel, study)
        return [study / rel for rel in self.entry["outputs"]]


def restore_run_dir(hf_dir: Path, run_config: dict[str, Any], out: Path) -> Path:
    """A run dir (`interpgpt train`'s layout) from a released Hugging Face dir: the Llama
    weights renamed back into TaskGPT's state dict (the same tensors, bit for bit), the
    recorded run config and the tokenizer. Returns the weights file."""
    cfg = gpt_config_from_llama(read_json(hf_dir / HF_CONFIG), hf_dir / HF_CONFIG)
    state = load_safetensors(hf_dir / MODEL_WEIGHTS)
    state.pop("lm_head.weight", None)  # tied to the embedding
    weights = {k: v.contiguous() for k, v in convert.from_llama_state_dict(state, cfg).items()}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MODEL_WEIGHTS) as tmp:
        save_file(weights, str(tmp))
    with atomic_path(out / TOKENIZER_FILE) as tmp:
        shutil.copyfile(hf_dir / TOKENIZER_FILE, tmp)
    write_json(out / RUN_CONFIG, run_config)
    return out / MODEL_WEIGHTS
