"""text_mlm configs (masked language modelling of the shared text tower)."""
