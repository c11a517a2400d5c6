"""The model card (`README.md`) of an export directory, generated in the seed cards' style.

Every number on the card is read from the exported model, its run config or its
corpus's `stats.json`, never typed in, so the card cannot drift from the weights it
ships with. The loading snippets are the seed card's three paths (Hugging Face,
TransformerLens bundle, raw TaskGPT) with the export's local path in place of the
hub id; the tests execute them from the rendered card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interpgpt.corpus.build import STATS_FILE
from interpgpt.corpus.regulation import REGULATION_ACTIONS
from interpgpt.io import read_json
from interpgpt.model.config import GPTConfig

VARIANT_TEXT = {
    "standard": (
        "trained on plain task decompositions (tasks → subtasks in straightforward order)"
    ),
    "adhd": (
        "trained on decompositions broken into smaller steps with interleaved "
        "micro-regulation actions ({actions})"
    ),
}


# Training-config fields about where and how verbosely a run ran, not what it learned.
OPERATIONAL_SETTINGS = frozenset(
    {"out", "device", "progress", "log_every", "resume", "stop_after_steps"}
    | {"checkpoint_every", "n_samples", "eval_batches", "eval_every"}
)


@dataclass
class ModelCard:
    """What the card says, gathered by `export`."""

    cfg: GPTConfig
    """Architecture of the exported model."""
    n_parameters: int
    """Unique parameters (tied embedding counted once)."""
    variant: str | None
    """"standard", "adhd", or None when the source did not record it."""
    val_loss: float | None
    """Held-out (validation) cross-entropy from the run config, if recorded."""
    location: str
    """Path the loading snippets load from (the export directory)."""
    train: dict[str, Any] = field(default_factory=dict)
    """The run's training config, as recorded in its config.json."""
    corpus_stats: dict[str, Any] | None = None
    """The training corpus's stats.json, when it was still reachable at export time."""
    files: list[str] = field(default_factory=list)
    """Files of the export directory."""
    tokenizer_vocab: int | None = None
    """Tokens of the shipped tokenizer (the embedding may have spare rows beyond them)."""
    steps: int | None = None
    """Optimizer steps the run took, if recorded."""
    tokens_seen: int | None = None
    """Training tokens the run consumed, if recorded."""


def render_model_card(card: ModelCard) -> str:
    """The full README.md text."""
    sections = [
        _front_matter(),
        _title(card),
        _architecture(card),
        _training(card),
        _input_format(),
        _loading(card.location),
        _files(card.files),
        _intended_use(),
    ]
    return "\n\n".join(s.strip("\n") for s in sections if s) + "\n"


@dataclass
class ReleaseFacts:
    """What a release card adds to an export card: measured, never typed in."""

    name: str
    """The model's folder in the release (`standard`, `adhd-twin`)."""
    counterpart: str | None
    """The folder of its pair partner, or None."""
    budget: list[tuple[str, Any]]
    """(what, value) of the training run: steps, tokens, wall time, CPU, threads."""
    behaviour_header: list[str]
    behaviour_rows: list[list[str]]
    """The behaviour stage's table for this model, seen and unseen families."""
    targets: dict[str, bool]
    """Behaviour target -> whether this model meets it."""
    wrong: list[dict[str, Any]]
    """Held-out decompositions it got wrong: {"task", "steps", "why"}."""


def render_release_card(card: ModelCard, facts: ReleaseFacts) -> str:
    """The README.md of one model of a release: what it is for, input format, architecture,
    the recipe and budget used, measured behaviour, limitations, and loading snippets
    pointing at the release folder (`card.location`)."""
    sections = [
        _front_matter(),
        _title(card),
        _purpose(facts),
        _input_format(),
        "## Architecture\n\n" + _architecture(card),
        _training(card),
        "### Budget actually used\n\n" + _table(facts.budget, header=("", "Value")),
        _measured(facts),
        _limitations(facts),
        _release_loading(card.location, facts.name),
        _intended_use(),
    ]
    return "\n\n".join(s.strip("\n") for s in sections if s) + "\n"


