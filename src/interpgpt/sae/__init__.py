"""Phase 5: TopK sparse autoencoders on the residual stream, in SAELens's file format.

`topk` holds the architecture (config, inference, save/load, training step),
`activations` streams a model's activations over a corpus, `training` trains and writes
SAEs (`train_sae`, `train_all`), `quality` measures them on held-out tokens and applies
the seed card's gates; `diff` and `steering` analyse them.
"""

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
    MAX_DEAD_FRACTION,
    MIN_FVE,
    QUALITY_FILE,
    SAEQuality,
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
    "SAE_WEIGHTS_FILE",
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
