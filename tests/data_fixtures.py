"""Helpers shared by the tests: reading written datasets back, writing inputs (also whole
tiny releases in each dataset's real layout), running the console scripts."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import pickle
import tempfile
from typing import Any

import numpy as np

from hvt_jax.input import reader


def read_examples(dataset_dir: str, split: str) -> dict[str, dict]:
  """A written split as {video_id: example} with numpy values (tokens stay ragged)."""
  return {ex["video_id"].decode(): ex
          for ex in reader.load_split(dataset_dir, split).as_numpy_iterator()}


def token_lists(example: dict) -> list[list[int]]:
  """An example's token ids as plain lists of ints (ragged or already nested)."""
  tokens = example["tokens"]
  rows = tokens.to_list() if hasattr(tokens, "to_list") else tokens
  return [[int(t) for t in row] for row in rows]


def console_script_env(devices: int) -> dict[str, str]:
  """The environment of a subprocess that runs the console scripts from this checkout:
  ``devices`` simulated CPU devices and the test session's persistent compilation cache
  and XLA level (tests/conftest.py), so that a program compiled once is not compiled
  again by the next subprocess."""
  cache = os.environ.get("HVT_TEST_JAX_CACHE",
                         os.path.join(tempfile.gettempdir(), "hvt_jax_test_cache"))
  repo = pathlib.Path(__file__).resolve().parents[1]
  return dict(os.environ, PYTHONPATH=str(repo),
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
              JAX_DISABLE_MOST_OPTIMIZATIONS="1")


def write_json(path: pathlib.Path, obj: Any) -> str:
  """Writes `obj` as UTF-8 json; returns the path as a string."""
  path.write_text(json.dumps(obj), encoding="utf-8")
  return str(path)


