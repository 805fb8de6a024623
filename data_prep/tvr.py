"""TVR converter: query JSONL + clip-level video/subtitle HDF5 features -> canonical TFRecords.

    hvt-prepare tvr --queries tvr_train_release.jsonl tvr_val_release.jsonl \\
        tvr_test_public_release.jsonl \\
        --video-features i3d=tvr_i3d_rgb600_avg_cl-1.5.h5 resnet=tvr_resnet152_rgb_max_cl-1.5.h5 \\
        --subtitle-features tvr_sub_pretrained_w_sub_query_max_cl-1.5.h5 --output DATA_DIR

Input (Lei et al., 2020): one JSON query per line, `{"desc_id", "desc", "vid_name", "duration",
"ts": [st, ed], "type": "v" | "t" | "vt"}`, one file per split (split = file stem without
`tvr_` and `_release`: train, val, test_public). Video features: HDF5 keyed by vid_name, I3D
[n, 1024], ResNet-152 [n, 2048] or their concatenation [n, 3072], one row per 1.5 s clip; the
modality is named by `NAME=PATH` or from the dim (i3d, resnet, i3d_resnet). Subtitle features:
HDF5 [n, 768] per vid_name with a `<vid_name>-mask` entry ([n] or [n, 1], 1 = the clip has
subtitle text), stored as modality `subtitle`.

One record per video: its queries are the record's sentences, in file order, with segments
from `ts` (seconds). desc_id and query type cannot travel inside records (the writer's schema
is fixed), so they are stored in metadata["extra"]: `desc_ids[split][video_id]` and
`query_types[split][video_id]`, lists aligned with the record's sentences (the TVR
standalone-eval format needs desc_id). These maps list every video that passed the annotation
checks; a video later skipped for its features keeps its entry but has no record (it is
counted under "features ..." in metadata["counts"]).

Decisions (each repair/skip counted in the summary and metadata["counts"] with example ids):
- Feature rows: row r covers [1.5 r, 1.5 (r + 1)] s (`--clip-length`), clipped to the
  duration; rows starting at or after the duration are dropped (repair); video features with
  fewer than 90% of ceil(duration / 1.5) rows are kept and counted (each once per video,
  whichever video modality it concerns).
- Subtitle rows whose mask is 0 (no subtitle in that clip) are dropped, not zeroed: each kept
  row keeps its own timestamp, so views align subtitles to video clips by time, and zeros never
  stand for "no text" (counted once per video as a repair). A video with no subtitle entry,
  zero rows, every row masked, NaN/Inf values or a mask whose length differs from the rows
  stores the subtitle as missing ([0, 768], counted; the writer also counts missing experts).
- Video features: missing key, zero rows or NaN/Inf -> the video is skipped; a different dim
  from the first video's, an unreadable (e.g. truncated) HDF5 file or a mask of another shape
  is an error naming the file and key.
- Queries: a line that is not valid UTF-8 or not valid json is an error naming the file and
  line (a corrupt annotation file); a query without desc_id/vid_name/desc/duration is skipped;
  a repeated desc_id (in any file) skips the later query; an empty/whitespace desc is skipped
  and whitespace is normalised (repair); a query without "ts" keeps segment [-1, -1] in test*
  splits (test_public has no times) and is skipped elsewhere; ts reversed inside the video is
  swapped, outside is skipped, past the duration is clipped (data_prep.common, as for
  ActivityNet and DiDeMo); whitespace repairs are counted for kept queries only;
  a type outside v/t/vt is kept and counted; queries of one video with different durations ->
  the largest is used (repair). A video in two split files is an error (leak).
- Tokens: WordPiece ids (bert-base-uncased, no [CLS]/[SEP]) by default; `--tokenizer word`
  builds a train vocabulary (`--word-vectors` then writes word_vectors.npy).
- Re-running into the same output replaces the dataset atomically (data_prep.writer), with
  word_vectors.npy inside the same atomic write.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import pathlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from data_prep import common
from data_prep import features as features_lib
from data_prep import writer

NAME = "tvr"
CLIP_SECONDS = 1.5
SUBTITLE = "subtitle"
SUBTITLE_DIM = 768
DIM_NAMES = {1024: "i3d", 2048: "resnet", 3072: "i3d_resnet"}
QUERY_TYPES = ("v", "t", "vt")

QUERY_MALFORMED = "query malformed"
QUERY_DUPLICATE = "duplicate desc_id"
QUERY_BAD_DURATION = "query duration invalid"
QUERY_NO_TS = "query has no ts"
QUERY_TYPE_UNKNOWN = "query type unknown (kept)"
DURATION_DIFFERS = "duration differs between queries (max used)"
SUB_MISSING = "subtitle features missing (stored as missing)"
SUB_EMPTY = "subtitle features have zero rows (stored as missing)"
SUB_NONFINITE = "subtitle features contain NaN/Inf (stored as missing)"
SUB_MASK_MISMATCH = "subtitle mask length differs from rows (stored as missing)"
SUB_ALL_MASKED = "subtitle mask is 0 everywhere (stored as missing)"
SUB_MASKED_ROWS = "subtitle rows with mask 0 dropped"
SUB_PAST_END = "subtitle rows past the video end (dropped)"


class SubtitleSource:
  """Subtitle features `f[vid]` [n, 768] with optional `f[vid + "-mask"]` [n] or [n, 1].

  Picklable; the HDF5 handle opens lazily in each process.
  """

  def __init__(self, path: str):
    self.path = os.fspath(path)
    self._file = None
    if not os.path.exists(self.path):
      raise FileNotFoundError(f"subtitle feature file {self.path} does not exist")
    self._open()  # Fail now, in the parent, on a corrupt or truncated file.

  def __getstate__(self) -> dict:
    return {"path": self.path, "_file": None}

  def _open(self):
    if self._file is None:
      import h5py  # pylint: disable=g-import-not-at-top
      try:
        self._file = h5py.File(self.path, "r")
      except (OSError, ValueError) as e:
        raise features_lib.FeatureFileError(
            f"cannot open HDF5 subtitle feature file {self.path}: {e}") from e
    return self._file

  def close(self) -> None:
    """Closes the handle (reopened on the next `get`)."""
    if self._file is not None:
      self._file.close()
      self._file = None

  def _read(self, key: str) -> np.ndarray | None:
    import h5py  # pylint: disable=g-import-not-at-top
    f = self._open()
    try:
      if key not in f:
        return None
      node = f[key]
      if not isinstance(node, h5py.Dataset):
        raise features_lib.FeatureFileError(f"{self.path}[{key!r}] is not an array dataset")
      arr = np.asarray(node[()])
    except features_lib.FeatureFileError:
      raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
      raise features_lib.FeatureFileError(f"cannot read {self.path}[{key!r}]: {e}") from e
    if arr.dtype.kind not in "fiub":
      raise features_lib.FeatureFileError(
          f"{self.path}[{key!r}]: expected a numeric array, got dtype {arr.dtype}")
    return arr

  def get(self, video_id: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(features float32 [n, 768] or None, mask bool [m] or None) of one video."""
    feats = self._read(video_id)
    if feats is None:
      return None, None
    if feats.ndim != 2 or feats.shape[1] != SUBTITLE_DIM:
      raise features_lib.FeatureFileError(
          f"{self.path}[{video_id!r}]: expected [n, {SUBTITLE_DIM}], got {list(feats.shape)}")
    mask = self._read(f"{video_id}-mask")
    if mask is not None:
      if mask.ndim == 2 and mask.shape[1] == 1:
        mask = mask[:, 0]
      if mask.ndim != 1:
        raise features_lib.FeatureFileError(
            f"{self.path}[{video_id + '-mask'!r}]: expected a [n] or [n, 1] mask, got "
            f"{list(mask.shape)}")
      mask = mask != 0
    return feats.astype(np.float32, copy=False), mask


