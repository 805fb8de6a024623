"""HAMMER on ActivityNet Captions (I3D; ResNet-152 with :features=resnet).

  hvt-train --config configs/hammer/activitynet.py --workdir runs/hammer_activitynet
"""

from configs.hammer import base


def get_config(arg=None):
  return base.make("hammer", arg, dataset="activitynet")
