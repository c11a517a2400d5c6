"""TopK sparse autoencoders on the residual stream, in SAELens's file format.

Sparse dictionaries of the matched pair's residual streams are what the feature diff and
the steering experiments compare, so they are trained here the seed card's way and
gated on held-out quality before anything reads them.

`topk` holds the architecture (config, inference, save/load, training step),
`activations` streams a model's activations over a corpus, `hyperparams` says how SAEs
are trained and judged, `training` trains and writes SAEs (`train_sae`, `train_all`),
`quality` measures them on held-out tokens and applies the seed card's gates;
`analysis.feature_diff` and `analysis.steering` analyse them.

`config` holds the commands' settings as data (no torch).
"""
