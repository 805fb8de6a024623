"""hse_captioner on ActivityNet Captions (C3D), on a trained HSE: `init=WORKDIR`."""

from configs.hse import base


def get_config(arg=None):
  return base.make_head("hse_captioner", arg, modality="c3d",
                        data_dir="data/activitynet_captions")
