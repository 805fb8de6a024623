"""MCHA family (multi-modal cues with hierarchical alignment); Table 4's ablations are args."""

# The caption encoding's token mask and padded [T, L, ...] leaves: the retrieval evaluator
# cuts them per block of captions to the longest one (exact; ``scorer.TokenTrim``).
TRIM_TOKENS = ("word_mask", "words", "gate_w", "fuse_w")
