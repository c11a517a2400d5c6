"""Every analysis, registered once: the study's stage list (and with it the seed
controls and the settings check) is derived from this list.

Like SAELens's `SAE_CLASS_REGISTRY`, one line per analysis: the module of
`interpgpt.analysis` that declares its `ANALYSIS` (an `interpgpt.analysis.protocol.Analysis`),
in the order the study runs them (the study puts its own stages, the training, export and
SAEs, before the first analysis that reads them). An entry is a module name rather than
an import, so registering an analysis is this one line. The import-linter contract
"Analysis methods are independent" in pyproject.toml covers every package of
`interpgpt.analysis` by wildcard; tests/analysis/test_registry.py checks that every such
package is registered.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from interpgpt.analysis.protocol import Analysis

REGISTRY: tuple[str, ...] = (
    "behaviour.run",
    "kl.run",
    "diff_lens.run",
    "headswap.inventory",
    "weights.run",
    "logit_lens.run",
    "ablation.run",
    "patching.run",
    "feature_diff.run",
    "steering.run",
    "crosscoder_diff.run",
    "probes.run",
    "known_answers.run",
)
"""Module (relative to `interpgpt.analysis`) declaring each analysis's `ANALYSIS`."""


def packages() -> list[str]:
    """Each registered analysis's package (`interpgpt.analysis.<name>`)."""
    return [f"{__package__}.{entry.split('.')[0]}" for entry in REGISTRY]


def analyses() -> list[Analysis[Any]]:
    """The registered analyses, in order."""
    found: list[Analysis[Any]] = []
    for entry in REGISTRY:
        analysis = import_module(f"{__package__}.{entry}").ANALYSIS
        if not isinstance(analysis, Analysis):
            raise TypeError(f"{__package__}.{entry}.ANALYSIS is not an Analysis")
        found.append(analysis)
    return found
