"""Synthetic demo dataset whose signal lives in the video -> clip -> frame hierarchy.

    hvt-prepare demo --output DIR [--num-train 1500 --num-val 500 --seed 0 ...]
    hvt-prepare demo --variant moments --output DIR   (HAMMER/FLAT: data_prep/demo_moments.py)

Generative story (all parameters are arguments of `generate_demo`, defaults below):
- A shared vocabulary of `num_events` events. Each event has a random prototype feature vector
  (N(0, 1) per dim) and its own `words_per_event` content words (pseudo-words, disjoint
  between events) with Zipf-like word weights; filler words ("a", "the", "then", "person",
  ...) are shared by all events. An event's name is its two most likely content words
  (e.g. "bami toku"): vocabulary words, for zero-shot action recognition.
- Events have Zipf-like popularity (`event_zipf`), so many videos share events and only the
  combination and order of its clips identifies a video.
- A video has 3-5 clips, each an event drawn by popularity; a clip has 4-12 frame rows, one
  per second, = prototype + a per-video style offset (N(0, style_std)) + frame noise
  (N(0, noise_std)). With the defaults a single frame is ambiguous (the noise along the line
  between two prototypes is ~0.75 of half their distance), while a clip's mean is not.
- Timestamps of row r are [r, r + 1] seconds; `segments` are the clips' time spans; sentence i
  describes clip i: 5-10 words, each a content word of the clip's event with probability
  `content_prob` (at least two content words), otherwise a filler.
- A video's `label` (action class) is the name of its dominant event: the one covering the
  most frames (ties: the earliest). It is derived from the sampled clips and draws no random
  numbers, so features, sentences and tokens are those of a demo without labels. Every clip
  is also a labelled action instance (`instances`: its segment and its event's name), as
  ActivityNet v1.3's annotations are.
Splits "train" and "val" come from the same world; each split has its own random stream, so
changing `num_val` does not change the training videos. The word vocabulary is built from the
train sentences. Deterministic given the seed.

The `Demo` builder (`tfds build demo --imports data_prep.datasets`) has one config per
variant: a generator function `generate(**params) -> (DatasetSpec, {split: records})` named in
`VARIANTS`; this module's is "hse" (`generate_records`). Another variant adds its generator
module and one line to `VARIANTS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from data_prep import builder
from hvt_jax.vocab import word_vocab

NAME = "demo"
MODALITY = "frames"
FILLERS = ("a", "the", "then", "person", "and", "someone", "is", "now", "again", "they")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclasses.dataclass
class DemoData:
  """Generated demo data (before writing).

  Attributes:
    records: split -> canonical records.
    clip_events: split -> per video, the event id of each clip (aligned with sentences).
    event_words: event id -> its content words.
    event_names: event id -> its name (its two most likely content words), the action
      class a video's `label` holds.
    fillers: filler words shared by all events.
    vocab: word vocabulary built from the train sentences.
    params: the generator parameters.
    prototypes: [num_events, feature_dim] float event prototype features.
    popularity: [num_events] probability of each event.
  """
  records: dict[str, list[dict]]
  clip_events: dict[str, list[list[int]]]
  event_words: list[list[str]]
  event_names: list[str]
  fillers: list[str]
  vocab: list[str]
  params: dict
  prototypes: np.ndarray
  popularity: np.ndarray


def _pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
  """n distinct pronounceable pseudo-words (2-3 consonant-vowel syllables)."""
  words: list[str] = []
  seen = set(FILLERS)
  while len(words) < n:
    k = int(rng.integers(2, 4))
    w = "".join(_CONSONANTS[rng.integers(len(_CONSONANTS))] + _VOWELS[rng.integers(len(_VOWELS))]
                for _ in range(k))
    if w not in seen:
      seen.add(w)
      words.append(w)
  return words


def _zipf(n: int, s: float) -> np.ndarray:
  w = 1.0 / np.arange(1, n + 1) ** s
  return w / w.sum()


def _generate_split(split: str, num_videos: int, rng: np.random.Generator,
                    prototypes: np.ndarray, popularity: np.ndarray, event_words: list[list[str]],
                    word_weights: np.ndarray, p: dict,
                    event_names: list[str] | None = None) -> tuple[list[dict], list[list[int]]]:
  """Samples one split's videos (records without tokens) and their clip events."""
  num_events, dim = prototypes.shape
  records, clip_events = [], []
  for i in range(num_videos):
    n_clips = int(rng.integers(p["min_clips"], p["max_clips"] + 1))
    events = rng.choice(num_events, size=n_clips, p=popularity)
    lengths = rng.integers(p["min_frames"], p["max_frames"] + 1, size=n_clips)
    total = int(lengths.sum())
    style = rng.normal(0.0, p["style_std"], size=dim)
    frames = (np.repeat(prototypes[events], lengths, axis=0) + style
              + rng.normal(0.0, p["noise_std"], size=(total, dim))).astype(np.float32)
    ends = np.cumsum(lengths).astype(np.float32)
    segments = np.stack([ends - lengths, ends], axis=1)
    sentences = []
    for e in events:
      n_words = int(rng.integers(p["min_words"], p["max_words"] + 1))
      n_content = max(2, int(rng.binomial(n_words, p["content_prob"])))
      is_content = np.zeros(n_words, bool)
      is_content[rng.choice(n_words, size=n_content, replace=False)] = True
      if p.get("ordered_words"):
        # Distinct content words in the event's own order: sentences with a word order a
        # caption generator can learn (each position of an i.i.d. bag has the same mode).
        n_content = min(n_content, len(event_words[e]))
        is_content[:] = False
        is_content[np.sort(rng.choice(n_words, size=n_content, replace=False))] = True
        content = np.zeros(n_words, int)
        content[is_content] = np.sort(rng.choice(len(event_words[e]), size=n_content,
                                                 replace=False, p=word_weights))
      else:
        content = rng.choice(len(event_words[e]), size=n_words, p=word_weights)
      filler = rng.integers(len(FILLERS), size=n_words)
      sentences.append(" ".join(event_words[e][c] if m else FILLERS[f]
                                for m, c, f in zip(is_content, content, filler)))
    r = np.arange(total, dtype=np.float32)
    frames_per_event: dict[int, int] = {}
    for e, n in zip(events, lengths):   # insertion order: ties go to the earliest event
      frames_per_event[int(e)] = frames_per_event.get(int(e), 0) + int(n)
    dominant = max(frames_per_event, key=frames_per_event.get)
    records.append({
        "video_id": f"demo_{split}_{i:05d}", "duration": float(total), "split": split,
        "label": event_names[dominant] if event_names else "", "features": {MODALITY: frames},
        "timestamps": {MODALITY: np.stack([r, r + 1], axis=1)},
        "segments": segments, "sentences": sentences, "tokens": None,
        "instances": ({"segments": segments.astype(np.float64),
                       "labels": [event_names[e] for e in events]} if event_names else None),
    })
    clip_events.append([int(e) for e in events])
  return records, clip_events


