"""MCHA family (multi-modal cues with hierarchical alignment); Table 4's ablations are args."""
