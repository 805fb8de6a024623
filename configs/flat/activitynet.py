"""FLAT on ActivityNet Captions (I3D; ResNet-152 with :features=resnet).

  hvt-train --config configs/flat/activitynet.py --workdir runs/flat_activitynet
"""

from configs.hammer import base


def get_config(arg=None):
  return base.make("flat", arg, dataset="activitynet")
