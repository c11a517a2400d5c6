"""Training one model of the matched pair: same init, same data-order policy, own corpus.

The matched-pair recipe. Both variants start from bit-identical weights
(`initial_model`: `torch.manual_seed(seed)` right before `TaskGPT(cfg)`, and the model
shape comes from the preset alone, never from the corpus or tokenizer), and both read
their corpus in an order that is a pure function of (seed, step) (`batches.sample_indices`).
Everything else — optimizer, schedule, batch, steps — comes from the same config, so
the only difference between the two runs is the text they see.

Twins. A seed twin shares the init (same `seed`) and differs only in the data order
(another `data_seed`); every run dir records `init_sha256` (`state_sha256` of the initial
weights) and `data_seed`, so a twin's shared init can be checked rather than assumed.

Which tokens carry loss. A sequence is `<|task|> task <|steps|> s1 <|sep|> ... <|end|>`
and every next-token target from the first token after `<|task|>` through `<|end|>`
inclusive carries loss: the task text too (it shapes the task representation the
analyses probe), `<|steps|>` and `<|sep|>` (the model must learn where steps start and
how many there are — the step-count/complexity statistic depends on it), and `<|end|>`
(so generation stops). `<|task|>` itself is never a target (nothing precedes it), and
right padding carries no loss (IGNORE_INDEX), so batch composition does not change the
per-token objective. The loss is the mean over all such targets of the global batch.

Optimisation: Muon (Jordan et al. 2024) on the blocks' matrices with AdamW on the tied
embedding and the norm gains, or AdamW on everything (nanoGPT's recipe); weight decay on
matrices only (norm gains are not decayed); linear warmup then cosine decay (or
warmup-stable-decay) to `min_lr_ratio * lr` (the learning rate is a pure function of the
step, so there is no scheduler state to restore), gradient-norm clipping, bf16 autocast
where the device runs bf16 natively.

Resuming. A checkpoint (`checkpoint.safetensors`, written atomically) holds the model,
the optimizer's state (AdamW's moments and step counts, Muon's momentum), the step and
the RNG states; the data order and the learning rate are functions of the step, so
`--resume` reaches bit-identical final weights on CPU to an uninterrupted run (tested).

Beyond one machine: under `torchrun` the run uses DDP (gloo on CPU, NCCL on GPU). Each
rank takes its slice of the same global batch and scales its token-sum loss by
world_size / global_targets, so DDP's gradient average equals the single-process
gradient of the global batch. Rank 0 evaluates, samples and writes every file.
"""

from interpgpt.train.checkpoint import checkpoint_differs
from interpgpt.train.config import (
    TRAIN_DEFAULTS,
    PresetBudget,
    TrainConfig,
    TrainResult,
    initial_model,
    lr_at,
    make_optimizer,
    model_config,
    state_sha256,
)
from interpgpt.train.loop import train
from interpgpt.train.step import batch_loss

__all__ = [
    "TRAIN_DEFAULTS",
    "PresetBudget",
    "TrainConfig",
    "TrainResult",
    "batch_loss",
    "checkpoint_differs",
    "initial_model",
    "lr_at",
    "make_optimizer",
    "model_config",
    "state_sha256",
    "train",
]
