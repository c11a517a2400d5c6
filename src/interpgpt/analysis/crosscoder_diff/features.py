"""SAE features in the crosscoder: each feature of a feature diff mapped to the latent
whose decoder row in the SAE's model is closest in cosine, and how many of those matches
land on exclusive latents."""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any

import torch

from interpgpt.analysis.controls import MATCH_THRESHOLD
from interpgpt.analysis.crosscoder_diff.latents import PairDiff
from interpgpt.crosscoder.model import BatchTopKCrosscoder
from interpgpt.errors import UserError
from interpgpt.io import read_json
from interpgpt.sae.topk import TopKSAE


def map_sae_features(
    feature_diff: Path, crosscoder: BatchTopKCrosscoder, diff: PairDiff
) -> list[dict[str, Any]]:
    """Each selected feature of a feature diff -> the latent whose decoder row in the SAE's
    model (by name; both models when the name is not one of the crosscoder's) is closest
    in cosine."""
    path = feature_diff / "feature_diff.json" if feature_diff.is_dir() else feature_diff
    blob = read_json(path)
    try:
        sae_dir, features = Path(blob["sae"]["dir"]), [int(r["feature"]) for r in blob["features"]]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: not a feature diff (no sae.dir or features)") from None
    # A study records the SAE dir relative to where it ran: try the file's ancestors.
    found = [p / sae_dir for p in path.resolve().parents if (p / sae_dir).is_dir()]
    sae = TopKSAE.load(sae_dir if sae_dir.is_absolute() or not found else found[0])
    if sae.cfg.hook_name != crosscoder.cfg.hook_name:
        raise UserError(
            f"{path}: its SAE reads {sae.cfg.hook_name}, the crosscoder "
            f"{crosscoder.cfg.hook_name}; map features of an SAE at the crosscoder's layer"
        )
    names = crosscoder.cfg.names
    models = [names.index(sae.cfg.model_name)] if sae.cfg.model_name in names else [0, 1]
    decoders = torch.nn.functional.normalize(crosscoder.W_dec.detach().cpu(), dim=-1)
    rows = []
    for feature in features:
        direction = torch.nn.functional.normalize(sae.W_dec[feature].detach(), dim=0)
        cos = decoders[:, models] @ direction  # (d_latent, n)
        best = int(cos.max(1).values.argmax())
        m = models[int(cos[best].argmax())]
        rows.append(
            {
                "feature": feature,
                "model": names[m],
                "latent": best,
                "cosine": float(cos[best].max()),
                "class": diff.classes.labels[best],
                "confirmed": bool(diff.classes.confirmed[best]),
                "rel_norm": float(diff.table.rel_norm[best]),
            }
        )
    return rows


def mapped_summary(mapped: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """How the feature diff's ADHD-only features sit in the crosscoder: how many have a
    latent at decoder cosine >= MATCH_THRESHOLD (the SAE-seed matching threshold), and of
    those how many latents are exclusive (and confirmed)."""
    if mapped is None:
        return None
    close = [m for m in mapped if m["cosine"] >= MATCH_THRESHOLD]
    return {
        "n_features": len(mapped),
        "threshold": MATCH_THRESHOLD,
        "n_matched": len(close),
        "n_to_exclusive": sum(m["class"] != "shared" for m in close),
        "n_to_confirmed": sum(m["confirmed"] for m in close),
        "median_cosine": median([m["cosine"] for m in mapped]) if mapped else None,
    }