def generate_demo(num_train: int = 1500, num_val: int = 500, seed: int = 0,
                  feature_dim: int = 32, num_events: int = 48, words_per_event: int = 6,
                  min_clips: int = 3, max_clips: int = 5, min_frames: int = 4,
                  max_frames: int = 12, min_words: int = 5, max_words: int = 10,
                  noise_std: float = 3.0, style_std: float = 0.5, event_zipf: float = 1.0,
                  word_zipf: float = 1.0, content_prob: float = 0.6,
                  ordered_words: bool = False) -> DemoData:
  """Generates the synthetic demo data (see the module docstring for the story).

  Args:
    num_train: number of train videos.
    num_val: number of val videos.
    seed: random seed; the output is a deterministic function of all arguments.
    feature_dim: D of the "frames" modality.
    num_events: size of the shared event vocabulary.
    words_per_event: content words per event.
    min_clips: fewest clips (events) per video.
    max_clips: most clips per video.
    min_frames: fewest frame rows (seconds) per clip.
    max_frames: most frame rows per clip.
    min_words: shortest sentence.
    max_words: longest sentence.
    noise_std: per-frame gaussian noise (prototypes have unit variance per dim).
    style_std: per-video offset shared by all its frames.
    event_zipf: exponent of the event popularity (0 = uniform).
    word_zipf: exponent of the within-event content word distribution.
    content_prob: probability that a word position holds a content word.
    ordered_words: a sentence's content words are distinct and in the event's own word
      order (for captioning; False: each content position draws independently, the default
      demo).

  Returns:
    A `DemoData` with canonical records (tokens encoded with the train vocabulary).
  """
  params = {k: v for k, v in locals().items()}
  if not (1 <= min_clips <= max_clips and 1 <= min_frames <= max_frames
          and 2 <= min_words <= max_words and num_events >= 1 and words_per_event >= 1):
    raise ValueError(f"inconsistent demo parameters: {params}")
  world = np.random.default_rng([seed, 0])
  prototypes = world.normal(0.0, 1.0, size=(num_events, feature_dim))
  # Popularity by a random rank, so popular events are not simply the low ids.
  popularity = _zipf(num_events, event_zipf)[world.permutation(num_events)]
  words = _pseudo_words(num_events * words_per_event, world)
  event_words = [words[e * words_per_event:(e + 1) * words_per_event]
                 for e in range(num_events)]
  word_weights = _zipf(words_per_event, word_zipf)
  top = np.argsort(-word_weights, kind="stable")[:2]
  event_names = [" ".join(ws[i] for i in top) for ws in event_words]

  records, clip_events = {}, {}
  for stream, (split, n) in enumerate((("train", num_train), ("val", num_val)), start=1):
    records[split], clip_events[split] = _generate_split(
        split, n, np.random.default_rng([seed, stream]), prototypes, popularity, event_words,
        word_weights, params, event_names)
  vocab = word_vocab.build_word_vocab(s for r in records["train"] for s in r["sentences"])
  index = {t: i for i, t in enumerate(vocab)}
  for split_records in records.values():
    for r in split_records:
      r["tokens"] = [word_vocab.encode_words(s, index) for s in r["sentences"]]
  return DemoData(records=records, clip_events=clip_events, event_words=event_words,
                  event_names=event_names, fillers=list(FILLERS), vocab=vocab, params=params,
                  prototypes=prototypes, popularity=popularity)


