"""Tests for data_prep.builder (TFDS builders, plain and Beam), hvt_jax.input.reader and words."""

import json
import logging
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from data_prep import builder
from data_prep import common
from hvt_jax.input import reader
from hvt_jax.vocab import word_vocab
from tests import data_fixtures

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = ["<pad>", "<unk>", "a", "man", "rides", "bike", "."]
SPEC = builder.DatasetSpec(name="toy", modalities={"c3d": 5, "rgb": 3}, tokenizer="word",
                          vocab=VOCAB, description="toy", extra={"classes": ["x", "y"]})


def make_record(i: int, split: str, seed: int = 0) -> dict:
  """A random valid record; video 2 misses the rgb expert, sentence counts vary 1..3."""
  rng = np.random.default_rng([seed, i, len(split)])
  t = 2 + i % 4
  s = 1 + i % 3
  rgb_rows = 0 if i == 2 else 3
  return {
      "video_id": f"{split}_{i}", "duration": 10.5 + i, "split": split,
      "label": ["", "x", "y"][i % 3],
      "features": {"c3d": rng.normal(size=(t, 5)).astype(np.float32),
                   "rgb": rng.normal(size=(rgb_rows, 3)).astype(np.float32)},
      "timestamps": {"c3d": np.stack([np.arange(t), np.arange(t) + 1.5], 1).astype(np.float32),
                     "rgb": np.tile(np.float32([[0.0, 3.5]]), (rgb_rows, 1))},
      "segments": np.float32([[0.5 * k, 0.5 * k + 2] for k in range(s)]),
      "sentences": [f"sentence {k} of video {i}" for k in range(s)],
      "tokens": [rng.integers(0, len(VOCAB), size=1 + (i + k) % 4).tolist() for k in range(s)],
      # Odd videos have i labelled action instances; even ones none (the field left out).
      **({"instances": {"segments": [[k, k + 0.25] for k in range(i)],
                        "labels": [f"act {k}" for k in range(i)]}} if i % 2 else {}),
  }


def records(split: str, n: int, seed: int = 0) -> list[dict]:
  return [make_record(i, split, seed) for i in range(n)]


def as_numpy(example: dict) -> dict:
  """A decoded tf example as plain python/numpy (ragged tokens -> list of lists)."""
  out = {}
  for k, v in example.items():
    if k == "tokens":
      out[k] = [list(map(int, row)) for row in v.to_list()]
    elif k in ("sentences", "instances/labels"):
      out[k] = [s.decode() for s in v.numpy()]
    elif k in ("video_id", "split", "label"):
      out[k] = v.numpy().decode()
    else:
      out[k] = v.numpy()
  return out


def assert_matches(loaded: dict, rec: dict) -> None:
  """Exact equality of every field of a loaded example and the record written."""
  expected_keys = {"video_id", "duration", "split", "label", "segments", "sentences", "tokens",
                   "instances/segments", "instances/labels"}
  expected_keys |= {f"{g}/{m}" for g in ("features", "timestamps") for m in SPEC.modalities}
  assert set(loaded) == expected_keys
  for key in ("video_id", "split", "label", "sentences", "tokens"):
    assert loaded[key] == rec[key], key
  assert loaded["duration"] == np.float32(rec["duration"])
  np.testing.assert_array_equal(loaded["segments"], rec["segments"])
  inst = rec.get("instances", {"segments": np.zeros((0, 2)), "labels": []})
  assert loaded["instances/labels"] == inst["labels"]
  assert loaded["instances/segments"].dtype == np.float64
  np.testing.assert_array_equal(loaded["instances/segments"].reshape(-1, 2),
                                np.reshape(inst["segments"], (-1, 2)))
  for m in SPEC.modalities:
    for g in ("features", "timestamps"):
      assert loaded[f"{g}/{m}"].dtype == np.float32
      np.testing.assert_array_equal(loaded[f"{g}/{m}"], rec[g][m], err_msg=f"{g}/{m}")


