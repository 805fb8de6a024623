"""ActivityNet v1.3 action labels, joined onto ActivityNet Captions records.

    hvt-prepare activitynet_labels --labels activity_net.v1-3.min.json \\
        --annotations train.json val_1.json --features sub_activitynet_v1-3.c3d.hdf5 \\
        --feature-key c3d_features --output DATA_DIR [--drop-unlabeled] [captions flags]

Input: the official `activity_net.v1-3.min.json`:
`{"version", "taxonomy": [{"nodeId", "nodeName", "parentId", "parentName"}, ...],
  "database": {"<youtube id>": {"subset": "training"|"validation"|"testing", "duration", "url",
  "resolution", "annotations": [{"segment": [s, e], "label": "..."}]}}}`.

Decisions:
- Classes are the taxonomy's leaves (nodes that are no node's parent), sorted by name: the 200
  activity classes of v1.3. Two leaves with one name, or an annotation label that is not a
  leaf, is an error naming the file, the video and the label.
- A video's label is its annotations' label. When a video's annotations carry several labels
  (rare), the label with the largest total annotated duration wins (then the most segments,
  then the alphabetically first), counted for the converted videos only. Videos without
  annotations (the testing subset) have no label.
- ActivityNet Captions ids are "v_" + the YouTube id (which may itself start with "v_"), so the
  label map is keyed by "v_" + database key; a captions id without the prefix is looked up with
  it added.
- Every annotation is also kept as a labelled action instance (`instances/segments` in
  seconds as written, `instances/labels`), in the file's order: zero-shot recognition of
  "each labelled instance" (HSE §4.4) cuts them. An annotation whose segment is not two
  finite numbers is left out of the instances (counted, repair BAD_INSTANCE; it still names
  the video's label); a reversed one (start > end) is swapped (counted, REVERSED_INSTANCE).
- A captions video with no label keeps `label == ""` (counted as a repair "no action label");
  with `--drop-unlabeled` it is dropped (counted as a skip). The per-split number of
  unlabeled videos is also stored in metadata extra["unlabeled"].
- The conversion is `data_prep.activitynet_captions.convert` with a record hook that sets the
  label where each record is built (in the worker processes with `--num-workers`), written
  once as the `activitynet_labels` dataset: same vocabulary, modalities, repairs and skips as
  the captions dataset, plus the label counts. The builder `ActivitynetLabels` has the
  captions builder's configs; its manual_dir holds the labels file too.
"""

from __future__ import annotations

import argparse
import collections
import functools
import math
import os
import pathlib
import time
from typing import Any

from data_prep import activitynet_captions
from data_prep import common
from data_prep import builder
from hvt_jax.input import reader

NAME = "activitynet_labels"
MULTI_LABEL = "video has several action labels (longest kept)"
NO_LABEL = "no action label"
NO_LABEL_DROPPED = "no action label (dropped)"
BAD_INSTANCE = "action instance without a valid segment (left out of instances)"
REVERSED_INSTANCE = "action instance with start > end (swapped)"
DESCRIPTION = "ActivityNet Captions with ActivityNet v1.3 action labels."


def _field(data: dict, field: str, kind: type, path: str) -> Any:
  if field not in data:
    raise ValueError(f"{path}: missing field {field!r} (not an ActivityNet v1.3 file?)")
  if not isinstance(data[field], kind):
    raise ValueError(f"{path}: field {field!r} must be a {kind.__name__}, got "
                     f"{type(data[field]).__name__}")
  return data[field]


def parse_taxonomy(taxonomy: list, path: str = "<taxonomy>"
                   ) -> tuple[list[str], dict[str, str | None]]:
  """Leaf classes and parent map of a taxonomy list (see `load_taxonomy`)."""
  parents: dict[str, str | None] = {}
  parent_ids = set()
  names_by_id: dict[Any, str] = {}
  for i, node in enumerate(taxonomy):
    if not isinstance(node, dict) or not {"nodeId", "nodeName", "parentId"} <= node.keys():
      raise ValueError(f"{path}: taxonomy[{i}] must have nodeId, nodeName, parentId; got "
                       f"{node!r:.100}")
    if node["nodeId"] in names_by_id:
      raise ValueError(f"{path}: taxonomy nodeId {node['nodeId']!r} appears twice")
    names_by_id[node["nodeId"]] = node["nodeName"]
    if node["parentId"] is not None:
      parent_ids.add(node["parentId"])
  leaves = []
  for node in taxonomy:
    parent = node.get("parentName")
    if parent is None and node["parentId"] is not None:
      parent = names_by_id.get(node["parentId"])
    parents[node["nodeName"]] = parent
    if node["nodeId"] not in parent_ids:
      leaves.append(node["nodeName"])
  if dup := sorted({n for n, c in collections.Counter(leaves).items() if c > 1}):
    raise ValueError(f"{path}: taxonomy has several leaves named {dup[:5]}")
  if not leaves:
    raise ValueError(f"{path}: taxonomy has no leaf node")
  return sorted(leaves), parents


