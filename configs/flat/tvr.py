"""FLAT on TVR (I3D+ResNet-152 + ASR subtitles, supp. 6.1.1-6.1.3).

  hvt-train --config configs/flat/tvr.py --workdir runs/flat_tvr
"""

from configs.hammer import base


def get_config(arg=None):
  return base.make("flat", arg, dataset="tvr")
