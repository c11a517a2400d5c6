"""The study directory's layout: where each artifact lives and what earlier stages recorded.

An analysis stage sees this only as an `interpgpt.analysis.protocol.Layout` (the corpus,
the model playing a role, its own output folder, an SAE); the folder names below are the
study's alone, so the analysis layer never learns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interpgpt.constants import Variant, model_name
from interpgpt.sae.topk import sae_dir_name

Summary = dict[str, Any]


@dataclass(frozen=True)
class Workspace:
    """Where a study keeps each artifact, and what its earlier stages recorded.

    An analysis reads "the standard model" and "the ADHD model" through `export`, `run`
    and `sae`. The workspace of a control pair (`for_pair`) gives those roles to other
    models (a model and its data-order twin) and keeps the pair's outputs apart, so the
    very same stage code computes the seed null."""

    root: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stage name -> its record (hash, outputs, summary), as far as the study has run."""
    roles: Mapping[str, str] | None = None
    """Variant role -> the model that plays it (None: each variant's own model)."""
    pair: str = ""
    """The control pair's name (its stages are `<stage>@<pair>`); "" for the matched pair."""

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def corpus(self) -> Path:
        return self.path("corpus")

    @property
    def tokenizer(self) -> Path:
        return self.path("tokenizer.json")

    def model(self, variant: Variant) -> str:
        """The name of the model playing `variant` here (`model_name`)."""
        return self.roles[variant] if self.roles else variant

    def run(self, variant: Variant, twin: bool = False) -> Path:
        """A model's run dir (`runs/<model_name>`); `twin` names the variant's twin."""
        return self.path("runs", model_name(variant, True) if twin else self.model(variant))

    def export(self, variant: Variant, twin: bool = False) -> Path:
        """A model's export dir (`export/<model_name>`); `twin` names the variant's twin."""
        return self.path("export", model_name(variant, True) if twin else self.model(variant))

    @property
    def outputs(self) -> Path:
        """Where this pair's analyses and SAEs go: the study root, or `controls/<pair>`."""
        return self.path("controls", self.pair) if self.pair else self.root

    def analysis(self, name: str) -> Path:
        return self.outputs / "analysis" / name

    @property
    def saes(self) -> Path:
        """The folder of this pair's SAEs."""
        return self.outputs / "sae"

    def sae(self, variant: Variant, layer: int) -> Path:
        return self.saes / sae_dir_name(variant, layer)

    def summary(self, stage: str) -> Summary:
        return self.records.get(stage, {}).get("summary", {})

    def for_pair(self, pair: str, roles: Mapping[str, str]) -> Workspace:
        """The workspace of control pair `pair`, whose roles the `roles` models play: a
        stage reads the pair's own records of earlier stages (`<stage>@<pair>`) where
        they exist, the study's otherwise (the corpus, the trained models)."""
        suffix = f"@{pair}"
        records = {k: v for k, v in self.records.items() if "@" not in k}
        records |= {
            k.removesuffix(suffix): v for k, v in self.records.items() if k.endswith(suffix)
        }
        return Workspace(self.root, records, dict(roles), pair)
