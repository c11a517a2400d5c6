"""TopK sparse autoencoders on the residual stream, in SAELens's file format.

Sparse dictionaries of the matched pair's residual streams are what the feature diff and
the steering experiments compare, so they are trained here the seed card's way and
gated on held-out quality before anything reads them.

`topk` holds the architecture (config, inference, save/load, training step),
`activations` streams a model's activations over a corpus, `hyperparams` says how SAEs
are trained and judged, `training` trains and writes SAEs (`train_sae`, `train_all`),
`quality` measures them on held-out tokens and applies the seed card's gates;
`analysis.feature_diff` and `analysis.steering` analyse them.
"""

from interpgpt.sae.hyperparams import MAX_DEAD_FRACTION, MIN_FVE, SAE_EXPANSION, SAEHyperparams
from interpgpt.sae.quality import SAEQuality
from interpgpt.sae.topk import (
    SAE_CFG_FILE,
    SAE_WEIGHTS_FILE,
    TopKCode,
    TopKSAE,
    TopKSAEConfig,
    sae_dir_name,
    sae_hook_name,
)
from interpgpt.sae.training import (
    QUALITY_FILE,
    SAETrainConfig,
    SAETrainResult,
    TrainAllConfig,
    TrainAllResult,
    train_all,
    train_sae,
)

__all__ = [
    "MAX_DEAD_FRACTION",
    "MIN_FVE",
    "QUALITY_FILE",
    "SAE_CFG_FILE",
    "SAE_EXPANSION",
    "SAE_WEIGHTS_FILE",
    "SAEHyperparams",
    "SAEQuality",
    "SAETrainConfig",
    "SAETrainResult",
    "TopKCode",
    "TopKSAE",
    "TopKSAEConfig",
    "TrainAllConfig",
    "TrainAllResult",
    "sae_dir_name",
    "sae_hook_name",
    "train_all",
    "train_sae",
]