def dir_content(path: str) -> dict:
  """Every file of a dataset dir: shards as their parsed examples, the others as bytes."""
  files = {p.name: p.read_bytes() for p in sorted(pathlib.Path(path).iterdir())
           if ".tfrecord" not in p.name}
  return {**files, **data_fixtures.shard_examples(path)}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  out = tmp_path_factory.mktemp("data")
  counter = builder.SkipCounter()
  counter.skip("features missing", "train_99")
  counter.repair("segment end > duration (clipped)", "train_1")
  train, val = records("train", 7), records("val", 3)
  path = builder.write_dataset(SPEC, {"train": train, "val": val}, str(out), counter=counter,
                              num_shards=3)
  return out, path, {"train": train, "val": val}


def test_round_trip_same_process(written):
  _, path, recs = written
  for split in ("train", "val"):
    loaded = [as_numpy(ex) for ex in reader.load_split(path, split)]
    # Contiguous shards: reading without shuffling gives the input order back.
    assert [ex["video_id"] for ex in loaded] == [r["video_id"] for r in recs[split]]
    for ex, rec in zip(loaded, recs[split]):
      assert_matches(ex, rec)
  shards = sorted(p.name for p in pathlib.Path(path).glob("toy-train.tfrecord-*"))
  assert shards == [f"toy-train.tfrecord-0000{i}-of-00003" for i in range(3)]


def test_round_trip_fresh_process(written, tmp_path):
  out, _, recs = written
  dump = tmp_path / "dump.pkl"
  script = textwrap.dedent(f"""
      import pickle, sys
      from hvt_jax.input import reader
      assert not any(m.startswith("data_prep.") and m not in ("hvt_jax.input.reader",)
                     for m in sys.modules), sorted(sys.modules)
      path = reader.find_dataset_dir({str(out)!r})
      result = {{"meta": reader.load_metadata(path), "examples": {{}}}}
      for split in ("train", "val"):
        rows = []
        for ex in reader.load_split(path, split):
          rows.append({{k: (v.to_list() if k == "tokens" else v.numpy()) for k, v in ex.items()}})
        result["examples"][split] = rows
      pickle.dump(result, open({str(dump)!r}, "wb"))
  """)
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = pickle.loads(dump.read_bytes())
  assert result["meta"]["splits"] == {"train": 7, "val": 3}
  for split in ("train", "val"):
    assert len(result["examples"][split]) == len(recs[split])
    for ex, rec in zip(result["examples"][split], recs[split]):
      ex = dict(ex, video_id=ex["video_id"].decode(), split=ex["split"].decode(),
                label=ex["label"].decode(), sentences=[s.decode() for s in ex["sentences"]])
      ex["instances/labels"] = [s.decode() for s in ex["instances/labels"]]
      assert_matches(ex, rec)


def test_metadata_and_vocab(written):
  out, path, _ = written
  meta = reader.load_metadata(path)
  assert meta["name"] == "toy" and meta["tokenizer"] == "word"
  assert meta["modalities"] == {"c3d": 5, "rgb": 3}
  assert meta["vocab_size"] == len(VOCAB)
  assert pathlib.Path(meta["vocab_file"]).read_text().split("\n")[:-1] == VOCAB
  assert reader.load_vocab(path) == VOCAB
  assert meta["splits"] == {"train": 7, "val": 3}
  assert meta["instances"] == {"train": 1 + 3 + 5, "val": 1}  # Odd videos i have i each.
  # Video 2 of each split has 0 rgb rows (a missing expert).
  assert meta["missing"] == {"train": {"c3d": 0, "rgb": 1}, "val": {"c3d": 0, "rgb": 1}}
  assert meta["counts"] == {
      "repaired": {"segment end > duration (clipped)": 1},
      "skipped": {"features missing": 1},
      "examples": {"features missing": ["train_99"],
                   "segment end > duration (clipped)": ["train_1"]}}
  assert meta["extra"] == {"classes": ["x", "y"]}
  info = json.loads((pathlib.Path(path) / "dataset_info.json").read_text())
  # num_shards=3 (at most one shard per record), in input order.
  assert [s["shardLengths"] for s in info["splits"]] == [["2", "3", "2"], ["1", "1", "1"]]


