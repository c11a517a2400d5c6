"""InterpGPT: matched-pair mechanistic interpretability.

Two small transformers with one architecture, seed and recipe are trained on two
versions of one corpus (standard and ADHD-style task decompositions); the
analyses in this package find out, causally and with statistics, how their
internals differ.

The names in `__all__` are the public Python API: loading a model or a pair, the
held-out evaluation sets, and the analyses' cores, which take models and tensors and
return typed results (no files). They are imported on first use (PEP 562), so
`import interpgpt` stays cheap and loads no torch: the command line imports this
package too.

    import interpgpt
    pair = interpgpt.load_pair("runs/study/runs/standard", "runs/study/runs/adhd")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    # Loading: a run dir, an export dir or a bundle file as a TaskGPT with its tokenizer.
    "load_model": "interpgpt.artifacts.load",
    "load_pair": "interpgpt.artifacts.load",
    "LoadedModel": "interpgpt.artifacts.load",
    "ModelPair": "interpgpt.artifacts.load",
    "TaskGPT": "interpgpt.model.taskgpt",
    "GPTConfig": "interpgpt.model.taskgpt",
    "TaskTokenizer": "interpgpt.corpus.tokenizer",
    "regulation_first_tokens": "interpgpt.corpus.tokenizer",
    # Held-out sequences, encoded once, with token roles (onset predictors, steps).
    "load_eval_set": "interpgpt.corpus.evalset",
    "encode_eval_set": "interpgpt.corpus.evalset",
    "EncodedSet": "interpgpt.corpus.evalset",
    # Output distributions: per-token KL by token role.
    "compare_outputs": "interpgpt.analysis.kl.run",
    # Activation Difference Lens and its steering check.
    "difference_lens": "interpgpt.analysis.diff_lens.run",
    "steering_check": "interpgpt.analysis.diff_lens.run",
    # Regulation logit lens and direct logit attribution at step onsets.
    "onset_readout": "interpgpt.analysis.logit_lens.run",
    "lens_curve": "interpgpt.analysis.logit_lens.run",
    "dla_summary": "interpgpt.analysis.logit_lens.run",
    # Head-swap inventory: attention profiles, matching and statistics.
    "attention_profile_sums": "interpgpt.analysis.headswap.profiles",
    "build_inventory": "interpgpt.analysis.headswap.inventory",
    "HeadswapConfig": "interpgpt.analysis.headswap.config",
    # Weight space: change from init, head matching, loss barrier.
    "compare_weights": "interpgpt.analysis.weights.compare",
    # Activation and attribution patching.
    "activation_patch": "interpgpt.analysis.patching.run",
    "attribution_patch": "interpgpt.analysis.patching.attribution",
    # Linear probes.
    "collect_positions": "interpgpt.analysis.probes.fit",
    "fit_probe": "interpgpt.analysis.probes.fit",
    # Known answers: probes for the break rule's variables, interchange on `remaining`.
    "known_answers": "interpgpt.analysis.known_answers.run",
    "fit_ridge": "interpgpt.analysis.known_answers.probing",
    # Interventions (TransformerLens-style hooks: `with model.hooks(fwd_hooks=...)`).
    "ablate_heads": "interpgpt.analysis.interventions",
    "patch_from": "interpgpt.analysis.interventions",
    "add_direction": "interpgpt.analysis.interventions",
    "project_out": "interpgpt.analysis.interventions",
    "interchange": "interpgpt.analysis.interventions",
    # TopK SAEs (SAELens format) and an SAE's features on a model.
    "TopKSAE": "interpgpt.sae.topk",
    "train_sae": "interpgpt.sae.training",
    "SAETrainConfig": "interpgpt.sae.config",
    "onset_feature_stats": "interpgpt.analysis.sae_features",
    # BatchTopK crosscoders and the diff of two models through one.
    "BatchTopKCrosscoder": "interpgpt.crosscoder.model",
    "train_crosscoder": "interpgpt.crosscoder.training",
    "CrosscoderTrainConfig": "interpgpt.crosscoder.config",
    "diff_models": "interpgpt.analysis.crosscoder_diff.latents",
    "DiffSettings": "interpgpt.analysis.crosscoder_diff.config",
    # Any pair: the model protocol, its adapters (TaskGPT, HookedTransformer), texts with
    # position sets the caller names, and the diff of two models with seed controls.
    "LanguageModel": "interpgpt.analysis.lm",
    "TaskGPTModel": "interpgpt.analysis.lm",
    "HookedTransformerModel": "interpgpt.analysis.lm",
    "as_lm": "interpgpt.analysis.lm",
    "load_lm": "interpgpt.analysis.lm",
    "save_tl_bundle": "interpgpt.analysis.lm",
    "TextSet": "interpgpt.analysis.lm",
    "encode_texts": "interpgpt.analysis.lm",
    "load_texts": "interpgpt.analysis.lm",
    "token_lens": "interpgpt.analysis.logit_lens.run",
    "layer_distances": "interpgpt.analysis.weights.compare",
    "diff_pair": "interpgpt.diff.core",
    "PairDiff": "interpgpt.diff.core",
    "run_diff": "interpgpt.diff.run",
    "DiffConfig": "interpgpt.diff.config",
    # Seed controls: the verdict rule, FDR correction, SAE dictionary matching.
    "verdict": "interpgpt.analysis.controls",
    "benjamini_hochberg": "interpgpt.analysis.controls",
    "match_dictionaries": "interpgpt.analysis.controls",
}
"""Public name -> the module that defines it."""

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and cache the name here."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
