"""FSE on ActivityNet Captions with C3D features (500-d, PCA), paper settings (Table 1).

  hvt-prepare activitynet_captions --annotations train.json val_1.json \
      --features sub_activitynet_v1-3.c3d.hdf5 --output data/activitynet_captions
  hvt-train --config configs/fse/activitynet_c3d.py --workdir runs/fse_c3d \
      --config.input.data_dir=data/activitynet_captions
"""

from configs import common


def get_config(arg=None):
  arg = common.base_arg(arg)
  c = common.hse_base("fse", arg)
  c.input.modality = "c3d"
  if arg.runlocal:
    common.apply_runlocal(c)
  return c
