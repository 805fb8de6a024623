"""TVR converter: query JSONL + clip-level video/subtitle HDF5 features -> canonical TFRecords.

    hvt-prepare tvr --queries tvr_train_release.jsonl tvr_val_release.jsonl \\
        tvr_test_public_release.jsonl --video-index tvr_video2dur_idx.json \\
        --video-features i3d=tvr_i3d_rgb600_avg_cl-1.5.h5 resnet=tvr_resnet152_rgb_max_cl-1.5.h5 \\
        --subtitle-features tvr_sub_pretrained_w_sub_query_max_cl-1.5.h5 --output DATA_DIR

Input (Lei et al., 2020): one JSON query per line, `{"desc_id", "desc", "vid_name", "duration",
"ts": [st, ed], "type": "v" | "t" | "vt"}`, one file per split (split = file stem without
`tvr_` and `_release`: train, val, test_public). The test_public release is query-only: its
lines hold only `desc_id` and `desc` (corpus-wide inference: no video is named). The video
index `tvr_video2dur_idx.json` (`--video-index`) is `{split: {vid_name: [duration, index]}}`
for train, val, test_public and test_challenge: each split's video corpus (1,089 videos for
test_public) and the video indices of TVR's submission format. Video features: HDF5 keyed by
vid_name, I3D [n, 1024], ResNet-152 [n, 2048] or their concatenation [n, 3072], one row per
1.5 s clip; the modality is named by `NAME=PATH` or from the dim (i3d, resnet, i3d_resnet).
Subtitle features: HDF5 [n, 768] per vid_name with a `<vid_name>-mask` entry ([n] or [n, 1],
1 = the clip has subtitle text), stored as modality `subtitle`.

Annotated splits (every file whose lines name videos): one record per video; its queries are
the record's sentences, in file order, with segments from `ts` (seconds). desc_id and query
type cannot travel inside records (the schema is fixed), so they are stored in
metadata["extra"]: `desc_ids[split][video_id]` and `query_types[split][video_id]`, lists
aligned with the record's sentences (the TVR standalone-eval format needs desc_id). These maps
list every video that passed the annotation checks; a video later skipped for its features
keeps its entry but has no record (it is counted under "features ..." in metadata["counts"]).

Query-only splits (a file in which no line has `vid_name`, e.g. test_public), stored within the
same schema:
- the split's records are its corpus: every video `--video-index` lists for the split (also
  those no query names), in index-file order, with the index's duration, its features, and
  no sentences (`segments` [0, 2], `sentences` [], `tokens` []). The split is a corpus split
  of the builder (metadata["corpus_splits"]), which allows records without sentences;
- its queries go to metadata["extra"]["queries"][split] = {"desc_ids": [...], "sentences":
  [...], "tokens": [[ids], ...]}: aligned lists in file order (same tokenizer as the records;
  a query without tokens is skipped and counted). The input pipeline reads the queries from
  there and the corpus from the split's records;
- without `--video-index`, or when the index has no entry for the split, the split has no
  corpus: it is not written (counted "query-only split has no corpus: ...", then
  "split has no records (not written)", both with the split name as example id), and the
  other splits still are.
metadata["extra"]["query_only_splits"] lists the query-only files' splits (written or not).
With `--video-index`, metadata["extra"]["video_index"][split] = {vid_name: index} (the whole
split of the index file) for every written split the index has, for the submission format's
`video2idx`.

Splits never lose one another: a split left without records (every query malformed, every
video skipped, no corpus) is left out of the dataset, counted ("split has no records (not
written)", example id = the split name) and listed in metadata["empty_splits"]; the other
splits are written. Only when no split has a record is the conversion an error.

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
- Video features: missing key, zero rows or NaN/Inf -> the video is skipped; rows that are
  entirely 0 (in any modality, subtitle rows after masking included) are kept and counted
  once per video; a dim that differs from that of most of the first videos (the odd video is
  named), an unreadable (e.g. truncated) HDF5 file or a mask of another shape is an error
  naming the file and key.
- Video index: an entry that is not [duration > 0, integer index >= 0] is left out (counted);
  two videos of one split with the same index are an error. For annotated splits, a written
  video missing from its split's index is kept (counted), a duration differing from the
  index's by more than 1 ms keeps the queries' duration (counted), and an index video that no
  query names is counted (not stored: the record would have no sentence to train on).
- Queries: a line that is not valid UTF-8 or not valid json is an error naming the file and
  line (a corrupt annotation file); a query without desc_id/vid_name/desc/duration is skipped
  (in a query-only file: without desc_id/desc; example id `file:line`);
  a repeated desc_id (in any file) skips the later query; an empty/whitespace desc is skipped
  and whitespace is normalised (repair); a query of an annotated file without "ts" keeps
  segment [-1, -1] in test* splits (a test file that names videos but gives no times) and is
  skipped elsewhere; ts reversed inside the video is
  swapped, outside is skipped, past the duration is clipped, a zero-length ts is kept and
  counted (data_prep.common, as for ActivityNet and DiDeMo); whitespace repairs are counted
  for kept queries only;
  a type outside v/t/vt is kept and counted; queries of one video with different durations ->
  the largest is used (repair). A video in two split files is an error (leak).
- Tokens: WordPiece ids (bert-base-uncased, no [CLS]/[SEP]) by default; `--tokenizer word`
  builds a train vocabulary (`--word-vectors` then writes word_vectors.npy).
- Re-running into the same output replaces the dataset atomically (data_prep.builder), with
  word_vectors.npy inside the same atomic write.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from data_prep import builder

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
QUERY_ONLY_NO_CORPUS = "query-only split has no corpus: needs its --video-index entry"
INDEX_MALFORMED = "--video-index entry malformed (left out)"
INDEX_NO_QUERY = "--video-index video has no query (not stored)"
NOT_IN_INDEX = "video not in --video-index (kept, no index)"
INDEX_DURATION_DIFFERS = "duration differs from --video-index (query duration kept)"


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


def is_query_only(lines: Sequence[tuple[int, Any]]) -> bool:
  """Whether parsed query lines are a query-only release (no line names a video).

  TVR's test_public file has only `desc_id` and `desc`; a file in which some lines name a
  video is an annotated file (its lines without vid_name are malformed).
  """
  dicts = [q for _, q in lines if isinstance(q, dict)]
  return bool(dicts) and not any("vid_name" in q for q in dicts)


def collect_query_only(path: str, lines: Sequence[tuple[int, Any]],
                       counter: builder.SkipCounter, seen_desc_ids: set[str]) -> list[dict]:
  """Validates the queries of a query-only file (no video named), in file order.

  Args:
    path: JSONL file (for the example ids `file:line`).
    lines: its parsed lines (`read_queries`).
    counter: receives QUERY_MALFORMED / QUERY_DUPLICATE / sentence-empty skips.
    seen_desc_ids: desc_ids seen in earlier files (updated).

  Returns:
    [{"desc_id", "desc" (normalised), "raw_desc", "where" (`file:line`)}].
  """
  name = pathlib.Path(path).name
  out = []
  for line_no, q in lines:
    where = f"{name}:{line_no}"
    if not isinstance(q, dict) or not _is_int_like(q.get("desc_id")) or "desc" not in q:
      counter.skip(QUERY_MALFORMED, where)
      continue
    if str(q["desc_id"]) in seen_desc_ids:
      counter.skip(QUERY_DUPLICATE, where)
      continue
    seen_desc_ids.add(str(q["desc_id"]))
    sentence = common.clean_sentence(q["desc"], where, counter)
    if sentence is not None:
      out.append({"desc_id": q["desc_id"], "desc": sentence, "raw_desc": q["desc"],
                  "where": where})
  return out


def read_video_index(path: str, splits: Iterable[str], counter: builder.SkipCounter
                     ) -> dict[str, dict[str, tuple[float, int]]]:
  """Reads `tvr_video2dur_idx.json`: `{split: {vid_name: [duration, index]}}`.

  Args:
    path: the json file.
    splits: the splits to read (others, e.g. test_challenge without a query file, are
      ignored).
    counter: receives INDEX_MALFORMED skips (an entry without a duration > 0 and an integer
      index >= 0 is left out).

  Returns:
    split -> {vid_name: (duration seconds, index)} in file order, for the `splits` the file
    has.

  Raises:
    ValueError: unreadable json, a split that is not an object, or two videos of one split
      with the same index (the submission format could not tell them apart).
  """
  data = common.read_json(path, expect=dict)
  out: dict[str, dict[str, tuple[float, int]]] = {}
  for split in splits:
    if split not in data:
      continue
    videos = data[split]
    if not isinstance(videos, dict):
      raise ValueError(f"{path}: split {split!r} must map vid_name -> [duration, index], got "
                       f"{type(videos).__name__}")
    entries: dict[str, tuple[float, int]] = {}
    owner: dict[int, str] = {}
    for vid, value in videos.items():
      ok = isinstance(value, list) and len(value) == 2
      duration = common.parse_duration(value[0]) if ok else None
      index = value[1] if ok else None
      if (not vid or duration is None or isinstance(index, bool) or not isinstance(index, int)
          or index < 0):
        counter.skip(INDEX_MALFORMED, vid or f"{split}/<empty>")
        continue
      if index in owner:
        raise ValueError(f"{path}: videos {owner[index]!r} and {vid!r} of split {split!r} "
                         f"have the same index {index}")
      owner[index] = vid
      entries[vid] = (duration, index)
    out[split] = entries
  return out


def group_queries(path: str, split: str, counter: builder.SkipCounter | None,
                  seen_desc_ids: set[str], *,
                  deferred: common.DeferredCounts | None = None,
                  lines: Sequence[tuple[int, Any]] | None = None) -> dict[str, list[dict]]:
  """Validates a split's queries and groups them by video, in file order.

  Args:
    path: JSONL file.
    split: its split name (test* splits may lack "ts").
    counter: receives query skips/repairs (id: the video, or `file:line` when it has none).
    seen_desc_ids: desc_ids seen in earlier files (updated).
    deferred: instead of `counter`, keeps each count under its query's video (None when the
      query names none) until the videos to convert are known.
    lines: the file's parsed lines (`read_queries`), when already read.

  Returns:
    vid_name -> [{"desc_id", "desc" (normalised), "raw_desc", "duration", "ts" or None,
    "type"}] in file order.
  """
  grouped: dict[str, list[dict]] = {}
  name = pathlib.Path(path).name
  for line_no, q in read_queries(path) if lines is None else lines:
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


def clean_video(video_id: str, queries: list[dict], counter: builder.SkipCounter
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
              counter: builder.SkipCounter, warnings: builder.SkipCounter | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
  """The subtitle modality of a video (see the module docstring); [0, 768] when missing.

  Kept rows that are entirely 0 are counted (common.FEATURES_ZERO_ROWS) in `warnings`
  (default `counter`).
  """
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
  scratch = builder.SkipCounter()
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
  common.count_zero_rows(video_id, [feats], counter if warnings is None else warnings)
  return feats, stamps


def build_record(item: tuple, counter: builder.SkipCounter, *,
                 video_sources: dict[str, features_lib.FeatureSource],
                 dims: dict[str, int], subtitle_source: SubtitleSource | None,
                 clip_seconds: float) -> dict | None:
  """Reads one video's features and assembles its canonical record (runs in a worker).

  Rows past the end, short features and rows that are all 0 are counted once per video,
  whichever modalities they concern.

  Args:
    item: (split, video_id, duration, segments, sentences, tokens); a corpus video of a
      query-only split has no segments, sentences or tokens.
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
  # Rows past the end / short features / all-0 rows are counted once per video, not once
  # per modality.
  fitted = builder.SkipCounter()
  for modality, source in video_sources.items():
    arr = common.checked_features(source, video_id, dims[modality], counter, warnings=fitted)
    if arr is None:
      return None
    feats[modality], stamps[modality] = common.fit_features(arr, duration, clip_seconds,
                                                            expected, video_id, fitted)
  if subtitle_source is not None:
    feats[SUBTITLE], stamps[SUBTITLE] = _subtitle(subtitle_source, video_id, duration,
                                                  clip_seconds, counter, fitted)
  for reason in fitted.summary()["repaired"]:
    counter.repair(reason, video_id)
  return common.make_record(split, video_id, duration, feats, stamps, segments, sentences,
                            tokens)


