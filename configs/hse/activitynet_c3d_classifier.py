r"""hse_classifier: a one-hidden-layer MLP on the frozen clip-level embeddings of a trained
HSE/FSE, on ActivityNet Captions with the v1.3 action labels (C3D features).

Reproduces HSE Table 6 right, "Train Classifier" (action recognition on ActivityNet's
validation videos; the paper's top-1/top-5: HSE[τ=5e-4] 75.3/94.3, HSE[τ=0] 74.7/94.3,
FSE 74.4/94.1).

  hvt-prepare activitynet_labels --annotations train.json val_1.json \
      --features sub_activitynet_v1-3.c3d.hdf5 --labels activity_net.v1-3.min.json \
      --output data/activitynet_labels
  hvt-train --config configs/hse/activitynet_c3d.py --workdir runs/hse            # retrieval first
  hvt-train --config configs/hse/activitynet_c3d_classifier.py:init=runs/hse --workdir runs/cls

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
  c.input.data_dir = "data/activitynet_labels"
  c.model.name, c.model.backbone = "hse_classifier", a.backbone
  c.init_from = (dict(source=a.init, format="checkpoint", into="backbone", layers=None,
                      strict=True, ignore=()),) if a.init else ()
  c.trainable = "head/.*"
  # c.model / c.input / c.loss stay the backbone's (its create checks them).
  c.model.classifier_hidden = 512          # our choice: the paper gives no width
  # Our choice (the paper gives no schedule for the MLP): Adam 1e-3, 10 epochs.
  c.schedule = dict(name="constant", learning_rate=1e-3)
  c.num_epochs = 10
  c.evals = dict(val=dict(type="classify", split="val_1", pred="classify",
                          prefix="classify", log_steps=0))
  common.best_checkpoint(c.evals.val)
  if "runlocal" in backbone_arg.split(","):
    c.model.classifier_hidden = 16
    c.num_epochs = 1
  return c
