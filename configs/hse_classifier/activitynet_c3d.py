"""hse_classifier on ActivityNet Captions + v1.3 labels (C3D), on a trained HSE: `init=WORKDIR`."""

from configs.hse import base


def get_config(arg=None):
  return base.make_head("hse_classifier", arg, modality="c3d", data_dir="data/activitynet_labels")
