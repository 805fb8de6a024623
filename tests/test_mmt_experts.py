"""Tests for data_prep.mmt_experts: MSR-VTT / LSMDC from MMT's per-video HDF5 experts.

Video ids come from the REAL MSR-VTT 1k-A (JSFusion) split lists; the HDF5 files are written
here in MMT's layout (`features.<expert>`, `features_t.<expert>`, `raw_captions.<i>`), with
the quirks the converter must count or reject.
"""

import pathlib
import pickle

import h5py
import numpy as np
import pytest

from data_prep import builder
from data_prep import features as features_lib
from data_prep import mmt_experts as mx
from hvt_jax.input import reader
from hvt_jax.vocab import wordpiece
from hvt_jax.cli import prepare
from tests import data_fixtures

DIMS = mx.MMT_DIMS


def _write_h5(path: pathlib.Path, feats: dict, times: dict | None = None,
              captions: list | None = None, attrs: dict | None = None) -> None:
  with h5py.File(path, "w") as f:
    for e, a in feats.items():
      f[f"features.{e}"] = a
    for e, t in (times or {}).items():
      f[f"features_t.{e}"] = t
    for i, c in enumerate(captions if captions is not None else ["a man is singing"]):
      f[f"raw_captions.{i}"] = c
    f.attrs.update(attrs or {})


def _rand(t: int, d: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(t, d)).astype(np.float32)


class _Tiny:
  """A hand-made WordPiece vocabulary: expected ids are list positions."""
  VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "man", "is", "sing", "##ing", "two",
           "people", "dance", ".")
  encode = mx.Encoder("wordpiece", VOCAB)


# ------------------------------------------------------------------------------------------
# Split lists.


def test_real_jsfusion_split_lists(each_annotations):
  kind, root = each_annotations
  paths = mx.parse_split_lists([str(root / "msrvtt" / "train_list_jsfusion.txt"),
                                str(root / "msrvtt" / "val_list_jsfusion.txt")])
  assert list(paths) == ["train", "val"]
  counter = builder.SkipCounter()
  splits = mx.read_split_lists(paths, counter)
  sizes = {"excerpt": (30, 30), "full": (9000, 1000)}[kind]
  assert (len(splits["train"]), len(splits["val"])) == sizes
  assert splits["val"][0] == "video7020" and splits["train"][:2] == ["video0", "video1"]
  assert counter.summary()["skipped"] == {}


def test_split_names_and_formats(tmp_path):
  assert mx.split_name_from_path("a/LSMDC16_annos_training.csv") == "train"
  assert mx.split_name_from_path("LSMDC16_annos_val.csv") == "val"
  assert mx.split_name_from_path("test_list_miech.txt") == "test"
  with pytest.raises(ValueError, match="LSMDC16_challenge_1000_publictect.csv.*test="):
    mx.split_name_from_path("LSMDC16_challenge_1000_publictect.csv")
  assert mx.parse_split_lists(["test=x/pub.csv"]) == {"test": "x/pub.csv"}

  tsv = tmp_path / "LSMDC16_annos_training.csv"
  tsv.write_text("# comment\n0001_A_00.00.01.000-00.00.03.500\t00.00.01.000\tThe man sits.\n"
                 "\n0001_A_00.00.05.000-00.00.06.000\tx\ty\n"
                 "0001_A_00.00.01.000-00.00.03.500\tdup\n")
  counter = builder.SkipCounter()
  ids = mx.read_split_list(str(tsv), counter)
  assert ids == ["0001_A_00.00.01.000-00.00.03.500", "0001_A_00.00.05.000-00.00.06.000"]
  assert counter.summary()["skipped"] == {mx.ID_DUPLICATE: 1}
  other = tmp_path / "val.txt"
  other.write_text("0001_A_00.00.05.000-00.00.06.000\n")
  with pytest.raises(ValueError, match=r"1 ids are in both .*training\.csv and .*val\.txt"):
    mx.read_split_lists({"train": str(tsv), "val": str(other)}, builder.SkipCounter())
  assert mx.clip_duration_from_name("1014_2012_00.01.21.399-00.01.23.997") == pytest.approx(
      2.598)
  assert mx.clip_duration_from_name("video12") is None


# ------------------------------------------------------------------------------------------
# One video.


def test_decode_caption_forms():
  c = builder.SkipCounter()
  assert mx.decode_caption(b" a  man ", "f[k]", "v", c) == "a man"
  assert mx.decode_caption("two people", "f[k]", "v", c) == "two people"
  words = np.array([b"a", b"man", b"is", b"singing"], dtype=object)
  assert mx.decode_caption(words, "f[k]", "v", c) == "a man is singing"
  assert mx.decode_caption(np.array([b"a", b"man"], dtype="S3"), "f[k]", "v", c) == "a man"
  assert c.summary()["repaired"] == {}
  assert mx.decode_caption(b"caf\xe9 \xff", "f[k]", "v", c) == "caf\ufffd \ufffd"
  assert c.summary()["repaired"] == {mx.CAPTION_NOT_UTF8: 1}
  with pytest.raises(features_lib.FeatureFileError, match=r"f\[k\]: caption must be text"):
    mx.decode_caption(np.arange(3), "f[k]", "v", c)


def test_read_video_timestamps_and_tokens(tmp_path):
  path = tmp_path / "video7020.h5"
  s3d, vgg, rgb = _rand(4, 1024, 1), _rand(3, 128, 2), _rand(10, 2048, 3)
  s3d_t = np.array([[0, 1.5], [1.5, 3], [3, 4.5], [4.5, 6]])
  _write_h5(path, {"s3d": s3d, "vggish": vgg, "rgb": rgb},
            {"s3d": s3d_t, "vggish": np.array([0.0, 0.96, 1.92])},
            [np.array([b"a", b"man", b"is", b"singing"], dtype=object), b"two people dance."])
  c = builder.SkipCounter()
  rec = mx.read_video(str(path), "video7020", "val", DIMS, _Tiny.encode, c)
  assert rec["duration"] == 6.0  # Largest features_t end.
  np.testing.assert_array_equal(rec["features"]["s3d"], s3d)
  np.testing.assert_array_equal(rec["timestamps"]["s3d"], s3d_t.astype(np.float32))
  # [T] start times: each row ends at the next start, the last after the median step.
  np.testing.assert_allclose(rec["timestamps"]["vggish"],
                             [[0, 0.96], [0.96, 1.92], [1.92, 2.88]], rtol=1e-6)
  # No features_t: 10 rows spread uniformly over 6 s.
  np.testing.assert_allclose(rec["timestamps"]["rgb"][[0, 9]], [[0, 0.6], [5.4, 6.0]],
                             rtol=1e-6)
  for e in ("face", "ocr", "scene", "speech"):
    assert rec["features"][e].shape == (0, DIMS[e]) and rec["timestamps"][e].shape == (0, 2)
  assert rec["sentences"] == ["a man is singing", "two people dance."]
  assert rec["tokens"] == [[4, 5, 6, 7, 8], [9, 10, 11, 12]]
  np.testing.assert_array_equal(rec["segments"], -np.ones((2, 2)))
  assert c.summary() == {"repaired": {}, "skipped": {}, "examples": {}}


