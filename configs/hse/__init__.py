"""HSE family: HSE and its flat baseline FSE (``:model=fse``), and the heads on a trained one
(``*_classifier.py``, ``*_captioner.py``).

The retrieval configs (``activitynet_c3d.py``, ``activitynet_inception.py``, ``didemo.py``,
``demo.py``) take the same arguments, ``ARGS``, and write the paper's ablations into their
config with ``apply_ablations``: ``tau=0`` (HSE[τ=0]), ``tau_low=...``, ``low=weak|none``
(Table 3), ``hardest_negative``, ``recon_distance=squared_l2``, ``context_init=false``,
``without=match_high|cluster_high|match_low|cluster_low`` (supp. Table 1: that loss term
dropped) and ``uniform=K`` (Table 4: K uniform proposals instead of the ground-truth
segments, with the weak low-level loss).
"""

import ml_collections

# Each retrieval config's arguments (configs/common.parse_arg); a config adds its own.
ARGS = dict(model=("hse", "fse"), runlocal=False, fsdp=False, tau=float, tau_low=float,
            low=str, hardest_negative=False, recon_distance=str, context_init=bool,
            without=str, uniform=int)
LOSS_TERMS = ("match_high", "cluster_high", "match_low", "cluster_low")


def apply_ablations(c: ml_collections.ConfigDict, a: ml_collections.ConfigDict) -> None:
  """Writes the ablation arguments ``a`` (parsed with ``ARGS``) into the config ``c``.

  Raises:
    ValueError: ``without`` names no loss term, ``uniform`` is below 1.
  """
  for key in ("tau", "tau_low", "low", "recon_distance"):
    if a[key] is not None:
      c.loss[key] = a[key]
  c.loss.hardest_negative = a.hardest_negative
  if a.context_init is not None:
    c.model.context_init = a.context_init
    if not a.context_init:
      c.loss.context_weight = 0.0
  if a.without is not None:     # supp. Table 1: "HSE w/o <term>"
    if a.without not in LOSS_TERMS:
      raise ValueError(f"config arg without={a.without!r}; valid: "
                       f"{', '.join(map(repr, LOSS_TERMS))}")
    c.loss.weights[a.without] = 0.0
  if a.uniform is not None:     # Table 4: "HSE + UNIFORM", K segments
    if a.uniform < 1:
      raise ValueError(f"config arg uniform={a.uniform}: the number of uniform proposals "
                       "must be at least 1")
    c.input.update(clip_source="uniform", num_uniform_clips=a.uniform)
    if a.low is None and c.loss.low == "strong":
      # K proposals do not pair with the sentences: only the averaged match (Eq. 13-14).
      c.loss.low = "weak"
