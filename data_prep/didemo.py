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
  feature_leng) or start < 0 -> clipped (repair); a zero-length moment is kept and counted
  (the shared rule; index spans always last at least one row, so it does not occur in the
  released files); whitespace normalised (repair); a sentence with no token ids -> skipped.
  A video left without sentences is skipped.
- Per-query layout: an annotator span that is not two integers is ignored (repair); a query
  with none left is skipped; num_segments differing between a video's queries -> the largest
  is used (repair); a video missing from `--durations` falls back to 5 * num_segments (repair).
- Features: missing video -> skipped; zero rows -> skipped; NaN/Inf anywhere -> skipped (never
  silently zeroed); rows that are entirely 0 -> kept and counted. With a known row rate,
  rows starting at or after the duration are dropped (repair) and features covering less
  than 90% of the expected rows are kept and counted (a short tail of missing rows is normal
  for frame-level extractors; more is worth seeing). A feature file that cannot be read
  (truncated/corrupt HDF5 or npz) or a feature dim different from that of most of the first
  videos is an error naming the file, the odd video and key.
  A split left without records is not written (counted); the other splits are.
- Tokens: `--tokenizer word` (default, HSE): vocabulary from the kept train sentences with
  `--min-count`, optional `--word-vectors` (GloVe/word2vec text; saved as
  `<dataset_dir>/word_vectors.npy`, OOV report in metadata["extra"]["word_vectors"]).
  `--tokenizer wordpiece`: bert-base-uncased ids without [CLS]/[SEP] (the input view adds
  them).
- Re-running into the same output replaces the dataset atomically (data_prep.builder), with
  word_vectors.npy inside the same atomic write.

Segment, sentence, feature and token rules are shared with the other converters
(data_prep.common).
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
from collections.abc import Iterable, Sequence
from typing import Any

from data_prep import common
from data_prep import features as features_lib
from data_prep import builder

NAME = "didemo"
CHUNK_SECONDS = 5.0
_VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".m4v", ".mkv", ".webm", ".3gp", ".mpg", ".wmv",
                     ".flv", ".mts")

# Reason strings (the keys of metadata["counts"]); the shared ones are data_prep.common's.
SEGMENT_MALFORMED = common.SEGMENT_MALFORMED
SEGMENT_SWAPPED = common.SEGMENT_SWAPPED
SEGMENT_REVERSED_OUTSIDE = common.SEGMENT_REVERSED_OUTSIDE
VIDEO_BAD_DURATION = common.VIDEO_BAD_DURATION
VIDEO_MALFORMED = common.VIDEO_MALFORMED
VIDEO_NO_SENTENCES = common.VIDEO_NO_SENTENCES
FEATURES_SHORT = common.FEATURES_SHORT
VIDEO_BAD_FEATURE_LENG = "video feature_leng invalid"
QUERY_MALFORMED = "query malformed"
QUERY_DUPLICATE = "duplicate annotation_id"
ANNOTATOR_SPAN_MALFORMED = "annotator span malformed (ignored)"
NUM_SEGMENTS_DIFFER = "num_segments differs between queries (max used)"
DURATION_FALLBACK = "duration not in --durations (5 * num_segments used)"


def candidate_ids(video_id: str) -> list[str]:
  """Feature keys to try: the id, then without a video file extension (original DiDeMo ids
  such as `..._87ef417396.mov`)."""
  stem, ext = os.path.splitext(video_id)
  return [video_id, stem] if ext.lower() in _VIDEO_EXTENSIONS and stem else [video_id]


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


def _index_segment(pair: tuple[int, int] | None, limit: int, seconds_per_index: float,
                   duration: float, video_id: str, counter: builder.SkipCounter
                   ) -> list[float] | None:
  """Inclusive index span -> cleaned [start, end] seconds; None (counted) if skipped.

  A reversed span is swapped in index space before conversion (converting a reversed
  inclusive span first would lose one index), when both ends lie in [0, limit]; otherwise
  the reversed span lies (partly) past the video and is skipped. Then the shared segment
  rules apply in seconds; the swap is counted only when the segment is kept.
  """
  if pair is None:
    counter.skip(SEGMENT_MALFORMED, video_id)
    return None
  s, e = pair
  swapped = s > e
  if swapped:
    if not (0 <= e and s <= limit):
      counter.skip(SEGMENT_REVERSED_OUTSIDE, video_id)
      return None
    s, e = e, s
  seg = common.clean_segment(s * seconds_per_index, (e + 1) * seconds_per_index, duration,
                             video_id, counter)
  if seg is not None and swapped:
    counter.repair(SEGMENT_SWAPPED, video_id)
  return seg