@dataclasses.dataclass
class Loaded:
  """The cleaned query files (`load_queries`).

  Attributes:
    videos: annotated split -> [(split, video_id, duration, segments, sentences, desc_ids,
      types)] of the selected videos whose queries passed the checks.
    corpus: query-only split with a corpus -> [(split, video_id, duration)] of the selected
      `--video-index` videos (duration from the index).
    queries: query-only split -> its queries (`collect_query_only`), with or without corpus.
    index: split -> {vid_name: index} from `--video-index`, for the splits of the query files
      the index has.
  """
  videos: dict[str, list[tuple]]
  corpus: dict[str, list[tuple]]
  queries: dict[str, list[dict]]
  index: dict[str, dict[str, int]]


def load_queries(query_files: Sequence[str], counter: builder.SkipCounter, *,
                 video_index: str | None = None, video_ids: Iterable[str] | None = None,
                 max_videos: int | None = None) -> Loaded:
  """Reads and cleans every query file (annotated or query-only) and the video index.

  Query problems are counted for the converted videos only (and, under `video_ids`, for the
  requested videos none of whose queries survived); a query-only file's problems always.

  Args:
    query_files: JSONL files; split = stem without tvr_/_release.
    counter: receives the repairs and skips.
    video_index: `tvr_video2dur_idx.json` or None.
    video_ids: only these videos (of the annotated files and of the query-only corpora).
    max_videos: only the first N videos of each split.

  Returns:
    The cleaned splits (`Loaded`).

  Raises:
    ValueError: two files for one split, a video in two splits, an unreadable line or index,
      `video_ids` of which none is in the files.
  """
  deferred = common.DeferredCounts()
  grouped: dict[str, tuple[str, dict[str, list[dict]]]] = {}
  queries: dict[str, tuple[str, list[dict]]] = {}
  seen: set[str] = set()
  for path in query_files:
    split = common.split_from_stem(path, prefixes=("tvr_",), suffixes=("_release",))
    if split in grouped or split in queries:
      first = (grouped.get(split) or queries[split])[0]
      raise ValueError(f"two query files map to split {split!r}: {first} and {path}")
    lines = read_queries(path)
    if is_query_only(lines):
      queries[split] = (path, collect_query_only(path, lines, counter, seen))
    else:
      grouped[split] = (path, group_queries(path, split, None, seen, deferred=deferred,
                                            lines=lines))
  index = ({} if video_index is None
           else read_video_index(video_index, [*grouped, *queries], counter))
  corpus_ids: dict[str, list[str]] = {}
  for split in queries:
    if split in index:
      corpus_ids[split] = list(index[split])
    else:
      counter.skip(QUERY_ONLY_NO_CORPUS, split)
  for split, (_, videos) in grouped.items():
    for vid in index.get(split, {}):
      if vid not in videos:
        deferred.counter(vid).skip(INDEX_NO_QUERY, vid)
  common.check_disjoint({**{path: videos for path, videos in grouped.values()},
                         **{f"{queries[s][0]} (--video-index corpus)": ids
                            for s, ids in corpus_ids.items()}})
  selected = common.select_videos(
      {**{split: list(v) for split, (_, v) in grouped.items()}, **corpus_ids}, counter,
      video_ids=video_ids, max_videos=max_videos,
      where="query files" + (" and the --video-index corpus" if corpus_ids else ""))
  deferred.flush_selected(counter, selected, video_ids, max_videos)
  cleaned: dict[str, list[tuple]] = {}
  for split, (_, videos) in grouped.items():
    cleaned[split] = []
    for vid in selected[split]:
      result = clean_video(vid, videos[vid], counter)
      if result is None:
        continue
      cleaned[split].append((split, vid, *result))
      if split in index:
        if vid not in index[split]:
          counter.repair(NOT_IN_INDEX, vid)
        elif abs(index[split][vid][0] - result[0]) > 1e-3:
          counter.repair(INDEX_DURATION_DIFFERS, vid)
  corpus = {split: [(split, vid, index[split][vid][0]) for vid in selected[split]]
            for split in corpus_ids}
  return Loaded(videos=cleaned, corpus=corpus,
                queries={split: qs for split, (_, qs) in queries.items()},
                index={split: {vid: i for vid, (_, i) in entries.items()}
                       for split, entries in index.items()})