def load_taxonomy(path: str) -> tuple[list[str], dict[str, str | None]]:
  """Reads the class list of an ActivityNet v1.3 json.

  Args:
    path: `activity_net.v1-3.min.json` (or any file with its "taxonomy" list).

  Returns:
    (leaf class names sorted by name: [200] for v1.3, {node name: parent name, None for the
    root}).

  Raises:
    ValueError: missing/ill-formed taxonomy (names the file and field), duplicate leaf names.
  """
  return parse_taxonomy(_field(common.read_json(path, expect=dict), "taxonomy", list, path), path)


def video_label(annotations: list, where: str) -> tuple[str | None, int]:
  """A video's label from its annotations (longest total duration; see module docstring).

  Args:
    annotations: [{"segment": [s, e], "label": str}, ...].
    where: "file, video id" for error messages.

  Returns:
    (label or None when there is no annotation, number of distinct labels).
  """
  totals: dict[str, float] = collections.defaultdict(float)
  counts: collections.Counter[str] = collections.Counter()
  for j, ann in enumerate(annotations):
    if not isinstance(ann, dict) or not isinstance(ann.get("label"), str) or not ann["label"]:
      raise ValueError(f"{where}: annotations[{j}] has no label: {ann!r:.100}")
    label = ann["label"]
    counts[label] += 1
    try:
      start, end = (float(x) for x in ann.get("segment", ()))
      length = abs(end - start)
    except (TypeError, ValueError):
      length = 0.0  # A malformed segment still names the label, with no weight.
    totals[label] += length if math.isfinite(length) else 0.0
  if not counts:
    return None, 0
  best = min(counts, key=lambda l: (-totals[l], -counts[l], l))
  return best, len(counts)


def video_instances(annotations: list) -> dict[str, Any]:
  """A video's labelled action instances from its (label-checked) annotations.

  Args:
    annotations: [{"segment": [s, e], "label": str}, ...] (`video_label` has checked labels).

  Returns:
    {"segments": [[s, e], ...] float seconds, "labels": [str], "bad": annotations left out
    (segment not two finite numbers), "reversed": segments swapped (start > end)}, in the
    annotations' order.
  """
  segments, names, bad, reversed_ = [], [], 0, 0
  for ann in annotations:
    try:
      start, end = (float(x) for x in ann.get("segment", ()))
    except (TypeError, ValueError):
      bad += 1
      continue
    if not (math.isfinite(start) and math.isfinite(end)):
      bad += 1
      continue
    if start > end:
      start, end, reversed_ = end, start, reversed_ + 1
    segments.append([start, end])
    names.append(ann["label"])
  return {"segments": segments, "labels": names, "bad": bad, "reversed": reversed_}


