"""Synthetic many-event demo for moment localization in a video corpus (HAMMER/FLAT).

    hvt-prepare demo --variant moments --output DIR [--num-train 400 --num-val 100 ...]

Generative story (every parameter is an argument of `generate`, defaults below):
- A world of `num_events` actions (each one English word that is a single WordPiece of the
  MiniLM vocabulary, e.g. "cooking") and `num_attributes` attributes (e.g. "red"), each with
  a random prototype feature vector (N(0, 1) per dim). A query names one action and one
  attribute, so `num_events × num_attributes` kinds of moment exist: many videos hold the
  same kind, and a query's moment is only identifiable within its video.
- A video is a sequence of `min_events`..`max_events` events separated by background gaps
  of 0..`max_gap_seconds` s; an event lasts `min_event_seconds`..`max_event_seconds` s.
  Videos therefore range from a few seconds to a few minutes, so duration buckets hold
  short and long videos, and long videos hold many distractor events.
- Frame features, one row per second (`timestamps/frames` [r, r + 1]): inside an event the
  action's plus the attribute's prototype, plus a per-video style offset (N(0,
  `style_std`)) and noise (N(0, `noise_std`)); in a gap, style and noise only.
- Optional subtitle-like stream (`subtitle_dim` > 0, modality "subtitle"): one row per
  `subtitle_seconds` window during events, kept with probability `subtitle_prob` (dialogue
  is sparse: windows without a row have none), = the attribute's own subtitle prototype
  + noise; gaps have no rows.
- Each event gets one query sentence: the attribute and the action word among 1-4 filler
  words ("a", "person", "then", ...), in a random template order; `segments` are the
  events' [start, end] seconds. Tokens are WordPiece ids of the MiniLM vocabulary
  (bert-base-uncased, `hvt_jax/vocab/wordpiece.py`) without [CLS]/[SEP], as every WordPiece
  converter stores them.
Splits "train" and "val" share the world; each split has its own random stream.
Deterministic given the seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from data_prep import builder

NAME = "demo_moments"
MODALITY = "frames"
SUBTITLE = "subtitle"
# Single WordPiece tokens of bert-base-uncased (checked when the demo is generated).
EVENT_WORDS = ("running", "jumping", "cooking", "swimming", "dancing", "singing", "reading",
               "writing", "painting", "driving", "climbing", "throwing", "catching",
               "cutting", "washing", "cleaning", "walking", "sleeping", "eating",
               "drinking", "laughing", "crying", "fishing", "riding", "pushing", "pulling",
               "kicking", "typing", "shopping", "playing", "sitting", "standing")
ATTRIBUTE_WORDS = ("red", "blue", "green", "yellow", "black", "white", "small", "large",
                   "old", "young", "happy", "tired")
FILLERS = ("a", "the", "person", "someone", "is", "then", "and", "now", "again", "they")


@dataclasses.dataclass
class MomentsDemo:
  """Generated data, before writing.

  Attributes:
    records: split -> canonical records (tokens encoded).
    events: split -> per video, its [(action id, attribute id)] per sentence.
    spec: the dataset spec to write them with (`builder.write_dataset`).
    params: the generator parameters.
  """
  records: dict[str, list[dict]]
  events: dict[str, list[list[tuple[int, int]]]]
  spec: builder.DatasetSpec
  params: dict


def _tokenizer(vocab_file: str | None):
  from hvt_jax.vocab import wordpiece  # pylint: disable=g-import-not-at-top
  return wordpiece.WordPieceTokenizer.from_file(vocab_file)


def _video(split: str, i: int, rng: np.random.Generator, world: dict, p: dict
           ) -> tuple[dict, list[tuple[int, int]]]:
  """One record (without tokens) and its (action, attribute) per sentence."""
  n = int(rng.integers(p["min_events"], p["max_events"] + 1))
  lengths = rng.integers(p["min_event_seconds"], p["max_event_seconds"] + 1, size=n)
  gaps = rng.integers(0, p["max_gap_seconds"] + 1, size=n + 1)
  starts = gaps[0] + np.concatenate([[0], np.cumsum(lengths[:-1] + gaps[1:-1])])
  total = int(starts[-1] + lengths[-1] + gaps[-1])
  actions = rng.integers(p["num_events"], size=n)
  attrs = rng.integers(p["num_attributes"], size=n)
  dim = p["feature_dim"]
  frames = (rng.normal(0.0, p["style_std"], size=dim)
            + rng.normal(0.0, p["noise_std"], size=(total, dim)))
  for s, length, a, b in zip(starts, lengths, actions, attrs):
    frames[s:s + length] += world["actions"][a] + world["attributes"][b]
  rows = np.arange(total, dtype=np.float32)
  record = {"video_id": f"moments_{split}_{i:05d}", "duration": float(total), "split": split,
            "label": "",
            "features": {MODALITY: frames.astype(np.float32)},
            "timestamps": {MODALITY: np.stack([rows, rows + 1], axis=1)},
            "segments": np.stack([starts, starts + lengths], axis=1).astype(np.float32),
            "sentences": [], "tokens": None}
  if p["subtitle_dim"]:
    w = p["subtitle_seconds"]
    sub, ts = [], []
    for s, length, b in zip(starts, lengths, attrs):
      for t in range(int(s), int(s + length), w):
        if rng.random() < p["subtitle_prob"]:
          sub.append(world["subtitles"][b] + rng.normal(0.0, p["noise_std"],
                                                        size=p["subtitle_dim"]))
          ts.append((t, min(t + w, int(s + length))))
    record["features"][SUBTITLE] = np.asarray(sub, np.float32).reshape(-1, p["subtitle_dim"])
    record["timestamps"][SUBTITLE] = np.asarray(ts, np.float32).reshape(-1, 2)
  for a, b in zip(actions, attrs):
    words = [ATTRIBUTE_WORDS[b], EVENT_WORDS[a]]
    fillers = [FILLERS[f] for f in rng.integers(len(FILLERS), size=int(rng.integers(1, 5)))]
    cut = int(rng.integers(len(fillers) + 1))
    record["sentences"].append(" ".join(fillers[:cut] + words + fillers[cut:]))
  return record, [(int(a), int(b)) for a, b in zip(actions, attrs)]


def generate(num_train: int = 400, num_val: int = 100, seed: int = 0, feature_dim: int = 32,
             num_events: int = 24, num_attributes: int = 8, min_events: int = 2,
             max_events: int = 10, min_event_seconds: int = 3, max_event_seconds: int = 16,
             max_gap_seconds: int = 6, noise_std: float = 1.0, style_std: float = 0.3,
             subtitle_dim: int = 0, subtitle_seconds: int = 2, subtitle_prob: float = 0.5,
             vocab_file: str | None = None) -> MomentsDemo:
  """Generates the many-event demo (module docstring); a pure function of its arguments.

  Args:
    num_train, num_val: videos per split.
    seed: random seed.
    feature_dim: D of the "frames" modality.
    num_events: actions in the world (<= len(EVENT_WORDS)).
    num_attributes: attributes (<= len(ATTRIBUTE_WORDS)).
    min_events, max_events: events per video.
    min_event_seconds, max_event_seconds: event length (integer seconds).
    max_gap_seconds: longest background gap before, between and after events.
    noise_std: per-row gaussian noise (prototypes have unit variance per dim).
    style_std: per-video offset shared by all its rows.
    subtitle_dim: D of the optional "subtitle" modality (0: none).
    subtitle_seconds: seconds covered by one subtitle row.
    subtitle_prob: probability that an event's subtitle window has a row.
    vocab_file: WordPiece tokenizer (None: the MiniLM checkpoint's, bert-base-uncased).

  Returns:
    A `MomentsDemo` (records with tokens, and the `builder.DatasetSpec`).

  Raises:
    ValueError: inconsistent parameters, or a word of the story that is not one WordPiece
      of the vocabulary.
  """
  params = {k: v for k, v in locals().items() if k != "vocab_file"}
  if not (1 <= num_events <= len(EVENT_WORDS) and 1 <= num_attributes <= len(ATTRIBUTE_WORDS)
          and 1 <= min_events <= max_events and 1 <= min_event_seconds <= max_event_seconds
          and max_gap_seconds >= 0 and feature_dim >= 1 and subtitle_dim >= 0
          and subtitle_seconds >= 1 and 0 <= subtitle_prob <= 1):
    raise ValueError(f"inconsistent moments-demo parameters: {params}")
  tok = _tokenizer(vocab_file)
  for word in EVENT_WORDS[:num_events] + ATTRIBUTE_WORDS[:num_attributes] + FILLERS:
    if len(tok.encode(word)) != 1:
      raise ValueError(f"moments demo: {word!r} is not a single WordPiece of {tok.source}")
  world_rng = np.random.default_rng([seed, 0])
  world = {"actions": world_rng.normal(size=(num_events, feature_dim)),
           "attributes": world_rng.normal(size=(num_attributes, feature_dim)),
           "subtitles": world_rng.normal(size=(num_attributes, max(subtitle_dim, 1)))}
  records, events = {}, {}
  for stream, (split, n) in enumerate((("train", num_train), ("val", num_val)), start=1):
    rng = np.random.default_rng([seed, stream])
    out = [_video(split, i, rng, world, params) for i in range(n)]
    records[split] = [r for r, _ in out]
    events[split] = [e for _, e in out]
  for split_records in records.values():
    for r in split_records:
      r["tokens"] = [tok.encode(s) for s in r["sentences"]]
  modalities = {MODALITY: feature_dim}
  if subtitle_dim:
    modalities[SUBTITLE] = subtitle_dim
  spec = builder.DatasetSpec(
      name=NAME, modalities=modalities, tokenizer="wordpiece", vocab=list(tok.vocab),
      description="Synthetic many-event videos: queries name an action and an attribute "
                  "whose prototype features fill the moment.",
      extra={"generator": params, "event_words": list(EVENT_WORDS[:num_events]),
             "attribute_words": list(ATTRIBUTE_WORDS[:num_attributes]),
             "fillers": list(FILLERS), "tokenizer": tok.metadata(),
             "events": {split: {r["video_id"]: ev for r, ev in zip(records[split], e)}
                        for split, e in events.items()}})
  return MomentsDemo(records=records, events=events, spec=spec, params=params)


def write(output_dir: str, *, num_shards: int | None = None, verbose: bool = True,
          **params) -> str:
  """Generates the demo and writes it (`builder.write_dataset`); returns the dataset dir."""
  started = time.time()
  data = generate(**params)
  dataset_dir = builder.write_dataset(data.spec, data.records, output_dir,
                                      counter=builder.SkipCounter(), num_shards=num_shards)
  if verbose:
    sizes = {s: len(r) for s, r in data.records.items()}
    queries = {s: sum(len(x["sentences"]) for x in r) for s, r in data.records.items()}
    print(f"demo_moments: {sizes} videos, {queries} queries, {time.time() - started:.1f} s")
    print(f"dataset: {dataset_dir}")
  return dataset_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The flags of `hvt-prepare demo --variant moments` (added by `data_prep.demo`)."""
  parser.add_argument("--num-attributes", type=int, default=8,
                      help="moments variant: attributes in the world")
  parser.add_argument("--max-events", type=int, default=10,
                      help="moments variant: most events per video")
  parser.add_argument("--subtitle-dim", type=int, default=0,
                      help="moments variant: dim of a subtitle-like stream (0: none)")


def run(args: argparse.Namespace) -> str:
  """Writes the moments demo from `hvt-prepare demo --variant moments` flags."""
  given = {k: v for k, v in (("num_train", args.num_train), ("num_val", args.num_val),
                             ("feature_dim", args.feature_dim),
                             ("num_events", args.num_events), ("noise_std", args.noise_std),
                             ("style_std", args.style_std)) if v is not None}
  return write(args.output, num_shards=args.num_shards, seed=args.seed,
               num_attributes=args.num_attributes, max_events=args.max_events,
               subtitle_dim=args.subtitle_dim, **given)
