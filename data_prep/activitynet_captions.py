"""ActivityNet Captions converter: annotation json + video features -> canonical TFRecords.

    hvt-prepare activitynet_captions --annotations train.json val_1.json [val_2.json] \\
        --features sub_activitynet_v1-3.c3d.hdf5 --feature-key c3d_features --modality c3d \\
        --output DATA_DIR [--word-vectors glove.840B.300d.txt] [--min-count 1] \\
        [--num-workers N]

Decisions (each one is visible in the printed summary and the dataset metadata):
- Split names are the annotation file stems (train, val_1, val_2). val_1 and val_2 annotate
  the same videos, so a video may appear in several evaluation splits; a video in both train
  and an evaluation split is a train/test leak and stops the conversion with an error listing
  the ids. A key repeated inside one json file is an error too.
- Video ids keep the "v_" prefix of the json; features are looked up under the id, then
  without the prefix (or with it added, for ids without one).
- Tokens: `--tokenizer word` (default, HSE): the word vocabulary is built from the *train*
  split's kept sentences (after the repairs below, for the selected videos, before features
  are looked up) with `--min-count`; all splits are encoded with it ("<unk>" for other words),
  and a "train" annotation file is required. `--word-vectors FILE` (GloVe/word2vec text, e.g.
  glove.840B.300d as in HSE) stores `<dataset_dir>/word_vectors.npy` ([vocab_size, D] float32,
  row = vocabulary id) with the dataset, its OOV report in metadata["extra"]["word_vectors"].
  `--tokenizer wordpiece`: bert-base-uncased ids without [CLS]/[SEP]; a sentence without any
  token is skipped.
- Timestamps of feature rows: row r of T rows covers [r * dur / T, (r + 1) * dur / T], i.e.
  rows spread uniformly over the video, for every feature kind (C3D windows at stride 8 are
  uniform in time, and the real files do not record their frame rate). With
  `--feature-rate R` (rows per second, e.g. 1 for I3D) row r covers [r / R, (r + 1) / R],
  clipped to the duration; rows starting at or after the duration are dropped (counted), and
  fewer than 90% of the round(duration * R) rows the duration implies are kept and counted.
- Per sentence, in this order: an empty/whitespace sentence is skipped; a malformed segment
  (not two finite numbers) is skipped; start > end is swapped if both ends lie in
  [0, duration], else skipped; a segment with no overlap with [0, duration] is skipped; then
  the kept sentence counts repairs: whitespace normalised (leading/trailing/repeated spaces),
  start > end swapped, start < 0 clipped, end > duration clipped; a zero-length segment
  (start == end after these rules, e.g. [34.77, 34.77] of v_N7ppHQNikv8 in train.json) is
  kept and counted (the input views decide whether it can be a localization target).
  Repairs are counted per sentence, for sentences kept at this annotation stage (a video may
  still be skipped later for its features).
- Per video: invalid duration, timestamps/sentences length mismatch or no valid sentence ->
  skipped at the annotation stage; features missing, zero rows or NaN/Inf -> skipped when the
  features are read; feature rows that are entirely 0 (a zeroed block of a damaged file) are
  kept and counted. A feature file that cannot be read, or a video whose feature dim differs
  from that of most of the first videos (the odd video is named), is an error naming the
  file (a broken file, not a quirk). A split left without records is not written (counted);
  the other splits are.

The builder (`ActivitynetCaptions`, `tfds build activitynet_captions`) has a config per
feature kind and tokenizer (`c3d_word`, `c3d_wordpiece`, `inception_*`, `i3d_*`);
`hvt-prepare` picks the one whose dims match the feature file, or names a new one by its
modality, dim and tokenizer (e.g. `rgb8_word`).

`convert` takes a record hook (`record_fn`, applied to every record where it is built) and the
dataset name/description/extra metadata, so derived datasets (data_prep.activitynet_labels)
are written in the same single pass.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from data_prep import common
from data_prep import features as features_lib
from data_prep import builder

NAME = "activitynet_captions"
DESCRIPTION = "ActivityNet Captions (Krishna et al., ICCV 2017): dense video captions."

# Reason strings (also the keys of the metadata counts).
SENTENCE_EMPTY = common.SENTENCE_EMPTY
SEGMENT_MALFORMED = common.SEGMENT_MALFORMED
SEGMENT_SWAPPED = common.SEGMENT_SWAPPED
SEGMENT_REVERSED_OUTSIDE = common.SEGMENT_REVERSED_OUTSIDE
SEGMENT_OUTSIDE = common.SEGMENT_OUTSIDE
SEGMENT_CLIPPED_START = common.SEGMENT_CLIPPED_START
SEGMENT_CLIPPED_END = common.SEGMENT_CLIPPED_END
SENTENCE_WHITESPACE = common.SENTENCE_WHITESPACE
VIDEO_BAD_DURATION = common.VIDEO_BAD_DURATION
VIDEO_MALFORMED = common.VIDEO_MALFORMED
VIDEO_NO_SENTENCES = common.VIDEO_NO_SENTENCES
FEATURES_MISSING = common.FEATURES_MISSING
FEATURES_EMPTY = common.FEATURES_EMPTY
FEATURES_NONFINITE = common.FEATURES_NONFINITE


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the converter's flags to an argparse (sub)parser."""
  parser.add_argument("--annotations", nargs="+", required=True,
                      help="annotation json files; split name = file stem (train, val_1, ...)")
  common.add_feature_arguments(parser, modality="c3d",
                               rate_help="rows spread uniformly over the video duration")
  common.add_common_arguments(parser, tokenizer="word")


