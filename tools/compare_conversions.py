"""Checks that two checkouts convert the real annotation files to identical examples.

Used for issue 9 (the hand-written writer replaced by TFDS builders): fixture features for
a subset of the real ActivityNet Captions, DiDeMo and TVR videos, both checkouts' hvt-prepare
on the same files, every decoded example (read with `tfds.builder_from_directory`, not with the
code under test) and the metadata compared.

    python tools/compare_conversions.py inputs WORK [--data DIR]
    (cd OLD && PYTHONPATH=$PWD OLD_PYTHON tools/compare_conversions.py dump WORK old)
    (cd NEW && NEW_PYTHON tools/compare_conversions.py dump WORK new)
    python tools/compare_conversions.py compare WORK

The annotation files (<dataset>/<file>, as in tests/testdata) come from --data DIR, else
$HVT_SHARED_DATA, else the committed excerpts in tests/testdata; `inputs` records the
directory in WORK/in/annotations.txt and both dumps read it from there.
"""
import argparse
import json
import os
import pathlib
import pickle

import numpy as np

EXCERPTS = pathlib.Path(__file__).resolve().parents[1] / "tests" / "testdata"


def inputs(work, data=None):
  import h5py

  D = pathlib.Path(data or os.environ.get("HVT_SHARED_DATA") or EXCERPTS).resolve()
  out = pathlib.Path(work) / "in"; out.mkdir(parents=True, exist_ok=True)
  (out / "annotations.txt").write_text(f"{D}\n")
  rng = np.random.default_rng(0)
  # ActivityNet: first 40 train + 20 val_1 videos + the zero-length ones; 3 missing, 1 NaN.
  ann = {s: json.loads((D / "activitynet_captions" / f"{s}.json").read_text()) for s in ("train", "val_1")}
  ids = list(ann["train"])[:40] + ["v_N7ppHQNikv8", "v_4rKTw99bM8g"] + list(ann["val_1"])[:20]
  with h5py.File(out / "c3d.hdf5", "w") as f:
    for i, vid in enumerate(ids):
      if i in (3, 25, 50): continue
      a = rng.normal(size=(5 + i % 7, 500)).astype(np.float32)
      if i == 7: a[1, 3] = np.nan
      f.create_group(vid).create_dataset("c3d_features", data=a)
  (out / "anet_ids.txt").write_text("\n".join(ids) + "\n")
  # DiDeMo: first 30 train + 10 val videos, per-video npy with feature_leng rows.
  dd = {s: json.loads((D / "didemo" / f"{s}_data_bwzhang.json").read_text()) for s in ("train", "val")}
  (out / "didemo_feats").mkdir(exist_ok=True)
  dids = list(dd["train"])[:30] + list(dd["val"])[:10]
  for i, vid in enumerate(dids):
    split = "train" if vid in dd["train"] else "val"
    n = int(dd[split][vid]["feature_leng"])
    np.save(out / "didemo_feats" / f"{vid}.npy", rng.normal(size=(n, 16)).astype(np.float32))
  (out / "didemo_ids.txt").write_text("\n".join(dids) + "\n")
  # TVR val: first 25 videos, i3d features [n, 1024] at 1.5 s.
  lines = [json.loads(l) for l in (D / "tvr" / "tvr_val_release.jsonl").read_text().splitlines()]
  tv = list(dict.fromkeys(l["vid_name"] for l in lines))[:25]
  dur = {l["vid_name"]: l["duration"] for l in lines}
  with h5py.File(out / "tvr_i3d.h5", "w") as f:
    for vid in tv:
      f.create_dataset(vid, data=rng.normal(size=(int(np.ceil(dur[vid] / 1.5)), 1024)).astype(np.float32))
  (out / "tvr_ids.txt").write_text("\n".join(tv) + "\n")
  print("ok", len(ids), len(dids), len(tv))


