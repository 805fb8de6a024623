"""The many-event moments demo (data_prep/demo_moments.py) and `hvt-prepare demo --variant
moments`."""

import os

import numpy as np
import pytest

from data_prep import demo_moments
from hvt_jax.input import reader
from hvt_jax.vocab import wordpiece
from hvt_jax.cli import prepare
from tests import data_fixtures


@pytest.fixture(scope="module")
def data():
  return demo_moments.generate(num_train=60, num_val=40, seed=2, subtitle_dim=6)


def test_deterministic_and_streams(data):
  again = demo_moments.generate(num_train=60, num_val=40, seed=2, subtitle_dim=6)
  fewer_val = demo_moments.generate(num_train=60, num_val=3, seed=2, subtitle_dim=6)
  other = demo_moments.generate(num_train=60, num_val=40, seed=3, subtitle_dim=6)
  for a, b in ((data, again), (data, fewer_val)):
    for ra, rb in zip(a.records["train"], b.records["train"], strict=True):
      assert ra["sentences"] == rb["sentences"] and ra["tokens"] == rb["tokens"]
      np.testing.assert_array_equal(ra["features"]["frames"], rb["features"]["frames"])
  assert len(fewer_val.records["val"]) == 3
  assert other.records["train"][0]["sentences"] != data.records["train"][0]["sentences"]


def test_moments_times_and_words(data):
  tok = wordpiece.WordPieceTokenizer.from_file()
  durations = []
  for split in ("train", "val"):
    for rec, events in zip(data.records[split], data.events[split]):
      seg, dur = rec["segments"], rec["duration"]
      n_rows = rec["features"]["frames"].shape[0]
      durations.append(dur)
      assert n_rows == dur and 2 <= len(seg) <= 10 and len(events) == len(seg)
      assert np.all(seg[:, 0] >= 0) and np.all(seg[:, 1] <= dur)
      lengths = seg[:, 1] - seg[:, 0]
      assert np.all((lengths >= 3) & (lengths <= 16))
      assert np.all(seg[1:, 0] >= seg[:-1, 1])                  # events do not overlap
      np.testing.assert_array_equal(rec["timestamps"]["frames"][:, 0], np.arange(n_rows))
      for sentence, ids, (a, b) in zip(rec["sentences"], rec["tokens"], events):
        words = sentence.split()
        assert demo_moments.EVENT_WORDS[a] in words and demo_moments.ATTRIBUTE_WORDS[b] in words
        assert tok.convert_ids_to_tokens(ids) == words          # one WordPiece per word
      sub_ts = rec["timestamps"]["subtitle"]
      assert rec["features"]["subtitle"].shape == (len(sub_ts), 6)
      inside = [(np.any((sub_ts[i, 0] >= seg[:, 0]) & (sub_ts[i, 1] <= seg[:, 1])))
                for i in range(len(sub_ts))]
      assert all(inside)                                       # subtitles only during events
  # Durations spread over a wide range: duration buckets hold short and long videos.
  q = np.percentile(durations, [10, 90])
  assert q[0] < 40 and q[1] > 100


def test_features_carry_the_sentence(data):
  """A moment's mean feature is closest to the prototype sum of its own (action,
  attribute) among all kinds, for most moments (the signal a model can learn)."""
  rng = np.random.default_rng([2, 0])
  p = data.params
  actions = rng.normal(size=(p["num_events"], p["feature_dim"]))
  attributes = rng.normal(size=(p["num_attributes"], p["feature_dim"]))
  kinds = (actions[:, None] + attributes[None]).reshape(-1, p["feature_dim"])
  hits, total = 0, 0
  for rec, events in zip(data.records["val"], data.events["val"]):
    frames = rec["features"]["frames"]
    for (s, e), (a, b) in zip(rec["segments"].astype(int), events):
      mean = frames[s:e].mean(0)
      best = np.argmin(((kinds - mean) ** 2).sum(1))
      hits += best == a * p["num_attributes"] + b
      total += 1
  assert hits / total > 0.8


def test_bad_parameters():
  with pytest.raises(ValueError, match="inconsistent"):
    demo_moments.generate(num_train=2, num_val=2, min_events=5, max_events=3)