def test_find_dataset_dir(written, tmp_path):
  out, path, _ = written
  assert reader.find_dataset_dir(str(out)) == path
  assert reader.find_dataset_dir(str(out / "toy")) == path
  assert reader.find_dataset_dir(path, "toy") == path
  with pytest.raises(FileNotFoundError, match="not 'other'"):
    reader.find_dataset_dir(path, "other")
  # Two datasets under one dir: ambiguous without a name, resolved with one.
  spec2 = builder.DatasetSpec(name="toy_two", modalities={"c3d": 5, "rgb": 3},
                             tokenizer="word", vocab=VOCAB)
  builder.write_dataset(SPEC, {"train": records("train", 2)}, str(tmp_path),
                       counter=builder.SkipCounter())
  second = builder.write_dataset(spec2, {"train": records("train", 2)}, str(tmp_path),
                                counter=builder.SkipCounter())
  (tmp_path / ".tmp-1-junk" / "toy" / "1.0.0").mkdir(parents=True)  # Work dirs are ignored.
  with pytest.raises(FileNotFoundError, match=r"toy_two"):
    reader.find_dataset_dir(str(tmp_path))
  assert reader.find_dataset_dir(str(tmp_path), "toy_two") == second
  with pytest.raises(FileNotFoundError, match="found: none"):
    reader.find_dataset_dir(str(tmp_path / ".tmp-1-junk"))


def test_rewrite_is_idempotent_and_replaces(tmp_path):
  kwargs = dict(counter=builder.SkipCounter(), num_shards=2)
  path = builder.write_dataset(SPEC, {"train": records("train", 5)}, str(tmp_path), **kwargs)
  first = dir_content(path)
  path2 = builder.write_dataset(SPEC, {"train": records("train", 5)}, str(tmp_path), **kwargs)
  assert path2 == path and dir_content(path) == first
  # Different content replaces the old dataset entirely (no stale shards or splits).
  builder.write_dataset(SPEC, {"val": records("val", 4, seed=1)}, str(tmp_path),
                       counter=builder.SkipCounter())
  assert reader.load_metadata(path)["splits"] == {"val": 4}
  assert not list(pathlib.Path(path).glob("toy-train*"))
  assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["1.0.0"]


def failing_records(n_ok: int):
  yield from records("val", n_ok)
  raise RuntimeError("converter crashed")


def test_interrupted_write_keeps_previous_dataset(tmp_path):
  path = builder.write_dataset(SPEC, {"train": records("train", 3)}, str(tmp_path),
                              counter=builder.SkipCounter())
  before = dir_content(path)
  with pytest.raises(RuntimeError, match="converter crashed"):
    builder.write_dataset(SPEC, {"train": records("train", 6), "val": failing_records(2)},
                         str(tmp_path), counter=builder.SkipCounter())
  assert dir_content(path) == before
  assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["1.0.0"]
  assert [as_numpy(e)["video_id"] for e in reader.load_split(path, "train")] == [
      "train_0", "train_1", "train_2"]


def test_interrupted_first_write_leaves_nothing_loadable(tmp_path):
  with pytest.raises(RuntimeError, match="converter crashed"):
    builder.write_dataset(SPEC, {"val": failing_records(2)}, str(tmp_path),
                         counter=builder.SkipCounter())
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(FileNotFoundError, match="found: none"):
    reader.find_dataset_dir(str(tmp_path))


def _corrupt(field_path: str, value):
  def apply(rec):
    target = rec
    keys = field_path.split("/")
    for k in keys[:-1]:
      target = target[k]
    target[keys[-1]] = value(rec) if callable(value) else value
    return rec
  return apply