def encode_queries(queries: list[dict], encode, counter: builder.SkipCounter) -> dict:
  """Tokenizes a query-only split's queries; those without tokens are skipped (counted).

  Returns:
    {"desc_ids": [...], "sentences": [...], "tokens": [[ids], ...]}, aligned lists in file
    order (the layout of metadata["extra"]["queries"][split]).
  """
  out = {"desc_ids": [], "sentences": [], "tokens": []}
  for q in queries:
    ids = encode(q["desc"])
    if not ids:
      counter.skip(common.SENTENCE_NO_TOKENS, q["where"])
      continue
    common.count_whitespace(q["raw_desc"], q["desc"], q["where"], counter)
    out["desc_ids"].append(q["desc_id"])
    out["sentences"].append(q["desc"])
    out["tokens"].append(ids)
  return out


def _encode(videos: list[tuple], encode, counter: builder.SkipCounter
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


def make_plan(counter: builder.SkipCounter, query_files: Sequence[str],
              video_features: Sequence[str], *, subtitle_features: str | None = None,
              clip_seconds: float = CLIP_SECONDS, tokenizer: str = "wordpiece",
              vocab_file: str | None = None, word_vectors: str | None = None,
              min_count: int = 1, max_videos: int | None = None,
              video_ids: Iterable[str] | None = None,
              video_index: str | None = None) -> builder.Plan:
  """Reads the queries, sets up the tokens and opens the features (the `Tvr` plan).

  A split that ends up without records (e.g. a query-only file without `video_index`) is
  left out and counted; the other splits are written.

  Args:
    counter: receives the repairs and skips of the query stage.
    query_files: JSONL files (tvr_train_release.jsonl, ..., tvr_test_public_release.jsonl).
    video_features: `[NAME=]PATH` HDF5 files (or .npy dirs) keyed by vid_name.
    subtitle_features: subtitle HDF5 ([n, 768] + `<vid>-mask`), or None.
    clip_seconds: seconds per feature row.
    tokenizer: "wordpiece" (default) or "word".
    vocab_file: WordPiece vocab.txt (default bert-base-uncased).
    word_vectors: GloVe/word2vec text file (word tokenizer only).
    min_count: word-vocabulary threshold.
    max_videos: only the first N videos of each file (of each query-only corpus).
    video_ids: only these videos.
    video_index: `tvr_video2dur_idx.json` ({split: {vid_name: [duration, index]}}): the
      corpus of query-only splits and the video indices stored in the metadata.

  Returns:
    The plan (its feature sources are closed with `plan.resources`).

  Raises:
    ValueError: bad arguments, unreadable query or index files, a leak between splits, or
      no split left with videos.
  """
  started = time.time()
  if not video_features:
    raise ValueError("at least one --video-features file is needed")
  if clip_seconds <= 0:
    raise ValueError(f"--clip-length must be > 0, got {clip_seconds}")
  loaded = load_queries(query_files, counter, video_index=video_index, video_ids=video_ids,
                        max_videos=max_videos)
  cleaned = loaded.videos
  if tokenizer == "word" and "train" not in cleaned:
    raise ValueError(f"--tokenizer word builds its vocabulary from an annotated train query "
                     f"file; got splits {sorted(cleaned)}")
  train = (s for v in cleaned.get("train", []) for s in v[4]) if tokenizer == "word" else None
  vocab, encode, vectors = common.text_setup(tokenizer, train, min_count=min_count,
                                             vocab_file=vocab_file, word_vectors=word_vectors)
  items, desc_ids, types = {}, {}, {}
  for split, videos in cleaned.items():
    items[split], desc_ids[split], types[split] = _encode(videos, encode, counter)
  queries = {split: encode_queries(qs, encode, counter) for split, qs in loaded.queries.items()}
  for split in loaded.queries:
    # Corpus videos: no sentences (the queries name no video); no corpus: an empty split.
    items[split] = [(split, vid, dur, [], [], [])
                    for _, vid, dur in loaded.corpus.get(split, [])]
  order = [common.split_from_stem(p, prefixes=("tvr_",), suffixes=("_release",))
           for p in query_files]
  items = {split: items[split] for split in order}  # The query files' order.
  corpus_splits = tuple(loaded.corpus)

  def written_only(info: dict) -> dict:
    """The per-split extra metadata of the splits written (an empty split is left out)."""
    keep = info["splits"]
    return {"desc_ids": {s: v for s, v in desc_ids.items() if s in keep},
            "query_types": {s: v for s, v in types.items() if s in keep},
            "queries": {s: v for s, v in queries.items() if s in keep},
            "video_index": {s: v for s, v in loaded.index.items() if s in keep}}

  def detail(split: str, _) -> str:
    if split in loaded.queries:
      return (f"query-only: {len(items[split])} corpus videos from --video-index, "
              f"{len(queries[split]['desc_ids'])} queries in metadata extra['queries']")
    return f"{len(items[split])} after query checks"

  all_ids = [it[1] for its in items.values() for it in its]
  if not all_ids:
    raise ValueError(f"no split has a video left to convert; repairs and skips:\n"
                     f"{counter.format_table()}")
  stack = contextlib.ExitStack()  # Closed by the conversion (plan.resources).
  with contextlib.ExitStack() as on_error:
    on_error.callback(stack.close)
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
        "segments": "ts in seconds; [-1, -1] for queries without ts (test splits); none in "
                    "the corpus records of query-only splits",
        "tokens": common.tokens_description(tokenizer, min_count),
        "tokenizer": encode.metadata(),
        "video_index_file": os.path.basename(video_index) if video_index else None,
        "query_only_splits": sorted(loaded.queries),
    }
    spec = builder.DatasetSpec(
        name=NAME, modalities=modalities, tokenizer=tokenizer, vocab=list(vocab),
        description=DESCRIPTION, extra=extra, corpus_splits=corpus_splits)
    on_error.pop_all()
  summary = common.Summary(
      started, detail, f"{tokenizer} vocabulary: {len(vocab)} tokens; modalities "
      f"{modalities}")
  return common.make_plan(spec, items, fn, vectors=vectors, extra_fn=written_only,
                          summary=summary, resources=stack)


