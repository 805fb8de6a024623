"""Metrics (numpy) and the evaluators that run a model over a split."""
