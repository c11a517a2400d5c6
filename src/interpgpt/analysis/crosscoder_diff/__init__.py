"""Crosscoder model diff: which latents one model of a pair uses and the other does not.

A BatchTopK crosscoder (`interpgpt.crosscoder`) reads both models at one layer and gives
each latent j a decoder row per model, d_j^std and d_j^adhd (normalised units). Per
latent (Lindsey et al. 2024; Minder, Dumas et al. 2025, arXiv 2504.02922):

- relative decoder norm r_j = ‖d_j^adhd‖ / (‖d_j^std‖ + ‖d_j^adhd‖) and the decoder
  cosine cos(d_j^std, d_j^adhd);
- class: standard-only when r_j < `exclusive_margin`, ADHD-only when r_j >
  1 − `exclusive_margin`, shared otherwise; a latent active on no evaluated token is
  dead and in no class;
- Latent Scaling (`crosscoder.scaling`): ν^ε_j and ν^r_j, the other model's β over the
  claimed model's, for its reconstruction error with the latent added back and for its
  reconstruction. An exclusive latent is *confirmed* when both |ν| stay below
  `max_nu_error` / `max_nu_reconstruction`: the other model carries under that share of
  it in its error (no Complete Shrinkage) and in its reconstruction (no Latent
  Decoupling). Norms alone over-report exclusive latents; the paper's point.
- activation frequency over all tokens and at the onset predictors (`<|steps|>`/`<|sep|>`
  before a step, `EncodedSet.onset_predictor_mask`) of each variant's held-out sequences.
  A crosscoder latent is a function of both models' activations at a token, so there
  is no "frequency in one model": both models read the standard sequences, then both
  read the ADHD ones, and the frequencies are per sequence set.

The latents leaning most towards each model (confirmed first, then by r_j) get a card's
worth of data (`dashboard.LatentCard`: top contexts with per-token activations, a sample
of non-zero activations, both decoder norms, each model's promoted and suppressed
tokens). Given a feature diff's output, each selected SAE feature is mapped to the
crosscoder latent whose decoder row in the SAE's model is closest in cosine.

`diff_models` is the diff of any two models through their crosscoder, without files;
the study runs it on the matched pair and on the standard model and its data-order twin,
the null: training noise alone also makes "exclusive" latents, and a pair's count means
something only beside its twin's. `crosscoder_diff` (`interpgpt crosscoder diff`) writes
crosscoder_diff.json; `stage` trains and diffs both in the study.

Modules: the settings, activations, latent table and dashboard cards (`latents`), SAE
features mapped to latents (`features`), and the command's config, entry point, JSON,
study stage and report section (`run`).
"""
