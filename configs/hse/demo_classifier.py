r"""hse_classifier on the synthetic demo: a one-hidden-layer MLP on the frozen clip-level
embeddings of a trained demo HSE/FSE, predicting each demo video's action class.

Reproduces no paper number: the demo version of HSE Table 6 right
(``configs/hse/activitynet_c3d_classifier.py``).

  hvt-demo --workdir runs/demo                  # trains runs/demo/hse and runs/demo/fse
  hvt-train --config configs/hse/demo_classifier.py:init=runs/demo/hse --workdir runs/cls \
      --config.input.data_dir=runs/demo/data     # backbone=fse for runs/demo/fse

The backbone is ``configs/hse/demo.py``'s model, built from the same arg (so ``init`` must
be a checkpoint of the same sizes: not a ``runlocal`` one unless this is ``runlocal`` too);
``init_from`` fills it and ``trainable`` keeps it frozen.

Args: ``init=WORKDIR`` (the retrieval run), ``backbone=hse|fse`` (its model), and every arg of
``configs/hse/demo.py`` but ``model``.
"""

from configs import common
from configs.hse import demo


def get_config(arg=None):
  own, backbone_arg = common.split_arg(arg, "backbone", "init", "model")
  a = common.parse_arg(own, backbone=("hse", "fse"), init=str)
  c = demo.get_config(",".join(filter(None, [backbone_arg, f"model={a.backbone}"])))
  c.model.name, c.model.backbone = "hse_classifier", a.backbone
  c.init_from = (dict(source=a.init, format="checkpoint", into="backbone", layers=None,
                      strict=True, ignore=()),) if a.init else ()
  c.trainable = "head/.*"
  # c.model / c.input / c.loss stay the backbone's (its create checks them).
  c.model.classifier_hidden = 512          # our choice: the paper gives no width
  # Our choice (the paper gives no schedule for the MLP): Adam 1e-3, 10 epochs.
  c.schedule = dict(name="constant", learning_rate=1e-3)
  c.num_epochs = 10
  c.evals = dict(val=dict(type="classify", split="val", pred="classify",
                          prefix="classify", log_steps=0))
  common.best_checkpoint(c.evals.val)
  if "runlocal" in backbone_arg.split(","):
    c.model.classifier_hidden = 16
    c.num_epochs = 1
  return c