@pytest.mark.parametrize("field,mutate,message", [
    ("features/c3d", _corrupt("features/c3d", np.zeros((3, 4), np.float32)), r"\[N, 5\]"),
    ("features/c3d", _corrupt("features/c3d", lambda r: np.where(
        np.arange(5) == 1, np.nan, r["features"]["c3d"])), "non-finite"),
    ("timestamps/c3d", _corrupt("timestamps/c3d", np.zeros((1, 2), np.float32)), "rows"),
    ("segments", _corrupt("segments", np.float32([[3.0, 1.0]])), "start > end"),
    ("sentences", _corrupt("tokens", [[2]] * 5), "must be equal"),
    ("sentences", _corrupt("sentences", [" padded"]), "stripped"),
    ("tokens", _corrupt("tokens", [[2, 7]]), r"outside \[0, 7\)"),
    ("split", _corrupt("split", "val"), "written to split 'train'"),
    ("duration", _corrupt("duration", -1.0), "> 0"),
    ("features", _corrupt("features", lambda r: {"c3d": r["features"]["c3d"]}), "modalities"),
    ("instances/segments", _corrupt("instances", {"segments": [[4.0, 2.0]], "labels": ["a"]}),
     "start > end"),
    ("instances/labels", _corrupt("instances", {"segments": [[1.0, 2.0]], "labels": []}),
     "0 labels for 1 segments"),
    ("instances/labels", _corrupt("instances", {"segments": [[1.0, 2.0]], "labels": [""]}),
     "non-empty"),
    ("instances", _corrupt("instances", {"segments": []}), "expected"),
])
def test_invalid_record_names_video_and_field(tmp_path, field, mutate, message):
  bad = mutate(make_record(0, "train"))  # Record 0 has one sentence.
  recs = [make_record(1, "train"), bad]
  with pytest.raises(ValueError, match=message) as err:
    builder.write_dataset(SPEC, {"train": recs}, str(tmp_path), counter=builder.SkipCounter())
  assert "'train_0'" in str(err.value) and f"field {field!r}" in str(err.value)
  assert not (tmp_path / "toy" / "1.0.0").exists()


def test_duplicate_video_id_in_split(tmp_path):
  with pytest.raises(ValueError, match=r"'train_1'.*duplicate"):
    builder.write_dataset(SPEC, {"train": [make_record(1, "train"), make_record(1, "train")]},
                         str(tmp_path), counter=builder.SkipCounter())


def test_extra_files_are_part_of_the_atomic_write(tmp_path):
  matrix = np.arange(6, dtype=np.float32).reshape(3, 2)

  def save_matrix(p):
    with open(p, "wb") as f:
      np.save(f, matrix)

  extra = {"notes.txt": b"hello", "vectors.npy": save_matrix}
  path = builder.write_dataset(SPEC, {"train": records("train", 2)}, str(tmp_path),
                              counter=builder.SkipCounter(), extra_files=extra)
  assert (pathlib.Path(path) / "notes.txt").read_bytes() == b"hello"
  np.testing.assert_array_equal(np.load(pathlib.Path(path) / "vectors.npy"), matrix)
  before = dir_content(path)
  # A write interrupted before the rename keeps the previous dataset with its extra files.
  with pytest.raises(RuntimeError, match="converter crashed"):
    builder.write_dataset(SPEC, {"val": failing_records(1)}, str(tmp_path),
                         counter=builder.SkipCounter(), extra_files={"notes.txt": b"new"})

  def broken(p):
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    builder.write_dataset(SPEC, {"train": records("train", 3)}, str(tmp_path),
                         counter=builder.SkipCounter(), extra_files={"notes.txt": broken})
  assert dir_content(path) == before
  assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["1.0.0"]
  for bad in ("../escape.txt", "metadata.json", "vocab.txt", ".hidden",
              "toy-train.tfrecord-00000-of-00001"):
    with pytest.raises(ValueError, match="extra file name"):
      builder.write_dataset(SPEC, {"train": records("train", 1)}, str(tmp_path / "bad"),
                           counter=builder.SkipCounter(), extra_files={bad: b""})
  assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").rglob("*.tfrecord*"))


def test_empty_split_is_an_error_with_the_reasons(tmp_path):
  counter = builder.SkipCounter()
  counter.skip("features missing", "test_0")
  with pytest.raises(ValueError, match=r"(?s)split 'test' of 'toy' has no records.*"
                     r"features missing\s+1\s+test_0"):
    builder.write_dataset(SPEC, {"train": records("train", 2), "test": []}, str(tmp_path),
                         counter=counter)
  assert not (tmp_path / "toy" / "1.0.0").exists()


