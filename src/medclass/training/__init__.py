"""Training: an explicit loop built from small parts (optimiser, schedule, EMA, checkpoints)."""
