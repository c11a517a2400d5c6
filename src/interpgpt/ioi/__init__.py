"""The IOI sandbox: Indirect Object Identification (Wang et al. 2022) on InterpGPT's tools.

`prompts` builds IOI prompt sets and the logit-difference metric; `language` the
synthetic IOI language a small local model is trained on (`train`, with the matched
pair's optimizer step; `local_model` reads it back), since GPT-2 weights cannot be
fetched here; `subjects` loads either model for analysis;
`baseline`, `scores` and `analysis` are the pipeline (`run_ioi`), `report` its
figures and markdown.
"""
