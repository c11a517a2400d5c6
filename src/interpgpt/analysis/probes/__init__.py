"""Linear probes on the residual stream: fitting (`fit`) and the three probes with their
causal checks (`run`)."""
