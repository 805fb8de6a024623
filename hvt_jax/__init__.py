"""hvt_jax: hierarchical video-text models in JAX/Flax."""

__version__ = "0.1.0"
