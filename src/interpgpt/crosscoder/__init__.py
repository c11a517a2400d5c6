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

`config` holds the commands' settings as data (no torch).
"""