def test_read_video_real_wordpiece_ids(tmp_path):
  _write_h5(tmp_path / "v.h5", {"s3d": _rand(2, 1024)}, captions=[b"A man is singing."])
  vocab = wordpiece.load_vocab(wordpiece.default_vocab_file())
  rec = mx.read_video(str(tmp_path / "v.h5"), "v", "train", {"s3d": 1024},
                      mx.Encoder("wordpiece", tuple(vocab)), builder.SkipCounter())
  # Expected ids looked up directly in bert-base-uncased's vocab.txt (line numbers).
  assert rec["tokens"] == [[vocab.index(w) for w in ("a", "man", "is", "singing", ".")]]


def test_missing_empty_nan_experts(tmp_path):
  face = _rand(4, 512, 5)
  face[1, 3] = np.nan
  face[2, 0] = np.inf
  _write_h5(tmp_path / "v.h5",
            {"face": face, "ocr": np.zeros((0, 300), np.float32), "speech": np.zeros((0, 0)),
             "scene": np.full((3, 2208), np.nan, np.float32), "s3d": _rand(5, 1024)},
            {"s3d": np.arange(5.0)})
  c = builder.SkipCounter()
  rec = mx.read_video(str(tmp_path / "v.h5"), "v", "train", DIMS, _Tiny.encode, c)
  np.testing.assert_array_equal(rec["features"]["face"], face[[0, 3]])
  # Uniform times are computed over all 4 stored rows (duration 5 s from s3d's starts + 1 s
  # step), then rows 1 and 2 are dropped with their times: rows 0 and 3 keep [0, 1.25] and
  # [3.75, 5] (this assertion used to expect the kept rows re-spread, the bug fixed here).
  np.testing.assert_allclose(rec["timestamps"]["face"], [[0, 1.25], [3.75, 5]])
  for e in ("ocr", "scene", "rgb", "speech", "vggish"):
    assert rec["features"][e].shape == (0, DIMS[e])
  assert c.summary()["repaired"] == {mx.EXPERT_EMPTY: 2, mx.EXPERT_ALL_NONFINITE: 1,
                                     mx.ROWS_NONFINITE: 1}
  # NaN rows dropped together with their features_t rows.
  s3d = _rand(3, 1024)
  s3d[1] = np.nan
  _write_h5(tmp_path / "w.h5", {"s3d": s3d}, {"s3d": np.array([[0, 1], [1, 2], [2, 3.0]])})
  rec = mx.read_video(str(tmp_path / "w.h5"), "w", "train", DIMS, _Tiny.encode,
                      builder.SkipCounter())
  np.testing.assert_array_equal(rec["timestamps"]["s3d"], [[0, 1], [2, 3]])
  # Every expert missing -> the video is skipped and counted.
  _write_h5(tmp_path / "x.h5", {"s3d": np.full((2, 1024), np.nan)})
  c = builder.SkipCounter()
  assert mx.read_video(str(tmp_path / "x.h5"), "x", "train", DIMS, _Tiny.encode, c) is None
  assert c.summary()["skipped"] == {mx.VIDEO_NO_EXPERT: 1}


def test_timestamp_repairs(tmp_path):
  s3d = _rand(4, 1024)
  # Row 1 reversed, rows out of order, row 3 past the 10 s duration, row 0 negative.
  times = np.array([[-1.0, 2.0], [5.0, 3.0], [1.0, 2.0], [9.0, 12.0]])
  _write_h5(tmp_path / "v.h5", {"s3d": s3d}, {"s3d": times}, attrs={"duration": 10.0})
  c = builder.SkipCounter()
  rec = mx.read_video(str(tmp_path / "v.h5"), "v", "train", {"s3d": 1024}, _Tiny.encode, c)
  assert rec["duration"] == 10.0  # File attribute wins over features_t.
  # Swap row 1 -> [3, 5]; sort by start -> rows 0, 2, 1, 3; clip to [0, 10].
  np.testing.assert_array_equal(rec["timestamps"]["s3d"], [[0, 2], [1, 2], [3, 5], [9, 10]])
  np.testing.assert_array_equal(rec["features"]["s3d"], s3d[[0, 2, 1, 3]])
  assert c.summary()["repaired"] == {mx.TIMES_SWAPPED: 1, mx.TIMES_SORTED: 1,
                                     mx.TIMES_CLIPPED: 1}
  # features_t longer -> truncated; shorter or NaN -> uniform; each counted.
  for t, reason in ((np.arange(6.0), mx.TIMES_TRUNCATED), (np.arange(2.0), mx.TIMES_SHORT),
                    (np.array([0, np.nan, 2, 3]), mx.TIMES_NONFINITE)):
    _write_h5(tmp_path / "w.h5", {"s3d": s3d}, {"s3d": t}, attrs={"duration": 8.0})
    c = builder.SkipCounter()
    rec = mx.read_video(str(tmp_path / "w.h5"), "w", "train", {"s3d": 1024}, _Tiny.encode, c)
    assert c.summary()["repaired"] == {reason: 1}
    expected = ([[0, 1], [1, 2], [2, 3], [3, 4]] if reason == mx.TIMES_TRUNCATED
                else [[0, 2], [2, 4], [4, 6], [6, 8]])
    np.testing.assert_array_equal(rec["timestamps"]["s3d"], expected)


def test_duration_sources(tmp_path):
  def duration(feats, times=None, attrs=None, hint=None):
    _write_h5(tmp_path / "d.h5", feats, times, attrs=attrs)
    c = builder.SkipCounter()
    rec = mx.read_video(str(tmp_path / "d.h5"), "d", "train", DIMS, _Tiny.encode, c,
                        duration_hint=hint)
    return None if rec is None else rec["duration"], c.summary()["skipped"]

  rgb = {"rgb": _rand(25, 2048)}
  assert duration(rgb, attrs={"duration": 7.5}, hint=3.0)[0] == 7.5
  assert duration(rgb, hint=3.0)[0] == 3.0
  assert duration(dict(rgb, s3d=_rand(2, 1024)), {"s3d": [[0, 1], [1, 5.25]]})[0] == 5.25
  # The largest duration any expert implies wins: 25 rgb rows x 0.2 s = 5.0 s > s3d's 4.25 s
  # (this assertion used to expect features_t to win over rows x seconds-per-row).
  assert duration(dict(rgb, s3d=_rand(2, 1024)), {"s3d": [[0, 1], [1, 4.25]]})[0] == (
      pytest.approx(5.0))
  assert duration(rgb)[0] == pytest.approx(5.0)  # 25 rows x 0.2 s.
  assert duration({"face": _rand(3, 512)}) == (None, {mx.VIDEO_NO_DURATION: 1})


