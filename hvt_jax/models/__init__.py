"""Shared model code: the model contract (``base``), layers, the BERT-family text tower
(``text``) and BERT's masking (``mlm``). The models themselves live in their families
(``hvt_jax.families``)."""
