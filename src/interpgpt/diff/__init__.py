"""Diff any pair: the pair analyses on two models that share a tokenizer and a shape, with
seed controls, as one report (`interpgpt diff A B --texts FILE.jsonl --out DIR`)."""