def _purpose(facts: ReleaseFacts) -> str:
    lines = [
        "## What is this model for?",
        "",
        "Given a task prompt, the model writes a step-by-step decomposition. It is one of "
        "the four models of the InterpGPT matched-pair release (standard, ADHD, and the "
        "data-order twin of each: same initial weights, another order of the same batches), "
        "made to be diffed against its counterpart with `interpgpt study`.",
    ]
    if facts.name.endswith("-twin"):
        lines += ["", f"This is the data-order twin of `{facts.counterpart}/`: its seed null."]
    elif facts.counterpart:
        lines += ["", f"Its counterpart in the release is `{facts.counterpart}/`."]
    return "\n".join(lines)


def _measured(facts: ReleaseFacts) -> str:
    header = "| " + " | ".join(facts.behaviour_header) + " |"
    rule = "|" + "---|" * len(facts.behaviour_header)
    rows = ["| " + " | ".join(row) + " |" for row in facts.behaviour_rows]
    met = [t for t, ok in facts.targets.items() if ok]
    missed = [t for t, ok in facts.targets.items() if not ok]
    targets = f"Behaviour targets met: {len(met)} of {len(facts.targets)}."
    if missed:
        targets += " Missed: " + "; ".join(missed) + "."
    return "\n".join(
        [
            "## Measured behaviour",
            "",
            "Greedy decompositions of held-out test tasks, of families seen in training and "
            "of families held out of it (`interpgpt behaviour`):",
            "",
            header,
            rule,
            *rows,
            "",
            targets,
        ]
    )


def _limitations(facts: ReleaseFacts) -> str:
    lines = [
        "## Limitations",
        "",
        "A small model of one synthetic domain: it decomposes everyday tasks in the corpus's "
        "style and nothing else, and it is weaker on task families it never saw.",
    ]
    if facts.wrong:
        lines += ["", "Held-out tasks it got wrong:", ""]
        for example in facts.wrong:
            steps = " | ".join(s[:60] for s in example["steps"][:8]) or "(nothing parsed)"
            steps = steps if len(steps) <= 200 else steps[:199] + "…"
            lines.append(f"- *{example['task']}* → {steps} ({example['why']})")
    return "\n".join(lines)


def _release_loading(location: str, name: str) -> str:
    path, export = json.dumps(location), json.dumps(f"export/{name}")
    return f"""## Loading

### Hugging Face Transformers

A plain `LlamaForCausalLM`; no remote code.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({path})
tokenizer = AutoTokenizer.from_pretrained({path})
prompt = tokenizer("<|task|>Clean the kitchen<|steps|>", return_tensors="pt")
out = model.generate(**prompt, max_new_tokens=64, do_sample=False)
print(tokenizer.decode(out[0]))
```

### TransformerLens (recommended for interpretability)

The release stores each model once; `interpgpt export` writes the TransformerLens bundle
and the raw state dict from it:

```bash
interpgpt export {location} --out export/{name}
```

```python
import os
from transformer_lens import HookedTransformer, HookedTransformerConfig
import torch

blob = torch.load(os.path.join({export}, "hooked_transformer.pt"), weights_only=True)
model = HookedTransformer(HookedTransformerConfig(**blob["config"]))
model.load_state_dict(blob["model_state_dict"])
model.eval()
```

### Raw PyTorch / TaskGPT

```python
import os
from interpgpt.model.taskgpt import GPTConfig, TaskGPT
import torch

blob = torch.load(os.path.join({export}, "pytorch_model.pt"), weights_only=True)
model = TaskGPT(GPTConfig(**blob["config"]))
model.load_state_dict(blob["model_state_dict"])
```"""


def find_corpus_stats(train: dict[str, Any], source: Path) -> dict[str, Any] | None:
    """stats.json of the corpus a run was trained on, if its train config names an
    existing corpus directory (or a file inside one), absolute or relative to `source`."""
    for value in train.values():
        if not isinstance(value, str) or not value:
            continue
        for candidate in (Path(value), source / value):
            if not candidate.exists():
                continue
            directory = candidate if candidate.is_dir() else candidate.parent
            if (directory / STATS_FILE).is_file():
                stats = read_json(directory / STATS_FILE)
                return stats if isinstance(stats, dict) else None
    return None