def clean_per_video(video_id: str, ann: Any, counter: builder.SkipCounter
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
  checked = common.check_video_annotation(video_id, ann, counter,
                                          lists=("description", "times"),
                                          required=("feature_leng",))
  if checked is None:
    return None
  duration, descriptions, times = checked
  leng = ann["feature_leng"]
  if isinstance(leng, bool) or not isinstance(leng, (int, float)) or leng != int(leng) \
      or leng <= 0:
    counter.skip(VIDEO_BAD_FEATURE_LENG, video_id)
    return None
  leng = int(leng)
  row_seconds = duration / leng

  def segment(span: Any) -> list[float] | None:
    return _index_segment(_as_index_pair(span), leng, row_seconds, duration, video_id, counter)

  kept = common.clean_sentences(video_id, zip(descriptions, times), segment, counter)
  return None if kept is None else (duration, *kept, row_seconds)


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


def group_per_query(path: str, queries: list, counter: builder.SkipCounter | None = None, *,
                    deferred: common.DeferredCounts | None = None) -> dict[str, list[dict]]:
  """Groups the original per-query DiDeMo records by video, in file order.

  Args:
    path: the file (for messages).
    queries: the parsed json list.
    counter: receives malformed/duplicate query skips (id = annotation_id or `file#index`).
    deferred: instead of `counter`, keeps each skip under its query's video (None when the
      query names none) until the videos to convert are known.

  Returns:
    video -> its valid query dicts, in file order.
  """
  grouped: dict[str, list[dict]] = {}
  seen_ids: set[Any] = set()
  for i, q in enumerate(queries):
    qid = str(q.get("annotation_id", f"{pathlib.Path(path).name}#{i}")) \
        if isinstance(q, dict) else f"{pathlib.Path(path).name}#{i}"
    if deferred is not None:
      video = q.get("video") if isinstance(q, dict) else None
      counter = deferred.counter(video if isinstance(video, str) and video else None)
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


def clean_per_query(video_id: str, queries: list[dict], counter: builder.SkipCounter,
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
  # The video-level repairs are counted only when the video is kept (like sentence repairs).
  repairs = []
  if any(q["num_segments"] != num_segments for q in queries):
    repairs.append(NUM_SEGMENTS_DIFFER)
  if durations is not None and video_id in durations:
    duration = common.parse_duration(durations[video_id])
    if duration is None:
      counter.skip(VIDEO_BAD_DURATION, video_id)
      return None
  else:
    if durations is not None:
      repairs.append(DURATION_FALLBACK)
    duration = CHUNK_SECONDS * num_segments

  def segment(times: list) -> list[float] | None:
    spans = []
    for span in times:
      pair = _as_index_pair(span)
      if pair is None:
        counter.repair(ANNOTATOR_SPAN_MALFORMED, video_id)
      else:
        spans.append(pair)
    # Chunk indices run 0..num_segments-1; a reversed span may be swapped within them.
    return _index_segment(mode_span(spans) if spans else None, num_segments - 1,
                          CHUNK_SECONDS, duration, video_id, counter)

  kept = common.clean_sentences(video_id,
                                ((q["description"], q["times"]) for q in queries), segment,
                                counter)
  if kept is None:
    return None
  for reason in repairs:
    counter.repair(reason, video_id)
  return (duration, *kept)


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


def build_record(item: tuple, counter: builder.SkipCounter, *,
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
  feats = common.checked_features(source, video_id, dim, counter, candidate_ids)
  if feats is None:
    return None
  if feature_rate:
    row_seconds = 1.0 / feature_rate
  expected = round(duration / row_seconds) if row_seconds else None
  feats, stamps = common.fit_features(feats, duration, row_seconds, expected, video_id,
                                      counter)
  return common.make_record(split, video_id, duration, {modality: feats}, {modality: stamps},
                            segments, sentences, tokens)


def load_annotations(annotation_files: Sequence[str], counter: builder.SkipCounter, *,
                     durations: dict[str, float] | None = None,
                     video_ids: Iterable[str] | None = None, max_videos: int | None = None
                     ) -> tuple[dict[str, list[tuple]], dict[str, str]]:
  """Reads and cleans every annotation file (either layout).

  Args:
    annotation_files: json files; split = stem without `_data_bwzhang` / `_data`.
    counter: receives every repair and skip.
    durations: optional video -> seconds for the per-query layout.
    video_ids: only these videos (others ignored, not counted; an id in no file is a counted
      skip).
    max_videos: only the first N videos of each file (file order).

  Returns:
    (split -> [(split, video_id, duration, segments, sentences, row_seconds)],
     split -> layout name).

  Raises:
    ValueError: duplicate split, video in two splits, unreadable file (see module docstring),
      `video_ids` of which none is in the files.
  """
  deferred = common.DeferredCounts()
  raw: dict[str, tuple[str, str, dict]] = {}
  for path in annotation_files:
    split = common.split_from_stem(path, suffixes=("_data_bwzhang", "_data"))
    if split in raw:
      raise ValueError(f"two annotation files map to split {split!r}: {raw[split][0]} and "
                       f"{path}")
    data = common.read_json(path)
    layout = detect_layout(path, data)
    videos = data if layout == "per_video" else group_per_query(path, data, deferred=deferred)
    raw[split] = (path, layout, videos)
  common.check_disjoint({path: videos for path, _, videos in raw.values()})
  selected = common.select_videos({split: list(v) for split, (_, _, v) in raw.items()},
                                  counter, video_ids=video_ids, max_videos=max_videos)
  deferred.flush_selected(counter, selected, video_ids, max_videos)
  cleaned: dict[str, list[tuple]] = {}
  for split, (path, layout, videos) in raw.items():
    cleaned[split] = []
    for vid in selected[split]:
      if layout == "per_video":
        result = clean_per_video(vid, videos[vid], counter)
      else:
        result = clean_per_query(vid, videos[vid], counter, durations)
        result = None if result is None else (*result, None)
      if result is not None:
        cleaned[split].append((split, vid, *result))
  return cleaned, {split: layout for split, (_, layout, _) in raw.items()}


def _short_features_note(counter: builder.SkipCounter, meta: dict) -> list[str]:
  """A hint when most videos have fewer feature rows than their annotation implies."""
  n_short = counter.summary()["repaired"].get(FEATURES_SHORT, 0)
  if n_short <= 0.5 * sum(meta["splits"].values()):
    return []
  return [f"note: {n_short} videos have < 90% of the rows their annotation implies; if the "
          "features are sampled at another rate, pass --feature-rate ROWS_PER_SECOND"]


def make_plan(counter: builder.SkipCounter, annotation_files: Sequence[str],
              features_path: str, *, feature_key: str | None = None,
              modality: str = "inception", feature_rate: float | None = None,
              durations_file: str | None = None, tokenizer: str = "word",
              vocab_file: str | None = None, word_vectors: str | None = None,
              min_count: int = 1, max_videos: int | None = None,
              video_ids: Iterable[str] | None = None) -> builder.Plan:
  """Reads the annotations, sets up the tokens and opens the features (the `Didemo` plan).

  Args:
    counter: receives the repairs and skips of the annotation stage.
    annotation_files: per-video (`*_data_bwzhang.json`) or per-query json files.
    features_path: HDF5 file keyed by video or a directory of `<video>.npy|.npz`.
    feature_key: array key inside each video's HDF5 group / .npz.
    modality: modality name (`inception` for HSE's features).
    feature_rate: rows per second, overriding the annotation's feature_leng / duration.
    durations_file: json {video: seconds} for the per-query layout.
    tokenizer: "word" (HSE) or "wordpiece".
    vocab_file: WordPiece vocab.txt (default bert-base-uncased).
    word_vectors: GloVe/word2vec text file -> `<dataset_dir>/word_vectors.npy` (word only).
    min_count: word-vocabulary threshold on train counts.
    max_videos: only the first N videos of each file.
    video_ids: only these videos.

  Returns:
    The plan (its feature source is closed with `plan.resources`).
  """
  started = time.time()
  durations = None
  if durations_file is not None:
    durations = common.read_json(durations_file, expect=dict)
  cleaned, layouts = load_annotations(annotation_files, counter, durations=durations,
                                      video_ids=video_ids, max_videos=max_videos)
  if tokenizer == "word" and "train" not in cleaned:
    raise ValueError(f"--tokenizer word builds its vocabulary from a train annotation file; "
                     f"got splits {sorted(cleaned)}")
  train = (s for v in cleaned.get("train", []) for s in v[4]) if tokenizer == "word" else None
  vocab, encode, vectors = common.text_setup(tokenizer, train, min_count=min_count,
                                             vocab_file=vocab_file, word_vectors=word_vectors)
  items: dict[str, list[tuple]] = {}
  for split, videos in cleaned.items():
    items[split] = []
    for _, vid, dur, segs, sents, row_seconds in videos:
      kept = common.keep_tokenized(vid, sents, encode, counter)
      if kept is not None:
        keep, tokens = kept
        items[split].append((split, vid, dur, [segs[i] for i in keep],
                             [sents[i] for i in keep], tokens, row_seconds))

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
      "tokens": common.tokens_description(tokenizer, min_count),
      "tokenizer": encode.metadata(),
      "paragraph": "a video's sentences in file order",
  }
  resources, source, dim = common.open_features(
      features_path, feature_key, [it[1] for its in items.values() for it in its],
      candidate_ids)
  spec = builder.DatasetSpec(
      name=NAME, modalities={modality: dim}, tokenizer=tokenizer, vocab=list(vocab),
      description=DESCRIPTION, extra=extra)
  fn = functools.partial(build_record, source=source, modality=modality, dim=dim,
                         feature_rate=feature_rate)
  summary = common.Summary(
      started,
      lambda split, _: f"{layouts[split]} layout, {len(items[split])} after annotation checks",
      f"{tokenizer} vocabulary: {len(vocab)} tokens; {modality} dim {dim}",
      notes=functools.partial(_short_features_note, counter))
  return common.make_plan(spec, items, fn, vectors=vectors, summary=summary,
                          resources=resources)


DESCRIPTION = ("DiDeMo (Hendricks et al., ICCV 2017): moments in 30-second Flickr videos with "
               "natural-language descriptions.")
MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place in manual_dir the per-video annotation files train_data_bwzhang.json,
val_data_bwzhang.json and test_data_bwzhang.json (those present are converted) and the
features of the config's kind, one <video>.npy or .npz per video ([T, D] float; T =
feature_leng rows):
- inception: a directory inception/ ([T, 2048], HSE's TSN-Inception features);
- rgb: a directory rgb/ ([T, 2048]).
"""
# Feature kind -> dim (the per-video layout gives each video's row times).
FEATURE_KINDS = {"inception": 2048, "rgb": 2048}


class Didemo(builder.HvtBuilder):
  """DiDeMo: one record per video, its descriptions and their moments."""

  DESCRIPTION = DESCRIPTION
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [builder.HvtConfig(name=f"{kind}_{tok}", modalities={kind: dim},
                                       tokenizer=tok,
                                       description=f"{kind} features, {tok} tokens")
                     for kind, dim in FEATURE_KINDS.items() for tok in ("word", "wordpiece")]

  def make_plan(self, manual_dir: pathlib.Path, counter: builder.SkipCounter) -> builder.Plan:
    (modality,) = self.builder_config.modalities
    files = [os.fspath(manual_dir / f"{s}_data_bwzhang.json") for s in ("train", "val", "test")
             if (manual_dir / f"{s}_data_bwzhang.json").exists()]
    return make_plan(counter, files, os.fspath(manual_dir / modality), modality=modality,
                     tokenizer=self.builder_config.tokenizer)


def convert(annotation_files: Sequence[str], features_path: str, output_dir: str, *,
            num_workers: int = 1, num_shards: int | None = None,
            beam_options: str | None = None, verbose: bool = True,
            **kwargs: Any) -> tuple[str, builder.SkipCounter]:
  """Converts DiDeMo to the canonical dataset (the `Didemo` builder).

  Args:
    annotation_files: per-video (`*_data_bwzhang.json`) or per-query json files.
    features_path: HDF5 file keyed by video or a directory of `<video>.npy|.npz`.
    output_dir: data dir; the dataset goes to `output_dir/didemo/<config>/<version>`.
    num_workers: > 1: build the records on Beam's local FnApiRunner with N processes.
    num_shards: shards per split (None: by size).
    beam_options: Beam pipeline options for another runner.
    verbose: print the summary.
    **kwargs: the other arguments of `make_plan`.

  Returns:
    (dataset dir, the SkipCounter with every repair and skip).
  """
  make = functools.partial(make_plan, annotation_files=annotation_files,
                           features_path=features_path, **kwargs)
  return builder.convert(Didemo, make, output_dir, num_shards=num_shards,
                         num_workers=num_workers, beam_options=beam_options, verbose=verbose)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the converter's flags to an argparse (sub)parser."""
  parser.add_argument("--annotations", nargs="+", required=True,
                      help="per-video *_data_bwzhang.json or original per-query json files; "
                           "split = stem without _data_bwzhang/_data")
  common.add_feature_arguments(
      parser, modality="inception",
      rate_help="feature_leng/duration for the per-video layout, uniform over the duration "
                "for the per-query one")
  parser.add_argument("--durations", default=None,
                      help="json {video: seconds} for the per-query layout (default: "
                           "5 * num_segments)")
  common.add_common_arguments(parser, tokenizer="word")


def run(args: argparse.Namespace) -> str:
  """Runs the conversion from parsed flags; prints the summary; returns the dataset dir."""
  dataset_dir, _ = convert(
      args.annotations, args.features, args.output, durations_file=args.durations,
      **common.common_kwargs(args))
  return dataset_dir
