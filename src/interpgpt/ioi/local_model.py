"""The local IOI model as the pipeline sees it: a TaskGPT with its word-level tokenizer and
held-out split (`IOIModel`), loaded back from the directory `ioi.train` writes.

The directory holds `model.safetensors`, `ioi_model.json` (GPTConfig, training config,
held-out split, held-out logit difference, provenance), the word-level `tokenizer.json`
and `metrics.jsonl`. The config file has its own name so `artifacts.load_model` never
mistakes an IOI model for a matched-pair run dir (different tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from interpgpt.artifacts.load import build_model, load_safetensors
from interpgpt.artifacts.names import MODEL_WEIGHTS, TOKENIZER_FILE
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.io import read_json
from interpgpt.ioi.language import IOISplit, IOITokenizer
from interpgpt.model.config import GPTConfig
from interpgpt.model.taskgpt import TaskGPT

IOI_CONFIG = "ioi_model.json"


@dataclass
class IOIModel:
    """A model that does IOI, with what the pipeline needs to prompt it."""

    model: TaskGPT
    tokenizer: IOITokenizer
    split: IOISplit
    source: Path
    info: dict = field(default_factory=dict)


def load_ioi_model(path: str | Path, device: str = "auto") -> IOIModel:
    """Load a directory written by `ioi.train.train_ioi_model`."""
    path = Path(path)
    if not (path / IOI_CONFIG).is_file():
        raise UserError(
            f"{path}: not an IOI model directory (no {IOI_CONFIG}); "
            "train one with `interpgpt ioi-demo --out DIR` or pass --model gpt2"
        )
    info = read_json(path / IOI_CONFIG)
    try:
        cfg = GPTConfig(**info["model"])
        split = IOISplit(
            held_out_pairs=tuple((a, b) for a, b in info["split"]["held_out_pairs"]),
            held_out_templates=tuple(info["split"]["held_out_templates"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path / IOI_CONFIG}: malformed IOI model config ({err})") from None
    model = build_model(cfg, load_safetensors(path / MODEL_WEIGHTS), path / MODEL_WEIGHTS)
    tok = IOITokenizer.from_file(path / TOKENIZER_FILE)
    return IOIModel(model.to(resolve_device(device)), tok, split, path, info)