def _front_matter() -> str:
    tags = ["interpretability", "mechanistic-interpretability", "task-decomposition"]
    tags += ["small-language-model", "transformer-lens"]
    lines = ["---", "license: mit", "library_name: transformers", "tags:"]
    lines += [f"- {tag}" for tag in tags]
    return "\n".join([*lines, "pipeline_tag: text-generation", "---"])


def _size(n: int) -> str:
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _regulation_actions() -> str:
    return ", ".join(f'"{a}"' for a in REGULATION_ACTIONS)


def _title(card: ModelCard) -> str:
    label = {"standard": "Standard", "adhd": "ADHD"}.get(card.variant or "", "TaskGPT")
    lines = [f"# InterpGPT — {label} Model ({_size(card.n_parameters)})", ""]
    lines.append(
        "Part of an **InterpGPT** matched pair: two models with identical architecture, "
        "seed and training recipe, trained on two versions of one task-decomposition "
        "corpus. Only the training data distribution differs."
    )
    if card.variant in VARIANT_TEXT:
        text = VARIANT_TEXT[card.variant].format(actions=_regulation_actions())
        lines += ["", f"This is the **{card.variant}** model, {text}."]
    return "\n".join(lines)


def _architecture(card: ModelCard) -> str:
    cfg = card.cfg
    rows = [
        ("Parameters", f"{card.n_parameters:,}"),
        ("Layers", cfg.n_layer),
        ("Heads", cfg.n_head),
        ("d_model", cfg.d_model),
        ("d_head", cfg.d_head),
        ("d_mlp (SwiGLU)", cfg.d_mlp),
        ("Vocab", _vocab(cfg.vocab_size, card.tokenizer_vocab)),
        ("Context length", cfg.n_ctx),
        ("Norm", f"RMSNorm (ε = {_number(cfg.norm_eps)})"),
        ("Position", f"RoPE (half-half, base {cfg.rope_base:,.0f})"),
        ("Activation", "SwiGLU"),
        ("Biases", "none"),
        ("Tied input/output embeddings", "yes"),
    ]
    if card.steps is not None:
        tokens = f", {card.tokens_seen:,} tokens" if card.tokens_seen is not None else ""
        rows.append(("Training", f"{card.steps:,} steps{tokens}"))
    if card.val_loss is not None:
        rows.append(("Held-out loss (val, nats/token)", f"{card.val_loss:.4f}"))
    return _table(rows, header=("", "Value"))


def _vocab(rows: int, tokens: int | None) -> str:
    if tokens is None or tokens == rows:
        return f"{rows} (byte-level BPE incl. 5 special tokens)"
    return f"{rows} embedding rows; tokenizer: {tokens} (byte-level BPE incl. 5 special tokens)"


def _number(value: float) -> str:
    """1e-06 -> 1e-6, as the seed cards write it."""
    return f"{value:g}".replace("e-0", "e-").replace("e+0", "e+")


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def _training(card: ModelCard) -> str:
    parts = ["## Training data"]
    stats = card.corpus_stats
    if stats:
        parts.append(_corpus_summary(stats, card.variant))
    else:
        parts.append("Task-decomposition corpus built by `interpgpt corpus` (stats not recorded).")
    scalars = [
        (f"`{k}`", v)
        for k, v in card.train.items()
        if _is_scalar(v) and k not in OPERATIONAL_SETTINGS
    ]
    if scalars:
        parts += ["### Training config", _table(scalars, header=("Setting", "Value"))]
    return "\n\n".join(parts)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _corpus_summary(stats: dict[str, Any], variant: str | None) -> str:
    tasks = stats.get("tasks", {})
    rows: list[tuple[str, Any]] = []
    if tasks:
        rows.append(
            ("Tasks (train / val / test)", " / ".join(str(tasks.get(s, "?")) for s in _SPLITS))
        )
    if stats.get("domains"):
        rows.append(("Domains", len(stats["domains"])))
    families = stats.get("families", {})
    if families.get("total"):
        rows.append(
            (
                "Activity families (held out of training)",
                f"{families['total']} ({families.get('held_out', 0)})",
            )
        )
    this = stats.get("variants", {}).get(variant or "", {})
    if this.get("examples"):
        examples = this["examples"]
        rows.append(
            (
                "Examples (train / val / test)",
                " / ".join(str(examples.get(s, "?")) for s in _SPLITS),
            )
        )
    steps = this.get("steps_per_example", {})
    if steps:
        rows.append(
            (
                "Steps per example",
                f"{steps.get('mean')} (min {steps.get('min')}, max {steps.get('max')})",
            )
        )
    words = this.get("words_per_step", {})
    if words:
        rows.append(("Words per step (mean)", words.get("mean")))
    spearman = stats.get("spearman", {}).get(variant or "")
    if spearman is not None:
        rows.append(("Spearman(complexity, step count)", spearman))
    regulation = stats.get("regulation", {})
    if variant == "adhd" and regulation.get("rate") is not None:
        rows.append(("Regulation steps (share of steps)", regulation["rate"]))
        rule = regulation.get("rule", {})
        if rule:
            rows.append(
                (
                    "Where breaks go",
                    "after a run of effortful steps whose allowed load shrinks as complexity "
                    f"grows (budget {rule.get('budget')}), decisions flipped with probability "
                    f"{rule.get('noise')}",
                )
            )
    intro = (
        "Generated task-decomposition corpus (split by task, so no held-out task is trained on)."
    )
    return intro + "\n\n" + _table(rows, header=("", "Value")) if rows else intro


