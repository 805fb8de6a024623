"""Experiments: ``configs/<family>/<dataset>.py``, each one ``get_config(arg)`` that spells out
its data, model, loss, schedule and evaluators; variants are args after a colon
(``configs/hse/demo.py:model=fse,runlocal``). ``configs/common.py`` holds what they share.
Nothing here imports ``hvt_jax``."""
