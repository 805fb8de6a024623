r"""hse_captioner: a 2-layer LSTM caption generator on the frozen [clip; video-level]
embeddings of a trained HSE/FSE, on ActivityNet Captions (C3D features).

Reproduces HSE Table 5 (captioning with the ground-truth segments on val_1; the paper's
B@4/METEOR/CIDEr: HSE[τ=5e-4] 2.1/9.2/39.8, HSE[τ=0] 2.0/9.2/39.5, FSE 1.7/8.7/32.1).

  hvt-train --config configs/hse/activitynet_c3d.py --workdir runs/hse            # retrieval first
  hvt-train --config configs/hse/activitynet_c3d_captioner.py:init=runs/hse --workdir runs/cap

The backbone is ``configs/hse/activitynet_c3d.py``'s model, built from the same arg (its
settings must match the checkpoint); ``init_from`` fills it from the retrieval run's latest
checkpoint and ``trainable`` keeps it frozen, as the paper does.

Args: ``init=WORKDIR`` (the retrieval run), ``backbone=hse|fse`` (its model), and every arg of
``configs/hse/activitynet_c3d.py`` but ``model`` (``runlocal``, ``fsdp``, the ablations).
"""

from configs import common
from configs.hse import activitynet_c3d


def get_config(arg=None):
  own, backbone_arg = common.split_arg(arg, "backbone", "init", "model")
  a = common.parse_arg(own, backbone=("hse", "fse"), init=str)
  c = activitynet_c3d.get_config(",".join(filter(None, [backbone_arg,
                                                        f"model={a.backbone}"])))
  c.model.name, c.model.backbone = "hse_captioner", a.backbone
  c.init_from = (dict(source=a.init, format="checkpoint", into="backbone", layers=None,
                      strict=True, ignore=()),) if a.init else ()
  c.trainable = "decoder/.*"
  # c.model / c.input / c.loss stay the backbone's (its create checks them).
  # Paper: 2-layer LSTM, random word embeddings, 25 epochs at lr 1e-3, beam 5; widths and
  # the maximum length are our choice (ActivityNet captions average 13.5 words).
  c.model.update(caption_word_dim=512, caption_hidden=512, beam_size=5, beam_max_len=30,
                 beam_alpha=0.0)
  c.schedule = dict(name="constant", learning_rate=1e-3)
  c.num_epochs = 25
  c.evals = dict(val=dict(type="caption", split="val_1", pred="generate",
                          prefix="caption", baseline="none", log_steps=0))
  common.best_checkpoint(c.evals.val)
  if "runlocal" in backbone_arg.split(","):
    c.model.update(caption_word_dim=16, caption_hidden=16, beam_size=3, beam_max_len=8)
    c.num_epochs = 1
  return c