def parse_feature_arg(arg: str) -> tuple[str | None, str]:
  """`NAME=PATH` -> (NAME, PATH); a bare PATH -> (None, PATH) (name from the dim)."""
  name, sep, path = arg.partition("=")
  if sep and name and name.replace("_", "").isalnum() and not os.path.exists(arg):
    return name, path
  return None, arg


def _is_int_like(x: Any) -> bool:
  return (isinstance(x, str) and x.strip() != "") or (isinstance(x, int)
                                                      and not isinstance(x, bool))


def read_queries(path: str) -> list[tuple[int, Any]]:
  """Parses a JSONL query file; (line number, parsed value) per non-blank line.

  Raises:
    ValueError: a line that is not UTF-8 or not json (naming the file and line).
  """
  out = []
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{line_no}: not valid UTF-8 ({e.reason} at column "
                         f"{e.start + 1}); the query file is corrupt or was re-encoded") from e
      if not line.strip():
        continue
      try:
        out.append((line_no, json.loads(line)))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_no}: not valid json ({e.msg})") from e
  return out


def group_queries(path: str, split: str, counter: writer.SkipCounter | None,
                  seen_desc_ids: set[str], *,
                  deferred: common.DeferredCounts | None = None) -> dict[str, list[dict]]:
  """Validates a split's queries and groups them by video, in file order.

  Args:
    path: JSONL file.
    split: its split name (test* splits may lack "ts").
    counter: receives query skips/repairs (id: the video, or `file:line` when it has none).
    seen_desc_ids: desc_ids seen in earlier files (updated).
    deferred: instead of `counter`, keeps each count under its query's video (None when the
      query names none) until the videos to convert are known.

  Returns:
    vid_name -> [{"desc_id", "desc" (normalised), "raw_desc", "duration", "ts" or None,
    "type"}] in file order.
  """
  grouped: dict[str, list[dict]] = {}
  name = pathlib.Path(path).name
  for line_no, q in read_queries(path):
    where = f"{name}:{line_no}"
    if deferred is not None:
      video = q.get("vid_name") if isinstance(q, dict) else None
      counter = deferred.counter(video if isinstance(video, str) and video else None)
    if (not isinstance(q, dict) or not isinstance(q.get("vid_name"), str) or not q["vid_name"]
        or not _is_int_like(q.get("desc_id")) or "desc" not in q or "duration" not in q):
      counter.skip(QUERY_MALFORMED, where)
      continue
    vid = q["vid_name"]
    desc_key = str(q["desc_id"])
    if desc_key in seen_desc_ids:
      counter.skip(QUERY_DUPLICATE, vid)
      continue
    seen_desc_ids.add(desc_key)
    sentence = common.clean_sentence(q["desc"], vid, counter)
    if sentence is None:
      continue
    duration = common.parse_duration(q["duration"])
    if duration is None:
      counter.skip(QUERY_BAD_DURATION, vid)
      continue
    ts = q.get("ts")
    if ts is None and not split.startswith("test"):
      counter.skip(QUERY_NO_TS, vid)
      continue
    qtype = q.get("type", "")
    qtype = qtype if isinstance(qtype, str) else str(qtype)
    if qtype not in QUERY_TYPES:
      counter.repair(QUERY_TYPE_UNKNOWN, vid)
    grouped.setdefault(vid, []).append({"desc_id": q["desc_id"], "desc": sentence,
                                        "raw_desc": q["desc"], "duration": duration,
                                        "ts": ts, "type": qtype})
  return grouped


