"""Head ablation during generation against head nulls: the computation and its report
(`run`), the settings (`config`)."""
