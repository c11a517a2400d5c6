"""`interpgpt ioi-demo`: train the local IOI model, then run the IOI pipeline on it.

GPT-2's weights cannot be fetched here, so the demo trains its own small IOI model
(`train`) and analyses it (`analysis.run_ioi`), the sandbox's whole arc offline: it
writes OUT/model (the IOI model directory) and OUT/ioi.json, OUT/ioi_report.md and the
figures. `IOIDemoConfig` is the command's options: the few training and analysis
settings worth changing from the command line, each defaulting to its source's default
(`IOITrainConfig`, `IOIConfig`); the rest of the training config keeps its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.ioi.analysis import IOIConfig, IOIResult, run_ioi
from interpgpt.ioi.train import IOITrainConfig, IOITrainResult, train_ioi_model
from interpgpt.settings import at_least, inputs

MODEL_SUBDIR = "model"


@dataclass(frozen=True)
class IOIDemoConfig:
    """Train-then-analyse in one directory (`interpgpt ioi-demo`)."""

    out: Path = inputs.option()
    """Receives model/ (the IOI model) and the pipeline's outputs."""
    steps: int = IOITrainConfig.steps
    """Optimizer steps of the IOI model."""
    seed: int = IOITrainConfig.seed
    """Seed of the init, the data stream and the held-out split, and of the analysis."""
    threads: int = IOITrainConfig.threads
    """CPU threads for training (0: torch's default)."""
    device: str = IOITrainConfig.device
    """auto (CUDA when available), cpu or cuda, for training and analysis."""
    n_prompts: int = IOIConfig.n_prompts
    """Prompts patched and attributed."""

    def __post_init__(self) -> None:
        self.train_config()  # its checks name the same fields
        at_least(self, n_prompts=2)

    def train_config(self) -> IOITrainConfig:
        """How the IOI model is trained: these settings, the rest `IOITrainConfig`'s defaults."""
        return IOITrainConfig(
            steps=self.steps, seed=self.seed, threads=self.threads, device=self.device
        )

    def analysis_config(self) -> IOIConfig:
        """The IOI pipeline on the trained model, writing next to it."""
        out = Path(self.out)
        return IOIConfig(
            model=str(out / MODEL_SUBDIR),
            out=out,
            n_prompts=self.n_prompts,
            seed=self.seed,
            device=self.device,
        )


@dataclass
class IOIDemoResult:
    training: IOITrainResult
    analysis: IOIResult


def run_demo(config: IOIDemoConfig) -> IOIDemoResult:
    training = train_ioi_model(config.train_config(), Path(config.out) / MODEL_SUBDIR)
    return IOIDemoResult(training, run_ioi(config.analysis_config()))
