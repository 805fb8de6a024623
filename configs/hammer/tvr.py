"""HAMMER on TVR (I3D+ResNet-152 + ASR subtitles, supp. 6.1.1-6.1.3).

  hvt-train --config configs/hammer/tvr.py --workdir runs/hammer_tvr
"""

from configs.hammer import base


def get_config(arg=None):
  return base.make("hammer", arg, dataset="tvr")