def generate_records(**params: Any) -> tuple[builder.DatasetSpec, dict[str, list[dict]]]:
  """The "hse" variant: `generate_demo(**params)` as a spec and canonical records."""
  data = generate_demo(**params)
  spec = builder.DatasetSpec(
      name=NAME, modalities={MODALITY: int(data.params["feature_dim"])}, tokenizer="word",
      vocab=data.vocab,
      description="Synthetic demo data: events with prototype features and their own words.",
      extra={"generator": data.params, "event_words": data.event_words,
             "event_names": data.event_names,
             # The action classes a video's `label` takes (hse_classifier's outputs).
             "classes": sorted(set(data.event_names)),
             "fillers": data.fillers,
             "clip_events": {split: dict(zip((r["video_id"] for r in data.records[split]), ev))
                             for split, ev in data.clip_events.items()}})
  return spec, data.records


# Variant (config name) -> ("module:function" of its generator, modalities at its defaults).
VARIANTS: dict[str, tuple[str, dict[str, int]]] = {
    "hse": ("data_prep.demo:generate_records", {MODALITY: 32}),
}


def variant_generator(variant: str) -> Callable[..., tuple[builder.DatasetSpec, dict]]:
  """The generator function of a demo variant (imported on use)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown demo variant {variant!r}; valid: {', '.join(VARIANTS)}")
  module, function = VARIANTS[variant][0].split(":")
  return getattr(importlib.import_module(module), function)


class Demo(builder.HvtBuilder):
  """Synthetic demo data, one config per variant (records from the variant's generator)."""

  DESCRIPTION = "Synthetic demo data (data_prep.demo)."
  BUILDER_CONFIGS = [builder.HvtConfig(name=variant, modalities=modalities, tokenizer="word",
                                       description=f"demo variant {variant} ({generator})",
                                       options={"generator": generator})
                     for variant, (generator, modalities) in VARIANTS.items()]

  def make_plan(self, manual_dir: pathlib.Path | None, counter: builder.SkipCounter
                ) -> builder.Plan:
    del manual_dir, counter  # Generated; nothing is repaired or skipped.
    spec, records = variant_generator(self.builder_config.name)()
    return builder.Plan(spec=spec, items=records)


def write_demo(output_dir: str, *, variant: str = "hse", num_shards: int | None = None,
               verbose: bool = True, **params: Any) -> str:
  """Generates a demo variant's data and writes it with the `Demo` builder.

  Args:
    output_dir: data dir; the dataset goes to `output_dir/demo/<config>/<version>` (config =
      the variant, or a name from the modalities when `params` change the dims).
    variant: the demo variant (`VARIANTS`).
    num_shards: shards per split (None: by size, i.e. one shard for the default sizes).
    verbose: print a summary.
    **params: arguments of the variant's generator (`generate_demo` for "hse").

  Returns:
    The dataset dir.
  """
  started = time.time()
  spec, records = variant_generator(variant)(**params)
  config = next(c for c in Demo.BUILDER_CONFIGS if c.name == variant)
  if dict(spec.modalities) != dict(config.modalities):
    config = builder.HvtConfig(name=f"{variant}_{builder.config_name(spec.modalities, 'word')}",
                               modalities=dict(spec.modalities), tokenizer=spec.tokenizer)
  dataset_dir, _ = builder.convert(Demo, lambda _: builder.Plan(spec=spec, items=records),
                                   output_dir, config=config, num_shards=num_shards,
                                   verbose=False)
  if verbose:
    sizes = {split: len(r) for split, r in records.items()}
    print(f"demo {variant}: {sizes} videos, {len(spec.vocab)} words, "
          f"{time.time() - started:.1f} s")
    print(f"dataset: {dataset_dir}")
  return dataset_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the demo flags to an argparse (sub)parser (unset sizes: the variant's defaults)."""
  parser.add_argument("--output", required=True, help="data dir to write the dataset into")
  parser.add_argument("--variant", choices=("hse", "moments", "experts"), default="hse",
                      help="hse: this module's clip/sentence demo; moments: many-event "
                           "videos for HAMMER/FLAT (data_prep/demo_moments.py); experts: "
                           "MCHA's multi-expert demo (data_prep/demo_experts.py; only "
                           "--num-train/--num-val/--seed apply)")
  parser.add_argument("--num-train", type=int, default=None,
                      help="default 1500 (moments: 400, experts: 600)")
  parser.add_argument("--num-val", type=int, default=None,
                      help="default 500 (moments: 100, experts: 200)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--feature-dim", type=int, default=None, help="default 32")
  parser.add_argument("--num-events", type=int, default=None,
                      help="default 48 (moments: 24 actions)")
  parser.add_argument("--noise-std", type=float, default=None, help="default 3.0 (moments: 1.0)")
  parser.add_argument("--style-std", type=float, default=None, help="default 0.5 (moments: 0.3)")
  parser.add_argument("--num-shards", type=int, default=None)
  parser.add_argument("--ordered-words", action="store_true",
                      help="content words distinct and in each event's order (captioning)")
  from data_prep import demo_moments  # pylint: disable=g-import-not-at-top
  demo_moments.add_arguments(parser)


def run(args: argparse.Namespace) -> str:
  """Writes the demo dataset from parsed flags; returns the dataset dir."""
  if args.variant == "moments":
    from data_prep import demo_moments  # pylint: disable=g-import-not-at-top
    return demo_moments.run(args)
  if args.variant == "experts":
    from data_prep import demo_experts  # pylint: disable=g-import-not-at-top
    return demo_experts.write(args.output, num_train=args.num_train or 600,
                              num_val=args.num_val or 200, seed=args.seed)
  given = lambda value, default: default if value is None else value
  return write_demo(args.output, num_shards=args.num_shards,
                    num_train=given(args.num_train, 1500), num_val=given(args.num_val, 500),
                    seed=args.seed, feature_dim=given(args.feature_dim, 32),
                    num_events=given(args.num_events, 48),
                    noise_std=given(args.noise_std, 3.0), style_std=given(args.style_std, 0.5),
                    ordered_words=args.ordered_words)
