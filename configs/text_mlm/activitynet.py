"""text_mlm on ActivityNet Captions' sentences (WordPiece, the MiniLM vocabulary).

  hvt-prepare activitynet_captions --annotations train.json val_1.json \\
      --features sub_activitynet_v1-3.c3d.hdf5 --tokenizer wordpiece \\
      --output data/activitynet_wordpiece
  hvt-train --config configs/text_mlm/activitynet.py --workdir runs/mlm_anet
"""

from configs.text_mlm import base


def get_config(arg=None):
  return base.make(arg, data_dir="data/activitynet_wordpiece")
