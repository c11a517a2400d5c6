"""The paired corpus: task pool, the standard and ADHD decompositions, splits, tokenizer.

`taskpool` holds the task data, `regulation` the regulation vocabulary and the rule
that places it, `build` writes both variants from one pool, `evalset` encodes held-out
tasks for teacher-forced analyses, `tokenizer` trains and wraps the shared byte-level BPE.
"""
