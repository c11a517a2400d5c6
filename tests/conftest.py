"""Shared session fixtures: one tiny corpus, its tokenizer, and a tiny matched pair.

Built once per test session with the real pipeline stages (corpus → tokenizer →
train both variants from the same seed), so every analysis test runs on genuine
artifacts rather than mocks. Tiny sizes keep the whole setup to a few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two
# threads per process oversubscribe the cores badly; subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib
import pytest
import torch

if TYPE_CHECKING:
    from interpgpt.study.workspace import Workspace

matplotlib.use("Agg")
torch.set_num_threads(1)

TINY_TRAIN_STEPS = 150


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (`slow(seconds=...)`): `make test` runs the suite on two
    workers, a file to a worker (pytest-xdist `--dist loadfile`, in collection order), and
    a long file started last would run alone at the end."""

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return 0.0 if mark is None else float(mark.kwargs.get("seconds", 1))

    items.sort(key=seconds, reverse=True)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module, restored afterwards (a module opts in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`): tiny models gain nothing from
    intra-op threads, and on a busy 2-core machine OpenMP spin-waiting makes each step
    ~100x slower in CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from interpgpt.corpus.build import build_corpus
    from interpgpt.corpus.config import CorpusConfig

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(CorpusConfig(out=out, seed=0, n_tasks=300, examples_per_task=8))
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tiny_corpus, tmp_path_factory) -> Path:
    from interpgpt.corpus.config import TokenizerConfig
    from interpgpt.corpus.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return train_tokenizer(TokenizerConfig(corpus=tiny_corpus, out=out, vocab_size=2000))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_path):
    from interpgpt.corpus.tokenizer import TaskTokenizer

    return TaskTokenizer.from_file(tiny_tokenizer_path)


def train_tiny_pair(
    corpus: Path, tokenizer: Path, runs: Path, steps: int, **settings: Any
) -> dict[str, Path]:
    """Both variants of the tiny preset trained on `corpus` from seed 0, with the same
    `settings` (TrainConfig fields); variant -> run dir under `runs`."""
    from interpgpt.train.config import TrainConfig
    from interpgpt.train.loop import train

    dirs = {}
    for variant in ("standard", "adhd"):
        config = TrainConfig(
            corpus=corpus,
            tokenizer=tokenizer,
            out=runs / variant,
            variant=variant,
            preset="tiny",
            steps=steps,
            seed=0,
            n_samples=0,
            progress=False,
            **settings,
        )
        dirs[variant] = train(config).run_dir
    return dirs


@pytest.fixture(scope="session")
def tiny_trainer() -> Callable[..., dict[str, Path]]:
    """`train_tiny_pair`, for tests that train a pair on a corpus of their own."""
    return train_tiny_pair


@pytest.fixture(scope="session")
def tiny_run_dirs(tiny_corpus, tiny_tokenizer_path, tmp_path_factory) -> dict[str, Path]:
    # The analyses' tests read this pair as fixed test data, and their known answers were
    # set on an AdamW-trained pair: on the Muon-trained one (the default recipe) the
    # difference-lens direction at full norm leaves no decomposition closed (steering
    # rate NaN), and a half-scaled SAE decoder costs the tiny model under 0.01 nats. Muon
    # is tested in tests/train.
    runs = tmp_path_factory.mktemp("runs")
    return train_tiny_pair(
        tiny_corpus, tiny_tokenizer_path, runs, TINY_TRAIN_STEPS, optimizer="adamw"
    )


@pytest.fixture(scope="session")
def tiny_ioi_config():
    """The tiny IOI model's training settings (a few seconds on one thread)."""
    from interpgpt.ioi.config import IOITrainConfig

    return IOITrainConfig(
        n_layer=2, d_model=32, d_head=8, d_mlp=64, steps=200, batch_size=32, threads=1
    )


@pytest.fixture(scope="session")
def tiny_ioi_dir(tiny_ioi_config, tmp_path_factory) -> Path:
    """A tiny IOI model, trained once per session for tests/ioi and the notebooks."""
    from interpgpt.ioi.train import train_ioi_model

    out = tmp_path_factory.mktemp("ioi") / "model"
    train_ioi_model(tiny_ioi_config, out)
    return out


@pytest.fixture(scope="session")
def tiny_pair(tiny_run_dirs) -> dict:
    from interpgpt.artifacts.load import load_model

    return {variant: load_model(path) for variant, path in tiny_run_dirs.items()}


@pytest.fixture
def study_layout(tmp_path_factory) -> Callable[..., Workspace]:
    """A study layout from existing artifacts: `study_layout(links, records=None)` makes a
    fresh temp dir, symlinks each of its relative paths (`"corpus"`, `("export", "adhd")`)
    to its target in `links` (parents created), and returns `Workspace(root, records)`."""
    from interpgpt.study.workspace import Workspace

    def build(
        links: Mapping[str | tuple[str, ...], Path],
        records: dict[str, dict[str, Any]] | None = None,
    ) -> Workspace:
        root = tmp_path_factory.mktemp("study")
        for parts, target in links.items():
            link = root.joinpath(*((parts,) if isinstance(parts, str) else parts))
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target, target_is_directory=target.is_dir())
        return Workspace(root, {} if records is None else records)

    return build


class HeadlessChromium:
    """Headless Chromium as the page tests drive it: the DOM after the page's load event
    (with a probe script appended to the body), and a screenshot."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    )

    IMAGES_LOADED = (
        "const imgs = [...document.images]; document.body.dataset.images = imgs.length + ':' +"
        " imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
    )
    """Probe script: `data-images="N:M"` on the body, M of the page's N images loaded."""

    def __init__(self, binary: str, profile: Path):
        self.binary = binary
        self.profile = profile

    def _run(self, *args: str, text: bool = False) -> subprocess.CompletedProcess:
        command = [self.binary, *self.FLAGS, f"--user-data-dir={self.profile}", *args]
        return subprocess.run(command, capture_output=True, text=text, timeout=120, check=True)

    def dom_after_load(self, page: Path, on_load: str) -> str:
        """The page's DOM once `on_load` (JavaScript run on the load event) has run."""
        probe = page.with_name("probe.html")
        script = f"<script>window.addEventListener('load', () => {{ {on_load} }});</script>"
        probe.write_text(page.read_text().replace("</body>", script + "</body>"))
        args = ("--virtual-time-budget=3000", "--dump-dom", probe.as_uri())
        return self._run(*args, text=True).stdout

    def screenshot(self, page: Path, shot: Path) -> Path:
        self._run("--window-size=1100,1400", f"--screenshot={shot}", page.as_uri())
        return shot


@pytest.fixture
def chromium(tmp_path) -> HeadlessChromium:
    """Debian's chromium (`make test` installs it); the test is skipped without it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium package)")
    return HeadlessChromium(binary, tmp_path / "chromium-profile")
