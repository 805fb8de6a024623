"""MCHA on the synthetic multi-expert demo (``hvt-prepare demo --variant experts``,
data_prep/demo_experts.py): three experts, each video's cue in a different one.

Demo-scale choices (stated, not the paper's): a small text tower trained from scratch
(the demo's pseudo-words are not in any checkpoint's vocabulary), one layer per
transformer, d_uni 64, Adam 1e-3, 12 epochs of batch 32, mean reductions, β = 0.01 and
inference score S^h + S/(K·words) (the local score counts at inference).

Why β = 0.01 (README, MCHA demo): β sets how hard L_Tri pulls on the encoders the two
losses share (text tower, expert projections, modality transformers; Adam's per-parameter
scaling makes the LAM's own weights learn at any β). The from-scratch text tower gives
every caption the same [CLS] at init, so L_Mar's gradient is small for the first ~50-100
steps; with β = 0.1, β ∇L_Tri was 6-8x ∇L_Mar on the shared encoders at init and drove the
hardest-negative triplet into its collapsed solution (all local scores equal, L_Tri = Δ):
video reps of different videos reached cosine 0.98 before L_Mar could start, and seed 2
ended near chance. At β = 0.01 the two gradients are of the same size at init. (The
paper's β = 1e-4 on summed losses, L_Mar summing 2B(B-1) terms and L_Tri 2B, keeps L_Tri's
pull smaller still; with its pretrained BERT, L_Mar has a gradient from the first step.)
``:lam=false`` is Table 4's "w/o LAM", ``:hrm=false`` "w/o HRM".
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
  c.loss.update(reduce="mean", beta=0.01)
  c.schedule.update(learning_rate=1e-3, decay_rate=0.95, transition_steps=100)
  if c.model.lam and c.model.hrm and "score=" not in (arg or ""):
    c.model.update(score="sum", score_local_weight=1.0 / c.model.lam_steps)
  return c
