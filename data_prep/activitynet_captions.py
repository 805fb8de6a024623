"""ActivityNet Captions converter: annotation json + video features -> canonical TFRecords.

    hvt-prepare activitynet_captions --annotations train.json val_1.json [val_2.json] \\
        --features sub_activitynet_v1-3.c3d.hdf5 --feature-key c3d_features --modality c3d \\
        --output DATA_DIR [--min-count 1] [--num-workers N]

Decisions (each one is visible in the printed summary and the dataset metadata):
- Split names are the annotation file stems (train, val_1, val_2). val_1 and val_2 annotate
  the same videos, so a video may appear in several evaluation splits; a video in both train
  and an evaluation split is a train/test leak and stops the conversion with an error listing
  the ids. A key repeated inside one json file is an error too.
- Video ids keep the "v_" prefix of the json; features are looked up under the id, then
  without the prefix (or with it added, for ids without one).
- The word vocabulary is built from the *train* split's kept sentences (after the repairs
  below, for the selected videos, before features are looked up) with `--min-count`; all
  splits are encoded with it ("<unk>" for other words). A "train" annotation file is required.
- Timestamps of feature rows: row r of T rows covers [r * dur / T, (r + 1) * dur / T], i.e.
  rows spread uniformly over the video, for every feature kind (C3D windows at stride 8 are
  uniform in time, and the real files do not record their frame rate). With
  `--feature-rate R` (rows per second, e.g. 1 for I3D) row r covers [r / R, (r + 1) / R].
- Per sentence, in this order: an empty/whitespace sentence is skipped; a malformed segment
  (not two finite numbers) is skipped; start > end is swapped if both ends lie in
  [0, duration], else skipped; a segment with no overlap with [0, duration] is skipped; then
  the kept sentence counts repairs: whitespace normalised (leading/trailing/repeated spaces),
  start > end swapped, start < 0 clipped, end > duration clipped. Repairs are counted per
  sentence, for sentences kept at this annotation stage (a video may still be skipped later
  for its features).
- Per video: invalid duration, timestamps/sentences length mismatch or no valid sentence ->
  skipped at the annotation stage; features missing, zero rows or NaN/Inf -> skipped when the
  features are read. A feature file that cannot be read, or a video whose feature dim differs
  from the first video's, is an error naming the file (a broken file, not a quirk).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pathlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from data_prep import features as features_lib
from data_prep import text
from data_prep import writer

NAME = "activitynet_captions"

# Reason strings (also the keys of the metadata counts).
SENTENCE_EMPTY = "sentence empty"
SEGMENT_MALFORMED = "segment malformed"
SEGMENT_SWAPPED = "segment start > end (swapped)"
SEGMENT_REVERSED_OUTSIDE = "segment start > end outside video"
SEGMENT_OUTSIDE = "segment outside video"
SEGMENT_CLIPPED_START = "segment start < 0 (clipped)"
SEGMENT_CLIPPED_END = "segment end > duration (clipped)"
SENTENCE_WHITESPACE = "sentence whitespace normalized"
VIDEO_BAD_DURATION = "video duration invalid"
VIDEO_MALFORMED = "video annotation malformed"
VIDEO_NO_SENTENCES = "video has no valid sentence"
FEATURES_MISSING = "features missing"
FEATURES_EMPTY = "features have zero rows"
FEATURES_NONFINITE = "features contain NaN/Inf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the converter's flags to an argparse (sub)parser."""
  parser.add_argument("--annotations", nargs="+", required=True,
                      help="annotation json files; split name = file stem (train, val_1, ...)")
  parser.add_argument("--features", required=True,
                      help="HDF5 file keyed by video id, or a directory of <id>.npy/.npz")
  parser.add_argument("--feature-key", default=None,
                      help="dataset name inside each video's HDF5 group / array name in .npz "
                           "(e.g. c3d_features); not needed when each video has one array")
  parser.add_argument("--modality", default="c3d",
                      help="modality name stored in the dataset (c3d, inception, i3d, ...); "
                           "the dim is read from the features")
  parser.add_argument("--feature-rate", type=float, default=None,
                      help="feature rows per second; default: rows spread uniformly over "
                           "the video duration")
  parser.add_argument("--output", required=True, help="data dir to write the dataset into")
  parser.add_argument("--min-count", type=int, default=1,
                      help="minimum train count of a word to enter the vocabulary")
  parser.add_argument("--num-workers", type=int, default=1, help="feature-reading processes")
  parser.add_argument("--num-shards", type=int, default=None,
                      help="shards per split (default: by size, 128 MiB each)")
  parser.add_argument("--max-videos", type=int, default=None,
                      help="convert only the first N videos of each annotation file")
  parser.add_argument("--video-ids", default=None,
                      help="text file with one video id per line: convert only these")


