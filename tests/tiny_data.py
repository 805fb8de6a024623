"""A tiny canonical dataset for trainer/model tests (random features, real schema)."""

from __future__ import annotations

import numpy as np

from data_prep import builder

DIM = 12
VOCAB = ["<pad>", "<unk>"] + [f"w{i}" for i in range(48)]
CLASSES = ["jump", "run", "swim"]   # record i: CLASSES[i % 3], unlabelled when i % 4 == 0
WORDPIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]


def record(i: int, rng: np.random.Generator, split: str,
           modality: str | tuple[str, ...] = "frames", first_id: int = 2) -> dict:
  t = int(rng.integers(10, 30))
  s = int(rng.integers(2, 6))
  dur = float(t) * 0.5
  segs = np.sort(rng.uniform(0, dur, size=(s, 2)), axis=1).astype(np.float32)
  starts = np.arange(t, dtype=np.float32) * 0.5
  names = (modality,) if isinstance(modality, str) else modality
  return dict(video_id=f"{split}{i}", duration=dur, split=split,
              label=CLASSES[i % 3] if i % 4 else "",
              features={m: rng.normal(size=(t, DIM)).astype(np.float32) for m in names},
              timestamps={m: np.stack([starts, starts + 0.5], 1) for m in names},
              segments=segs, sentences=[f"s{j}" for j in range(s)],
              tokens=[rng.integers(first_id, len(VOCAB), size=int(rng.integers(2, 7))).tolist()
                      for _ in range(s)])


def write(out_dir: str, num_train: int = 40, num_val: int = 20, seed: int = 0, *,
          modality: str | tuple[str, ...] = "frames", val_split: str = "val",
          tokenizer: str = "word") -> str:
  """A tiny dataset; ``modality`` one name or several (experts, HAMMER's streams) on the
  same rows; ``tokenizer="wordpiece"``: ids of ``WORDPIECE_VOCAB`` (specials first, never
  stored in tokens). Labels: ``CLASSES`` (``extra["classes"]``)."""
  rng = np.random.default_rng(seed)
  wordpiece = tokenizer == "wordpiece"
  names = (modality,) if isinstance(modality, str) else modality
  spec = builder.DatasetSpec(name="demo", modalities={m: DIM for m in names},
                             tokenizer=tokenizer,
                             vocab=WORDPIECE_VOCAB if wordpiece else VOCAB,
                             extra={"classes": CLASSES})
  first = 5 if wordpiece else 2
  splits = {"train": [record(i, rng, "train", modality, first) for i in range(num_train)],
            val_split: [record(i, rng, val_split, modality, first) for i in range(num_val)]}
  return builder.write_dataset(spec, splits, out_dir, counter=builder.SkipCounter())


def hse_config(data_dir: str, model: str = "hse", **overrides):
  """``configs/hse/demo.py:runlocal,model=<model>`` on ``data_dir``; ``overrides`` by dotted key
  ("checkpoint.every_steps"), values of any type (a dict replaces a whole block)."""
  from configs.hse import demo  # pylint: disable=g-import-not-at-top
  c = demo.get_config(f"runlocal,model={model}")
  c.input.data_dir = data_dir
  for key, value in overrides.items():
    parent = c
    *path, leaf = key.split(".")
    for p in path:
      parent = parent[p]
    parent[leaf] = value
  return c
