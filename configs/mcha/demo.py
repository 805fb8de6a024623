"""MCHA on the synthetic multi-expert demo (``hvt-prepare demo --variant experts``,
data_prep/demo_experts.py): three experts, each video's cue in a different one.

Demo-scale choices (stated, not the paper's): a small text tower trained from scratch
(the demo's pseudo-words are not in any checkpoint's vocabulary), one layer per
transformer, d_uni 64, Adam 1e-3, 12 epochs of batch 32, mean reductions, β = 1 and inference score S^h + S/(K·words): with
the paper's β = 1e-4 on summed losses the LAM gets almost no gradient at this scale and
its score would not count at inference. ``:lam=false`` is Table 4's "w/o LAM".
"""

from configs.mcha import base
from hvt_jax.models import text


def get_config(arg=None):
  c = base.make(arg, data_dir="data/demo_experts", experts=("motion", "audio", "scene"),
                eval_split="val", max_tokens=12, max_words=16, max_temporal_id=15)
  if "runlocal" in (arg or ""):
    c.input.experts = ("motion", "audio")     # tests: a smaller step to compile
  else:
    c.model.text = dict(text.RUNLOCAL, hidden=64, mlp_dim=128, num_layers=1,
                        dropout_rate=0.1, attention_dropout_rate=0.1)
    c.model.update(d_uni=64, num_heads=4, mlp_dim=128, num_layers=1)
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_train_steps = 0
    c.num_epochs = 12
    c.log_every_steps = 25
    c.checkpoint.every_steps = 500
    c.input.shuffle_buffer = 1024
  c.model.lam_word_reduce = "mean"
  c.loss.update(reduce="mean", beta=0.1)
  c.schedule.update(learning_rate=1e-3, decay_rate=0.95, transition_steps=100)
  if c.model.lam and c.model.hrm and "score=" not in (arg or ""):
    c.model.update(score="sum", score_local_weight=1.0 / c.model.lam_steps)
  return c