def run(args: argparse.Namespace) -> str:
  """Runs the conversion from parsed flags; prints the summary; returns the dataset dir."""
  allow = None
  if args.video_ids:
    allow = [line.strip() for line in pathlib.Path(args.video_ids).read_text().splitlines()
             if line.strip()]
  dataset_dir, _ = convert(
      args.annotations, args.features, args.output, feature_key=args.feature_key,
      modality=args.modality, feature_rate=args.feature_rate, min_count=args.min_count,
      num_workers=args.num_workers, num_shards=args.num_shards, max_videos=args.max_videos,
      video_ids=allow)
  return dataset_dir


def _load_json(path: str) -> dict:
  def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
      dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
      raise ValueError(f"{path}: duplicate keys {dup}")
    return dict(pairs)

  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f, object_pairs_hook=no_duplicates)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid json ({e})") from e
  if not isinstance(data, dict):
    raise ValueError(f"{path}: expected an object {{video_id: annotation}}, got "
                     f"{type(data).__name__}")
  return data


def clean_annotation(video_id: str, ann: Any, counter: writer.SkipCounter
                     ) -> tuple[float, list[list[float]], list[str]] | None:
  """Validates and repairs one video's annotation (see the module docstring for the rules).

  Args:
    video_id: the json key.
    ann: {"duration": float, "timestamps": [[start, end], ...], "sentences": [str, ...]}.
    counter: receives every repair and skip.

  Returns:
    (duration, segments [[start, end]] in [0, duration], sentences normalised), or None if the
    video is skipped.
  """
  if not isinstance(ann, dict) or not {"duration", "timestamps", "sentences"} <= ann.keys():
    counter.skip(VIDEO_MALFORMED, video_id)
    return None
  try:
    duration = float(ann["duration"])
  except (TypeError, ValueError):
    duration = math.nan
  if not math.isfinite(duration) or duration <= 0:
    counter.skip(VIDEO_BAD_DURATION, video_id)
    return None
  raw_segments, raw_sentences = ann["timestamps"], ann["sentences"]
  if (not isinstance(raw_segments, list) or not isinstance(raw_sentences, list)
      or len(raw_segments) != len(raw_sentences)):
    counter.skip(VIDEO_MALFORMED, video_id)
    return None
  segments, sentences = [], []
  for raw, seg in zip(raw_sentences, raw_segments):
    sentence = text.normalize_sentence(raw) if isinstance(raw, str) else ""
    if not sentence:
      counter.skip(SENTENCE_EMPTY, video_id)
      continue
    try:
      start, end = (float(x) for x in seg)
    except (TypeError, ValueError):
      counter.skip(SEGMENT_MALFORMED, video_id)
      continue
    if not (math.isfinite(start) and math.isfinite(end)):
      counter.skip(SEGMENT_MALFORMED, video_id)
      continue
    repairs = []
    if start > end:
      if 0.0 <= end and start <= duration:
        start, end = end, start
        repairs.append(SEGMENT_SWAPPED)
      else:
        counter.skip(SEGMENT_REVERSED_OUTSIDE, video_id)
        continue
    c_start, c_end = max(start, 0.0), min(end, duration)
    # No overlap with the video, or a real interval that clipping would shrink to a point.
    if c_start > c_end or (c_start == c_end and end > start):
      counter.skip(SEGMENT_OUTSIDE, video_id)
      continue
    if c_start != start:
      repairs.append(SEGMENT_CLIPPED_START)
    if c_end != end:
      repairs.append(SEGMENT_CLIPPED_END)
    if sentence != raw:
      repairs.append(SENTENCE_WHITESPACE)
    for reason in repairs:
      counter.repair(reason, video_id)
    segments.append([c_start, c_end])
    sentences.append(sentence)
  if not sentences:
    counter.skip(VIDEO_NO_SENTENCES, video_id)
    return None
  return duration, segments, sentences


