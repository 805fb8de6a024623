"""Converters from the datasets' own annotations and features to hvt_jax TFRecords."""