def test_unknown_split(written):
  _, path, _ = written
  with pytest.raises(ValueError, match=r"split 'nope' not in dataset.*\['train', 'val'\]"):
    reader.load_split(path, "nope")
  assert len(list(reader.load_split(path, "train[:2]+val"))) == 5


def test_skip_counter():
  c = builder.SkipCounter()
  for i in range(25):
    c.skip("features missing", f"v{i}")
  c.repair("whitespace", "a")
  c.repair("whitespace", "a")
  other = builder.SkipCounter()
  other.repair("whitespace", "b")
  c.merge(other)
  s = c.summary()
  assert s["skipped"] == {"features missing": 25}
  assert s["repaired"] == {"whitespace": 3}
  assert s["examples"]["features missing"] == [f"v{i}" for i in range(20)]
  assert s["examples"]["whitespace"] == ["a", "b"]
  table = c.format_table()
  assert "features missing" in table and " 25 " in table and "v0, v1, v2, ..." in table


def test_spec_validation(tmp_path):
  for bad, msg in [
      (dict(modalities={}), "modalities is empty"),
      (dict(modalities={"c/3d": 5}), "modality name"),
      (dict(modalities={"c3d": 0}), "positive int"),
      (dict(tokenizer="bpe"), "tokenizer"),
      (dict(vocab=["<pad>", "a", "a"]), "duplicate"),
      (dict(name="Bad-Name"), "lower_snake_case"),
  ]:
    spec = builder.DatasetSpec(**{**SPEC.__dict__, **bad})
    with pytest.raises(ValueError, match=msg):
      builder.write_dataset(spec, {"train": []}, str(tmp_path), counter=builder.SkipCounter())


# ------------------------------------------------------------------------------- text


def test_normalize_sentence():
  assert word_vocab.normalize_sentence("  A man\t rides \n a bike.  ") == "A man rides a bike."
  assert word_vocab.normalize_sentence(" \t\n") == ""


def test_word_tokenize_hand_cases():
  assert word_vocab.word_tokenize(" The man's bike, then... ") == [
      "the", "man", "'s", "bike", ",", "then", ".", ".", "."]
  assert word_vocab.word_tokenize("He DOESN'T stop-it at 3.5m!") == [
      "he", "doesn", "'t", "stop", "-", "it", "at", "3", ".", "5m", "!"]
  assert word_vocab.word_tokenize("Café crème") == ["café", "crème"]
  assert word_vocab.word_tokenize("") == []


def test_build_word_vocab_and_encode():
  sentences = ["b a a.", "c b a", "d"]
  # Counts: a 3, b 2, . 1, c 1, d 1 -> by count, then alphabetically.
  assert word_vocab.build_word_vocab(sentences) == ["<pad>", "<unk>", "a", "b", ".", "c", "d"]
  vocab = word_vocab.build_word_vocab(sentences, min_count=2)
  assert vocab == ["<pad>", "<unk>", "a", "b"]
  index = {t: i for i, t in enumerate(vocab)}
  assert word_vocab.encode_words("A b zebra.", index) == [2, 3, 1, 1]
  with pytest.raises(ValueError):
    word_vocab.build_word_vocab(sentences, min_count=0)


