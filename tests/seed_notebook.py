"""The seed notebook's reference code (seed 002, the head-swap reproduction notebook).

These are the seed notebook's functions, kept as the reference our implementation is
tested against (tests/test_tokenizer.py, tests/test_headswap.py, tests/test_export.py)
and benchmarked against (bench/bench_headswap.py). The bodies are the notebook's; the
only changes: its `tok` and `special_ids` globals live on a `SeedNotebook(tok)`, its
`DEVICE` is the CPU, and `load_tl` is kept as source text because test_export runs it
with the hub download replaced by a local directory.
"""

from __future__ import annotations

import numpy as np
import torch

SPECIAL_NAMES = ["<|task|>", "<|steps|>", "<|sep|>", "<|end|>", "<|pad|>"]

# 12 paired tasks, hand-crafted to mirror the test-set distribution.
# Each has a 'standard' variant (short steps, no regulation) and an
# 'adhd' variant (smaller steps + interleaved regulation tokens).
PAIRED = [
    {
        "task": "Clean the kitchen",
        "standard": {
            "task": "Clean the kitchen",
            "steps": ["Wash dishes", "Wipe counters", "Sweep floor", "Take out trash"],
        },
        "adhd": {
            "task": "Clean the kitchen",
            "steps": [
                "Stack dirty dishes",
                "sip water",
                "Rinse plates",
                "deep breath",
                "Scrub pans",
                "quick stretch",
                "Wipe counters",
                "pause",
                "Sweep floor",
                "close eyes briefly",
                "Take out trash",
            ],
        },
    },
    {
        "task": "Write a grocery list",
        "standard": {
            "task": "Write a grocery list",
            "steps": ["Check pantry", "Plan meals", "Write items", "Sort by aisle"],
        },
        "adhd": {
            "task": "Write a grocery list",
            "steps": [
                "Grab paper",
                "sip water",
                "Open pantry",
                "deep breath",
                "Jot missing items",
                "pause",
                "Plan three meals",
                "quick stretch",
                "Sort items by aisle",
            ],
        },
    },
    {
        "task": "Do laundry",
        "standard": {
            "task": "Do laundry",
            "steps": ["Sort clothes", "Load washer", "Start cycle", "Move to dryer", "Fold"],
        },
        "adhd": {
            "task": "Do laundry",
            "steps": [
                "Gather hamper",
                "sip water",
                "Sort lights darks",
                "deep breath",
                "Load washer",
                "Add detergent",
                "pause",
                "Start cycle",
                "quick stretch",
                "Transfer to dryer",
                "close eyes briefly",
                "Fold clean clothes",
            ],
        },
    },
    {
        "task": "Prepare breakfast",
        "standard": {
            "task": "Prepare breakfast",
            "steps": ["Pick recipe", "Gather ingredients", "Cook", "Plate food"],
        },
        "adhd": {
            "task": "Prepare breakfast",
            "steps": [
                "Pick simple recipe",
                "sip water",
                "Open fridge",
                "deep breath",
                "Take out eggs",
                "pause",
                "Crack eggs in bowl",
                "quick stretch",
                "Cook on pan",
                "Plate breakfast",
            ],
        },
    },
    {
        "task": "Pay the bills",
        "standard": {
            "task": "Pay the bills",
            "steps": ["Open statements", "Total amount", "Log in bank", "Pay each"],
        },
        "adhd": {
            "task": "Pay the bills",
            "steps": [
                "Stack bills",
                "sip water",
                "Open first statement",
                "deep breath",
                "Write due amount",
                "pause",
                "Log in to bank",
                "close eyes briefly",
                "Pay each bill",
                "quick stretch",
                "File statements",
            ],
        },
    },
    {
        "task": "Water the plants",
        "standard": {
            "task": "Water the plants",
            "steps": ["Fill watering can", "Water each plant", "Check soil"],
        },
        "adhd": {
            "task": "Water the plants",
            "steps": [
                "Find watering can",
                "sip water",
                "Fill at sink",
                "deep breath",
                "Check first pot soil",
                "pause",
                "Pour slowly",
                "quick stretch",
                "Move to next plant",
                "Repeat for each",
            ],
        },
    },
    {
        "task": "Organize the closet",
        "standard": {
            "task": "Organize the closet",
            "steps": ["Empty closet", "Sort items", "Donate", "Rearrange by type"],
        },
        "adhd": {
            "task": "Organize the closet",
            "steps": [
                "Empty top shelf",
                "sip water",
                "Sort by keep donate",
                "deep breath",
                "Bag donations",
                "pause",
                "Empty bottom shelf",
                "quick stretch",
                "Sort again",
                "close eyes briefly",
                "Rearrange by type",
            ],
        },
    },
    {
        "task": "Send a work email",
        "standard": {
            "task": "Send a work email",
            "steps": ["Draft message", "Check recipients", "Attach files", "Send"],
        },
        "adhd": {
            "task": "Send a work email",
            "steps": [
                "Open email client",
                "sip water",
                "Draft subject",
                "deep breath",
                "Write body paragraph",
                "pause",
                "Reread for tone",
                "quick stretch",
                "Add recipients",
                "Attach files",
                "close eyes briefly",
                "Click send",
            ],
        },
    },
    {
        "task": "Study for an exam",
        "standard": {
            "task": "Study for an exam",
            "steps": ["Review notes", "Do practice problems", "Flashcards", "Sleep early"],
        },
        "adhd": {
            "task": "Study for an exam",
            "steps": [
                "Open notes",
                "sip water",
                "Read first section",
                "deep breath",
                "Summarize aloud",
                "pause",
                "Do two practice problems",
                "quick stretch",
                "Make flashcards",
                "close eyes briefly",
                "Review flashcards",
                "Sleep early",
            ],
        },
    },
    {
        "task": "Make the bed",
        "standard": {
            "task": "Make the bed",
            "steps": ["Pull sheets", "Fluff pillows", "Smooth comforter"],
        },
        "adhd": {
            "task": "Make the bed",
            "steps": [
                "Pull sheets up",
                "sip water",
                "Smooth bottom sheet",
                "deep breath",
                "Fluff pillows",
                "pause",
                "Pull comforter",
                "quick stretch",
                "Smooth top",
            ],
        },
    },
    {
        "task": "Take a walk",
        "standard": {
            "task": "Take a walk",
            "steps": ["Put on shoes", "Grab keys", "Walk 20 minutes"],
        },
        "adhd": {
            "task": "Take a walk",
            "steps": [
                "Put on shoes",
                "sip water",
                "Grab keys",
                "deep breath",
                "Step outside",
                "Walk five minutes",
                "pause",
                "Walk five more",
                "quick stretch",
                "Return home",
            ],
        },
    },
    {
        "task": "Cook dinner",
        "standard": {
            "task": "Cook dinner",
            "steps": ["Pick recipe", "Prep ingredients", "Cook", "Plate"],
        },
        "adhd": {
            "task": "Cook dinner",
            "steps": [
                "Pick recipe",
                "sip water",
                "Wash hands",
                "deep breath",
                "Chop vegetables",
                "pause",
                "Measure spices",
                "quick stretch",
                "Start cooking",
                "close eyes briefly",
                "Taste",
                "Plate dinner",
            ],
        },
    },
]


