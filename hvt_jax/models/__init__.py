"""Flax NNX models: shared layers and one module per family."""
