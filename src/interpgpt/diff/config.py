"""`interpgpt diff`'s settings and options: data only, no torch, so the command line
reads them without loading the models' code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interpgpt.settings import at_least, check_choices, inputs


@dataclass(frozen=True)
class DiffConfig:
    """Diff any two models that share a tokenizer and a shape (`interpgpt diff`)."""

    a: Path = inputs.argument()
    """Model a: a TransformerLens bundle (hooked_transformer.pt, or a dir holding one, with
    tokenizer.json beside it) of any HookedTransformer, or one of our run or export dirs."""
    b: Path = inputs.argument()
    """Model b, in the same forms; δ and the KL directions read b against a."""
    texts: Path = inputs.option()
    """JSONL, one text a line: {"text": ...} or {"ids": [...]}, optionally with
    "positions": {"<set name>": [token index, ...]} naming position sets."""
    out: Path = inputs.option()
    """Output dir for diff.json, report.html and report.md."""
    force: bool = inputs.flag()
    """Replace the outputs --out already holds."""
    controls: tuple[str, ...] = ()
    """A control model: a twin of a (its recipe, another seed or data order). Repeat the
    option for several; a statistic is a finding only beyond every control's."""
    label_a: str = "a"
    """Name of model a in the report."""
    label_b: str = "b"
    """Name of model b in the report."""
    tokens: tuple[str, ...] = ()
    """A token of the logit lens's token set (each encodes to one id); repeat the option."""
    layer: str = ""
    """Layer at which the difference lens is read: an index, or a fraction of depth
    (0.5: the middle block); "": where the difference is largest."""
    profile_keys: str = ""
    """Position set whose positions are the keys of the head profiles ("": each text's
    first position)."""
    top_k: int = 10
    """Highest-KL positions and promoted tokens listed."""
    bins: int = 10
    """Bins of the normalised query-position axis of the head profiles."""
    max_len: int | None = None
    """Tokens kept of each text (None: the models' context)."""
    batch_size: int = 16
    """Texts per forward pass."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    sae_a: Path | None = None
    """SAELens-format TopK SAE dir (cfg.json + sae_weights.safetensors) of model a: the
    SAE feature diff lists its features that fire in a only."""
    sae_b: Path | None = None
    """The same of model b: its features that fire in b only."""
    sae_controls: tuple[Path, ...] = ()
    """Each control's SAE, in the order of --controls (needed with --sae-b and controls,
    unless --sae-train)."""
    sae_train: bool = False
    """Train every SAE not given on the texts (a small TopK SAE per model, same seed)."""
    crosscoder: bool = False
    """Train a BatchTopK crosscoder on both models over the texts and count the latents
    exclusive to each, confirmed by Latent Scaling (and the same for every control)."""
    dictionary_tokens: int = 30_000
    """Training activations of each SAE and crosscoder trained here (the texts cycled)."""
    init: Path | None = None
    """The model a and b were both trained from (a TL bundle or our run/export dir): adds
    head matching, the loss barrier between them and each one's change from it."""
    weight_views: bool = False
    """Head matching and the loss barrier, with the shared init from --init or, for two
    of our run dirs, rebuilt from the init hash both recorded; refused when unknown."""

    def __post_init__(self) -> None:
        check_choices(self)
        at_least(self, top_k=1, bins=1, max_len=2, batch_size=1, dictionary_tokens=1)