def label_map(path: str, counter: builder.SkipCounter | None = None,
              multi_labeled: set[str] | None = None,
              instances: dict[str, dict] | None = None) -> dict[str, str]:
  """Maps ActivityNet Captions video ids to their v1.3 action label.

  Args:
    path: `activity_net.v1-3.min.json`.
    counter: if given, counts every database video with several labels (MULTI_LABEL).
    multi_labeled: if given, receives the ids ("v_<youtube id>") of the videos with several
      labels (a conversion counts those it converts, in `label_record`).
    instances: if given, receives {"v_<youtube id>": `video_instances(...)`} for every video
      with at least one annotation.

  Returns:
    {"v_<youtube id>": label} for every database video with at least one annotation.

  Raises:
    ValueError: a malformed file, or a label that is not a taxonomy leaf (names the file,
      the video and the label).
  """
  data = common.read_json(path, expect=dict)
  leaves = set(parse_taxonomy(_field(data, "taxonomy", list, path), path)[0])
  database = _field(data, "database", dict, path)
  labels = {}
  for key, entry in database.items():
    if not isinstance(entry, dict):
      raise ValueError(f"{path}: database[{key!r}] must be an object")
    annotations = entry.get("annotations") or []
    if not isinstance(annotations, list):
      raise ValueError(f"{path}: database[{key!r}]['annotations'] must be a list")
    label, distinct = video_label(annotations, f"{path}, video {key!r}")
    if label is None:
      continue
    for ann in annotations:
      if ann["label"] not in leaves:
        raise ValueError(f"{path}: video {key!r} has label {ann['label']!r}, which is not a "
                         "leaf of the taxonomy")
    video_id = "v_" + key
    if distinct > 1 and counter is not None:
      counter.repair(MULTI_LABEL, video_id)
    if distinct > 1 and multi_labeled is not None:
      multi_labeled.add(video_id)
    labels[video_id] = label
    if instances is not None:
      instances[video_id] = video_instances(annotations)
  return labels


def lookup_label(video_id: str, labels: dict[str, Any]) -> Any:
  """The entry of a captions id ("v_<youtube id>", or a bare YouTube id) in a map keyed by
  "v_<youtube id>" (`label_map`'s labels or instances), or None."""
  label = labels.get(video_id)
  if label is None and not video_id.startswith("v_"):
    label = labels.get("v_" + video_id)
  return label


def label_record(record: dict, counter: builder.SkipCounter, *, labels: dict[str, str],
                 drop_unlabeled: bool = False,
                 multi_labeled: frozenset[str] = frozenset(),
                 instances: dict[str, dict] | None = None) -> dict | None:
  """Sets `label` and `instances` on one ActivityNet Captions record (the captions
  converter's record hook).

  Args:
    record: canonical record (id "v_<youtube id>" or a bare YouTube id).
    counter: counts a video without a label (NO_LABEL repair, or NO_LABEL_DROPPED skip) and
      a labelled one in `multi_labeled` (MULTI_LABEL repair).
    labels: from `label_map`.
    drop_unlabeled: drop a video without a label instead of keeping `label == ""`.
    multi_labeled: ids ("v_<youtube id>") of the videos whose annotations carry several
      labels (`label_map`'s `multi_labeled`).
    instances: `label_map`'s instances; the record's `instances` are its video's (none for
      a video without annotations), counting BAD_INSTANCE / REVERSED_INSTANCE repairs.

  Returns:
    A shallow copy with `label` and `instances` set, or None when the video is dropped.
  """
  label = lookup_label(record["video_id"], labels)
  if label is None:
    if drop_unlabeled:
      counter.skip(NO_LABEL_DROPPED, record["video_id"])
      return None
    counter.repair(NO_LABEL, record["video_id"])
  else:
    vid = record["video_id"]
    if vid in multi_labeled or (not vid.startswith("v_") and "v_" + vid in multi_labeled):
      counter.repair(MULTI_LABEL, vid)
  inst = lookup_label(record["video_id"], instances or {}) or {
      "segments": [], "labels": [], "bad": 0, "reversed": 0}
  for reason, n in ((BAD_INSTANCE, inst["bad"]), (REVERSED_INSTANCE, inst["reversed"])):
    for _ in range(n):
      counter.repair(reason, record["video_id"])
  return dict(record, label=label or "", instances={
      "segments": inst["segments"], "labels": inst["labels"]})


def unlabeled_per_split(stats: dict) -> dict[str, dict[str, int]]:
  """`extra_fn` of the write: {"unlabeled": {split: videos without a label}} (kept or dropped).

  Args:
    stats: the per-split statistics the builder passes to `extra_fn` (`builder.Plan`).

  Returns:
    The extra metadata entry.
  """
  return {"unlabeled": {
      split: c["repaired"].get(NO_LABEL, 0) + c["skipped"].get(NO_LABEL_DROPPED, 0)
      for split, c in stats["split_counts"].items()}}