def clean_video(video_id: str, queries: list[dict], counter: writer.SkipCounter
                ) -> tuple[float, list[list[float]], list[str], list[Any], list[str]] | None:
  """(duration, segments, sentences, desc_ids, types) of one video, or None if skipped."""
  durations = [q["duration"] for q in queries]
  duration = max(durations)
  if max(durations) - min(durations) > 1e-3:
    counter.repair(DURATION_DIFFERS, video_id)
  segments, sentences, desc_ids, types = [], [], [], []
  for q in queries:
    if q["ts"] is None:
      seg = [-1.0, -1.0]
    else:
      seg = common.clean_seconds_segment(q["ts"], duration, video_id, counter)
      if seg is None:
        continue
    common.count_whitespace(q["raw_desc"], q["desc"], video_id, counter)
    segments.append(seg)
    sentences.append(q["desc"])
    desc_ids.append(q["desc_id"])
    types.append(q["type"])
  if not sentences:
    counter.skip(common.VIDEO_NO_SENTENCES, video_id)
    return None
  return duration, segments, sentences, desc_ids, types


def _subtitle(source: SubtitleSource, video_id: str, duration: float, clip: float,
              counter: writer.SkipCounter) -> tuple[np.ndarray, np.ndarray]:
  """The subtitle modality of a video (see the module docstring); [0, 768] when missing."""
  missing = (np.zeros((0, SUBTITLE_DIM), np.float32), np.zeros((0, 2), np.float32))
  feats, mask = source.get(video_id)
  if feats is None:
    counter.repair(SUB_MISSING, video_id)
    return missing
  if len(feats) == 0:
    counter.repair(SUB_EMPTY, video_id)
    return missing
  if not np.isfinite(feats).all():
    counter.repair(SUB_NONFINITE, video_id)
    return missing
  if mask is not None and len(mask) != len(feats):
    counter.repair(SUB_MASK_MISMATCH, video_id)
    return missing
  scratch = writer.SkipCounter()
  feats, stamps = common.fit_features(feats, duration, clip, None, video_id, scratch)
  if scratch.summary()["repaired"]:
    counter.repair(SUB_PAST_END, video_id)
  if mask is not None:
    mask = mask[:len(feats)]
    if not mask.any():
      counter.repair(SUB_ALL_MASKED, video_id)
      return missing
    if not mask.all():
      counter.repair(SUB_MASKED_ROWS, video_id)
      feats, stamps = feats[mask], stamps[mask]
  return feats, stamps


