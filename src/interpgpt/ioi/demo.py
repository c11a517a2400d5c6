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

from interpgpt.ioi.analysis import IOIResult, run_ioi
from interpgpt.ioi.config import MODEL_SUBDIR, IOIDemoConfig
from interpgpt.ioi.train import IOITrainResult, train_ioi_model


@dataclass
class IOIDemoResult:
    training: IOITrainResult
    analysis: IOIResult


def run_demo(config: IOIDemoConfig) -> IOIDemoResult:
    training = train_ioi_model(config.train_config(), Path(config.out) / MODEL_SUBDIR)
    return IOIDemoResult(training, run_ioi(config.analysis_config()))
