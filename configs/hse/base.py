"""HSE and its flat baseline FSE: the paper's settings, as the authors' released code runs
them: github.com/zbwglory/CMHSE, model.py@762f91d, loss.py and decoder/loss.py@e007cfe,
activity_net/data.py@a861130, with its README's training flags (``--low_level_loss
--reconstruct_loss --lowest_reconstruct_loss --norm``). hvt_jax/models/hse.py cites the line
of each rule and README.md lists where the code and the paper text differ.

``make(model, arg, ...)`` is the one recipe behind every ``configs/{hse,fse}/*.py``, and
``make_head(task, arg, ...)`` behind ``configs/{hse_classifier,hse_captioner}/*.py`` (this
file is not a config file itself).
``arg``: ``runlocal`` (tiny sizes that train in seconds; tests use them), ``fsdp`` (shard the
parameters over the data axis), and the paper's ablations: ``tau=0``, ``tau_low=...``,
``low=weak|none``, ``hardest_negative``, ``recon_distance=squared_l2``,
``context_init=false``; ``tasks``: also evaluate HSE beyond retrieval on the validation split
(incomplete observations, zero-shot recognition of whole videos and of labelled instances,
the t-SNE picture; zero-shot needs action labels: train or evaluate on the
``activitynet_labels`` dataset), as the demo config does.
"""

from __future__ import annotations

import ml_collections

from configs import common

ARGS = dict(runlocal=False, fsdp=False, demo=False, tau=float, tau_low=float, low=str,
            hardest_negative=False, recon_distance=str, context_init=bool, tasks=False)


def make(model: str, arg: str | None = None, *, modality: str = "c3d",
               data_dir: str = "data/activitynet_captions") -> ml_collections.ConfigDict:
  """HSE/FSE on ``data_dir`` with features ``modality``, adjusted by ``arg``."""
  a = common.parse_arg(arg, **ARGS)
  hse = model == "hse"
  c = ml_collections.ConfigDict()
  common.trainer_defaults(c, fsdp=a.fsdp)
  c.model = dict(name=model, hidden=1024, word_dim=300, context_init=hse,
                 reconstruction=hse,
                 normalize_embeddings=False,   # released code: raw embeddings; True: L2 all
                 dtype="float32",              # "bfloat16": 1.7x faster
                 word_vectors="auto")          # <data_dir>/word_vectors.npy | "none" | path
  c.input = dict(
      data_dir=data_dir, dataset="", modality=modality, train_split="train",
      # Static limits; what they cut is counted and logged. On ActivityNet train they cut
      # 50/10,009 videos (>12 sentences), 76/37,421 sentences (>48 words), 1 paragraph.
      max_clips=12, max_frames_per_clip=80, max_video_frames=80, max_words=48,
      max_paragraph_words=384, clip_source="segments", num_uniform_clips=4,
      shuffle_buffer=1024,
      # Seconds -> rows (hvt_jax/input/ops.py): "auto" = the dataset's stated rule (released
      # code's floor/ceil "authors"; "center" on DiDeMo), or "authors"|"overlap"|"center".
      clip_rule="auto", zero_length="keep",                    # "widen" | "skip"
      frame_sampling="authors")                                # released float64 arange | "exact"
  c.loss = dict(
      margin=0.2, hardest_negative=False, normalize="pairs",   # authors: all negatives / N²
      cluster=True, cluster_bidirectional=False,               # code: (L(v,v)+L(p,p))/2
      low="strong" if hse else "none",                         # "strong" | "weak" | "none"
      context_weight=1.0 if hse else 0.0,
      tau=5e-4 if hse else 0.0, tau_low=1e-4,
      recon_distance="l2",                                     # paper text: "squared_l2"
      recon_reduce="mean",                     # code with --norm; "sum" | "sequence_mean"
      # Supp. Table 1 ablations: a 0 weight drops that term.
      weights=dict(match_high=1.0, cluster_high=1.0, match_low=1.0, cluster_low=1.0))
  # Adam 1e-3, ×0.1 every 10 epochs (HSE supp. §1); hvt_jax/schedules.py lists the others.
  c.schedule = dict(name="step_epochs", learning_rate=1e-3, decay_factor=0.1, decay_epochs=10)
  c.optax = dict(b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0)
  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_epochs = 15
  c.evals = dict(val=dict(type="retrieval", split="val_1", pred="score", prefix="p2v",
                          reverse_prefix="v2p", top_k=10, log_steps=0))
  # Ablations from the command line (Table 3, supp. Table 2).
  for key in ("tau", "tau_low", "low", "recon_distance"):
    if a[key] is not None:
      c.loss[key] = a[key]
  c.loss.hardest_negative = a.hardest_negative
  if a.context_init is not None:
    c.model.context_init = a.context_init
    if not a.context_init:
      c.loss.context_weight = 0.0
  if a.demo:
    _demo(c)
  if a.tasks or (a.demo and not a.runlocal):
    _hse_tasks(c)
  if a.runlocal:
    _runlocal(c)
  return c


def _runlocal(c: ml_collections.ConfigDict) -> None:
  """Tiny sizes that train in seconds on a laptop CPU (tests use these)."""
  c.model.hidden = 32
  c.model.word_dim = 16
  c.model.word_vectors = "none"
  c.input.max_clips = 4
  c.input.max_frames_per_clip = 8
  c.input.max_video_frames = 16
  c.input.max_words = 8
  c.input.max_paragraph_words = 24
  c.input.shuffle_buffer = 64
  c.num_epochs = 1
  common.runlocal_trainer(c)


