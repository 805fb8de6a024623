"""HSE on ActivityNet Captions with C3D features (500-d, PCA), paper settings (Table 1).

  hvt-prepare activitynet_captions --annotations train.json val_1.json \\
      --features sub_activitynet_v1-3.c3d.hdf5 --word-vectors glove.840B.300d.txt \\
      --output data/activitynet_captions
  hvt-train --config configs/hse/activitynet_c3d.py --workdir runs/hse_c3d \\
      --config.input.data_dir=data/activitynet_captions
"""

from configs.hse import base


def get_config(arg=None):
  return base.make("hse", arg, modality="c3d",
                         data_dir="data/activitynet_captions")
