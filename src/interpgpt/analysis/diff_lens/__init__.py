"""The Activation Difference Lens and its steering check: the computation and its report
(`run`), the settings (`config`)."""
