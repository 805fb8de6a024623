"""hse_captioner configs: a 2-layer LSTM caption generator on a frozen HSE/FSE
(HSE Table 5)."""