def test_caption_skips(tmp_path):
  _write_h5(tmp_path / "v.h5", {"s3d": _rand(2, 1024)},
            captions=[b"  ", "", np.array([b" ", b"\t"], dtype=object), b"a man", "\x01"])
  c = builder.SkipCounter()
  rec = mx.read_video(str(tmp_path / "v.h5"), "v", "train", DIMS, _Tiny.encode, c)
  assert rec["sentences"] == ["a man"] and rec["tokens"] == [[4, 5]]
  assert c.summary()["skipped"] == {mx.CAPTION_EMPTY: 3, mx.CAPTION_NO_TOKENS: 1}
  _write_h5(tmp_path / "w.h5", {"s3d": _rand(2, 1024)}, captions=[" "])
  c = builder.SkipCounter()
  assert mx.read_video(str(tmp_path / "w.h5"), "w", "train", DIMS, _Tiny.encode, c) is None
  assert c.summary()["skipped"] == {mx.CAPTION_EMPTY: 1, mx.VIDEO_NO_CAPTIONS: 1}


def test_errors_name_file_and_key(tmp_path):
  _write_h5(tmp_path / "dim.h5", {"s3d": _rand(3, 1000)})
  with pytest.raises(features_lib.FeatureFileError,
                     match=r"dim\.h5\['features\.s3d'\]: expected shape \[T, 1024\].*"
                           r"\[3, 1000\]"):
    mx.read_video(str(tmp_path / "dim.h5"), "d", "train", DIMS, _Tiny.encode,
                  builder.SkipCounter())
  _write_h5(tmp_path / "t.h5", {"s3d": _rand(3, 1024)}, {"s3d": np.zeros((3, 3))})
  with pytest.raises(features_lib.FeatureFileError,
                     match=r"t\.h5\['features_t\.s3d'\]: expected \[T\] start times"):
    mx.read_video(str(tmp_path / "t.h5"), "t", "train", DIMS, _Tiny.encode,
                  builder.SkipCounter())
  # A truncated file (a download cut short).
  _write_h5(tmp_path / "full.h5", {"rgb": _rand(50, 2048)})
  data = (tmp_path / "full.h5").read_bytes()
  (tmp_path / "cut.h5").write_bytes(data[:len(data) // 2])
  with pytest.raises(features_lib.FeatureFileError, match=r"cut\.h5"):
    mx.read_video(str(tmp_path / "cut.h5"), "c", "train", DIMS, _Tiny.encode,
                  builder.SkipCounter())


# ------------------------------------------------------------------------------------------
# End to end through `hvt-prepare`.


def _msrvtt_fixture(root: pathlib.Path, annotations: pathlib.Path) -> dict:
  """Writes HDF5 files for real 1k-A ids and split lists with quirks; returns expectations."""
  real = {s: (annotations / "msrvtt" / f"{s}_list_jsfusion.txt").read_text().split()[:4]
          for s in ("train", "val")}
  feats_dir = root / "feats"
  feats_dir.mkdir()
  expected = {}
  for n, vid in enumerate(real["train"] + real["val"]):
    feats = {"s3d": _rand(3 + n, 1024, n), "vggish": _rand(2 + n, 128, 100 + n)}
    if n % 2:
      feats["face"] = _rand(1 + n, 512, 200 + n)  # face missing for even n.
    times = {"s3d": np.stack([np.arange(3 + n), np.arange(3 + n) + 1.0], 1)}
    captions = [f"a man is singing {n}", np.array([b"two", b"people", b"dance"], dtype=object)]
    path = feats_dir / f"{vid}.h5"
    if n == 3:  # MMT's own nested cache layout.
      path = feats_dir / vid[0] / vid[1] / vid[2] / f"{vid}.h5"
      path.parent.mkdir(parents=True)
    _write_h5(path, feats, times, captions)
    expected[vid] = (feats, 3.0 + n)
  (root / "train_list_jsfusion.txt").write_text(
      "\n".join(real["train"] + [real["train"][0], "video_nofile"]) + "\n")
  (root / "val_list_jsfusion.txt").write_text("\n".join(real["val"]) + "\n")
  return {"real": real, "expected": expected, "feats_dir": feats_dir}


def test_msrvtt_end_to_end_and_rerun(tmp_path, annotations):
  fx = _msrvtt_fixture(tmp_path, annotations)
  out = tmp_path / "out"
  argv = ["msrvtt", "--features", str(fx["feats_dir"]), "--split-lists",
          str(tmp_path / "train_list_jsfusion.txt"), str(tmp_path / "val_list_jsfusion.txt"),
          "--experts", "face,s3d,vggish", "--output", str(out)]
  dataset_dir = prepare.prepare(argv)
  meta = reader.load_metadata(dataset_dir)
  assert meta["name"] == "msrvtt" and meta["tokenizer"] == "wordpiece"
  assert meta["modalities"] == {"face": 512, "s3d": 1024, "vggish": 128}
  assert meta["splits"] == {"train": 4, "val": 4}
  # face is missing for the even-numbered videos: 2 per split.
  assert meta["missing"] == {s: {"face": 2, "s3d": 0, "vggish": 0} for s in ("train", "val")}
  assert meta["counts"]["skipped"] == {mx.ID_DUPLICATE: 1, mx.FILE_MISSING: 1}
  assert meta["counts"]["examples"][mx.FILE_MISSING] == ["video_nofile"]
  assert meta["vocab_size"] == 30522

  tok = wordpiece.WordPieceTokenizer.from_file()
  seen = []
  for split in ("train", "val"):
    for ex in reader.load_split(dataset_dir, split).as_numpy_iterator():
      vid = ex["video_id"].decode()
      seen.append(vid)
      feats, duration = fx["expected"][vid]
      n = list(fx["expected"]).index(vid)
      assert ex["split"].decode() == split and ex["duration"] == duration
      for e in ("face", "s3d", "vggish"):
        want = feats.get(e, np.zeros((0, DIMS[e]), np.float32))
        np.testing.assert_array_equal(ex[f"features/{e}"], want)
      np.testing.assert_array_equal(ex["timestamps/s3d"][:, 0], np.arange(3 + n))
      assert [s.decode() for s in ex["sentences"]] == [f"a man is singing {n}",
                                                       "two people dance"]
      assert [t.tolist() for t in ex["tokens"]] == [tok.encode(f"a man is singing {n}"),
                                        tok.encode("two people dance")]
      np.testing.assert_array_equal(ex["segments"], -np.ones((2, 2)))
  assert seen == fx["real"]["train"] + fx["real"]["val"]

  # Interrupted re-run: a run killed mid-write leaves a hidden temp dir; a run that fails on a
  # truncated file leaves the previous complete dataset in place.
  stale = out / ".tmp-999999999-deadbeef" / "msrvtt"
  stale.mkdir(parents=True)
  (stale / "msrvtt-train.tfrecord-00000-of-00001").write_bytes(b"partial")
  victim = fx["feats_dir"] / f"{fx['real']['val'][2]}.h5"
  good = victim.read_bytes()
  victim.write_bytes(good[:len(good) // 3])
  with pytest.raises(features_lib.FeatureFileError, match=fx["real"]["val"][2]):
    prepare.prepare(argv)
  assert reader.find_dataset_dir(str(out)) == dataset_dir
  assert reader.load_metadata(dataset_dir)["splits"] == {"train": 4, "val": 4}
  # Fixed file + re-run -> same dataset, the same examples record for record; the dead
  # run's work dir is gone.
  shards = data_fixtures.shard_examples(dataset_dir)
  victim.write_bytes(good)
  assert prepare.prepare(argv) == dataset_dir
  assert data_fixtures.shard_examples(dataset_dir) == shards
  assert reader.find_dataset_dir(str(out)) == dataset_dir
  assert [p.name for p in out.iterdir()] == ["msrvtt"]
  # Beam workers (--num-workers N; the builder machinery is tested in test_builder) receive
  # the record builder and its items by pickle: unpickled, they build the same records.
  plan = mx.make_plan(builder.SkipCounter(), "msrvtt", str(fx["feats_dir"]),
                      [str(tmp_path / "train_list_jsfusion.txt"),
                       str(tmp_path / "val_list_jsfusion.txt")], experts="face,s3d,vggish")
  build, items = pickle.loads(pickle.dumps((plan.build, plan.items["val"])))
  for item, original in zip(items, plan.items["val"]):
    got, want = build(item, builder.SkipCounter()), plan.build(original, builder.SkipCounter())
    assert got.keys() == want.keys() and got["video_id"] == want["video_id"]
    for e in ("face", "s3d", "vggish"):
      np.testing.assert_array_equal(got["features"][e], want["features"][e])


def test_lsmdc_word_tokenizer_and_clip_durations(tmp_path):
  feats_dir = tmp_path / "feats"
  feats_dir.mkdir()
  train = ["0001_A_00.00.01.000-00.00.03.500", "0001_A_00.01.00.000-00.01.04.000"]
  test = ["0002_B_01.00.00.000-01.00.02.000"]
  for i, vid in enumerate(train + test):
    _write_h5(feats_dir / f"{vid}.h5", {"rgb": _rand(4, 2048, i)},
              captions=[f"Someone walks {'in' if i < 2 else 'out'}."])
  (tmp_path / "LSMDC16_annos_training.csv").write_text(
      "".join(f"{v}\t0\t0\t0\t0\tSomeone walks.\n" for v in train))
  (tmp_path / "public.csv").write_text(test[0] + "\n")
  dataset_dir, _ = mx.convert(
      "lsmdc", str(feats_dir),
      [str(tmp_path / "LSMDC16_annos_training.csv"), f"test={tmp_path / 'public.csv'}"],
      str(tmp_path / "out"), experts="rgb", tokenizer="word", verbose=False)
  meta = reader.load_metadata(dataset_dir)
  assert meta["name"] == "lsmdc" and meta["splits"] == {"train": 2, "test": 1}
  vocab = reader.load_vocab(dataset_dir)
  # Word vocabulary from train captions only ("out" is test-only -> <unk>).
  assert vocab == ["<pad>", "<unk>", ".", "in", "someone", "walks"]
  exs = {s: list(reader.load_split(dataset_dir, s).as_numpy_iterator())
         for s in ("train", "test")}
  assert [e["duration"] for e in exs["train"]] == [2.5, 4.0]  # From the clip names.
  assert exs["test"][0]["duration"] == 2.0
  assert [t.tolist() for t in exs["test"][0]["tokens"]] == [[4, 5, 1, 2]]
  np.testing.assert_allclose(exs["train"][0]["timestamps/rgb"][:, 1], [0.625, 1.25, 1.875, 2.5])


def test_nonfinite_rows_keep_their_own_times(tmp_path):
  # The reviewer's repro: scene [18, 2208], row 3 inf, no features_t -> duration 18 rows x 1 s
  # over all 18 rows; row r keeps [r, r + 1] (not the 17 kept rows re-spread over 17 s).
  scene = _rand(18, 2208)
  scene[3] = np.inf
  _write_h5(tmp_path / "v.h5", {"scene": scene})
  c = builder.SkipCounter()
  rec = mx.read_video(str(tmp_path / "v.h5"), "v", "train", {"scene": 2208}, _Tiny.encode, c)
  assert rec["duration"] == 18.0
  rows = [r for r in range(18) if r != 3]
  np.testing.assert_array_equal(rec["features"]["scene"], scene[rows])
  np.testing.assert_array_equal(rec["timestamps"]["scene"], [[r, r + 1] for r in rows])
  assert c.summary()["repaired"] == {mx.ROWS_NONFINITE: 1}


def test_duration_is_largest_over_experts(tmp_path):
  # s3d features_t ends at 20.0 s, 103 rgb rows x 0.2 s = 20.6 s -> 20.6 s, so neither
  # expert's rows are squeezed.
  _write_h5(tmp_path / "v.h5", {"s3d": _rand(20, 1024), "rgb": _rand(103, 2048)},
            {"s3d": np.stack([np.arange(20.0), np.arange(20.0) + 1], 1)})
  rec = mx.read_video(str(tmp_path / "v.h5"), "v", "train", DIMS, _Tiny.encode,
                      builder.SkipCounter())
  assert rec["duration"] == pytest.approx(20.6)
  np.testing.assert_allclose(rec["timestamps"]["rgb"][-1], [20.4, 20.6], rtol=1e-6)


def test_feature_rows_past_the_end_are_dropped(tmp_path):
  s3d = _rand(4, 1024)
  times = np.array([[0.0, 5.0], [5.0, 10.0], [10.0, 12.0], [11.0, 13.0]])
  _write_h5(tmp_path / "v.h5", {"s3d": s3d}, {"s3d": times}, attrs={"duration": 10.0})
  c = builder.SkipCounter()
  rec = mx.read_video(str(tmp_path / "v.h5"), "v", "train", {"s3d": 1024}, _Tiny.encode, c)
  np.testing.assert_array_equal(rec["features"]["s3d"], s3d[:2])
  np.testing.assert_array_equal(rec["timestamps"]["s3d"], [[0, 5], [5, 10]])
  assert c.summary()["repaired"] == {mx.common.FEATURES_PAST_END: 1}


def test_msrvtt_max_videos_and_video_ids(tmp_path, annotations, capsys):
  fx = _msrvtt_fixture(tmp_path, annotations)
  base = ["msrvtt", "--features", str(fx["feats_dir"]), "--split-lists",
          str(tmp_path / "train_list_jsfusion.txt"), str(tmp_path / "val_list_jsfusion.txt"),
          "--experts", "s3d", "--output", str(tmp_path / "out")]
  meta = reader.load_metadata(prepare.prepare(base + ["--max-videos", "2"]))
  assert meta["splits"] == {"train": 2, "val": 2}
  ids = tmp_path / "ids.txt"
  ids.write_text(f"{fx['real']['train'][1]}\n{fx['real']['val'][0]}\nvideo_unknown\n")
  meta = reader.load_metadata(prepare.prepare(base + ["--video-ids", str(ids)]))
  assert meta["splits"] == {"train": 1, "val": 1}
  assert meta["counts"]["examples"][mx.common.VIDEO_ID_NOT_FOUND] == ["video_unknown"]
  assert "--video-ids: 2 of 3 ids found in the split lists" in capsys.readouterr().out
  ids.write_text("video_unknown\n")
  with pytest.raises(SystemExit) as e:
    prepare.main(base + ["--video-ids", str(ids)])
  assert e.value.code == 2
  assert "none of the 1 --video-ids are in the split lists" in capsys.readouterr().err


def test_all_zero_rows_counted_once_per_video(tmp_path):
  # A zeroed block (rows entirely 0) in two experts of one video: kept, counted once.
  s3d, rgb = _rand(6, 1024, 1), _rand(10, 2048, 2)
  s3d[2:4] = 0.0
  rgb[7] = 0.0
  _write_h5(tmp_path / "v.h5", {"s3d": s3d, "rgb": rgb}, attrs={"duration": 6.0})
  c = builder.SkipCounter()
  rec = mx.read_video(str(tmp_path / "v.h5"), "v", "train", {"s3d": 1024, "rgb": 2048},
                      _Tiny.encode, c)
  np.testing.assert_array_equal(rec["features"]["s3d"], s3d)
  assert c.summary()["repaired"] == {mx.common.FEATURES_ZERO_ROWS: 1}
  assert c.summary()["examples"][mx.common.FEATURES_ZERO_ROWS] == ["v"]
  # A row with a single 0 value is not an all-0 row.
  rgb[7] = _rand(1, 2048, 3)
  rgb[7, 5] = 0.0
  _write_h5(tmp_path / "w.h5", {"rgb": rgb}, attrs={"duration": 6.0})
  c = builder.SkipCounter()
  mx.read_video(str(tmp_path / "w.h5"), "w", "train", {"rgb": 2048}, _Tiny.encode, c)
  assert c.summary()["repaired"] == {}


# ------------------------------------------------------------------------------------------
# Collaborative Experts layout (per-expert pickles).


def _write_ce(root: pathlib.Path) -> None:
  """CE's layout: <prefix>-fixed_seg/-max/-avg.pickle per expert, raw-captions.pkl."""
  (root / "aggregated_s3d").mkdir(parents=True)
  (root / "aggregated_audio").mkdir()
  s3d = {"v0": _rand(5, DIMS["s3d"]), "v1": float("nan"),
         "v2": np.concatenate([_rand(2, DIMS["s3d"], 1), np.full((1, DIMS["s3d"]), np.nan)])}
  vggish_max = {"v0": _rand(1, DIMS["vggish"], 2), "v1": _rand(1, DIMS["vggish"], 3)[0]}
  vggish_avg = {"v0": np.zeros(DIMS["vggish"], np.float32)}       # -max wins over -avg
  for path, data in ((root / "aggregated_s3d" / "s3dg-fixed_seg.pickle", s3d),
                     (root / "aggregated_audio" / "vggish-max.pickle", vggish_max),
                     (root / "aggregated_audio" / "vggish-avg.pickle", vggish_avg)):
    path.write_bytes(pickle.dumps(data))
  captions = {"v0": [["a", "man", "is", "singing"], ["two", "people", "dance"]],
              "v1": [["a", "man"], []], "v2": [["people", "dance", "."]]}
  (root / "raw-captions.pkl").write_bytes(pickle.dumps(captions))


def test_ce_pickle_layout(tmp_path):
  root = tmp_path / "ce"
  _write_ce(root)
  split = tmp_path / "train_list.txt"
  split.write_text("v0\nv1\nv2\nv3\n")
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(_Tiny.VOCAB) + "\n")
  out, counter = mx.convert("msrvtt", str(root), [str(split)], str(tmp_path / "out"),
                            layout="ce", vocab_file=str(vocab), verbose=False,
                            ce_experts=["s3d=aggregated_s3d/s3dg",
                                        "vggish=aggregated_audio/vggish"])
  got = {ex["video_id"].decode(): ex
         for ex in reader.load_split(out, "train").as_numpy_iterator()}
  assert sorted(got) == ["v0", "v1", "v2"]              # v3: no captions, skipped
  ce = pickle.loads((root / "aggregated_s3d" / "s3dg-fixed_seg.pickle").read_bytes())
  v0 = got["v0"]
  np.testing.assert_array_equal(v0["features/s3d"], ce["v0"])
  np.testing.assert_array_equal(v0["timestamps/s3d"][:, 0], np.arange(5.0))   # 1 s rows
  assert v0["features/vggish"].shape == (1, DIMS["vggish"])                    # pooled -max
  np.testing.assert_array_equal(v0["timestamps/vggish"], [[0.0, 1.0]])
  assert v0["duration"] == 5.0
  assert got["v1"]["features/s3d"].shape == (0, DIMS["s3d"])                   # NaN: missing
  assert got["v2"]["features/s3d"].shape == (2, DIMS["s3d"])                   # NaN row dropped
  assert got["v2"]["features/vggish"].shape == (0, DIMS["vggish"])             # absent
  assert [len(t) for t in got["v1"]["tokens"]] == [2]                          # empty caption
  summary = counter.summary()
  assert summary["repaired"][mx.EXPERT_ALL_NONFINITE] == 1
  assert summary["repaired"][mx.ROWS_NONFINITE] == 1
  assert summary["repaired"][mx.CE_NOT_IN_PICKLE] == 1
  assert summary["repaired"][mx.CE_POOLED_ONLY] == 2
  assert summary["skipped"][mx.CAPTION_EMPTY] == 1
  assert summary["skipped"][mx.VIDEO_NO_CAPTIONS] == 1
  assert reader.load_metadata(out)["extra"]["dropped_captions"] == {"v1": [1]}
  # Dims from the pickles: the first non-empty array's width (no fixed table).
  pooled = {"a": float("nan"), "b": np.zeros((1, 64), np.float32)}
  assert mx.ce_dims({"audio": ("max", pooled)}, {"audio": "p.pickle"}) == {"audio": 64}
  with pytest.raises(features_lib.FeatureFileError, match=r"p\.pickle: no video has a "):
    mx.ce_dims({"audio": ("max", {"a": float("nan")})}, {"audio": "p.pickle"})
  with pytest.raises(FileNotFoundError, match="none of"):
    mx.convert("msrvtt", str(root), [str(split)], str(tmp_path / "o2"), layout="ce",
               vocab_file=str(vocab), verbose=False, ce_experts=["rgb=nothing/here"])
  with pytest.raises(ValueError, match="NAME=PATH_PREFIX"):
    mx.parse_ce_experts(["s3d"])


def test_activitynet_ce_layout_with_captions_json(tmp_path, annotations):
  """ActivityNet paragraphs from CE's layout: the real ActivityNet Captions annotations of
  3 train + 2 val_1 videos, CE's motion pickle (pooled -avg, keys without "v_") and audio
  pickle (aggregated_audio/vggish-audio-raw.pickle, [T, 128] rows, keys with "v_")."""
  import json  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from hvt_jax.families.mcha import view as mcha_view  # pylint: disable=g-import-not-at-top
  anns = {}
  for split, n in (("train", 3), ("val_1", 2)):
    real = json.loads((annotations / "activitynet_captions" / f"{split}.json").read_text())
    anns[split] = dict(list(real.items())[:n])
    (tmp_path / f"{split}.json").write_text(json.dumps(anns[split]))
  ids = [v for a in anns.values() for v in a]
  root = tmp_path / "ce"
  (root / "aggregated_i3d").mkdir(parents=True)
  (root / "aggregated_audio").mkdir()
  motion = {v[2:]: _rand(1, 1024, i)[0] for i, v in enumerate(ids)}
  audio = {v: _rand(4 + i, 128, 10 + i) for i, v in enumerate(ids) if i != 1}   # 1: absent
  (root / "aggregated_i3d" / "i3d-avg.pickle").write_bytes(pickle.dumps(motion))
  (root / "aggregated_audio" / "vggish-audio-raw.pickle").write_bytes(pickle.dumps(audio))
  out = prepare.prepare([
      "activitynet_experts", "--layout", "ce", "--features", str(root), "--annotations",
      str(tmp_path / "train.json"), str(tmp_path / "val_1.json"),
      "--ce-expert", "s3d=aggregated_i3d/i3d", "--ce-expert",
      "vggish=aggregated_audio/vggish-audio", "--output", str(tmp_path / "out")])
  meta = reader.load_metadata(out)
  assert meta["name"] == "activitynet_experts"
  assert meta["splits"] == {"train": 3, "val_1": 2}
  assert meta["modalities"] == {"s3d": 1024, "vggish": 128}
  assert meta["counts"]["repaired"][mx.CE_POOLED_ONLY] == 5
  assert meta["counts"]["repaired"][mx.CE_NOT_IN_PICKLE] == 1
  tok = wordpiece.WordPieceTokenizer.from_file()
  records = {}
  for split in ("train", "val_1"):
    for ex in reader.load_split(out, split).as_numpy_iterator():
      records[ex["video_id"].decode()] = ex
  assert sorted(records) == sorted(ids)
  for i, vid in enumerate(ids):
    ex, ann = records[vid], anns["train" if i < 3 else "val_1"][vid]
    assert ex["duration"] == pytest.approx(ann["duration"])
    sentences = [" ".join(s.split()) for s in ann["sentences"]]
    assert [s.decode() for s in ex["sentences"]] == sentences
    np.testing.assert_allclose(ex["segments"], ann["timestamps"], rtol=1e-6)
    np.testing.assert_array_equal(ex["features/s3d"], motion[vid[2:]][None])
    want = audio.get(vid, np.zeros((0, 128), np.float32))
    np.testing.assert_array_equal(ex["features/vggish"], want)
    if len(want):   # rows spread uniformly over the annotated duration
      np.testing.assert_allclose(ex["timestamps/vggish"][-1, 1], ann["duration"], rtol=1e-6)
      np.testing.assert_allclose(ex["timestamps/vggish"][:, 0],
                                 np.arange(len(want)) * ann["duration"] / len(want),
                                 rtol=1e-5)
    tokens = [tok.encode(s) for s in sentences]
    assert [t.tolist() for t in ex["tokens"]] == tokens
    # The MCHA query: the paragraph, the video's sentences joined (in file order).
    cfg = ml_collections.ConfigDict(dict(
        paragraph=True, max_words=200, special_ids=dict(pad=0, cls=101, sep=102)))
    para = mcha_view.paragraph_view(
        {"tokens": tf.ragged.constant([t.tolist() for t in ex["tokens"]])}, cfg)
    n = int(para["token_mask"].numpy().sum())
    assert para["tokens"].numpy()[:n].tolist() == [101, *sum(tokens, []), 102]
  # configs/mcha/activitynet.py on it: paragraph queries (one per video), R@1/5/50 reported.
  from configs.mcha import activitynet  # pylint: disable=g-import-not-at-top
  from hvt_jax import checkpoints, train  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import evaluators  # pylint: disable=g-import-not-at-top
  c = activitynet.get_config("runlocal")
  c.input.data_dir = out
  c.mesh_devices = 1
  assert c.evals.test.split == "val_1" and c.input.paragraph
  s = train.setup(c)
  options = {k: v for k, v in c.evals.test.items()
             if k not in ("type", "split", *checkpoints.BEST_FIELDS)}
  options.update(query_block=8, cand_block=8, plot=False)
  ev = evaluators.RetrievalEvaluator(train.eval_context(s), c.evals.test.split, **options)
  metrics, results = ev.run(train.init_state(s), 0)
  assert metrics["num_examples"] == metrics["num_videos"] == 2
  assert results["ids"]["t2v"][0] == [f"{v}#0" for v in ids[3:]]
  for direction in ("t2v", "v2t"):
    for k in ("R@1", "R@5", "R@50", "MdR", "MnR"):
      assert f"{direction}/{k}" in metrics
    assert metrics[f"{direction}/R@50"] == 100.0


# ------------------------------------------------------------------------------------------
# Designated captions (MSR-VTT 1k-A) when the converter drops a caption.


def _designated(ev, config) -> dict[str, tuple[list[int], int, int]]:
  """{video_id: (token ids without [CLS]/[SEP], caption_index, caption_count)} of the
  designated view."""
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  out = {}
  for batch in pipeline.eval_dataset(config, "val", ev.query_view)[0].as_numpy_iterator():
    for i in np.flatnonzero(batch["example_mask"]):
      ids = batch["tokens"][i][batch["token_mask"][i]].tolist()
      out[batch["video_id"][i].decode()] = (ids[1:-1], int(batch["caption_index"][i]),
                                            int(batch["caption_count"][i]))
  return out


def test_designated_caption_index_counts_the_source_captions(tmp_path, annotations):
  """An empty caption (or one without tokens) before the designated one is dropped by the
  converter; the designated index still names the same caption (before: the next one)."""
  from configs.mcha import msrvtt  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import evaluators  # pylint: disable=g-import-not-at-top
  real = {s: (annotations / "msrvtt" / f"{s}_list_jsfusion.txt").read_text().split()[:3]
          for s in ("train", "val")}
  captions = {real["val"][0]: ["", "a man is singing", "two people dance", "a dog runs"],
              real["val"][1]: ["a man", "\x01", "a dog", "people dance"],
              real["val"][2]: ["a man is singing", "two people dance"]}
  designated = {real["val"][0]: 2, real["val"][1]: 2, real["val"][2]: 1}
  feats = tmp_path / "feats"
  feats.mkdir()
  for n, vid in enumerate(real["train"] + real["val"]):
    _write_h5(feats / f"{vid}.h5", {"s3d": _rand(3, 1024, n)}, {"s3d": np.arange(3.0)},
              captions.get(vid, ["a man is singing"]))
  for split, ids in real.items():
    (tmp_path / f"{split}_list_jsfusion.txt").write_text("\n".join(ids) + "\n")
  out, counter = mx.convert("msrvtt", str(feats), [str(tmp_path / "train_list_jsfusion.txt"),
                                                  str(tmp_path / "val_list_jsfusion.txt")],
                            str(tmp_path / "out"), verbose=False)
  meta = reader.load_metadata(out)
  assert meta["extra"]["dropped_captions"] == {real["val"][0]: [0], real["val"][1]: [1]}
  assert counter.summary()["skipped"] == {mx.CAPTION_EMPTY: 1, mx.CAPTION_NO_TOKENS: 1}

  c = msrvtt.get_config("runlocal")
  c.input.update(data_dir=out, experts=("s3d",), untimed_experts=())
  c.mesh_devices = 1
  ctx = train.eval_context(train.setup(c))
  index = tmp_path / "jsfusion_val_caption_idx.pkl"
  index.write_bytes(pickle.dumps(designated))
  ev = evaluators.RetrievalEvaluator(ctx, "val", prefix="t2v", reverse_prefix="v2t",
                                     video_view="video", query_view="caption",
                                     caption_index_file=str(index))
  tok = wordpiece.WordPieceTokenizer.from_file()
  got = _designated(ev, c)
  assert {v: got[v][0] for v in got} == {
      v: tok.encode(captions[v][i]) for v, i in designated.items()}
  # The text ids name the source index (the one in the index file).
  lost = meta["extra"]["dropped_captions"]
  assert {v: evaluators.source_caption_index(got[v][1], lost.get(v, ())) for v in got} == (
      designated)

  # A negative index is no caption (it would read as "dropped" or "no entry").
  index.write_bytes(pickle.dumps({**designated, real["val"][0]: -2}))
  with pytest.raises(ValueError, match=r"caption_idx\.pkl: expected .*caption index \(int >= 0"):
    evaluators.RetrievalEvaluator(ctx, "val", video_view="video", query_view="caption",
                                  caption_index_file=str(index))
  # A designated caption that was dropped: an error naming the file, video and caption.
  index.write_bytes(pickle.dumps({**designated, real["val"][0]: 0}))
  ev = evaluators.RetrievalEvaluator(ctx, "val", prefix="t2v", reverse_prefix="v2t",
                                     video_view="video", query_view="caption",
                                     caption_index_file=str(index))
  got = _designated(ev, c)
  order = sorted(got)
  with pytest.raises(ValueError, match=rf"jsfusion_val_caption_idx\.pkl: video "
                                       rf"'{real['val'][0]}' of split 'val' has its "
                                       r"designated caption 0 dropped by the converter"):
    ev._check_designated(  # pylint: disable=protected-access
        {"caption_index": np.array([got[v][1] for v in order]),
         "caption_count": np.array([got[v][2] for v in order])},
        np.arange(len(order)), order)


# ------------------------------------------------------------------------------------------
# Expert dims from the dataset.


def test_lsmdc_128d_face_converts_and_mcha_builds_on_it(tmp_path):
  """MMT's LSMDC features have a 128-d face expert (MMT configs_pub/eccv20/
  LSMDC_full_trainval.json, face_dim 128): the dims come from the files, reach the
  metadata, and configs/mcha/lsmdc.py (runlocal) builds its model and train step on them
  (before: face was fixed at 512 and the files were rejected)."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs.mcha import lsmdc  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  dims = {**DIMS, "face": 128}
  feats_dir = tmp_path / "feats"
  feats_dir.mkdir()
  train_ids = [f"0001_Synthetic_Movie_00.00.{10 + 4 * i:02d}.000-00.00.{13 + 4 * i:02d}.500"
               for i in range(4)]
  test_ids = ["0002_Synthetic_Movie_01.00.00.000-01.00.02.000"]
  for i, vid in enumerate(train_ids + test_ids):
    _write_h5(feats_dir / f"{vid}.h5", {e: _rand(1 + (i + j) % 3, d, 10 * i + j)
                                         for j, (e, d) in enumerate(dims.items())},
              captions=[f"Someone walks {'in' if i % 2 else 'out'}."])
  (tmp_path / "LSMDC16_annos_training.csv").write_text(
      "".join(f"{v}\t0\t0\t0\t0\tSomeone walks.\n" for v in train_ids))
  (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text(
      "".join(f"{v}\t0\t0\t0\t0\tSomeone walks.\n" for v in test_ids))
  argv = ["lsmdc", "--features", str(feats_dir), "--split-lists",
          str(tmp_path / "LSMDC16_annos_training.csv"),
          f"test={tmp_path / 'LSMDC16_challenge_1000_publictect.csv'}",
          "--output", str(tmp_path / "out")]
  out = prepare.prepare(argv)
  meta = reader.load_metadata(out)
  assert meta["modalities"] == dict(sorted(dims.items()))
  ex = next(reader.load_split(out, "test").as_numpy_iterator())
  assert ex["features/face"].shape == (2, 128)

  c = lsmdc.get_config("runlocal")
  c.input.data_dir = out
  c.mesh_devices = 1
  c.batch_size = 4
  s = train.setup(c)
  state = train.abstract_state(s)
  face = list(c.input.experts).index("face")
  assert state["params"]["projections"][face]["kernel"].shape == (128, c.model.d_uni)
  batch, _ = next(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh,
                                   pipeline.get_view(c.model.name)))
  assert batch["face_features"].shape[-1] == 128
  # The step's program is built (traced, every shape checked; compiling it costs minutes
  # of CPU for seven experts).
  with jax.set_mesh(s.mesh):
    _, metrics = jax.eval_shape(train.make_train_step(s), state, batch)
  assert metrics["loss"].shape == ()

  # One D per expert: a file whose face has another width is an error naming both files.
  _write_h5(feats_dir / f"{train_ids[1]}.h5", {"face": _rand(2, 512)})
  with pytest.raises(features_lib.FeatureFileError,
                     match=rf"{train_ids[1]}\.h5\['features\.face'\]: expert 'face' has "
                           rf"D = 512, but 128 in .*{train_ids[0]}\.h5"):
    prepare.prepare(argv)
  # A selected expert no file has rows for: an error listing those found.
  with pytest.raises(ValueError, match=r"expert\(s\) \['audio'\]: no \[T, D\] array with "
                                       r"rows in .*experts found: \['face', 'ocr'"):
    mx.make_plan(builder.SkipCounter(), "lsmdc", str(feats_dir),
                 {"test": str(tmp_path / "LSMDC16_challenge_1000_publictect.csv")},
                 experts="face,audio")


def test_activitynet_mmt_layout(tmp_path, annotations):
  """MMT's own ActivityNet files (the paper's source; github.com/gabeur/mmt at 8f53717:
  data_loader/activitynet_dataset.py cut "val1", base/base_dataset.py get_sample_data):
  vid_feat_files/mult_h5/<c0>/<c1>/<c2>/<id>.h5 with features.s3d [T, 1024] and
  features.vggish [T, 128] and their features_t, the sentences as raw_captions.<i> word
  arrays, split lists train_list.txt / val_1_list.txt ("v_" ids, CE's lists); the real
  ActivityNet Captions ids and sentences of 3 train + 2 val_1 videos."""
  import json  # pylint: disable=g-import-not-at-top
  anns = {split: dict(list(json.loads(
      (annotations / "activitynet_captions" / f"{split}.json").read_text()).items())[:n])
          for split, n in (("train", 3), ("val_1", 2))}
  root = tmp_path / "activity-net"
  mult_h5 = root / "vid_feat_files" / "mult_h5"
  lists = root / "symlinked-feats"
  lists.mkdir(parents=True)
  expected = {}
  for split, ann in anns.items():
    (lists / f"{split}_list.txt").write_text("".join(f"{v}\n" for v in ann))
    for n, (vid, a) in enumerate(ann.items()):
      t = 4 + n
      feats = {"s3d": _rand(t, 1024, n), "vggish": _rand(t - 1, 128, 10 + n)}
      times = {"s3d": np.arange(t, dtype=np.float64),          # 1 s rows: start times
               "vggish": np.arange(t - 1) * 0.96}
      words = [np.array([w.encode() for w in s.split()], dtype=object) for s in a["sentences"]]
      path = mult_h5 / vid[0] / vid[1] / vid[2] / f"{vid}.h5"
      path.parent.mkdir(parents=True, exist_ok=True)
      _write_h5(path, feats, times, words)
      expected[vid] = (feats, times, [" ".join(s.split()) for s in a["sentences"]])
  out = prepare.prepare(["activitynet_experts", "--features", str(mult_h5), "--split-lists",
                         str(lists / "train_list.txt"), f"val_1={lists / 'val_1_list.txt'}",
                         "--output", str(tmp_path / "out")])
  meta = reader.load_metadata(out)
  assert meta["modalities"] == {"s3d": 1024, "vggish": 128}      # the files' experts
  assert meta["splits"] == {"train": 3, "val_1": 2}
  assert meta["extra"]["dropped_captions"] == {}
  tok = wordpiece.WordPieceTokenizer.from_file()
  for split, ann in anns.items():
    got = {ex["video_id"].decode(): ex for ex in reader.load_split(out, split).as_numpy_iterator()}
    assert list(got) == list(ann)
    for vid, ex in got.items():
      feats, times, sentences = expected[vid]
      for e in ("s3d", "vggish"):
        np.testing.assert_array_equal(ex[f"features/{e}"], feats[e])
        np.testing.assert_allclose(ex[f"timestamps/{e}"][:, 0], times[e], rtol=1e-6)
      assert ex["duration"] == len(feats["s3d"])        # s3d's last row ends last
      assert [s.decode() for s in ex["sentences"]] == sentences     # MMT's "cat" order
      assert [t.tolist() for t in ex["tokens"]] == [tok.encode(s) for s in sentences]
  from configs.mcha import activitynet  # pylint: disable=g-import-not-at-top
  c = activitynet.get_config()
  assert set(c.input.experts) <= set(meta["modalities"]) and c.evals.test.split in meta["splits"]

  # `tfds build` from a manual_dir in MMT's layout (its split lists beside features/).
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "features").symlink_to(mult_h5)
  for name in ("train_list.txt", "val_1_list.txt"):
    (manual / name).symlink_to(lists / name)
  tfds_builder = mx.ActivitynetExperts(data_dir=str(tmp_path / "tfds"),
                                       config="experts_wordpiece")
  plan = tfds_builder.make_plan(manual, builder.SkipCounter())
  assert dict(plan.spec.modalities) == dict(tfds_builder.builder_config.modalities)
  assert {s: [i[1] for i in items] for s, items in plan.items.items()} == {
      s: list(a) for s, a in anns.items()}