def make_plan(counter: builder.SkipCounter, annotation_files: list[str], features_path: str,
              labels_file: str, *, drop_unlabeled: bool = False,
              **captions_kwargs: Any) -> builder.Plan:
  """The captions plan with the label hook (see `convert`), as dataset `activitynet_labels`."""
  classes, _ = load_taxonomy(labels_file)
  multi: set[str] = set()
  instances: dict[str, dict] = {}
  labels = label_map(labels_file, multi_labeled=multi, instances=instances)
  return activitynet_captions.make_plan(
      counter, annotation_files, features_path, name=NAME, description=DESCRIPTION,
      extra={"classes": classes, "labels_file": pathlib.Path(labels_file).name,
             "drop_unlabeled": drop_unlabeled},
      record_fn=functools.partial(label_record, labels=labels, drop_unlabeled=drop_unlabeled,
                                  multi_labeled=frozenset(multi), instances=instances),
      extra_fn=unlabeled_per_split, summary=False, **captions_kwargs)


LABELS_FILE = "activity_net.v1-3.min.json"


class ActivitynetLabels(builder.HvtBuilder):
  """ActivityNet Captions records with their ActivityNet v1.3 action label."""

  DESCRIPTION = DESCRIPTION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (activitynet_captions.MANUAL_DOWNLOAD_INSTRUCTIONS
                                  + f"and the ActivityNet v1.3 labels file {LABELS_FILE}.\n")
  BUILDER_CONFIGS = activitynet_captions.builder_configs()

  def make_plan(self, manual_dir: pathlib.Path, counter: builder.SkipCounter) -> builder.Plan:
    return make_plan(counter, labels_file=os.fspath(manual_dir / LABELS_FILE),
                     **activitynet_captions.manual_plan_kwargs(self.builder_config,
                                                               manual_dir))


def convert(annotation_files: list[str], features_path: str, labels_file: str,
            output_dir: str, *, drop_unlabeled: bool = False, num_shards: int | None = None,
            num_workers: int = 1, beam_options: str | None = None, verbose: bool = True,
            **captions_kwargs: Any) -> tuple[str, builder.SkipCounter]:
  """Converts ActivityNet Captions with v1.3 action labels (see the module docstring).

  Args:
    annotation_files: ActivityNet Captions json files (split = file stem; train required).
    features_path: feature file/dir, as for `activitynet_captions.convert`.
    labels_file: `activity_net.v1-3.min.json`.
    output_dir: data dir; the dataset goes to `output_dir/activitynet_labels/<config>/<version>`.
    drop_unlabeled: drop captions videos that have no label.
    num_shards: shards per split, or None to shard by size.
    num_workers: > 1: build the records on Beam's local FnApiRunner with N processes.
    beam_options: Beam pipeline options for another runner.
    verbose: print the summary table.
    **captions_kwargs: other keyword arguments of `activitynet_captions.make_plan`
      (feature_key, modality, feature_rate, tokenizer, vocab_file, word_vectors, min_count,
      max_videos, video_ids).

  Returns:
    (dataset dir, the SkipCounter with the captions and label counts).
  """
  started = time.time()
  make = functools.partial(make_plan, annotation_files=annotation_files,
                           features_path=features_path, labels_file=labels_file,
                           drop_unlabeled=drop_unlabeled, **captions_kwargs)
  dataset_dir, counter = builder.convert(ActivitynetLabels, make, output_dir,
                                         num_shards=num_shards, num_workers=num_workers,
                                         beam_options=beam_options, verbose=False)
  if verbose:
    what = "dropped" if drop_unlabeled else "kept with an empty label"
    meta = reader.load_metadata(dataset_dir)
    common.print_summary(dataset_dir, counter, common.Summary(
        started, lambda split, meta: (f"{meta['extra']['unlabeled'][split]} without an "
                                      f"action label, {what}"),
        f"{len(meta['extra']['classes'])} classes"))
  return dataset_dir, counter


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the ActivityNet Captions flags plus --labels/--drop-unlabeled."""
  activitynet_captions.add_arguments(parser)
  parser.add_argument("--labels", required=True,
                      help="ActivityNet v1.3 json (activity_net.v1-3.min.json)")
  parser.add_argument("--drop-unlabeled", action="store_true",
                      help="drop captions videos without an action label (default: keep "
                           "them with an empty label)")


def run(args: argparse.Namespace) -> str:
  """Runs the labelled conversion from parsed flags; returns the dataset dir."""
  dataset_dir, _ = convert(
      args.annotations, args.features, args.labels, args.output,
      drop_unlabeled=args.drop_unlabeled, **common.common_kwargs(args))
  return dataset_dir
