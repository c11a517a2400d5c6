"""Analyses of one model or a matched pair.

Each method is one module or subpackage following `protocol.Analysis` (config, run,
result with provenance, report section); the methods share only `protocol`, `plots` and
`interventions` (TransformerLens-style hooks for ablation, patching and steering).
"""
