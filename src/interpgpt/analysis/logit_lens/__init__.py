"""Regulation logit lens and direct logit attribution at step onsets: the computation and
its report (`run`), the settings (`config`)."""
