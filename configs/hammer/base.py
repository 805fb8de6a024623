"""HAMMER and FLAT (hvt_jax/models/hammer.py): the paper's settings (supplement §6.1) and
every choice it leaves open, labelled "our choice".

``make(model, arg, dataset=...)`` is the recipe behind ``configs/{hammer,flat}/*.py`` (not a
config file itself). ``arg``: ``runlocal`` (tiny sizes and a random tiny text tower: tests),
``fsdp``, ``clip_length=N`` (Table 7), ``features=i3d|resnet`` (ActivityNet, Table 1).
"""

from __future__ import annotations

import ml_collections

from configs import common
from hvt_jax.models import text

ARGS = dict(runlocal=False, fsdp=False, clip_length=int, features=str)

# Supplement §6.1.1/6.1.4 per dataset: features, lr, batch, max frames; the rest ours.
DATASETS = {
    # ActivityNet Captions: I3D at 1 FPS (ResNet-152 at 6 FPS with features=resnet);
    # lr 4e-5, batch 64, 128 frames, clip length 32 (Table 7's best).
    "activitynet": dict(data_dir="data/activitynet_i3d", modalities=("i3d",), subtitle="",
                        learning_rate=4e-5, batch_size=64, max_frames=128, clip_length=32,
                        val_split="val_1"),
    # TVR: I3D+ResNet-152 (1.5 s clips) + ASR; lr 2e-4, batch 128, 96 frames. Clip length:
    # our choice 16 (Table 7 tries 8-48 without naming TVR's default): about a quarter of
    # an average video (76 s ≈ 51 frames of 1.5 s), as 32 of ~128 is on ActivityNet.
    "tvr": dict(data_dir="data/tvr", modalities=("i3d", "resnet"), subtitle="subtitle",
                learning_rate=2e-4, batch_size=128, max_frames=96, clip_length=16,
                val_split="val"),
}


def make(model: str, arg: str | None = None, *,
         dataset: str = "activitynet") -> ml_collections.ConfigDict:
  """HAMMER (``model="hammer"``) or FLAT (``"flat"``) on ``dataset``, adjusted by ``arg``."""
  a = common.parse_arg(arg, **ARGS)
  d = DATASETS[dataset]
  c = ml_collections.ConfigDict()
  common.trainer_defaults(c, fsdp=a.fsdp)
  c.model = dict(
      name=model,
      # Query stream: the first 5 layers of a pretrained BERT (supp. 6.1.5; the offline
      # MiniLM, width 384). BERT's dropout 0.1.
      text=dict(checkpoint=text.DEFAULT_CHECKPOINT, num_layers=5, dropout_rate=0.1,
                attention_dropout_rate=0.1),
      # Visual/ASR/cross-modal layers (randomly initialised, supp. 6.1.5). 0 = the tower's
      # width / heads / MLP width (our choice: the paper states none).
      visual_width=0, num_heads=0, mlp_dim=0, dropout_rate=0.1, attention_dropout_rate=0.1,
      # Normal-init std of the random layers (0 = the tower's initializer_range, BERT's 0.02).
      init_std=0.0,
      clip_length=d["clip_length"],
      frame_scope="clip",          # Φ per clip (Eq. 7/12) | "video": once, CCLS_k per clip
      clip_query="text",           # Ψ's query stream: the tower's output | "frame": Φ's
      clip_position=True,          # Table 9
      share_encoders=False,        # Table 8
      flat_vr_head="cls",          # FLAT only: "cls" | "max_frame" | "tcls"
      tl_head="bio",               # Eq. 10-12 as written | "boundary": start/end softmaxes
      negatives=7,                 # VR negatives per query from the global batch (our choice)
      negative_mode="sample",      # balanced draw (each row k times) | "all": every row
      mlm_frame=True, mlm_clip=True,               # FM / CM (Table 4)
      mask_rate=0.15, mask_scheme="bert",          # BERT 80/10/10 | "mask_all"
      mlm_max_predictions=8,       # BERT's max_predictions_per_seq at 32 words
      masked_query_for_vr_tl=True, # §3.4: h ⊗ (1 − m) replaces h in ℓ_VR and ℓ_TL
      # Inference: t_e − t_s >= 1 (§3.5); longest moment in frames (0 = any).
      min_moment_frames=1, max_moment_frames=0,
      dtype="float32")
  c.input = dict(
      data_dir=d["data_dir"], dataset="", train_split="train",
      modalities=d["modalities"], subtitle=d["subtitle"], max_frames=d["max_frames"],
      # 32 WordPiece ids incl. [CLS]/[SEP] (our choice: queries average 13.5 words).
      max_words=32,
      # "pad" (our choice: short videos keep their own rows, long ones are pooled) |
      # "interpolate" (every video stretched to max_frames).
      resample="pad",
      zero_length="keep",          # one frame | "skip"
      same_frame_label="begin",    # the label of a frame that both starts and ends a moment
      shuffle_buffer=4096)
  # Eq. 14 weights (Table 5: 1 : 5 : 0.1); TL summed over frames (Eq. 6), mean over queries.
  c.loss = dict(weights=dict(vr=1.0, tl=5.0, mlm=0.1), tl_reduce="sum")
  # Adam; linear warm-up over 10 %, ×0.1 at 50 %, ×0.01 at 75 % (supp. 6.1.4).
  c.schedule = dict(name="warmup_cuts", learning_rate=d["learning_rate"],
                    warmup_fraction=0.1, cuts=((0.5, 0.1), (0.75, 0.01)))
  c.optax = dict(b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0)   # no clipping stated
  c.batch_size = d["batch_size"]
  c.eval_batch_size = d["batch_size"]
  c.num_epochs = 10                # our choice: the paper states no epoch count
  # Two-stage corpus evaluation (hvt_jax/evaluation/moments.py documents each option).
  c.evals = dict(moments=dict(
      type="moments", split=d["val_split"], pred="localize", prefix="", log_steps=0,
      top_k_videos=100, moment_ranking="per_video", moments_per_video=100,
      svmr_moments=100, max_moment_seconds=0.0, max_queries=0, max_videos=0,
      subsample_seed=0, duration_buckets=4, query_block=64, cand_block=256, pair_block=64,
      submission=True))
  if a.clip_length is not None:
    c.model.clip_length = a.clip_length
  if a.features is not None:
    if a.features not in ("i3d", "resnet"):
      raise ValueError(f"config arg features={a.features!r}; valid: 'i3d', 'resnet'")
    c.input.modalities = (a.features,)
  if a.runlocal:
    _runlocal(c)
  return c


def _runlocal(c: ml_collections.ConfigDict) -> None:
  """A tiny random text tower and tiny sizes that train in seconds (tests)."""
  c.model.text = dict(text.RUNLOCAL, dropout_rate=0.1, attention_dropout_rate=0.1)
  c.model.clip_length = 4
  c.model.negatives = 3
  c.model.mlm_max_predictions = 4
  c.input.max_frames = 16
  c.input.max_words = 12
  c.input.shuffle_buffer = 64
  c.num_epochs = 1
  c.evals.moments.update(top_k_videos=4, moments_per_video=4, svmr_moments=4,
                         query_block=8, cand_block=8, pair_block=8)
  common.runlocal_trainer(c)