NBINS = 20
DEVICE = "cpu"


class SeedNotebook:
    """The notebook's `tok` and `special_ids` globals, with the functions that read them."""

    def __init__(self, tok) -> None:
        self.tok = tok  # a `tokenizers.Tokenizer`, as in the notebook
        self.special_ids = {n: tok.token_to_id(n) for n in SPECIAL_NAMES}

    def encode_example(self, ex):
        """Encode one (task, steps) record into the training input format."""
        tok, special_ids = self.tok, self.special_ids
        ids = [special_ids["<|task|>"]]
        ids += tok.encode(ex["task"]).ids
        ids += [special_ids["<|steps|>"]]
        for i, step in enumerate(ex["steps"]):
            if i > 0:
                ids.append(special_ids["<|sep|>"])
            ids += tok.encode(step).ids
        ids += [special_ids["<|end|>"]]
        return ids

    def token_roles(self, ids):
        special_ids = self.special_ids
        steps_id = special_ids["<|steps|>"]
        roles = {"task_range": [], "special_positions": []}
        hit_steps = False
        for i, t in enumerate(ids):
            if t == steps_id:
                hit_steps = True
                roles["special_positions"].append(i)
                continue
            if t in set(special_ids.values()):
                roles["special_positions"].append(i)
            elif not hit_steps:
                roles["task_range"].append(i)
        return roles


def cache_attn(model, ids):
    x = torch.tensor([ids], dtype=torch.long, device=DEVICE)
    with torch.no_grad():
        _, cache = model.run_with_cache(x, return_type=None)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    T = x.shape[1]
    out = torch.zeros(L, H, T, T)
    for layer in range(L):
        out[layer] = cache[f"blocks.{layer}.attn.hook_pattern"][0].to("cpu")
    return out


def profile(records, layer, head, which):
    bins_struct = np.zeros(NBINS)
    bins_count = np.zeros(NBINS)
    for r in records:
        attn = r[f"{which}_attn"][layer, head]
        T = attn.shape[0]
        spec = list(r["roles"]["special_positions"])
        if not spec:
            continue
        for q in range(1, T):
            b = min(int(q / T * NBINS), NBINS - 1)
            bins_struct[b] += attn[q, spec].sum().item()
            bins_count[b] += 1
    return bins_struct / np.maximum(bins_count, 1)


# Section 3, verbatim: test_export execs it against an export directory.
LOAD_TL = """
from huggingface_hub import hf_hub_download
from transformer_lens import HookedTransformer, HookedTransformerConfig
import torch

def load_tl(repo_id: str) -> HookedTransformer:
    path = hf_hub_download(repo_id, "hooked_transformer.pt")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg_dict = blob["config"]
    drop = {"dtype", "device", "attention_dir"}
    cfg_keep = {
        k: v for k, v in cfg_dict.items()
        if k in HookedTransformerConfig.__dataclass_fields__
        and not (k in drop and isinstance(v, str))
        and not (isinstance(v, str) and v.startswith("torch."))
    }
    model = HookedTransformer(HookedTransformerConfig(**cfg_keep)).to(DEVICE)
    model.load_state_dict(blob["model_state_dict"])
    model.eval()
    return model
"""
