"""MCHA on ActivityNet Captions paragraphs (Table 3, val1): Motion (s3d) and Audio (vggish)
experts, 100 feature tokens, 100-token paragraphs, temporal ids to 101, β 1e-5, ×0.90 per
1k steps; R@1/5/50 (``metrics.json`` has R@10 too)."""

from configs.mcha import base


def get_config(arg=None):
  return base.make(arg, data_dir="data/activitynet_experts", experts=("s3d", "vggish"),
                   eval_split="val_1", max_tokens=100, max_words=100, max_temporal_id=101,
                   paragraph=True, beta=1e-5, decay_rate=0.90)
