"""The commands the README and docs/ show are real: every `interpgpt` command named there
exists, answers `--help` with exit code 0, and has every option the text gives it; every
`make` target named there is in the Makefile. The README's cheap blocks run as written
(its shell blocks in an empty directory, its release snippet in the repository root);
every other block names the test that covers it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from interpgpt.artifacts.names import RELEASE_DIR
from interpgpt.artifacts.release import MANIFEST
from interpgpt.cli import app, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def shell_blocks(text: str) -> list[str]:
    """The lines of the ```bash blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if line:
                lines.append(line)
    return lines


def interpgpt_commands(text: str) -> list[list[str]]:
    """Each `interpgpt ...` invocation in the shell blocks and inline code spans, as the
    words after `interpgpt` (placeholders like `<command>` and `...` dropped)."""
    candidates = shell_blocks(text) + re.findall(r"`(interpgpt\s[^`]+)`", text)
    commands = []
    for line in candidates:
        words = shlex.split(line)
        if "interpgpt" not in words:
            continue
        words = words[words.index("interpgpt") + 1 :]
        if any("<" in w for w in words):
            continue
        commands.append([w for w in words if w != "..."])
    return commands


def make_targets(text: str) -> set[str]:
    return {m for line in shell_blocks(text) for m in re.findall(r"^make ([\w-]+)", line)}


DOCUMENTED = sorted(
    {
        (page.relative_to(ROOT).as_posix(), " ".join(words))
        for page in PAGES
        for words in interpgpt_commands(page.read_text())
    }
)


def resolve(words: list[str]) -> tuple[list[str], click.Command]:
    """The command path within `words` and its click command."""
    command: click.Command = typer.main.get_command(app)
    path: list[str] = []
    for word in words:  # a group's commands are looked up (the CLI imports them lazily)
        if not hasattr(command, "list_commands"):
            break
        child = command.get_command(typer.Context(command), word)
        if child is None:
            break
        command = child
        path.append(word)
    return path, command


def options(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names


def test_the_pages_name_commands():
    readme = {line for page, line in DOCUMENTED if page == "README.md"}
    assert any(line.startswith("train ") for line in readme)
    assert any(line.startswith("study") for line in readme)


@pytest.mark.parametrize(("page", "line"), DOCUMENTED, ids=[f"{p}: {c}" for p, c in DOCUMENTED])
def test_a_documented_command_exists_and_takes_its_options(page, line, capsys):
    words = shlex.split(line)
    path, command = resolve(words)
    rest = words[len(path) :]
    if hasattr(command, "list_commands"):  # a group: only the group's own flags may follow it
        assert rest and all(w.startswith("--") for w in rest), (
            f"{page}: no command `interpgpt {line}`"
        )
    given = {w.split("=", 1)[0] for w in words if w.startswith("--")}
    unknown = given - options(command)
    assert not unknown, f"{page}: `interpgpt {' '.join(path)}` has no option {sorted(unknown)}"
    try:
        main([*path, "--help"])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    assert code == 0, capsys.readouterr()
    assert "Usage: interpgpt" in capsys.readouterr().out


def test_the_entry_point_runs():
    """`python -m interpgpt` as a process (the tests above call `main` in this one)."""
    done = subprocess.run(
        [sys.executable, "-m", "interpgpt", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("interpgpt ")


def test_every_make_target_named_exists():
    makefile = (ROOT / "Makefile").read_text()
    defined = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = {t for page in PAGES for t in make_targets(page.read_text())}
    named |= {t for page in PAGES for t in re.findall(r"`make ([\w-]+)`", page.read_text())}
    assert {"study", "test"} <= named
    assert named <= defined, sorted(named - defined)


def test_every_relative_link_resolves():
    """Links between the pages (and their #anchors, GitHub's heading slugs) point somewhere."""
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            ok = linked.exists()
            if ok and anchor and linked.is_file():
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
                slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
                ok = anchor in slugs
            if not ok:
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


# ---------------------------------------------------------------------------- the README, run

README = ROOT / "README.md"

README_SKIPPED = {
    "make study": "the whole study (it trains four models unless release/ supplies them) and "
    "`make test`, the whole suite, this test among it",
    "interpgpt diff base/ tuned/": "needs your models; tests/test_diff_any_pair.py runs "
    "`interpgpt diff` on two tiny HookedTransformers",
    "interpgpt corpus --out data/corpus": "trains two models; each command runs on tiny "
    "settings in tests/corpus/, tests/train/test_loop.py and tests/analysis/test_kl.py",
    "import interpgpt": "the quick start: tests/test_api.py runs it on a tiny study layout",
    "import interpgpt\na = interpgpt.load_lm": "needs your models; tests/test_api.py and "
    "tests/test_diff_any_pair.py run the any-pair API on tiny ones",
}
"""README code blocks not run here, by their first line(s), with the reason. Every other
```bash block runs as written."""

README_ON_RELEASE = ("from transformers import",)
"""README python blocks, by their first line, that read the release shipped in the
repository (`release/`, paths relative to its root): run there as written."""


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced bash or python block of the README."""
    return re.findall(r"```(bash|python)\n(.*?)```", README.read_text(), re.S)


def skipped_reason(block: str) -> str | None:
    keys = [k for k in README_SKIPPED if block.startswith(k)]
    return README_SKIPPED[max(keys, key=len)] if keys else None


def test_every_readme_block_is_run_or_skipped_with_a_reason():
    """A block added to the README is either cheap (so a test below runs it) or listed in
    `README_SKIPPED`; a listed block that left the README is dropped from the list."""
    blocks = readme_blocks()
    unlisted = [
        text
        for lang, text in blocks
        if lang == "python" and not skipped_reason(text) and not text.startswith(README_ON_RELEASE)
    ]
    assert not unlisted, f"python blocks of the README with no test: {unlisted}"
    listed = [*README_SKIPPED, *README_ON_RELEASE]
    stale = [k for k in listed if not any(text.startswith(k) for _, text in blocks)]
    assert not stale, f"README_SKIPPED names blocks the README no longer has: {stale}"


CHEAP = [text for lang, text in readme_blocks() if lang == "bash" and not skipped_reason(text)]


@pytest.mark.parametrize("block", CHEAP, ids=[b.splitlines()[0] for b in CHEAP])
def test_a_cheap_readme_block_runs_as_written(block, tmp_path):
    """The block through bash in an empty directory, `interpgpt` being this checkout's."""
    script = f'set -euo pipefail\ninterpgpt() {{ "{sys.executable}" -m interpgpt "$@"; }}\n{block}'
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


ON_RELEASE = [
    text
    for lang, text in readme_blocks()
    if lang == "python" and text.startswith(README_ON_RELEASE)
]


@pytest.mark.skipif(
    not (ROOT / RELEASE_DIR / MANIFEST).is_file(), reason="no release/ (`make release` builds it)"
)
@pytest.mark.parametrize("block", ON_RELEASE, ids=[b.splitlines()[0] for b in ON_RELEASE])
def test_a_readme_block_on_the_release_runs_as_written(block):
    """The block as a python process in the repository root, where release/ is; it prints
    the decomposition of the task it gives."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    task = re.search(r'tokenizer\("([^"]+)"', block)
    assert task and done.stdout.startswith(task.group(1)), done.stdout
