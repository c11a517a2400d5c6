"""Steering with one SAE feature against random-direction nulls: the interventions and
their report (`run`), the paired-delta statistics and the null rule (`null`)."""
