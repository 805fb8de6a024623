"""hse_classifier configs: a one-hidden-layer MLP on the frozen clip-level embeddings of
an HSE/FSE (HSE Table 6, right)."""