def _demo(c: ml_collections.ConfigDict) -> None:
  """Sizes for the synthetic demo: trains HSE and FSE in minutes on 2 CPU cores (with
  ``_hse_tasks`` unless ``runlocal``: the tiny runs, tests and ``hvt-demo --config-arg
  runlocal``, keep the one retrieval evaluator)."""
  c.input.data_dir = "data/demo"
  c.input.modality = "frames"
  c.input.max_clips = 5
  c.input.max_frames_per_clip = 12
  c.input.max_video_frames = 64
  c.input.max_words = 12
  c.input.max_paragraph_words = 64
  c.input.shuffle_buffer = 2048
  c.model.hidden = 128
  c.model.word_dim = 32
  c.model.word_vectors = "none"
  c.batch_size = 64
  c.eval_batch_size = 128
  c.num_epochs = 15
  c.log_every_steps = 20
  c.checkpoint.every_steps = 200
  c.evals.val.split = "val"


def _hse_tasks(c: ml_collections.ConfigDict) -> None:
  """HSE beyond retrieval (``hvt_jax.evaluation.hse_tasks``) on the retrieval evaluator's
  split: retrieval from the first n clips/sentences, n = 1 … ``input.max_clips`` (Fig. 4),
  zero-shot action recognition of whole videos and of each labelled instance (Table 6) and
  a t-SNE picture of the clip/sentence embeddings."""
  split = c.evals.val.split
  c.evals.incomplete = dict(type="retrieval", split=split, pred="score", group="incomplete",
                            observe_first=c.input.max_clips, plot=True, log_steps=0)
  c.evals.zeroshot = dict(type="zeroshot", split=split, pred="low_level", prefix="zeroshot",
                          log_steps=0)
  # The paper's option: each labelled action instance (v1.3 annotations, the demo's clips).
  c.evals.zeroshot_instances = dict(type="zeroshot", split=split, pred="low_level",
                                    prefix="zeroshot_instances", videos="instances",
                                    log_steps=0)
  c.evals.embeddings = dict(type="embeddings", split=split, pred="embed",
                            prefix="embeddings", max_videos=40, log_steps=0)


HEAD_ARGS = dict(backbone="hse", init=str)


def make_head(task: str, arg: str | None = None, *, modality: str = "c3d",
              data_dir: str = "data/activitynet_labels",
              val_split: str = "val_1") -> ml_collections.ConfigDict:
  """A small model on a trained HSE/FSE (``hvt_jax/models/hse_heads.py``, HSE §4.3–4.4).

  ``task``: "hse_classifier" (Table 6, right) or "hse_captioner" (Table 5). ``arg``: the
  keys of ``make`` (the backbone's own settings, which must match its checkpoint) plus
  ``backbone=hse|fse`` and ``init=WORKDIR`` (the retrieval run whose latest checkpoint fills
  ``backbone``; ``config.trainable`` keeps it frozen, as the paper does).
  """
  items = [i for i in (arg or "").split(",") if i]
  head = ",".join(i for i in items if i.partition("=")[0] in HEAD_ARGS)
  a = common.parse_arg(head, **HEAD_ARGS)
  c = make(a.backbone, ",".join(i for i in items if i.partition("=")[0] not in HEAD_ARGS),
           modality=modality, data_dir=data_dir)
  c.model.name, c.model.backbone = task, a.backbone
  c.init_from = (dict(source=a.init, format="checkpoint", into="backbone", layers=None,
                      strict=True, ignore=()),) if a.init else ()
  # c.model/c.input/c.loss stay the backbone's (its create checks them); the heads' losses
  # have no options.
  if task == "hse_classifier":
    c.model.classifier_hidden = 512          # our choice: the paper gives no width
    c.trainable = "head/.*"
    # Our choice (the paper gives no schedule for the MLP): Adam 1e-3, 10 epochs.
    c.schedule = dict(name="constant", learning_rate=1e-3)
    c.num_epochs = 10
    c.evals = dict(val=dict(type="classify", split=val_split, pred="classify",
                            prefix="classify", log_steps=0))
  elif task == "hse_captioner":
    # Paper: 2-layer LSTM, random word embeddings, 25 epochs at lr 1e-3, beam 5; widths and
    # the maximum length are our choice (ActivityNet captions average 13.5 words).
    c.model.update(caption_word_dim=512, caption_hidden=512, beam_size=5, beam_max_len=30,
                   beam_alpha=0.0)
    c.trainable = "decoder/.*"
    c.schedule = dict(name="constant", learning_rate=1e-3)
    c.num_epochs = 25
    c.evals = dict(val=dict(type="caption", split=val_split, pred="generate",
                            prefix="caption", baseline="none", log_steps=0))
  else:
    raise ValueError(f"make_head: task={task!r}; valid: 'hse_classifier', 'hse_captioner'")
  captioner = task == "hse_captioner"
  if "demo" in items and captioner:   # narrower decoder: minutes on 2 CPU cores, 25 epochs
    c.model.update(caption_word_dim=64, caption_hidden=128, beam_max_len=14)
  if "runlocal" in items:
    if captioner:
      c.model.update(caption_word_dim=16, caption_hidden=16, beam_size=3, beam_max_len=8)
    else:
      c.model.classifier_hidden = 16
    c.num_epochs = 1
  return c
