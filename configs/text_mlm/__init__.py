"""text_mlm family: masked language modelling of the shared text tower."""