def test_stale_work_dirs_of_dead_runs_are_removed(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  dead_pid = int(dead.stdout)
  parent = tmp_path / SPEC.name
  parent.mkdir()
  stale_tmp = tmp_path / f".tmp-{dead_pid}-deadbeef"
  stale_old = parent / f".old-{dead_pid}-cafef00d"
  live = tmp_path / f".tmp-{os.getpid()}-0badcafe"  # A run still writing.
  for d in (stale_tmp, stale_old, live):
    d.mkdir()
    (d / "partial").write_bytes(b"x")
  builder.write_dataset(SPEC, {"train": records("train", 2)}, str(tmp_path),
                       counter=builder.SkipCounter())
  assert not stale_tmp.exists() and not stale_old.exists()
  assert live.exists()


def test_unknown_token_rate_in_metadata():
  vocab = ["<pad>", "<unk>", "a", "b"]
  spec = builder.DatasetSpec(name="unk", modalities={"c3d": 5}, tokenizer="word", vocab=vocab)
  recs = {"train": records("train", 2), "val": records("val", 1)}
  recs["train"][0]["tokens"] = [[2, 1, 3]] * len(recs["train"][0]["sentences"])
  recs["train"][1]["tokens"] = [[2, 2]] * len(recs["train"][1]["sentences"])
  recs["val"][0]["tokens"] = [[1, 1, 3, 2]] * len(recs["val"][0]["sentences"])
  for split in recs:
    for r in recs[split]:
      r["features"].pop("rgb"), r["timestamps"].pop("rgb")
  with tempfile.TemporaryDirectory() as out:
    meta = reader.load_metadata(builder.write_dataset(spec, recs, out,
                                                     counter=builder.SkipCounter()))
  n0, n1 = len(recs["train"][0]["sentences"]), len(recs["train"][1]["sentences"])
  nv = len(recs["val"][0]["sentences"])
  assert meta["unknown_tokens"] == {
      "token": "<unk>",
      "splits": {"train": {"tokens": 3 * n0 + 2 * n1, "unknown": n0,
                           "rate": n0 / (3 * n0 + 2 * n1)},
                 "val": {"tokens": 4 * nv, "unknown": 2 * nv, "rate": 0.5}}}
  assert common.format_unknown_tokens(meta) == (
      f"unknown tokens (<unk>): train {n0 / (3 * n0 + 2 * n1):.2%} ({n0} of "
      f"{3 * n0 + 2 * n1}), val 50.00% ({2 * nv} of {4 * nv})")


def test_empty_splits_drop_keeps_the_others(tmp_path):
  counter = builder.SkipCounter()
  path = builder.write_dataset(SPEC, {"train": records("train", 2), "val": [], "test": []},
                              str(tmp_path), counter=counter, empty_splits="drop")
  meta = reader.load_metadata(path)
  assert meta["splits"] == {"train": 2} and meta["empty_splits"] == ["val", "test"]
  assert meta["counts"]["skipped"] == {builder.SPLIT_EMPTY: 2}
  assert meta["counts"]["examples"][builder.SPLIT_EMPTY] == ["val", "test"]
  assert set(meta["missing"]) == {"train"}
  assert not list(pathlib.Path(path).glob("*-val.tfrecord*"))
  assert len(list(reader.load_split(path, "train"))) == 2
  # Every split empty: still an error, nothing written.
  with pytest.raises(ValueError, match=r"(?s)no split of 'toy' has records.*split has no "
                                       r"records \(not written\)\s+2\s+a, b"):
    builder.write_dataset(SPEC, {"a": [], "b": []}, str(tmp_path / "o"),
                         counter=builder.SkipCounter(), empty_splits="drop")
  assert not (tmp_path / "o" / "toy" / "1.0.0").exists()


def test_corpus_split_records_may_have_no_sentences(tmp_path):
  spec = builder.DatasetSpec(**{**SPEC.__dict__, "corpus_splits": ("test_public",)})
  bare = dict(make_record(0, "test_public"), label="", sentences=[], tokens=[],
              segments=np.zeros((0, 2), np.float32))
  path = builder.write_dataset(spec, {"train": records("train", 1), "test_public": [bare]},
                              str(tmp_path), counter=builder.SkipCounter())
  assert reader.load_metadata(path)["corpus_splits"] == ["test_public"]
  loaded = as_numpy(next(iter(reader.load_split(path, "test_public"))))
  assert loaded["sentences"] == [] and loaded["tokens"] == []
  assert loaded["segments"].shape == (0, 2)
  # Elsewhere a record without sentences and label is still an error.
  with pytest.raises(ValueError, match=r"'train_0', field 'sentences': no sentences and no "
                                       r"label"):
    builder.validate_record(dict(bare, split="train", video_id="train_0"), spec, "train")
  with pytest.raises(ValueError, match=r"corpus_splits must be a sequence of split names"):
    builder.DatasetSpec(**{**SPEC.__dict__, "corpus_splits": "test_public"}).validate()


# ------------------------------------------------------------------------- plans, Beam


def build_counted(item, counter):
  """Module-level record builder (picklable for Beam): skips odd items, repairs each 3rd."""
  i, split = item
  if split == "empty" or i % 2:
    counter.skip("odd item", f"{split}_{i}")
    return None
  if i % 3 == 0:
    counter.repair("third item", f"{split}_{i}")
  return make_record(i, split)


def per_split_repairs(stats):
  return {"repaired_per_split": {s: c["repaired"] for s, c in stats["split_counts"].items()}}


def _plan(n_train: int, n_val: int) -> builder.Plan:
  items = {"train": [(i, "train") for i in range(n_train)],
           "empty": [(i, "empty") for i in range(3)],
           "val": [(i, "val") for i in range(n_val)]}
  return builder.Plan(spec=SPEC, items=items, build=build_counted,
                      extra_fn=per_split_repairs, empty_splits="drop")


def test_plan_plain_and_beam_write_the_same_examples_and_counts(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger="apache_beam")
  runs = {}
  for workers in (1, 2):
    counter = builder.SkipCounter()
    counter.skip("annotation problem", "train_99")  # Counted before the records are built.
    path = builder.prepare(builder.records_builder("toy"), str(tmp_path / f"w{workers}"),
                           plan=_plan(48, 9), counter=counter, num_workers=workers,
                           num_shards=2)
    meta = reader.load_metadata(path)
    meta.pop("vocab_file")
    runs[workers] = (data_fixtures.shard_examples(path), meta, counter.summary())
    # Plain and Beam shards add up to dataset_info.json's numBytes plus the TFRecord framing
    # (the start-up check's fast path), and intact shards are accepted.
    info = json.loads((pathlib.Path(path) / "dataset_info.json").read_text())
    for split in info["splits"]:
      files = pathlib.Path(path).glob(f"toy-{split['name']}.tfrecord-*")
      assert sum(f.stat().st_size for f in files) == int(split["numBytes"]) + 16 * sum(
          int(n) for n in split["shardLengths"]), (workers, split["name"])
    assert reader.shard_problems(path) == []
  assert runs[1] == runs[2]
  # Two local workers run on Beam's FnApiRunner, without the DirectRunner's attempt to
  # download and start the Prism runner.
  assert "control server" in caplog.text and "Prism" not in caplog.text
  shards, meta, summary = runs[2]
  assert summary == meta["counts"]
  odd = [f"train_{i}" for i in range(1, 48, 2)] + ["empty_0", "empty_1", "empty_2"]
  odd += [f"val_{i}" for i in (1, 3, 5, 7)]
  assert meta["counts"] == {
      "repaired": {"third item": 8 + 2},
      "skipped": {"annotation problem": 1, "odd item": 24 + 3 + 4, builder.SPLIT_EMPTY: 1},
      "examples": {"annotation problem": ["train_99"], "odd item": odd[:20],
                   "third item": [f"train_{i}" for i in range(0, 48, 6)] + ["val_0", "val_6"],
                   builder.SPLIT_EMPTY: ["empty"]}}
  assert meta["splits"] == {"train": 24, "val": 5} and meta["empty_splits"] == ["empty"]
  assert meta["extra"]["repaired_per_split"] == {"train": {"third item": 8},
                                                 "val": {"third item": 2}}
  assert sorted(shards) == [f"toy-{s}.tfrecord-0000{i}-of-00002" for s in ("train", "val")
                            for i in range(2)]
  path = reader.find_dataset_dir(str(tmp_path / "w2"))
  got = [as_numpy(e) for e in reader.load_split(path, "train")]
  assert [g["video_id"] for g in got] == [f"train_{i}" for i in range(0, 48, 2)]
  for g, i in zip(got, range(0, 48, 2)):
    assert_matches(g, make_record(i, "train"))


def failing_item(item, counter):
  """Fails on item 3."""
  if item == 3:
    raise ValueError(f"bad item {item}")
  return make_record(item, "train")


def test_record_builder_errors_stop_the_conversion(tmp_path):
  plan = builder.Plan(spec=SPEC, items={"train": list(range(6))}, build=failing_item)
  with pytest.raises(ValueError, match="bad item 3"):
    builder.prepare(builder.records_builder("toy"), str(tmp_path), plan=plan)
  assert list(tmp_path.iterdir()) == []