def run(args: argparse.Namespace) -> str:
  """Runs the conversion from parsed flags; prints the summary; returns the dataset dir."""
  dataset_dir, _ = convert(
      args.annotations, args.features, args.output, **common.common_kwargs(args))
  return dataset_dir


def clean_annotation(video_id: str, ann: Any, counter: builder.SkipCounter
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
  checked = common.check_video_annotation(video_id, ann, counter,
                                         lists=("sentences", "timestamps"))
  if checked is None:
    return None
  duration, raw_sentences, raw_segments = checked
  kept = common.clean_sentences(
      video_id, zip(raw_sentences, raw_segments),
      lambda seg: common.clean_seconds_segment(seg, duration, video_id, counter), counter)
  return None if kept is None else (duration, kept[0], kept[1])


def candidate_ids(video_id: str) -> list[str]:
  """Keys to try in a feature source: the id as given, then without/with the "v_" prefix."""
  if video_id.startswith("v_"):
    return [video_id, video_id[2:]]
  return [video_id, "v_" + video_id]


def build_record(item: tuple, counter: builder.SkipCounter, *,
                 source: features_lib.FeatureSource, modality: str, dim: int,
                 feature_rate: float | None,
                 record_fn: Callable[[dict, builder.SkipCounter], dict | None] | None = None
                 ) -> dict | None:
  """Reads one video's features and assembles its canonical record (runs in a worker).

  Args:
    item: (split, video_id, duration, segments, sentences, tokens) from the annotation stage.
    counter: receives feature repairs and skips.
    source: the feature source.
    modality: modality name.
    dim: expected feature dim.
    feature_rate: rows per second, or None (rows spread uniformly over the duration).
    record_fn: optional hook `record_fn(record, counter) -> record or None (skip)`.

  Returns:
    The record, or None if the video is skipped.
  """
  split, video_id, duration, segments, sentences, tokens = item
  feats = common.checked_features(source, video_id, dim, counter, candidate_ids)
  if feats is None:
    return None
  row_seconds = 1.0 / feature_rate if feature_rate else None
  # With a known rate the duration implies round(duration * rate) rows (< 90% is counted).
  expected = round(duration * feature_rate) if feature_rate else None
  feats, stamps = common.fit_features(feats, duration, row_seconds, expected, video_id,
                                      counter)
  record = common.make_record(split, video_id, duration, {modality: feats},
                              {modality: stamps}, segments, sentences, tokens)
  return record if record_fn is None else record_fn(record, counter)


def load_annotations(annotation_files: Sequence[str], counter: builder.SkipCounter, *,
                     train_required: bool = True, video_ids: Iterable[str] | None = None,
                     max_videos: int | None = None
                     ) -> dict[str, list[tuple[str, float, list, list[str]]]]:
  """Reads and cleans the annotation files.

  Args:
    annotation_files: json files; split name = file stem.
    counter: receives every repair and skip.
    train_required: a "train" file must be among them (it defines the word vocabulary).
    video_ids: only these videos (ids with or without the "v_" prefix); others are ignored,
      not counted; an id in no file is a counted skip.
    max_videos: only the first N videos of each file (json order).

  Returns:
    split -> [(video_id, duration, segments, sentences)] for the videos kept.

  Raises:
    ValueError: two files for one split, no train file, a video in train and another split,
      an unreadable file, `video_ids` of which none is in the files.
  """
  splits: dict[str, dict] = {}
  for path in annotation_files:
    split = common.split_from_stem(path)
    if split in splits:
      raise ValueError(f"two annotation files map to split {split!r}: {path}")
    splits[split] = common.read_json(path, expect=dict)
  if train_required and "train" not in splits:
    raise ValueError(f"a train.json annotation file is required (the vocabulary is built "
                     f"from it); got splits {sorted(splits)}")
  if "train" in splits:
    common.check_disjoint(splits, pairs=[("train", s) for s in splits if s != "train"],
                          note="")
  selected = common.select_videos(splits, counter, video_ids=video_ids,
                                  max_videos=max_videos, aliases=candidate_ids)
  cleaned = {}
  for split, data in splits.items():
    cleaned[split] = []
    for vid in selected[split]:
      result = clean_annotation(vid, data[vid], counter)
      if result is not None:
        cleaned[split].append((vid, *result))
  return cleaned


def make_plan(counter: builder.SkipCounter, annotation_files: Sequence[str],
              features_path: str, *, feature_key: str | None = None, modality: str = "c3d",
              feature_rate: float | None = None, min_count: int = 1,
              max_videos: int | None = None, video_ids: Iterable[str] | None = None,
              tokenizer: str = "word", vocab_file: str | None = None,
              word_vectors: str | None = None, name: str = NAME,
              description: str = DESCRIPTION, extra: Mapping[str, Any] | None = None,
              record_fn: Callable[[dict, builder.SkipCounter], dict | None] | None = None,
              extra_fn: Callable[[dict], Mapping[str, Any]] | None = None,
              summary: bool = True) -> builder.Plan:
  """Reads the annotations, sets up the tokens and opens the features (see `convert`).

  Returns:
    The `builder.Plan` (its feature source is closed with `plan.resources`).
  """
  started = time.time()
  cleaned = load_annotations(annotation_files, counter, train_required=tokenizer == "word",
                             video_ids=video_ids, max_videos=max_videos)
  train = (s for v in cleaned.get("train", []) for s in v[3]) if tokenizer == "word" else None
  vocab, encode, vectors = common.text_setup(tokenizer, train, min_count=min_count,
                                             vocab_file=vocab_file, word_vectors=word_vectors)
  items = {}
  for split, videos in cleaned.items():
    items[split] = []
    for vid, dur, segs, sents in videos:
      kept = common.keep_tokenized(vid, sents, encode, counter)
      if kept is not None:
        keep, tokens = kept
        items[split].append((split, vid, dur, [segs[i] for i in keep],
                             [sents[i] for i in keep], tokens))

  resources, source, dim = common.open_features(
      features_path, feature_key, [it[1] for its in items.values() for it in its],
      candidate_ids)
  fn = functools.partial(build_record, source=source, modality=modality, dim=dim,
                         feature_rate=feature_rate, record_fn=record_fn)
  spec = builder.DatasetSpec(
      name=name, modalities={modality: dim}, tokenizer=tokenizer, vocab=list(vocab),
      description=description,
      extra={"annotation_files": [pathlib.Path(p).name for p in annotation_files],
             "features": os.path.basename(os.path.normpath(features_path)),
             "feature_key": feature_key, "min_count": min_count,
             "tokens": common.tokens_description(tokenizer, min_count),
             "tokenizer": encode.metadata(),
             "timestamps": (f"row r covers [r/{feature_rate}, (r+1)/{feature_rate}] s, "
                            "clipped" if feature_rate
                            else "rows spread uniformly over the duration"),
             **(extra or {})})
  report = common.Summary(
      started, lambda split, _: f"{len(items[split])} after annotation checks",
      f"{tokenizer} vocabulary: {len(vocab)} tokens; {modality} dim {dim}")
  return common.make_plan(spec, items, fn, vectors=vectors, extra_fn=extra_fn,
                          summary=report if summary else None, resources=resources)


# Feature kinds as shipped (data README): file or dir in manual_dir, HDF5 key, dim, rate.
FEATURE_KINDS = {
    "c3d": {"features": "sub_activitynet_v1-3.c3d.hdf5", "feature_key": "c3d_features",
            "dim": 500, "feature_rate": None},
    "inception": {"features": "inception", "feature_key": None, "dim": 2048,
                  "feature_rate": None},
    "i3d": {"features": "i3d", "feature_key": None, "dim": 1024, "feature_rate": 1.0},
}
MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place in manual_dir the ActivityNet Captions annotation files train.json and val_1.json
(val_2.json too, if you have it) and the features of the config's kind:
- c3d: sub_activitynet_v1-3.c3d.hdf5 (f["v_<id>"]["c3d_features"], float [T, 500]);
- inception: a directory inception/ with one <id>.npy or .npz per video, [T, 2048];
- i3d: a directory i3d/ with one <id>.npy or .npz per video, [T, 1024], 1 row per second.
"""


def builder_configs() -> list[builder.HvtConfig]:
  """One config per feature kind and tokenizer (`c3d_word`, `c3d_wordpiece`, ...)."""
  return [builder.HvtConfig(name=f"{kind}_{tok}", modalities={kind: k["dim"]}, tokenizer=tok,
                            description=f"{kind} features, {tok} tokens",
                            options={"features": k["features"],
                                     "feature_key": k["feature_key"],
                                     "feature_rate": k["feature_rate"]})
          for kind, k in FEATURE_KINDS.items() for tok in ("word", "wordpiece")]


def manual_annotations(manual_dir: pathlib.Path) -> list[str]:
  """The annotation files present in `manual_dir` (train.json, val_1.json, val_2.json)."""
  return [os.fspath(manual_dir / f) for f in ("train.json", "val_1.json", "val_2.json")
          if (manual_dir / f).exists()]


def manual_plan_kwargs(config: builder.HvtConfig, manual_dir: pathlib.Path) -> dict[str, Any]:
  """`make_plan` arguments of a `tfds build` from `manual_dir` with `config`."""
  (modality,) = config.modalities
  return dict(annotation_files=manual_annotations(manual_dir),
              features_path=os.fspath(manual_dir / config.options["features"]),
              feature_key=config.options["feature_key"], modality=modality,
              feature_rate=config.options["feature_rate"], tokenizer=config.tokenizer)


class ActivitynetCaptions(builder.HvtBuilder):
  """ActivityNet Captions: one record per video, its captions and their segments."""

  DESCRIPTION = DESCRIPTION
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = builder_configs()

  def make_plan(self, manual_dir: pathlib.Path, counter: builder.SkipCounter) -> builder.Plan:
    return make_plan(counter, **manual_plan_kwargs(self.builder_config, manual_dir))


def convert(annotation_files: Sequence[str], features_path: str, output_dir: str, *,
            num_workers: int = 1, num_shards: int | None = None,
            beam_options: str | None = None, verbose: bool = True,
            counter: builder.SkipCounter | None = None,
            builder_cls: type[builder.HvtBuilder] = ActivitynetCaptions,
            **kwargs: Any) -> tuple[str, builder.SkipCounter]:
  """Converts ActivityNet Captions to the canonical dataset (the `ActivitynetCaptions` builder).

  Args:
    annotation_files: json files; split name = file stem. One must be "train" for the word
      tokenizer.
    features_path: HDF5 file or directory of per-video .npy/.npz (see data_prep.features).
    output_dir: data dir; the dataset goes to `output_dir/<name>/<config>/<version>`.
    num_workers: > 1: build the records on Beam's local FnApiRunner with N processes.
    num_shards: shards per split, or None to shard by size.
    beam_options: Beam pipeline options for another runner (`builder.beam_pipeline_options`).
    verbose: print the summary table.
    counter: counter to add this conversion's repairs/skips to (default: a new one).
    builder_cls: the builder (a derived dataset passes its own, with `name`).
    **kwargs: `make_plan` arguments: feature_key (key of the array inside each video's HDF5
      group / .npz), modality (name for `features/<modality>`), feature_rate (rows per
      second, or None for uniform spreading over the duration), min_count (vocabulary
      threshold on train counts), max_videos (only the first N videos of each file, json
      order), video_ids (only these videos, ids with or without the "v_" prefix; others are
      ignored, not counted), tokenizer ("word": vocabulary from train, or "wordpiece"),
      vocab_file (WordPiece vocab.txt, default bert-base-uncased), word_vectors (GloVe/word2vec
      text file -> `<dataset_dir>/word_vectors.npy`, word only), name/description/extra (the
      dataset's name, description and more metadata["extra"] entries, which override the
      converter's own), record_fn (picklable hook `record_fn(record, counter) -> record or
      None`, applied to every record where it is built, a Beam worker when `num_workers > 1`;
      None skips the video, count the reason in `counter`), extra_fn (see `builder.Plan`).

  Returns:
    (dataset dir, the SkipCounter with every repair and skip).
  """
  make = functools.partial(make_plan, annotation_files=annotation_files,
                           features_path=features_path, **kwargs)
  return builder.convert(builder_cls, make, output_dir, counter=counter,
                         num_shards=num_shards, num_workers=num_workers,
                         beam_options=beam_options, verbose=verbose)
