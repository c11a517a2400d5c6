"""Per-token KL between the pair's next-token distributions, by token role: the
computation and its report (`run`), the settings (`config`)."""