def dump(work, tag):
  import tensorflow_datasets as tfds
  from hvt_jax.cli import prepare

  I = f"{work}/in"; D = pathlib.Path(I, "annotations.txt").read_text().strip(); out = f"{work}/out_{tag}"
  runs = {
   "anet": ["activitynet_captions", "--annotations", f"{D}/activitynet_captions/train.json", f"{D}/activitynet_captions/val_1.json",
            "--features", f"{I}/c3d.hdf5", "--feature-key", "c3d_features", "--video-ids", f"{I}/anet_ids.txt"],
   "anet_wp": ["activitynet_captions", "--annotations", f"{D}/activitynet_captions/train.json", f"{D}/activitynet_captions/val_1.json",
            "--features", f"{I}/c3d.hdf5", "--feature-key", "c3d_features", "--video-ids", f"{I}/anet_ids.txt", "--tokenizer", "wordpiece", "--feature-rate", "2"],
   "didemo": ["didemo", "--annotations", f"{D}/didemo/train_data_bwzhang.json", f"{D}/didemo/val_data_bwzhang.json",
              "--features", f"{I}/didemo_feats", "--video-ids", f"{I}/didemo_ids.txt"],
   "tvr": ["tvr", "--queries", f"{D}/tvr/tvr_val_release.jsonl", "--video-features", f"i3d={I}/tvr_i3d.h5", "--video-ids", f"{I}/tvr_ids.txt"],
  }
  result = {}
  for name, argv in runs.items():
    d = prepare.prepare(argv + ["--output", f"{out}/{name}"])
    b = tfds.builder_from_directory(d)
    meta = json.loads((pathlib.Path(d) / "metadata.json").read_text())
    meta.pop("vocab_file", None)
    exs = {s: [ex for ex in tfds.as_numpy(b.as_dataset(split=s))] for s in b.info.splits}
    vocab = (pathlib.Path(d) / "vocab.txt").read_text()
    result[name] = {"meta": meta, "examples": exs, "vocab": vocab}
  pickle.dump(result, open(f"{work}/dump_{tag}.pkl", "wb"))
  print("dumped", {k: {s: len(v) for s, v in r["examples"].items()} for k, r in result.items()})


def compare(work):
  old = pickle.load(open(f"{work}/dump_old.pkl", "rb")); new = pickle.load(open(f"{work}/dump_new.pkl", "rb"))
  def eq(a, b, path):
    if isinstance(a, dict):
      assert set(a) == set(b), (path, set(a) ^ set(b))
      for k in a: eq(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
      assert len(a) == len(b), path
      for i, (x, y) in enumerate(zip(a, b)): eq(x, y, f"{path}[{i}]")
    elif hasattr(a, "to_list"):
      assert a.to_list() == b.to_list(), path
    elif isinstance(a, np.ndarray):
      assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), path
    else:
      assert a == b, (path, a, b)
  for name in old:
    eq(old[name]["examples"], new[name]["examples"], name + "/examples")
    eq(old[name]["vocab"], new[name]["vocab"], name + "/vocab")
    mo, mn = old[name]["meta"], new[name]["meta"]
    diff = {k for k in set(mo) | set(mn) if mo.get(k) != mn.get(k)}
    n = sum(len(v) for v in old[name]["examples"].values())
    print(f"{name}: {n} examples identical (every field, dtype, shape, value, order); vocab identical; metadata keys differing: {sorted(diff)}")
    for k in diff: print("   ", k, "old:", str(mo.get(k))[:200], "| new:", str(mn.get(k))[:200])
  for name in ("anet_wp", "tvr"):
    eo, en = old[name]["meta"]["extra"], new[name]["meta"]["extra"]
    for k in set(eo) | set(en):
      if eo.get(k) != en.get(k):
        a, b = eo.get(k), en.get(k)
        if isinstance(a, dict):
          print(name, k, {kk: (a.get(kk), b.get(kk)) for kk in set(a) | set(b) if a.get(kk) != b.get(kk)})
        else: print(name, k, str(a)[:100], str(b)[:100])


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("step", choices=("inputs", "dump", "compare"))
  parser.add_argument("work")
  parser.add_argument("tag", nargs="?", help="dump: old or new")
  parser.add_argument("--data", help="inputs: the annotation files' directory")
  a = parser.parse_args()
  if a.step == "inputs":
    inputs(a.work, a.data)
  elif a.step == "dump":
    if not a.tag:
      parser.error("dump needs a tag (old or new)")
    dump(a.work, a.tag)
  else:
    compare(a.work)