def test_hvt_prepare_moments_variant(tmp_path):
  out = prepare.prepare(["demo", "--variant", "moments", "--output", str(tmp_path),
                         "--num-train", "6", "--num-val", "4", "--subtitle-dim", "4"])
  meta = reader.load_metadata(out)
  assert meta["tokenizer"] == "wordpiece" and meta["splits"] == {"train": 6, "val": 4}
  assert len(reader.load_vocab(out)) == 30522
  examples = data_fixtures.read_examples(out, "val")
  direct = demo_moments.generate(num_train=6, num_val=4, subtitle_dim=4)
  for rec in direct.records["val"]:
    ex = examples[rec["video_id"]]
    assert data_fixtures.token_lists(ex) == rec["tokens"]
    np.testing.assert_allclose(ex["features/subtitle"], rec["features"]["subtitle"])
  # The default variant is still the HSE demo.
  hse = prepare.prepare(["demo", "--output", str(tmp_path / "hse"), "--num-train", "5",
                         "--num-val", "3"])
  assert reader.load_metadata(hse)["tokenizer"] == "word"


def test_demo_tables_mean_std_and_buckets():
  from hvt_jax.evaluation import tables  # pylint: disable=g-import-not-at-top
  from hvt_jax.families import hammer  # pylint: disable=g-import-not-at-top
  runs = lambda vr1, mdr: [{"vr/R@1": v, "vcmr/R@10@IoU0.5": 2 * v,
                            "by_duration/16-40s/num_queries": 5.0,
                            "by_duration/16-40s/vr/MdR": m,
                            "by_duration/40-160s/num_queries": 7.0,
                            "by_duration/40-160s/vr/MdR": m + 1} for v, m in zip(vr1, mdr)]
  out = hammer.moment_tables({"HAMMER": runs([10.0, 20.0], [3.0, 5.0]),
                            "FLAT": runs([4.0, 4.0], [9.0, 9.0])})
  lines = out.splitlines()
  hammer = next(l for l in lines if l.startswith("HAMMER "))
  assert "15.00±5.00" in hammer and "30.00±10.00" in hammer
  bucket = next(l for l in lines if l.startswith("HAMMER 40-160s"))
  assert "7.00±0.00" in bucket and "5.00±1.00" in bucket
  assert any(l.startswith("FLAT 16-40s") and "9.00±0.00" in l for l in lines)
  single = tables.mean_std_table({"HAMMER": runs([10.0], [3.0])}, ["vr/R@1"])
  assert "10.00" in single and "±" not in single


def test_vr_breakdown_counts_what_the_ranking_holds():
  """tools/moments_diagnostics.py: the fractions of the top-k other videos holding the
  query's pair / action / attribute, against their base rates over the other videos."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "moments_diagnostics", os.path.join(os.path.dirname(__file__), os.pardir, "tools",
                                          "moments_diagnostics.py"))
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  events = {"q": [[0, 0]], "pair": [[0, 0], [5, 5]], "act": [[0, 1]], "attr": [[2, 0]],
            "none": [[3, 3]]}
  idx = {v: i for i, v in enumerate(events)}
  ranking = ["q", "pair", "act", "none", "attr"]       # the query's own video is skipped
  sub = {"video2idx": idx, "VR": [{"desc_id": "q#0",
                                   "predictions": [[idx[v], 0, 1, 0.5] for v in ranking]}]}
  top2 = tool.vr_breakdown(events, sub, top_k=2)        # pair, act
  assert (top2["pair"], top2["action"], top2["attribute"]) == (50.0, 100.0, 50.0)
  assert (top2["pair_base"], top2["action_base"], top2["attribute_base"]) == (25, 50, 50)
  assert tool.vr_breakdown(events, sub, top_k=1)["pair"] == 100.0
  with pytest.raises(ValueError, match="top_k"):
    tool.vr_breakdown(events, sub, top_k=0)
  with pytest.raises(ValueError, match="not in the metadata"):
    tool.vr_breakdown({"q": [[0, 0]]}, sub)
