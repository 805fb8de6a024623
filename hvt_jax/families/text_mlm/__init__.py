"""Masked language modelling of the shared text tower on a dataset's sentences, whose
checkpoint initialises HAMMER's and MCHA's query towers (README.md here)."""

from __future__ import annotations

from hvt_jax import families
from hvt_jax.families.text_mlm import model
from hvt_jax.input import pipeline, text_ops

FAMILY = families.Family(
    name="text_mlm",
    models={"text_mlm": model.TextMLM},
    views={"text_mlm": pipeline.View(text_ops.sentence_view, per_row="tokens",
                                     stat_keys=("truncated",))},
)
