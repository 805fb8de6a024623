r"""HAMMER (and its baseline FLAT, HAMMER's frame encoder alone) on ActivityNet Captions,
I3D features (1 per second; ResNet-152 at 6 FPS with ``:features=resnet``).

Reproduces HAMMER Table 1, ActivityNet rows (moment localization in the video corpus on
val_1; the paper's VCMR R1/R10/R100 at IoU 0.5: HAMMER 2.94/14.49/32.49 with I3D,
0.51/3.29/12.01 with ResNet; FLAT 2.57/13.07/30.66 and 0.34/2.28/10.09), and Tables 2-3
(VR, TL; I3D).

  hvt-prepare activitynet_captions --annotations train.json val_1.json --features i3d/ \
      --modality i3d --feature-rate 1 --tokenizer wordpiece --output data/activitynet_i3d
  hvt-train --config configs/hammer/activitynet.py --workdir runs/hammer_activitynet
  hvt-train --config configs/hammer/activitynet.py:model=flat --workdir runs/flat_activitynet

``:features=resnet`` reads data/activitynet_resnet (the same command with ``--features
resnet/ --modality resnet --feature-rate 6``: supp. 6.1.1).

The paper's settings (supplement §6.1) and every choice it leaves open, labelled "our
choice"; hvt_jax's HAMMER model documents each option.

Args: ``model=hammer|flat``; ``runlocal`` (tiny sizes and a random tiny text tower: tests);
``fsdp``; ``clip_length=N`` (Table 7); ``cross_modal=false`` (Table 6's ablation: no
cross-modal layer); ``features=i3d|resnet`` (Table 1).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, model=("hammer", "flat"), runlocal=False, fsdp=False,
                       cross_modal=True, clip_length=32, features=("i3d", "resnet"))
  c = ml_collections.ConfigDict()
  common.trainer_defaults(c, fsdp=a.fsdp)

  c.model = dict(
      name=a.model,
      # Query stream: the first 5 layers of a pretrained BERT (supp. 6.1.5; our reading:
      # bert-base-uncased, the uncased WordPiece of 30,522 ids). BERT's dropout 0.1.
      text=dict(checkpoint=common.TEXT_CHECKPOINT, num_layers=5, dropout_rate=0.1,
                attention_dropout_rate=0.1),
      # Visual/ASR/cross-modal layers (randomly initialised, supp. 6.1.5). 0 = the tower's
      # width / heads / MLP width (our choice: the paper states none).
      visual_width=0, num_heads=0, mlp_dim=0, dropout_rate=0.1, attention_dropout_rate=0.1,
      # Normal-init std of the random layers (0 = the tower's initializer_range, BERT's 0.02).
      init_std=0.0,
      clip_length=a.clip_length,   # frames per clip: Table 7's best, 32 of 128
      frame_scope="clip",          # Φ per clip (Eq. 7/12) | "video": once, CCLS_k per clip
      clip_query="text",           # Ψ's query stream: the tower's output | "frame": Φ's
      clip_position=True,          # Table 9
      share_encoders=False,        # Table 8
      # Each encoder's own 5 query layers, both from BERT's first 5 (supp. 6.1.3, Table 8's
      # untied) | "shared": one stack feeds Φ and Ψ. FLAT has one (§4.1).
      query_stacks="per_encoder",
      cross_modal=a.cross_modal,   # Table 6 (:cross_modal=false: the ✗ row; README)
      # ASR: valid frames without subtitles are zero vectors (supp. 6.1.2) | "mask"
      asr_missing="zero",
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
      data_dir=f"data/activitynet_{a.features}", dataset="", train_split="train",
      modalities=(a.features,), subtitle="",    # no ASR on ActivityNet
      max_frames=128,              # supp. 6.1.4
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
  # Adam 4e-5; linear warm-up over 10 %, ×0.1 at 50 %, ×0.01 at 75 % (supp. 6.1.4).
  c.schedule = dict(name="warmup_cuts", learning_rate=4e-5,
                    warmup_fraction=0.1, cuts=((0.5, 0.1), (0.75, 0.01)))
  c.optax = dict(b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0)   # no clipping stated
  c.batch_size = 64                # supp. 6.1.4
  c.eval_batch_size = 64
  c.num_epochs = 10                # our choice: the paper states no epoch count
  # Two-stage corpus evaluation (hvt_jax/evaluation/moments.py documents each option).
  c.evals = dict(moments=dict(
      type="moments", split="val_1", pred="localize", prefix="", log_steps=0,
      top_k_videos=100, moment_ranking="per_video", moments_per_video=100,
      svmr_moments=100, max_moment_seconds=0.0, max_queries=0, max_videos=0,
      # Block sizes per device, 0: the largest that fits the device's free memory.
      subsample_seed=0, duration_buckets=4, query_block=0, cand_block=0, pair_block=0,
      submission=True))
  common.best_checkpoint(c.evals.moments)

  if a.runlocal:
    c.model.text = dict(common.RUNLOCAL_TEXT, dropout_rate=0.1, attention_dropout_rate=0.1)
    c.model.update(clip_length=4, negatives=3, mlm_max_predictions=4)
    c.input.update(max_frames=16, max_words=12, shuffle_buffer=64)
    c.num_epochs = 1
    c.evals.moments.update(top_k_videos=4, moments_per_video=4, svmr_moments=4,
                           query_block=8, cand_block=8, pair_block=8)
    common.runlocal_trainer(c)
  return c
