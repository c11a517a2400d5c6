"""Artifact I/O shared by every stage: atomic writes, JSON with provenance, JSONL reading.

Every result file records the config and the package versions that produced it
(`provenance`). Every write goes to a temporary file in the destination directory
and is renamed into place, so a killed stage never leaves a half-written artifact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from interpgpt.errors import UserError

# ----------------------------------------------------------------------------- faults


def describe_fault(err: BaseException, path: str | os.PathLike[str] | None = None) -> str:
    """One line for an I/O fault on `path` (else the file the error names): what is wrong
    and what to do. Every read and write reports its faults through this."""
    name = path if path is not None else getattr(err, "filename", None)
    where = f"{name}: " if name is not None else ""
    if isinstance(err, UnicodeDecodeError):
        return f"{where}not UTF-8 text (bad byte at offset {err.start}); is it the right file?"
    if isinstance(err, FileNotFoundError):
        return f"{where}file not found"
    if isinstance(err, IsADirectoryError):
        return f"{where}is a directory where a file is expected"
    if isinstance(err, NotADirectoryError | FileExistsError):
        return f"{where}a file is in the way of a directory; remove it or choose another path"
    if isinstance(err, PermissionError):
        return f"{where}permission denied; fix its permissions or choose another path"
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}no space left on the device; free some space and run the command again"
    if isinstance(err, OSError) and err.errno == errno.EROFS:
        return f"{where}read-only file system; choose another path"
    detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    first = detail.strip().splitlines()[0] if detail.strip() else type(err).__name__
    return f"{where}{first}"


@contextlib.contextmanager
def faults(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run the body; an I/O or decoding fault on `path` becomes one `UserError` naming it."""
    try:
        yield
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(describe_fault(err, path)) from None
    except SafetensorError as err:  # safetensors reports a failed write as its own error
        code = re.search(r"os error (\d+)", str(err))
        if code is None:
            raise
        number = int(code.group(1))
        raise UserError(describe_fault(OSError(number, os.strerror(number)), path)) from None


def check_writable(path: str | os.PathLike[str], flag: str, directory: bool = True) -> None:
    """Refuse, before any work, an output `path` that cannot be written: a file where a
    directory goes (or the reverse), or a place without write permission."""
    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise UserError(f"{flag} {path}: is a file, not a directory; choose another path")
        if not directory and path.is_dir():
            raise UserError(f"{flag} {path}: is a directory, not a file; choose another path")
        target = path if directory else path.parent
    else:
        target = path.parent
        while not target.exists():
            target = target.parent
        if not target.is_dir():
            raise UserError(f"{flag} {path}: {target} is a file, not a directory")
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {path}: {target} is not writable; fix its permissions or choose another path"
        )


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], busy: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed); if another process holds it,
    a UserError `busy`. The OS releases the lock when the holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{busy} (lock {path}); wait for it or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_temps(path: str | os.PathLike[str]) -> None:
    """Remove the temps an earlier, killed write of `path` left: beside it (`.{name}.*`,
    by `atomic_path` and the export's build dir) and, for a directory, the `atomic_path`
    temps of its files (`.*.tmp`). A write running now elsewhere would lose its temp too:
    outputs are not shared between concurrent commands."""
    path = Path(path)
    stale = [*path.parent.glob(f".{path.name}.*")] if path.parent.is_dir() else []
    if path.is_dir():
        stale += path.glob(".*.tmp")
    for temp in stale:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)


def refuse_existing(path: str | os.PathLike[str], flag: str, directory: bool = True) -> None:
    """Refuse, before any work, an output that already holds something (a directory with
    files, or an existing file): it is replaced only with `--force`."""
    path = Path(path)
    if directory and path.is_dir():
        held = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        if held:
            raise already_holds(flag, path, held)
    elif not directory and path.exists():
        raise UserError(f"{flag} {path}: already exists; pass --force to replace it")


def already_holds(flag: str, path: Path, held: list[str], it: str = "it") -> UserError:
    """The refusal of an output `path` (given as `flag`) that holds `held` (the first three
    named); `it`: what --force would replace."""
    shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
    return UserError(
        f"{flag} {path}: already holds {shown}; pass --force to replace {it}, or "
        f"choose another {flag}"
    )


@contextlib.contextmanager
def output_of_one_run(path: str | os.PathLike[str]) -> Iterator[None]:
    """Around a command that writes `path` (a directory): first remove the temps a killed
    earlier run left there; if the command fails, remove the directory when it created it,
    so a fault leaves no partial output (each file is written whole by `atomic_path`)."""
    path = Path(path)
    remove_stale_temps(path)
    created = not path.exists()
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`."""
    path = Path(path)
    with faults(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with faults(path):  # a full disk or a lost permission names the artifact
            yield tmp
            if tmp.exists():  # mkstemp creates 0600; give the artifact the usual umask mode
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success rename it onto `path`,
    replacing what was there (moved aside, then removed). A killed write leaves only the
    temp (`.{name}.*`), which `remove_stale_temps(path)` removes."""
    path = Path(path)
    with faults(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with faults(path):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
            replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, path: Path) -> None:
    """Rename the finished directory `tmp` onto `path`; what `path` held is moved aside
    first (a `.{name}.old.*` temp beside it), then removed."""
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        os.replace(path, old / path.name)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples and numpy/torch scalars as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    return obj


def write_json(path: str | os.PathLike[str], obj: Any, strict: bool = False) -> Path:
    """Write `obj` as indented JSON (atomically). Python's JSON writes a NaN or infinite
    float as the literals NaN / Infinity, which only Python's reader takes back; with
    `strict`, each becomes null, so any JSON parser reads the file."""
    value = to_jsonable(obj)
    if strict:
        value = _finite_or_null(value)
    text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=not strict)
    return write_text(path, text + "\n")


def _finite_or_null(value: Any) -> Any:
    """`value` (plain JSON values) with every NaN or infinite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with faults(path):
            return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed line is a UserError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    records = []
    with faults(path), path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object per line")
            records.append(record)
    return records


TRACKED_PACKAGES = (
    "interpgpt",
    "torch",
    "transformer-lens",
    "sae-lens",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(config: Any) -> dict[str, Any]:
    """The block every result file carries: the config that produced it and the versions."""
    return {"config": to_jsonable(config), "versions": package_versions()}


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_hash(config: Any) -> str:
    """A short stable hash of a config, used to decide whether a stage's outputs are current."""
    blob = json.dumps(to_jsonable(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
