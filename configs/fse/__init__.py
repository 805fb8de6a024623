"""FSE configs (flat sequence embedding baseline)."""