def build_record(item: tuple, counter: writer.SkipCounter, *,
                 video_sources: dict[str, features_lib.FeatureSource],
                 dims: dict[str, int], subtitle_source: SubtitleSource | None,
                 clip_seconds: float) -> dict | None:
  """Reads one video's features and assembles its canonical record (runs in a worker).

  Args:
    item: (split, video_id, duration, segments, sentences, tokens).
    counter: receives feature repairs and skips.
    video_sources: modality -> feature source of the video features.
    dims: modality -> expected dim.
    subtitle_source: subtitle features, or None.
    clip_seconds: seconds per feature row.

  Returns:
    The record, or None if the video is skipped.
  """
  split, video_id, duration, segments, sentences, tokens = item
  feats: dict[str, np.ndarray] = {}
  stamps: dict[str, np.ndarray] = {}
  expected = math.ceil(duration / clip_seconds - 1e-6)
  # Rows past the end / short features are counted once per video, not once per modality.
  fitted = writer.SkipCounter()
  for modality, source in video_sources.items():
    arr = common.checked_features(source, video_id, dims[modality], counter)
    if arr is None:
      return None
    feats[modality], stamps[modality] = common.fit_features(arr, duration, clip_seconds,
                                                            expected, video_id, fitted)
  for reason in fitted.summary()["repaired"]:
    counter.repair(reason, video_id)
  if subtitle_source is not None:
    feats[SUBTITLE], stamps[SUBTITLE] = _subtitle(subtitle_source, video_id, duration,
                                                  clip_seconds, counter)
  return common.make_record(split, video_id, duration, feats, stamps, segments, sentences,
                            tokens)