_SPLITS = ("train", "val", "test")


def _input_format() -> str:
    return "\n".join(
        [
            "## Input format",
            "",
            "```",
            "<|task|>Clean the kitchen<|steps|>Step 1 text<|sep|>Step 2 text<|sep|>...<|end|>",
            "```",
            "",
            "The tokenizer never inserts BOS/EOS itself: a prompt is "
            "`<|task|>{task}<|steps|>` and the model writes the steps and `<|end|>`.",
        ]
    )


def _loading(location: str) -> str:
    path = json.dumps(location)  # a valid Python string literal, quoted like the seed's
    return f"""## Loading

### Hugging Face Transformers

A standard `LlamaForCausalLM` checkpoint; no remote code is needed.
`AutoModel.from_pretrained(path)` gives the `LlamaModel` backbone (hidden states);
`trust_remote_code=True` is accepted there and changes nothing.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({path})
tokenizer = AutoTokenizer.from_pretrained({path})
prompt = tokenizer("<|task|>Clean the kitchen<|steps|>", return_tensors="pt")
out = model.generate(**prompt, max_new_tokens=64, do_sample=False)
print(tokenizer.decode(out[0]))
```

### TransformerLens (recommended for interpretability)

`hooked_transformer.pt` holds plain values and tensors only, so it loads with
`weights_only=True`:

```python
import os
from transformer_lens import HookedTransformer, HookedTransformerConfig
import torch

path = os.path.join({path}, "hooked_transformer.pt")
blob = torch.load(path, map_location="cpu", weights_only=True)
cfg = HookedTransformerConfig(**blob["config"])
model = HookedTransformer(cfg)
model.load_state_dict(blob["model_state_dict"])
model.eval()
```

### Raw PyTorch / TaskGPT

```python
import os
from interpgpt.model.taskgpt import GPTConfig, TaskGPT
import torch

path = os.path.join({path}, "pytorch_model.pt")
blob = torch.load(path, map_location="cpu", weights_only=True)
model = TaskGPT(GPTConfig(**blob["config"]))
model.load_state_dict(blob["model_state_dict"])
```

### InterpGPT analyses

Every `interpgpt` analysis command accepts this directory wherever it takes a run dir.

```python
from interpgpt.artifacts.load import load_model
loaded = load_model({path})  # .model (TaskGPT), .tokenizer, .variant
```"""


def _files(files: list[str]) -> str:
    if not files:
        return ""
    return "## Files\n\n" + "\n".join(f"- `{name}`" for name in files)


def _intended_use() -> str:
    return (
        "## Intended use\n\n"
        "Interpretability research. The model is intentionally small and domain-specific; "
        "**not** intended as a general-purpose chatbot.\n\n"
        "## License\n\nMIT."
    )