def shard_examples(dataset_dir: str) -> dict[str, list]:
  """{shard file name: its records as parsed `tf.train.Example` protos, in file order}.

  Two datasets with equal results hold the same examples, record for record and shard for
  shard. (Not the raw bytes: protobuf writes the entries of an Example's feature map in an
  order that may differ between processes; the parsed messages compare the values.)
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {p.name: [tf.train.Example.FromString(r.numpy())
                   for r in tf.data.TFRecordDataset(str(p))]
          for p in sorted(pathlib.Path(dataset_dir).glob("*.tfrecord*"))}


# ------------------------------------------------------------------------------------------
# Tiny releases in each dataset's real layout, under the file names the releases ship, for
# the README's commands (tests/test_readme_commands.py). Features are random; the words come
# from a small list so that every split shares a vocabulary.

_WORDS = ("a man woman dog throws catches the ball red blue runs into room opens door "
          "picks up phone sits down").split()


def _sentence(rng, n_words: int = 6) -> str:
  return " ".join(rng.choice(_WORDS, size=n_words)) + "."


def _moments(rng, duration: float, n: int) -> list[list[float]]:
  starts = rng.uniform(0, duration * 0.7, size=n)
  ends = np.minimum(starts + rng.uniform(2.0, duration * 0.3 + 2.0, size=n), duration)
  return [[round(float(s), 2), round(float(e), 2)] for s, e in zip(starts, ends)]


def write_activitynet_release(root: pathlib.Path, sizes: dict[str, int] | None = None,
                              seed: int = 0) -> None:
  """ActivityNet Captions (Krishna et al.): ``train.json``, ``val_1.json``, ``val_2.json``
  ({"v_<id>": {duration, timestamps, sentences}}), the C3D features
  ``sub_activitynet_v1-3.c3d.hdf5`` (group ``v_<id>``, dataset ``c3d_features`` [T, 500],
  ~3.75 rows/s) and GloVe ``glove.840B.300d.txt`` (a word and 300 values per line)."""
  import h5py  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  sizes = sizes or {"train": 12, "val_1": 8, "val_2": 4}
  with h5py.File(root / "sub_activitynet_v1-3.c3d.hdf5", "w") as f:
    for split, n in sizes.items():
      ann = {}
      for i in range(n):
        vid = f"v_{split}{i:03d}"
        duration = round(float(rng.uniform(8.0, 16.0)), 2)
        k = int(rng.integers(2, 4))
        ann[vid] = {"duration": duration, "timestamps": _moments(rng, duration, k),
                    "sentences": [_sentence(rng) for _ in range(k)]}
        rows = int(duration * 3.75)
        f.create_group(vid).create_dataset(
            "c3d_features", data=rng.normal(size=(rows, 500)).astype(np.float32))
      write_json(root / f"{split}.json", ann)
  lines = [" ".join([w] + [f"{v:.3f}" for v in rng.normal(size=300)]) for w in _WORDS]
  (root / "glove.840B.300d.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


TVR_CLIP = 1.5


def write_tvr_release(root: pathlib.Path, sizes: dict[str, int] | None = None,
                      seed: int = 0) -> None:
  """TVR (Lei et al. 2020): ``tvr_{train,val,test_public}_release.jsonl`` (test_public
  query-only: desc_id and desc), ``tvr_video2dur_idx.json`` ({split: {vid_name: [duration,
  index]}}) and ``tvr_feature_release``'s ``tvr_i3d_rgb600_avg_cl-1.5.h5`` [n, 1024],
  ``tvr_resnet152_rgb_max_cl-1.5.h5`` [n, 2048] and
  ``tvr_sub_pretrained_w_sub_query_max_cl-1.5.h5`` [n, 768] with ``<vid_name>-mask`` [n]
  (one row per 1.5 s clip), in the working directory."""
  import h5py  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  sizes = sizes or {"train": 10, "val": 6, "test_public": 4}
  index, desc_id, video_id = {}, 1000, 0
  files = {name: h5py.File(root / name, "w") for name in (
      "tvr_i3d_rgb600_avg_cl-1.5.h5", "tvr_resnet152_rgb_max_cl-1.5.h5",
      "tvr_sub_pretrained_w_sub_query_max_cl-1.5.h5")}
  with contextlib.ExitStack() as stack:
    for f in files.values():
      stack.enter_context(f)
    i3d, resnet, sub = files.values()
    for split, n in sizes.items():
      lines, index[split] = [], {}
      for i in range(n):
        vid = f"friends_s0{1 + i % 9}e0{1 + i % 7}_seg02_clip_{video_id:02d}"
        duration = round(float(rng.uniform(12.0, 30.0)), 2)
        index[split][vid] = [duration, video_id]
        video_id += 1
        rows = math.ceil(duration / TVR_CLIP)
        i3d[vid] = rng.normal(size=(rows, 1024)).astype(np.float32)
        resnet[vid] = rng.normal(size=(rows, 2048)).astype(np.float32)
        sub[vid] = rng.normal(size=(rows, 768)).astype(np.float32)
        sub[f"{vid}-mask"] = (rng.uniform(size=rows) < 0.7).astype(np.float32)
        for ts in _moments(rng, duration, 2):
          desc_id += 1
          lines.append({"desc_id": desc_id, "desc": _sentence(rng)} if split == "test_public"
                       else {"desc_id": desc_id, "desc": _sentence(rng), "vid_name": vid,
                             "duration": duration, "ts": ts, "type": "v"})
      (root / f"tvr_{split}_release.jsonl").write_text(
          "".join(json.dumps(q) + "\n" for q in lines), encoding="utf-8")
  write_json(root / "tvr_video2dur_idx.json", index)


# MMT's seven MSR-VTT experts and their dims; s3d and vggish carry row times (features_t).
MMT_DIMS = {"face": 512, "ocr": 300, "rgb": 2048, "s3d": 1024, "scene": 2208, "speech": 300,
            "vggish": 128}


def write_msrvtt_release(root: pathlib.Path, sizes: dict[str, int] | None = None,
                         seed: int = 0) -> None:
  """MSR-VTT in MMT's layout (Gabeur et al. 2020): ``mmt_features/<video_id>.h5``
  (``features.<expert>`` [T, D] for the seven experts, ``features_t.<expert>`` row start
  times for s3d and vggish, captions ``raw_captions.<i>`` as word arrays), the JSFusion split
  lists ``train_list_jsfusion.txt`` / ``val_list_jsfusion.txt`` and CE's
  ``jsfusion_val_caption_idx.pkl`` ({video_id: caption index})."""
  import h5py  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  sizes = sizes or {"train": 10, "val": 6}
  (root / "mmt_features").mkdir()
  first = {"train": 0, "val": 7020}
  caption_index = {}
  for split, n in sizes.items():
    ids = [f"video{first[split] + i}" for i in range(n)]
    (root / f"{split}_list_jsfusion.txt").write_text("\n".join(ids) + "\n")
    for vid in ids:
      with h5py.File(root / "mmt_features" / f"{vid}.h5", "w") as f:
        for expert, dim in MMT_DIMS.items():
          rows = int(rng.integers(3, 7))
          f[f"features.{expert}"] = rng.normal(size=(rows, dim)).astype(np.float32)
          if expert in ("s3d", "vggish"):
            f[f"features_t.{expert}"] = np.arange(rows, dtype=np.float32)
        captions = [_sentence(rng).rstrip(".").split() for _ in range(3)]
        for i, words in enumerate(captions):
          f[f"raw_captions.{i}"] = np.array([w.encode() for w in words])   # bytes [n]
      if split == "val":
        caption_index[vid] = int(rng.integers(0, 3))
  with open(root / "jsfusion_val_caption_idx.pkl", "wb") as f:
    pickle.dump(caption_index, f)