def load_queries(query_files: Sequence[str], counter: writer.SkipCounter, *,
                 video_ids: Iterable[str] | None = None, max_videos: int | None = None
                 ) -> dict[str, list[tuple]]:
  """Reads and cleans every query file.

  Query problems are counted for the converted videos only (and, under `video_ids`, for the
  requested videos none of whose queries survived).

  Returns:
    split -> [(split, video_id, duration, segments, sentences, desc_ids, types)].

  Raises:
    ValueError: two files for one split, a video in two splits, an unreadable line,
      `video_ids` of which none is in the files.
  """
  deferred = common.DeferredCounts()
  grouped: dict[str, tuple[str, dict[str, list[dict]]]] = {}
  seen: set[str] = set()
  for path in query_files:
    split = common.split_from_stem(path, prefixes=("tvr_",), suffixes=("_release",))
    if split in grouped:
      raise ValueError(f"two query files map to split {split!r}: {grouped[split][0]} and "
                       f"{path}")
    grouped[split] = (path, group_queries(path, split, None, seen, deferred=deferred))
  common.check_disjoint({path: videos for path, videos in grouped.values()})
  selected = common.select_videos({split: list(v) for split, (_, v) in grouped.items()},
                                  counter, video_ids=video_ids, max_videos=max_videos,
                                  where="query files")
  deferred.flush_selected(counter, selected, video_ids, max_videos)
  cleaned: dict[str, list[tuple]] = {}
  for split, (_, videos) in grouped.items():
    cleaned[split] = []
    for vid in selected[split]:
      result = clean_video(vid, videos[vid], counter)
      if result is not None:
        cleaned[split].append((split, vid, *result))
  return cleaned


def _encode(videos: list[tuple], encode, counter: writer.SkipCounter
            ) -> tuple[list[tuple], dict[str, list], dict[str, list[str]]]:
  """Tokenizes; returns (items for build_record, {vid: desc_ids}, {vid: types})."""
  items, desc_ids, types = [], {}, {}
  for split, vid, dur, segs, sents, ids_, types_ in videos:
    kept = common.keep_tokenized(vid, sents, encode, counter)
    if kept is None:
      continue
    keep, tokens = kept
    items.append((split, vid, dur, [segs[i] for i in keep], [sents[i] for i in keep],
                  tokens))
    desc_ids[vid] = [ids_[i] for i in keep]
    types[vid] = [types_[i] for i in keep]
  return items, desc_ids, types


