"""MCHA on ActivityNet Captions paragraphs (Table 3, val1): Motion (s3d) and Audio (vggish)
experts, 100 feature tokens, 100-token paragraphs, temporal ids to 101, β 1e-5, ×0.90 per
1k steps; R@1/5/50 (``metrics.json`` has R@10 too).

Data: ``hvt-prepare activitynet_experts --layout ce --features CE_ROOT --annotations
train.json val_1.json --ce-expert s3d=... --ce-expert vggish=... --output
data/activitynet_experts`` (data_prep/mmt_experts.py: Collaborative Experts' pickles, the
sentences, segments and durations of ActivityNet Captions; the paragraph, a video's
sentences joined in order, is built by the input view).
"""

from configs.mcha import base


def get_config(arg=None):
  return base.make(arg, data_dir="data/activitynet_experts", experts=("s3d", "vggish"),
                   eval_split="val_1", max_tokens=100, max_words=100, max_temporal_id=101,
                   paragraph=True, beta=1e-5, decay_rate=0.90)
