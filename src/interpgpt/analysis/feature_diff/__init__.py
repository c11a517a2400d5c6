"""The SAE feature diff of the pair: the computation and its report (`run`), the
settings (`config`)."""
