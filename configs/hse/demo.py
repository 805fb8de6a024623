r"""HSE (and FSE with ``:model=fse``) on the synthetic demo dataset: what ``hvt-demo`` trains.

Reproduces no paper table: the demo (``hvt-prepare demo``, data_prep/demo.py) is built so
that a model of the clip / sentence structure can tell its videos apart where a flat one
cannot, and trains in minutes on 2 CPU cores; ``hvt-demo`` prints HSE's and FSE's retrieval
side by side (README, "Demo").

  hvt-prepare demo --output data/demo
  hvt-train --config configs/hse/demo.py --workdir runs/hse_demo
  hvt-train --config configs/hse/demo.py:model=fse --workdir runs/fse_demo

The settings are those of ``configs/hse/activitynet_c3d.py`` (the paper's) but for the
demo's sizes: frame features, at most 5 clips of 12 frames, 12-word sentences, 128 hidden
units, random 32-d word vectors, batch 64, evaluated on the demo's ``val`` split with every
evaluator of HSE beyond retrieval (not with ``runlocal``).

Args: ``model=hse|fse``, ``runlocal``, ``fsdp``, ``tasks`` and the paper's ablations
(``configs/hse/__init__.py``; ``uniform=K`` drops the incomplete-observation evaluator, which
needs the segments).
"""

import ml_collections

from configs import common
from configs import hse as family


def get_config(arg=None):
  a = common.parse_arg(arg, **family.ARGS, tasks=False)
  hse = a.model == "hse"
  c = ml_collections.ConfigDict()
  common.trainer_defaults(c, fsdp=a.fsdp)
  c.checkpoint.every_steps = 200
  c.log_every_steps = 20

  c.model = dict(name=a.model, hidden=128, word_dim=32,
                 context_init=hse,               # h0 from the whole video / paragraph
                 reconstruction=hse,             # the GRU decoders of ℓ_REC
                 normalize_embeddings=False,     # released code: raw embeddings; True: L2 all
                 dtype="float32",                # "bfloat16": 1.7x faster
                 word_vectors="none")            # random word vectors: the demo's words
  c.input = dict(
      data_dir="data/demo", dataset="", modality="frames", train_split="train",
      max_clips=5, max_frames_per_clip=12, max_video_frames=64, max_words=12,
      max_paragraph_words=64, clip_source="segments", num_uniform_clips=4,
      shuffle_buffer=2048,
      clip_rule="auto", zero_length="keep", frame_sampling="authors")
  c.loss = dict(
      margin=0.2, hardest_negative=False, normalize="pairs",   # authors: all negatives / N²
      cluster=True, cluster_bidirectional=False,               # code: (L(v,v)+L(p,p))/2
      low="strong" if hse else "none",                         # "strong" | "weak" | "none"
      context_weight=1.0 if hse else 0.0,
      tau=5e-4 if hse else 0.0, tau_low=1e-4,
      recon_distance="l2",                                     # paper text: "squared_l2"
      recon_reduce="mean",                     # code with --norm; "sum" | "sequence_mean"
      weights=dict(match_high=1.0, cluster_high=1.0, match_low=1.0, cluster_low=1.0))
  # The paper's schedule: Adam 1e-3, ×0.1 every 10 epochs, 15 epochs.
  c.schedule = dict(name="step_epochs", learning_rate=1e-3, decay_factor=0.1, decay_epochs=10)
  c.optax = dict(b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0)
  c.batch_size = 64
  c.eval_batch_size = 128
  c.num_epochs = 15
  c.evals = dict(val=dict(type="retrieval", split="val", pred="score", prefix="p2v",
                          reverse_prefix="v2p", top_k=10, log_steps=0))
  common.best_checkpoint(c.evals.val)

  family.apply_ablations(c, a)   # Table 3, supp. Tables 1-2, Table 4

  if a.tasks or not a.runlocal:   # HSE beyond retrieval (the tiny runs keep retrieval only)
    if a.uniform is None:   # Retrieval from the first n clips / sentences (Fig. 4).
      c.evals.incomplete = dict(type="retrieval", split="val", pred="score",
                                group="incomplete", observe_first=c.input.max_clips,
                                log_steps=0)
    # Zero-shot action recognition (Table 6 left) of whole videos and of each labelled
    # clip (the paper's option).
    c.evals.zeroshot = dict(type="zeroshot", split="val", pred="low_level",
                            prefix="zeroshot", log_steps=0)
    c.evals.zeroshot_instances = dict(type="zeroshot", split="val", pred="low_level",
                                      prefix="zeroshot_instances", videos="instances",
                                      log_steps=0)
    # A t-SNE picture of the clip / sentence embeddings.
    c.evals.embeddings = dict(type="embeddings", split="val", pred="embed",
                              prefix="embeddings", max_videos=40, log_steps=0)

  if a.runlocal:
    c.model.update(hidden=32, word_dim=16, word_vectors="none")
    c.input.update(max_clips=4, max_frames_per_clip=8, max_video_frames=16, max_words=8,
                   max_paragraph_words=24, shuffle_buffer=64)
    c.num_epochs = 1
    common.runlocal_trainer(c)
  return c
