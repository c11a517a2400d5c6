"""Analyses of one model or a matched pair.

Each method is one subpackage following `protocol.Analysis`: a core on models and
tensors, and beside it the study adapter (config, stage, report section, statistics),
which sees the study's files only through `protocol.Layout`. Each is registered once in
`registry`. The methods share only the common modules (`protocol`, `lm`, `controls`,
`plots`, `interventions`, `sae_features`, `dashboard`), never each other.
"""
