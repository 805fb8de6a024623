"""HSE configs (hierarchical sequence embedding)."""
