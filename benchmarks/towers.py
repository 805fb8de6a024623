"""Text-tower architectures for benchmarks at the paper's sizes, without weights.

The paper configs name bert-base-uncased; its weights need not be here: a directory holding
only its ``config.json`` gives the architecture (``TextConfig.from_hf`` reads nothing else),
and the benchmarks initialise it randomly (weights do not change the cost).
"""

from __future__ import annotations

import json
import os
import tempfile

# bert-base-uncased's config.json (the architecture fields TextConfig.from_hf reads).
BERT_BASE = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
             "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
             "layer_norm_eps": 1e-12, "initializer_range": 0.02}
# Its special token ids (vocab.txt): what the WordPiece datasets of the paper configs hold.
BERT_SPECIAL = dict(pad=0, unk=100, cls=101, sep=102, mask=103)


def bert_base_dir() -> str:
  """A new temporary directory holding bert-base-uncased's config.json only: a
  ``config.model.text.checkpoint`` for abstract shapes and random initialisation."""
  directory = tempfile.mkdtemp(prefix="bert_base_config_")
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(BERT_BASE, f)
  return directory
