"""FSE on ActivityNet Captions with TSN-Inception-V3 features (2048-d), Table 1.

  hvt-prepare activitynet_captions --annotations train.json val_1.json \\
      --features inception_npy_dir/ --modality inception \\
      --word-vectors glove.840B.300d.txt --output data/activitynet_inception
  hvt-train --config configs/fse/activitynet_inception.py --workdir runs/fse_inception \\
      --config.input.data_dir=data/activitynet_inception
"""

from configs.hse import base


def get_config(arg=None):
  return base.make("fse", arg, modality="inception",
                         data_dir="data/activitynet_inception")
