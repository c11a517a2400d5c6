"""File names of every artifact a run dir or an export dir holds, defined once.

A *run dir* (written by `interpgpt train`) holds the TaskGPT state dict, its config
(GPTConfig under "model", the training config under "train", the tokenizer hash,
variant, held-out loss, versions) and a copy of the tokenizer. An *export dir*
(written by `interpgpt export`) holds the Hugging Face, TransformerLens and raw
PyTorch forms and a model card.
"""

from pathlib import Path

MODEL_WEIGHTS = "model.safetensors"
RUN_CONFIG = "config.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT = "checkpoint.safetensors"
TRAINER_STATE = "trainer_state.pt"
METRICS = "metrics.jsonl"
LOSS_PLOT = "loss.png"
TL_BUNDLE = "hooked_transformer.pt"
RAW_BUNDLE = "pytorch_model.pt"
HF_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
MODEL_CARD = "README.md"
EXPORT_INFO = "interpgpt_export.json"

RELEASE_DIR = Path("release")
"""Where `release build` writes and the study's `release=auto` looks (relative to the
working directory: the repository root under `make`)."""
