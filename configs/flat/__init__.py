"""FLAT configs: HAMMER's frame encoder alone (hvt_jax/models/hammer.py)."""
