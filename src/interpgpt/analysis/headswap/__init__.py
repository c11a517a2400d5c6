"""The head-swap inventory: attention profiles of every head (`profiles`), their matching
and statistics across the pair (`stats`), head signatures checked against known answers
(`signatures`), the config, run and report (`inventory`)."""