def convert(query_files: Sequence[str], video_features: Sequence[str], output_dir: str, *,
            subtitle_features: str | None = None, clip_seconds: float = CLIP_SECONDS,
            tokenizer: str = "wordpiece", vocab_file: str | None = None,
            word_vectors: str | None = None, min_count: int = 1, num_workers: int = 1,
            num_shards: int | None = None, max_videos: int | None = None,
            video_ids: Iterable[str] | None = None, verbose: bool = True
            ) -> tuple[str, writer.SkipCounter]:
  """Converts TVR to the canonical TFRecord dataset.

  Args:
    query_files: JSONL files (tvr_train_release.jsonl, ...).
    video_features: `[NAME=]PATH` HDF5 files (or .npy dirs) keyed by vid_name.
    output_dir: data dir; the dataset goes to `output_dir/tvr/<version>`.
    subtitle_features: subtitle HDF5 ([n, 768] + `<vid>-mask`), or None.
    clip_seconds: seconds per feature row.
    tokenizer: "wordpiece" (default) or "word".
    vocab_file: WordPiece vocab.txt (default bert-base-uncased).
    word_vectors: GloVe/word2vec text file (word tokenizer only).
    min_count: word-vocabulary threshold.
    num_workers: feature-reading processes.
    num_shards: shards per split (None: by size).
    max_videos: only the first N videos of each file.
    video_ids: only these videos.
    verbose: print the summary.

  Returns:
    (dataset dir, the SkipCounter with every repair and skip).
  """
  started = time.time()
  if not video_features:
    raise ValueError("at least one --video-features file is needed")
  if clip_seconds <= 0:
    raise ValueError(f"--clip-length must be > 0, got {clip_seconds}")
  counter = writer.SkipCounter()
  cleaned = load_queries(query_files, counter, video_ids=video_ids, max_videos=max_videos)
  if tokenizer == "word" and "train" not in cleaned:
    raise ValueError(f"--tokenizer word builds its vocabulary from a train query file; got "
                     f"splits {sorted(cleaned)}")
  train = (s for v in cleaned.get("train", []) for s in v[4]) if tokenizer == "word" else None
  vocab, encode, vectors = common.text_setup(tokenizer, train, min_count=min_count,
                                             vocab_file=vocab_file, word_vectors=word_vectors)
  items, desc_ids, types = {}, {}, {}
  for split, videos in cleaned.items():
    items[split], desc_ids[split], types[split] = _encode(videos, encode, counter)

  all_ids = [it[1] for its in items.values() for it in its]
  with contextlib.ExitStack() as stack:
    video_sources: dict[str, features_lib.FeatureSource] = {}
    dims: dict[str, int] = {}
    for arg in video_features:
      name, path = parse_feature_arg(arg)
      source = stack.enter_context(features_lib.open_feature_source(path))
      dim = common.infer_dim(source, all_ids)
      if name is None:
        if dim not in DIM_NAMES:
          raise ValueError(f"{path}: cannot name a modality of dim {dim} (known: "
                           f"{DIM_NAMES}); pass NAME={path}")
        name = DIM_NAMES[dim]
      if name in video_sources or name == SUBTITLE:
        raise ValueError(f"modality {name!r} given twice (video features {arg}); pass "
                         "distinct NAME=PATH")
      video_sources[name], dims[name] = source, dim
    subtitle_source = None
    if subtitle_features:
      subtitle_source = SubtitleSource(subtitle_features)
      stack.callback(subtitle_source.close)
    modalities = dict(dims)
    if subtitle_source is not None:
      modalities[SUBTITLE] = SUBTITLE_DIM
    fn = functools.partial(build_record, video_sources=video_sources, dims=dims,
                           subtitle_source=subtitle_source, clip_seconds=clip_seconds)
    extra = {
        "query_files": [pathlib.Path(p).name for p in query_files],
        "video_features": {m: os.path.basename(s.path) for m, s in video_sources.items()},
        "subtitle_features": (os.path.basename(subtitle_features) if subtitle_features
                              else None),
        "timestamps": f"row r covers [{clip_seconds} r, {clip_seconds} (r+1)] s, clipped to "
                      "the duration; subtitle rows with mask 0 dropped",
        "segments": "ts in seconds; [-1, -1] for queries without ts (test splits)",
        "tokens": common.tokens_description(tokenizer, min_count),
        "desc_ids": desc_ids,
        "query_types": types,
    }
    spec = writer.DatasetSpec(
        name=NAME, modalities=modalities, tokenizer=tokenizer, vocab=list(vocab),
        description="TVR (Lei et al., 2020): video-subtitle moment retrieval on TV shows.",
        extra=extra)
    summary = common.Summary(
        started, lambda split, _: f"{len(items[split])} after query checks",
        f"{tokenizer} vocabulary: {len(vocab)} tokens; modalities {modalities}")
    dataset_dir = common.write_records(spec, items, fn, output_dir, counter=counter,
                                       num_shards=num_shards, num_workers=num_workers,
                                       vectors=vectors, summary=summary if verbose else None)
  return dataset_dir, counter


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the converter's flags to an argparse (sub)parser."""
  parser.add_argument("--queries", nargs="+", required=True,
                      help="query JSONL files; split = stem without tvr_/_release")
  parser.add_argument("--video-features", nargs="+", required=True,
                      help="[NAME=]PATH HDF5 keyed by vid_name; NAME defaults from the dim "
                           "(1024 i3d, 2048 resnet, 3072 i3d_resnet)")
  parser.add_argument("--subtitle-features", default=None,
                      help="subtitle HDF5 ([n, 768] per vid_name + <vid_name>-mask)")
  parser.add_argument("--clip-length", type=float, default=CLIP_SECONDS,
                      help="seconds per feature row")
  common.add_common_arguments(parser, tokenizer="wordpiece", per="query file")


def run(args: argparse.Namespace) -> str:
  """Runs the conversion from parsed flags; prints the summary; returns the dataset dir."""
  dataset_dir, _ = convert(
      args.queries, args.video_features, args.output, subtitle_features=args.subtitle_features,
      clip_seconds=args.clip_length, **common.common_kwargs(args))
  return dataset_dir
