"""HAMMER configs (hvt_jax/models/hammer.py)."""
