"""The analysis's settings, its command's options and study section: data only, no
torch, so the command line reads them without loading the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from interpgpt.settings import at_least, check_choices, inputs

Site = Literal["resid_pre", "attn_head_out", "attn_head_out_by_pos", "mlp_out"]
SITES: tuple[Site, ...] = ("resid_pre", "attn_head_out", "attn_head_out_by_pos", "mlp_out")


@dataclass(frozen=True)
class PatchingConfig:
    """Activation and attribution patching of one model on clean/corrupted corpus pairs
    (`interpgpt patch`, study `[patching]`)."""

    model: Path = inputs.argument()
    """Run dir or export dir of the model to patch."""
    corpus: Path = inputs.option()
    """Corpus dir (written by `interpgpt corpus`); pairs come from its test split."""
    out: Path = inputs.option()
    """Where `patching.json` and the heatmaps are written."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    site: Literal[Site, "all"] = "all"
    """Which activations to patch."""
    n_pairs: int = 16
    """Clean/corrupted pairs (held-out tasks) patched together as one batch."""
    phrasings: int = 8
    """ADHD decompositions read per task text when searching for equal-length pairs (a
    pair takes two of them)."""
    attribution: bool = True
    """Also compute attribution patching (one forward + backward) for comparison."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    max_chunk_mb: int = 256
    """Memory budget of one stacked forward in MiB (logits dominate); 0 patches one site
    per forward."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, n_pairs=1, phrasings=2, max_chunk_mb=0)

    @property
    def sites(self) -> tuple[Site, ...]:
        return SITES if self.site == "all" else (self.site,)