def candidate_ids(video_id: str) -> list[str]:
  """Keys to try in a feature source: the id as given, then without/with the "v_" prefix."""
  if video_id.startswith("v_"):
    return [video_id, video_id[2:]]
  return [video_id, "v_" + video_id]


def lookup_features(source: features_lib.FeatureSource, video_id: str) -> np.ndarray | None:
  """The video's [T, D] features under any of `candidate_ids(video_id)`, or None."""
  for key in candidate_ids(video_id):
    arr = source.get(key)
    if arr is not None:
      return arr
  return None


def row_timestamps(num_rows: int, duration: float, feature_rate: float | None) -> np.ndarray:
  """Seconds covered by each feature row (see the module docstring).

  Args:
    num_rows: T.
    duration: video duration in seconds.
    feature_rate: rows per second, or None to spread the rows uniformly over the duration.

  Returns:
    float32 [T, 2] (start, end) per row.
  """
  if feature_rate:
    edges = np.arange(num_rows + 1, dtype=np.float64) / feature_rate
  else:  # linspace: the last row ends exactly at the duration.
    edges = np.linspace(0.0, duration, num_rows + 1)
  return np.stack([edges[:-1], edges[1:]], axis=1).astype(np.float32)


def build_record(item: tuple, counter: writer.SkipCounter, *,
                 source: features_lib.FeatureSource, modality: str, dim: int,
                 feature_rate: float | None) -> dict | None:
  """Reads one video's features and assembles its canonical record (runs in a worker).

  Args:
    item: (split, video_id, duration, segments, sentences, tokens) from the annotation stage.
    counter: receives feature skips.
    source: the feature source.
    modality: modality name.
    dim: expected feature dim.
    feature_rate: see `row_timestamps`.

  Returns:
    The record, or None if the video is skipped.
  """
  split, video_id, duration, segments, sentences, tokens = item
  feats = lookup_features(source, video_id)
  if feats is None:
    counter.skip(FEATURES_MISSING, video_id)
    return None
  if feats.shape[0] == 0:
    counter.skip(FEATURES_EMPTY, video_id)
    return None
  if feats.shape[1] != dim:
    raise features_lib.FeatureFileError(
        f"{source.path}: video {video_id!r} has feature dim {feats.shape[1]}, but the first "
        f"video with features has {dim} (key {source.key!r})")
  if not np.isfinite(feats).all():
    counter.skip(FEATURES_NONFINITE, video_id)
    return None
  return {
      "video_id": video_id, "duration": duration, "split": split, "label": "",
      "features": {modality: feats},
      "timestamps": {modality: row_timestamps(len(feats), duration, feature_rate)},
      "segments": np.asarray(segments, np.float32).reshape(-1, 2),
      "sentences": sentences, "tokens": tokens,
  }


def _select(data: dict, allow: set[str] | None, max_videos: int | None) -> list[str]:
  ids = [v for v in data if allow is None or v in allow]
  return ids if max_videos is None else ids[:max_videos]


