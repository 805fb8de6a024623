"""HAMMER on the synthetic many-event demo (``hvt-prepare demo --variant moments``): what
``hvt-demo --models hammer,flat`` trains. ``configs/flat/demo.py`` is the same with FLAT.

Sizes for 2 CPU cores (our choice, not the paper's): a random 2-layer text tower of width
64 over the MiniLM WordPiece vocabulary (the demo's words are single WordPieces; the
pretrained tower would cost minutes per epoch on a CPU), 64 frames in clips of 8, batch 32,
8 epochs. Evaluation: the two-stage corpus evaluator (``hvt_jax/evaluation/moments.py``) on
the val split, VCMR/SVMR/VR/TL overall and by video-duration quartile.
``arg``: ``runlocal`` (the tests' tiny sizes) plus ``seed=N`` and ``subtitle`` (the demo's
subtitle-like stream as the ASR branch).
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs.hammer import base
from hvt_jax.models import text

ARGS = dict(runlocal=False, seed=0, subtitle=False)


def make(model: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """``model`` ("hammer" or "flat") on the moments demo."""
  a = common.parse_arg(arg, **ARGS)
  c = base.make(model, "runlocal" if a.runlocal else None, dataset="activitynet")
  c.seed = a.seed
  c.input.data_dir = "data/demo_moments"
  c.input.modalities = ("frames",)
  c.input.subtitle = "subtitle" if a.subtitle else ""
  c.evals = dict(moments=dict(type="moments", split="val", pred="localize", prefix="",
                              log_steps=0, top_k_videos=100, moment_ranking="per_video",
                              duration_buckets=4))
  if a.runlocal:
    c.evals.moments.update(top_k_videos=10, svmr_moments=10, query_block=8, cand_block=16,
                           pair_block=8)
    return c
  c.model.text = dict(text.RUNLOCAL, hidden=64, num_layers=2, num_heads=4, mlp_dim=128,
                      dropout_rate=0.1, attention_dropout_rate=0.1)
  c.model.negatives = 7
  c.model.clip_length = 8
  c.input.max_frames = 64
  c.input.max_words = 12
  c.input.shuffle_buffer = 4096
  c.schedule.learning_rate = 1e-3
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_epochs = 8
  c.log_every_steps = 50
  c.checkpoint.every_steps = 1000
  c.evals.moments.update(query_block=32, cand_block=100, pair_block=32)
  return c


def get_config(arg=None):
  return make("hammer", arg)
