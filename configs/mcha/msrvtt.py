"""MCHA on MSR-VTT 1k-A (Table 1): MMT's 7 experts, 30 tokens, β 1e-4, ×0.95 per 1k steps.

Data: ``hvt-prepare msrvtt --split-lists train_list_jsfusion.txt val_list_jsfusion.txt``
(the 9k/1k-A split: the 1,000 test videos are the ``val`` split). The protocol ranks one
designated (JSFusion) caption per test video: pass CE's ``jsfusion_val_caption_idx.pkl``,
``--config.evals.test.caption_index_file=...`` (without it every caption is a query).
"""

from configs.mcha import base


def get_config(arg=None):
  return base.make(arg, data_dir="data/msrvtt", experts=base.MMT_EXPERTS,
                   untimed_experts=base.MMT_UNTIMED, eval_split="val")
