"""MCHA on LSMDC (Table 2): MMT's 7 experts, 30 tokens, β 1e-4, ×0.95 per 1k steps; the
1,000-clip test split (``hvt-prepare lsmdc ... test=LSMDC16_challenge_1000_publictect.csv``)."""

from configs.mcha import base


def get_config(arg=None):
  return base.make(arg, data_dir="data/lsmdc", experts=base.MMT_EXPERTS,
                   untimed_experts=base.MMT_UNTIMED, eval_split="test")
