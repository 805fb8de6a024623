r"""hse_captioner on the synthetic demo: a 2-layer LSTM caption generator on the frozen
[clip; video-level] embeddings of a trained demo HSE/FSE.

Reproduces no paper number: the demo version of HSE Table 5
(``configs/hse/activitynet_c3d_captioner.py``), with a narrower decoder that trains its 25
epochs in minutes on 2 CPU cores. The captions need a word order to learn, so the
backbone is trained on the ordered-words demo:

  hvt-prepare demo --ordered-words --output data/demo_ordered
  hvt-train --config configs/hse/demo.py --workdir runs/hse_ordered \
      --config.input.data_dir=data/demo_ordered
  hvt-train --config configs/hse/demo_captioner.py:init=runs/hse_ordered --workdir runs/cap \
      --config.input.data_dir=data/demo_ordered --config.evals.val.baseline=nearest

The backbone is ``configs/hse/demo.py``'s model, built from the same arg (so ``init`` must
be a checkpoint of the same sizes); ``init_from`` fills it and ``trainable`` keeps it frozen.

Args: ``init=WORKDIR`` (the retrieval run), ``backbone=hse|fse`` (its model), and every arg of
``configs/hse/demo.py`` but ``model``.
"""

from configs import common
from configs.hse import demo


def get_config(arg=None):
  own, backbone_arg = common.split_arg(arg, "backbone", "init", "model")
  a = common.parse_arg(own, backbone=("hse", "fse"), init=str)
  c = demo.get_config(",".join(filter(None, [backbone_arg, f"model={a.backbone}"])))
  c.model.name, c.model.backbone = "hse_captioner", a.backbone
  c.init_from = (dict(source=a.init, format="checkpoint", into="backbone", layers=None,
                      strict=True, ignore=()),) if a.init else ()
  c.trainable = "decoder/.*"
  # c.model / c.input / c.loss stay the backbone's (its create checks them).
  # Paper: 2-layer LSTM, random word embeddings, 25 epochs at lr 1e-3, beam 5; the narrower
  # widths and the maximum length are the demo's (our choice).
  c.model.update(caption_word_dim=64, caption_hidden=128, beam_size=5, beam_max_len=14,
                 beam_alpha=0.0)
  c.schedule = dict(name="constant", learning_rate=1e-3)
  c.num_epochs = 25
  c.evals = dict(val=dict(type="caption", split="val", pred="generate",
                          prefix="caption", baseline="none", log_steps=0))
  common.best_checkpoint(c.evals.val)
  if "runlocal" in backbone_arg.split(","):
    c.model.update(caption_word_dim=16, caption_hidden=16, beam_size=3, beam_max_len=8)
    c.num_epochs = 1
  return c