DESCRIPTION = "TVR (Lei et al., 2020): video-subtitle moment retrieval on TV shows."
MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place in manual_dir the TVR query files tvr_train_release.jsonl, tvr_val_release.jsonl and
tvr_test_public_release.jsonl (those present are converted), the video index
tvr_video2dur_idx.json (optional: the corpus of test_public and the submission indices), the
subtitle features tvr_sub_pretrained_w_sub_query_max_cl-1.5.h5 (optional) and the video
features of the config: tvr_i3d_rgb600_avg_cl-1.5.h5 (i3d, [n, 1024]) and/or
tvr_resnet152_rgb_max_cl-1.5.h5 (resnet, [n, 2048]).
"""
VIDEO_FILES = {"i3d": "tvr_i3d_rgb600_avg_cl-1.5.h5",
               "resnet": "tvr_resnet152_rgb_max_cl-1.5.h5"}
SUBTITLE_FILE = "tvr_sub_pretrained_w_sub_query_max_cl-1.5.h5"


class Tvr(builder.HvtBuilder):
  """TVR: one record per video with its queries; test_public's corpus without queries."""

  DESCRIPTION = DESCRIPTION
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      builder.HvtConfig(name=f"{'_'.join(video)}_subtitle_{tok}", tokenizer=tok,
                        modalities={**{m: {"i3d": 1024, "resnet": 2048}[m] for m in video},
                                    SUBTITLE: SUBTITLE_DIM},
                        description=f"{' + '.join(video)} and subtitle features, {tok} tokens")
      for video in (("i3d", "resnet"), ("i3d",)) for tok in ("wordpiece", "word")]

  def make_plan(self, manual_dir: pathlib.Path, counter: builder.SkipCounter) -> builder.Plan:
    config = self.builder_config
    queries = [os.fspath(manual_dir / f"tvr_{s}_release.jsonl")
               for s in ("train", "val", "test_public")
               if (manual_dir / f"tvr_{s}_release.jsonl").exists()]
    index = manual_dir / "tvr_video2dur_idx.json"
    return make_plan(counter, queries,
                     [f"{m}={manual_dir / VIDEO_FILES[m]}" for m in config.modalities
                      if m != SUBTITLE],
                     subtitle_features=os.fspath(manual_dir / SUBTITLE_FILE),
                     tokenizer=config.tokenizer,
                     video_index=os.fspath(index) if index.exists() else None)


