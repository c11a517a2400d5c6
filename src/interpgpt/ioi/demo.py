"""`interpgpt ioi-demo`: train the local IOI model, then run the IOI pipeline on it.

Writes OUT/model (the IOI model directory) and OUT/ioi.json, OUT/ioi_report.md and
the figures, so the sandbox's whole arc runs offline on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from interpgpt.ioi.analysis import IOIConfig, IOIResult, run_ioi
from interpgpt.ioi.train import IOITrainConfig, IOITrainResult, train_ioi_model

MODEL_SUBDIR = "model"


@dataclass(frozen=True)
class IOIDemoConfig:
    """Train-then-analyse in one directory."""

    out_dir: Path
    """Receives model/ and the pipeline's outputs."""
    train: IOITrainConfig = field(default_factory=IOITrainConfig)
    """How the IOI model is trained."""
    n_prompts: int = 96
    """Prompts patched and attributed."""
    device: str = "auto"
    """"auto", "cpu" or "cuda" for the analysis (training uses `train.device`)."""


@dataclass
class IOIDemoResult:
    training: IOITrainResult
    analysis: IOIResult


def run_demo(config: IOIDemoConfig) -> IOIDemoResult:
    out = Path(config.out_dir)
    training = train_ioi_model(config.train, out / MODEL_SUBDIR)
    analysis = run_ioi(
        IOIConfig(
            model=str(out / MODEL_SUBDIR),
            out_dir=out,
            n_prompts=config.n_prompts,
            seed=config.train.seed,
            device=config.device,
        )
    )
    return IOIDemoResult(training, analysis)
