"""BatchTopK crosscoders over a pair of models' residual streams, with Latent Scaling.

One sparse dictionary read from both models of a pair at once (Lindsey et al. 2024), each
latent with a decoder row per model: a latent used by one model only is a candidate
difference between them. Trained with BatchTopK and checked with Latent Scaling, the
recipe of Minder, Dumas et al. 2025 (arXiv 2504.02922) for telling genuinely exclusive
latents from sparsity artifacts.

`model` holds the architecture (config, inference, files, the refusal of other models),
`trainer` the training step, `training` trains and writes a crosscoder
(`train_crosscoder`), `quality` measures it per model on held-out tokens, `scaling`
computes Latent Scaling and `diff` the per-latent table and classes;
`analysis.crosscoder_diff` runs the diff of a pair on its held-out sequences.
"""

from interpgpt.crosscoder.diff import (
    DiffCounts,
    LatentClasses,
    LatentTable,
    Thresholds,
    classify,
    latent_table,
)
from interpgpt.crosscoder.model import (
    CROSSCODER_CFG_FILE,
    CROSSCODER_WEIGHTS_FILE,
    BatchTopKCrosscoder,
    CrosscoderConfig,
    ModelRecord,
    check_models,
    model_sha256,
)
from interpgpt.crosscoder.quality import CrosscoderQuality, ModelQuality
from interpgpt.crosscoder.scaling import LatentScaling, closed_form_beta, latent_scaling
from interpgpt.crosscoder.training import (
    CrosscoderHyperparams,
    CrosscoderTrainConfig,
    CrosscoderTrainResult,
    train_crosscoder,
)

__all__ = [
    "CROSSCODER_CFG_FILE",
    "CROSSCODER_WEIGHTS_FILE",
    "BatchTopKCrosscoder",
    "CrosscoderConfig",
    "CrosscoderHyperparams",
    "CrosscoderQuality",
    "CrosscoderTrainConfig",
    "CrosscoderTrainResult",
    "DiffCounts",
    "LatentClasses",
    "LatentScaling",
    "LatentTable",
    "ModelQuality",
    "ModelRecord",
    "Thresholds",
    "check_models",
    "classify",
    "closed_form_beta",
    "latent_scaling",
    "latent_table",
    "model_sha256",
    "train_crosscoder",
]