def convert(query_files: Sequence[str], video_features: Sequence[str], output_dir: str, *,
            num_workers: int = 1, num_shards: int | None = None,
            beam_options: str | None = None, verbose: bool = True,
            **kwargs: Any) -> tuple[str, builder.SkipCounter]:
  """Converts TVR to the canonical dataset (the `Tvr` builder).

  Args:
    query_files: JSONL files (tvr_train_release.jsonl, ..., tvr_test_public_release.jsonl).
    video_features: `[NAME=]PATH` HDF5 files (or .npy dirs) keyed by vid_name.
    output_dir: data dir; the dataset goes to `output_dir/tvr/<config>/<version>`.
    num_workers: > 1: build the records on Beam's local FnApiRunner with N processes.
    num_shards: shards per split (None: by size).
    beam_options: Beam pipeline options for another runner.
    verbose: print the summary.
    **kwargs: the other arguments of `make_plan`.

  Returns:
    (dataset dir, the SkipCounter with every repair and skip).
  """
  make = functools.partial(make_plan, query_files=query_files, video_features=video_features,
                           **kwargs)
  return builder.convert(Tvr, make, output_dir, num_shards=num_shards,
                         num_workers=num_workers, beam_options=beam_options, verbose=verbose)


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
  parser.add_argument("--video-index", default=None,
                      help="tvr_video2dur_idx.json ({split: {vid_name: [duration, index]}}): "
                           "the video corpus of query-only files (test_public) and the video "
                           "indices of the submission format, stored in the metadata")
  common.add_common_arguments(parser, tokenizer="wordpiece", per="query file")


def run(args: argparse.Namespace) -> str:
  """Runs the conversion from parsed flags; prints the summary; returns the dataset dir."""
  dataset_dir, _ = convert(
      args.queries, args.video_features, args.output, subtitle_features=args.subtitle_features,
      clip_seconds=args.clip_length, video_index=args.video_index,
      **common.common_kwargs(args))
  return dataset_dir
