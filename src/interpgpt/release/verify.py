"""`interpgpt release verify`: a release is what its manifest says, and loads every way.

Checks, each failure one line naming the file: every file's sha256 equals the manifest's
(and no file is unlisted); each model loads through `transformers` as a plain Llama with
logits equal to TaskGPT's within 1e-4 on fixed prompts, through the TransformerLens
bundle and the raw state dict that `interpgpt export` writes from it (within the export's
tolerances); each SAE loads with SAELens's `SAE.load_from_disk`; and the fixed behaviour
check (greedy decompositions of the manifest's unseen-family check tasks) stays within
sampling noise of the manifest's values.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interpgpt.artifacts.export import TOLERANCE, ExportConfig, export, hf_logits, tl_logits
from interpgpt.artifacts.load import load_exported, load_model
from interpgpt.artifacts.names import RAW_BUNDLE, TL_BUNDLE
from interpgpt.artifacts.release import Release
from interpgpt.errors import UserError
from interpgpt.release.build import check_behaviour
from interpgpt.sae.topk import SAE_CFG_FILE

PROMPTS = 4
"""Check tasks whose prompts the logits are compared on."""
CHECKED_RATES = ("parse_rate", "on_topic_rate", "object_mention_rate")
NOISE_SE = 3.0
"""A check rate is within noise when it is within this many binomial standard errors
(at the manifest's rate, at least that of one task in n) of the manifest's."""


@dataclass
class ModelCheck:
    name: str
    logit_diff: dict[str, float]
    """Per loading path, the largest |logit - TaskGPT's| on the fixed prompts."""
    check: dict[str, Any]
    """The behaviour check's rates now."""


@dataclass
class VerifyResult:
    root: Path
    files: int
    models: list[ModelCheck] = field(default_factory=list)
    saes: list[str] = field(default_factory=list)


def verify_release(root: Path, behaviour: bool = True) -> VerifyResult:
    """Run every check on the release at `root`; the first failure raises a UserError."""
    release = Release.open(root)
    result = VerifyResult(root, release.check_files())
    tasks = release.manifest["check"]["tasks"]
    max_new_tokens = release.manifest["check"]["max_new_tokens"]
    with tempfile.TemporaryDirectory(prefix="release-verify.") as scratch:
        for name, entry in release.manifest["models"].items():
            result.models.append(
                _check_model(
                    root / name, entry, tasks, max_new_tokens, Path(scratch) / name, behaviour
                )
            )
    for stage in release.stages.values():
        for rel in stage.get("files", []):
            if rel.endswith(SAE_CFG_FILE) and "/" in rel:
                result.saes.append(_check_sae(root / rel).as_posix())
    return result


def _prompt_ids(tokenizer: Any, tasks: list[dict[str, Any]], n_ctx: int) -> torch.Tensor:
    """The first `PROMPTS` check tasks as prompts, left-truncated to one length."""
    prompts = [tokenizer.encode_prompt(t["task"]) for t in tasks[:PROMPTS]]
    length = min(len(p) for p in prompts)
    return torch.tensor([p[:length] for p in prompts])[:, :n_ctx]


def _check_model(
    folder: Path,
    entry: dict[str, Any],
    tasks: list[dict[str, Any]],
    max_new_tokens: int,
    scratch: Path,
    run: bool,
) -> ModelCheck:
    loaded = load_model(folder)
    ids = _prompt_ids(loaded.tokenizer, tasks, loaded.model.cfg.n_ctx)
    export(ExportConfig(model=folder, out=scratch))
    with torch.no_grad():
        ours = loaded.model(ids)
        logits = {
            "huggingface": hf_logits(folder, ids),
            "transformer_lens": tl_logits(scratch / TL_BUNDLE, ids),
            "pytorch": load_exported(scratch / RAW_BUNDLE).model(ids),
        }
    diffs = {form: float((value - ours).abs().max()) for form, value in logits.items()}
    for form, diff in diffs.items():
        if not diff <= TOLERANCE[form]:
            raise UserError(
                f"{folder}: {form} logits differ from TaskGPT's by {diff:.1e} "
                f"(tolerance {TOLERANCE[form]:.0e})"
            )
    now: dict[str, Any] = {}
    if run:
        now, _ = check_behaviour(loaded, tasks, max_new_tokens)
        for rate in CHECKED_RATES:
            _within_noise(folder, rate, now[rate], entry["check"][rate], len(tasks))
    return ModelCheck(folder.name, diffs, now)


def _within_noise(
    folder: Path, rate: str, now: float | None, recorded: float | None, n: int
) -> None:
    if now is None or recorded is None:
        if now != recorded:
            raise UserError(f"{folder}: check {rate} is {now}, the manifest's {recorded}")
        return
    p = min(max(recorded, 1 / n), 1 - 1 / n)
    noise = NOISE_SE * math.sqrt(p * (1 - p) / n)
    if abs(now - recorded) > noise:
        raise UserError(
            f"{folder}: {rate} on the {n} check tasks is {now:.3f}, the manifest's "
            f"{recorded:.3f} ± {noise:.3f}"
        )


def _check_sae(cfg_file: Path) -> Path:
    """Load one released SAE folder with SAELens, as its users will."""
    folder = cfg_file.parent
    # SAELens is an optional (dev) dependency of the package; verifying needs it.
    try:
        from sae_lens import SAE
    except ImportError:
        raise UserError(
            "release verify loads the SAEs with SAELens: pip install sae-lens"
        ) from None
    try:
        sae = SAE.load_from_disk(str(folder), device="cpu")
    except Exception as err:  # SAELens raises many kinds; name the folder and the first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{folder}: SAE.load_from_disk failed ({first})") from None
    if not all(bool(p.isfinite().all()) for p in sae.parameters()):
        raise UserError(f"{folder}: the SAE's weights are not finite")
    return folder