def convert(annotation_files: Sequence[str], features_path: str, output_dir: str, *,
            feature_key: str | None = None, modality: str = "c3d",
            feature_rate: float | None = None, min_count: int = 1, num_workers: int = 1,
            num_shards: int | None = None, max_videos: int | None = None,
            video_ids: Iterable[str] | None = None, verbose: bool = True
            ) -> tuple[str, writer.SkipCounter]:
  """Converts ActivityNet Captions to the canonical TFRecord dataset.

  Args:
    annotation_files: json files; split name = file stem. One must be "train".
    features_path: HDF5 file or directory of per-video .npy/.npz (see data_prep.features).
    output_dir: data dir; the dataset goes to `output_dir/activitynet_captions/<version>`.
    feature_key: key of the array inside each video's HDF5 group / .npz.
    modality: modality name for `features/<modality>`.
    feature_rate: rows per second, or None for uniform spreading over the duration.
    min_count: vocabulary threshold on train counts.
    num_workers: processes reading features.
    num_shards: shards per split, or None to shard by size.
    max_videos: only the first N videos of each file (json order).
    video_ids: only these videos (ids as in the json); others are ignored, not counted.
    verbose: print the summary table.

  Returns:
    (dataset dir, the SkipCounter with every repair and skip).
  """
  started = time.time()
  splits: dict[str, dict] = {}
  for path in annotation_files:
    split = pathlib.Path(path).stem
    if split in splits:
      raise ValueError(f"two annotation files map to split {split!r}: {path}")
    splits[split] = _load_json(path)
  if "train" not in splits:
    raise ValueError(f"a train.json annotation file is required (the vocabulary is built "
                     f"from it); got splits {sorted(splits)}")
  for split, data in splits.items():
    if split != "train" and (leak := sorted(set(data) & set(splits["train"]))):
      raise ValueError(f"{len(leak)} videos are in both train and {split}: {leak[:10]}")

  allow = set(video_ids) if video_ids is not None else None
  counter = writer.SkipCounter()
  cleaned: dict[str, list[tuple[str, float, list, list[str]]]] = {}
  for split, data in splits.items():
    cleaned[split] = []
    for vid in _select(data, allow, max_videos):
      result = clean_annotation(vid, data[vid], counter)
      if result is not None:
        cleaned[split].append((vid, *result))

  vocab = text.build_word_vocab((s for v in cleaned["train"] for s in v[3]), min_count)
  index = {t: i for i, t in enumerate(vocab)}
  items = {split: [(split, vid, dur, segs, sents, [text.encode_words(s, index) for s in sents])
                   for vid, dur, segs, sents in videos]
           for split, videos in cleaned.items()}

  source = features_lib.open_feature_source(features_path, feature_key)
  dim = _infer_dim(source, [it[1] for its in items.values() for it in its])
  fn = functools.partial(build_record, source=source, modality=modality, dim=dim,
                         feature_rate=feature_rate)
  spec = writer.DatasetSpec(
      name=NAME, modalities={modality: dim}, tokenizer="word", vocab=vocab,
      description="ActivityNet Captions (Krishna et al., ICCV 2017): dense video captions.",
      extra={"annotation_files": [pathlib.Path(p).name for p in annotation_files],
             "features": os.path.basename(os.path.normpath(features_path)),
             "feature_key": feature_key, "min_count": min_count,
             "timestamps": (f"row r covers [r/{feature_rate}, (r+1)/{feature_rate}] s"
                            if feature_rate else "rows spread uniformly over the duration")})
  try:
    dataset_dir = writer.write_dataset(
        spec, {split: writer.map_records(fn, its) for split, its in items.items()}, output_dir,
        counter=counter, num_shards=num_shards, num_workers=num_workers)
  finally:
    source.close()
  if verbose:
    meta = writer.load_metadata(dataset_dir)
    print(counter.format_table())
    for split, n in meta["splits"].items():
      print(f"{split}: {n} videos written ({len(items[split])} after annotation checks)")
    print(f"vocabulary: {len(vocab)} tokens; {modality} dim {dim}; "
          f"{time.time() - started:.1f} s")
    print(f"dataset: {dataset_dir}")
  return dataset_dir, counter


def _infer_dim(source: features_lib.FeatureSource, video_ids: list[str]) -> int:
  """Feature dim of the first listed video that has a non-empty array in the source."""
  for vid in video_ids:
    arr = lookup_features(source, vid)
    if arr is not None and arr.shape[0] > 0:
      return int(arr.shape[1])
  example = video_ids[0] if video_ids else "<none>"
  raise ValueError(f"no annotated video has features in {source.path} (key "
                   f"{source.key!r}); tried ids such as {candidate_ids(example)}")
