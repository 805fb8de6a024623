"""MCHA configs (multi-modal cues with hierarchical alignment)."""
