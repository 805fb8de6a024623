"""Synthetic multi-expert demo data for MCHA: each video's discriminating cue sits in one
expert, a different one from video to video.

    hvt-prepare demo --variant experts --output DIR [--num-train 600 --num-val 200 --seed 0]

Generative story (all parameters are arguments of ``generate``):
- ``experts`` (name -> feature dim). Each expert has ``concepts_per_expert`` concepts, each
  with a random prototype (N(0, 1) per dim) and ``words_per_concept`` pseudo-words of its own
  (disjoint across concepts and experts).
- Video i's *key* expert is ``experts[i % n]``: its concept there is drawn uniformly from the
  expert's rare concepts (all but the first ``common_concepts``), while every other expert
  shows one of its ``common_concepts`` popular concepts, shared by many videos. So only the
  key expert tells a video apart, and which expert that is changes from video to video.
- Each expert has 3-12 feature rows (one per second, timestamps [r, r + 1]) = prototype +
  N(0, noise_std) noise. A non-key expert is missing (stored as [0, D], as the converters
  store absent experts) with probability ``missing_prob``.
- ``captions_per_video`` captions per video: ``key_words`` words of the key concept, one word
  of each present non-key expert's concept, and fillers, shuffled.
Tokens are WordPiece-style ids of a vocabulary [PAD] [UNK] [CLS] [SEP] [MASK] + every word
(one id per word), so the MCHA text tower reads them directly. Deterministic given the seed;
splits "train" and "val" have their own random streams.
"""

from __future__ import annotations

import time

import numpy as np

from data_prep import demo
from data_prep import builder

NAME = "demo_experts"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
EXPERTS = {"motion": 24, "audio": 16, "scene": 20}


def generate(num_train: int = 600, num_val: int = 200, seed: int = 0,
             experts: dict[str, int] | None = None, concepts_per_expert: int = 40,
             common_concepts: int = 3, words_per_concept: int = 2, key_words: int = 2,
             captions_per_video: int = 3, min_rows: int = 3, max_rows: int = 12,
             noise_std: float = 1.5, missing_prob: float = 0.15,
             num_fillers: int = 3) -> tuple[builder.DatasetSpec, dict[str, list[dict]]]:
  """Generates the dataset spec and the canonical records of every split.

  Returns:
    (spec, {"train": records, "val": records}); ``spec.extra["key_expert"]`` maps each
    video id to its key expert.

  Raises:
    ValueError: inconsistent parameters.
  """
  experts = dict(experts or EXPERTS)
  names = list(experts)
  if not (0 < common_concepts < concepts_per_expert and 1 <= min_rows <= max_rows
          and 1 <= key_words and captions_per_video >= 1 and 0 <= missing_prob < 1):
    raise ValueError("inconsistent demo_experts parameters")
  world = np.random.default_rng([seed, 0])
  protos = {e: world.normal(size=(concepts_per_expert, d)) for e, d in experts.items()}
  words = demo._pseudo_words(len(names) * concepts_per_expert * words_per_concept,  # pylint: disable=protected-access
                             world)
  concept_words = {e: [words[(j * concepts_per_expert + c) * words_per_concept:
                             (j * concepts_per_expert + c + 1) * words_per_concept]
                       for c in range(concepts_per_expert)] for j, e in enumerate(names)}
  vocab = list(SPECIALS) + list(demo.FILLERS) + words
  index = {w: i for i, w in enumerate(vocab)}
  key_expert: dict[str, str] = {}
  splits = {}
  for stream, (split, n) in enumerate((("train", num_train), ("val", num_val)), start=1):
    rng = np.random.default_rng([seed, stream])
    records = []
    for i in range(n):
      vid = f"{NAME}_{split}_{i:05d}"
      key = names[i % len(names)]
      key_expert[vid] = key
      feats, stamps, present = {}, {}, {}
      for e, d in experts.items():
        c = (int(rng.integers(common_concepts, concepts_per_expert)) if e == key
             else int(rng.integers(common_concepts)))
        rows = int(rng.integers(min_rows, max_rows + 1))
        missing = e != key and rng.random() < missing_prob
        if missing:
          rows = 0
        r = np.arange(rows, dtype=np.float32)
        feats[e] = (protos[e][c] + rng.normal(0.0, noise_std, size=(rows, d))).astype(
            np.float32).reshape(rows, d)
        stamps[e] = np.stack([r, r + 1], axis=1).reshape(rows, 2)
        present[e] = None if missing else c
      sentences = []
      for _ in range(captions_per_video):
        ws = list(rng.choice(concept_words[key][present[key]], size=key_words))
        ws += [rng.choice(concept_words[e][c]) for e, c in present.items()
               if e != key and c is not None]
        ws += list(rng.choice(demo.FILLERS, size=num_fillers))
        sentences.append(" ".join(rng.permutation(ws)))
      records.append({
          "video_id": vid, "duration": float(max_rows), "split": split, "label": "",
          "features": feats, "timestamps": stamps, "segments": np.full(
              (len(sentences), 2), -1.0, np.float32),
          "sentences": sentences,
          "tokens": [[index[w] for w in s.split()] for s in sentences]})
    splits[split] = records
  params = dict(num_train=num_train, num_val=num_val, seed=seed, experts=experts,
                concepts_per_expert=concepts_per_expert, common_concepts=common_concepts,
                words_per_concept=words_per_concept, key_words=key_words,
                captions_per_video=captions_per_video, min_rows=min_rows, max_rows=max_rows,
                noise_std=noise_std, missing_prob=missing_prob, num_fillers=num_fillers)
  spec = builder.DatasetSpec(
      name=NAME, modalities=experts, tokenizer="wordpiece", vocab=vocab,
      description="Synthetic multi-expert demo: each video's cue sits in one expert.",
      extra={"generator": params, "key_expert": key_expert})
  return spec, splits


def write(output_dir: str, *, verbose: bool = True, **params) -> str:
  """Generates and writes the dataset (``output_dir/demo_experts/<version>``)."""
  started = time.time()
  spec, splits = generate(**params)
  dataset_dir = builder.write_dataset(spec, splits, output_dir, counter=builder.SkipCounter())
  if verbose:
    sizes = {split: len(r) for split, r in splits.items()}
    print(f"demo_experts: {sizes} videos, {len(spec.vocab)} tokens, "
          f"{time.time() - started:.1f} s")
    print(f"dataset: {dataset_dir}")
  return dataset_dir
