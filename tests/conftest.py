"""Shared session fixtures: one tiny corpus, its tokenizer, and a tiny matched pair.

Built once per test session with the real pipeline stages (corpus → tokenizer →
train both variants from the same seed), so every analysis test runs on genuine
artifacts rather than mocks. Tiny sizes keep the whole setup to a few seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two
# threads per process oversubscribe the cores badly; subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)

TINY_TRAIN_STEPS = 150


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
    from interpgpt.corpus.build import CorpusConfig, build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(CorpusConfig(out=out, seed=0, n_tasks=300, examples_per_task=8))
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tiny_corpus, tmp_path_factory) -> Path:
    from interpgpt.corpus.tokenizer import TokenizerConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return train_tokenizer(TokenizerConfig(corpus=tiny_corpus, out=out, vocab_size=2000))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_path):
    from interpgpt.corpus.tokenizer import TaskTokenizer

    return TaskTokenizer.from_file(tiny_tokenizer_path)


@pytest.fixture(scope="session")
def tiny_run_dirs(tiny_corpus, tiny_tokenizer_path, tmp_path_factory) -> dict[str, Path]:
    from interpgpt.train import TrainConfig, train

    runs = tmp_path_factory.mktemp("runs")
    dirs = {}
    for variant in ("standard", "adhd"):
        config = TrainConfig(
            corpus=tiny_corpus,
            tokenizer=tiny_tokenizer_path,
            out=runs / variant,
            variant=variant,
            preset="tiny",
            steps=TINY_TRAIN_STEPS,
            seed=0,
            n_samples=0,
            progress=False,
        )
        dirs[variant] = train(config).run_dir
    return dirs


@pytest.fixture(scope="session")
def tiny_pair(tiny_run_dirs) -> dict:
    from interpgpt.artifacts.load import load_model

    return {variant: load_model(path) for variant, path in tiny_run_dirs.items()}
