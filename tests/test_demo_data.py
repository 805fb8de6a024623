"""Tests for the synthetic demo dataset (data_prep.demo) and `hvt-prepare demo`."""

import collections

import numpy as np
import pytest

from data_prep import demo
from hvt_jax.input import reader
from hvt_jax.vocab import word_vocab
from hvt_jax.cli import prepare


@pytest.fixture(scope="module")
def data():
  return demo.generate_demo(num_train=300, num_val=100, seed=3)


def _same(a: demo.DemoData, b: demo.DemoData, split: str) -> bool:
  for ra, rb in zip(a.records[split], b.records[split], strict=True):
    for key in ("video_id", "duration", "sentences", "tokens"):
      if ra[key] != rb[key]:
        return False
    if not (np.array_equal(ra["features"]["frames"], rb["features"]["frames"])
            and np.array_equal(ra["segments"], rb["segments"])):
      return False
  return True


def test_deterministic_given_seed(data):
  again = demo.generate_demo(num_train=300, num_val=100, seed=3)
  assert _same(data, again, "train") and _same(data, again, "val")
  assert again.vocab == data.vocab
  other = demo.generate_demo(num_train=300, num_val=100, seed=4)
  assert not _same(data, other, "train")
  # Each split has its own stream: the val size does not change the train videos.
  fewer_val = demo.generate_demo(num_train=300, num_val=7, seed=3)
  assert _same(data, fewer_val, "train") and len(fewer_val.records["val"]) == 7


def test_shapes_and_times(data):
  for split, n in (("train", 300), ("val", 100)):
    assert len(data.records[split]) == n
    for rec, events in zip(data.records[split], data.clip_events[split]):
      feats = rec["features"]["frames"]
      seg = rec["segments"]
      lengths = seg[:, 1] - seg[:, 0]
      assert 3 <= len(events) <= 5 and len(seg) == len(events) == len(rec["sentences"])
      assert np.all((lengths >= 4) & (lengths <= 12))
      # Clips tile the video: one frame row per second, timestamps [r, r + 1].
      assert seg[0, 0] == 0 and np.all(seg[1:, 0] == seg[:-1, 1])
      t = int(seg[-1, 1])
      assert feats.shape == (t, 32) and feats.dtype == np.float32 and rec["duration"] == t
      np.testing.assert_array_equal(rec["timestamps"]["frames"],
                                    np.stack([np.arange(t), np.arange(t) + 1], 1))
      assert all(5 <= len(s.split()) <= 10 for s in rec["sentences"])
      assert rec["split"] == split and rec["video_id"].startswith(f"demo_{split}_")


def test_sentences_describe_their_clip_event(data):
  assert len(data.event_words) == 48 and all(len(w) == 6 for w in data.event_words)
  all_words = [w for ws in data.event_words for w in ws]
  assert len(set(all_words)) == len(all_words)  # Content words are event-specific.
  assert not set(all_words) & set(data.fillers)
  owner = {w: e for e, ws in enumerate(data.event_words) for w in ws}
  for split in ("train", "val"):
    for rec, events in zip(data.records[split], data.clip_events[split]):
      for sentence, event in zip(rec["sentences"], events):
        content = [w for w in sentence.split() if w not in data.fillers]
        assert len(content) >= 2
        assert {owner[w] for w in content} == {event}, (sentence, event)


def test_tokens_use_train_vocab(data):
  train_sentences = [s for r in data.records["train"] for s in r["sentences"]]
  assert data.vocab == word_vocab.build_word_vocab(train_sentences)
  index = {t: i for i, t in enumerate(data.vocab)}
  for split in ("train", "val"):
    for rec in data.records[split]:
      assert rec["tokens"] == [word_vocab.encode_words(s, index) for s in rec["sentences"]]


def test_hierarchy_carries_the_signal(data):
  """A single frame is ambiguous, a clip's mean frame identifies its event."""
  frame_hits = frames = clip_hits = clips = 0
  for rec, events in zip(data.records["train"], data.clip_events["train"]):
    x = rec["features"]["frames"]
    for (start, end), event in zip(rec["segments"].astype(int), events):
      d = ((x[start:end, None, :] - data.prototypes[None]) ** 2).sum(-1)
      frame_hits += int((d.argmin(1) == event).sum())
      frames += end - start
      clip_mean = x[start:end].mean(0)
      clip_hits += int(((clip_mean - data.prototypes) ** 2).sum(-1).argmin() == event)
      clips += 1
  assert frame_hits / frames < 0.5
  assert clip_hits / clips > 0.85


def test_events_are_shared_between_videos(data):
  counts = collections.Counter(e for ev in data.clip_events["train"] for e in ev)
  total = sum(counts.values())
  # Zipf popularity: the top event is far above uniform (1/48), and nearly all are used.
  assert counts.most_common(1)[0][1] / total > 0.12
  assert len(counts) >= 40
  np.testing.assert_allclose(data.popularity.sum(), 1.0)
  per_video = [set(ev) for ev in data.clip_events["train"]]
  shares = sum(any(s & o for j, o in enumerate(per_video) if j != i)
               for i, s in enumerate(per_video))
  assert shares == len(per_video)


def test_cli_writes_loadable_dataset(tmp_path):
  path = prepare.prepare(["demo", "--output", str(tmp_path), "--num-train", "20",
                          "--num-val", "5", "--seed", "1", "--feature-dim", "8"])
  assert reader.find_dataset_dir(str(tmp_path)) == path
  meta = reader.load_metadata(path)
  assert meta["name"] == "demo" and meta["modalities"] == {"frames": 8}
  assert meta["splits"] == {"train": 20, "val": 5} and meta["tokenizer"] == "word"
  expected = demo.generate_demo(num_train=20, num_val=5, seed=1, feature_dim=8)
  assert reader.load_vocab(path) == expected.vocab
  assert meta["extra"]["event_words"] == expected.event_words
  assert meta["extra"]["event_names"] == expected.event_names
  for split in ("train", "val"):
    loaded = list(reader.load_split(path, split))
    assert len(loaded) == len(expected.records[split])
    for ex, rec, events in zip(loaded, expected.records[split], expected.clip_events[split]):
      assert ex["video_id"].numpy().decode() == rec["video_id"]
      assert ex["label"].numpy().decode() == rec["label"] != ""
      np.testing.assert_array_equal(ex["features/frames"].numpy(), rec["features"]["frames"])
      np.testing.assert_array_equal(ex["segments"].numpy(), rec["segments"])
      assert ex["tokens"].to_list() == rec["tokens"]
      assert meta["extra"]["clip_events"][split][rec["video_id"]] == events


def test_labels_name_each_videos_dominant_event(data):
  """`label` = the name (two most likely content words) of the event covering most frames;
  names are vocabulary words, so the sentence encoder can read them (zero-shot)."""
  assert len(data.event_names) == 48 and len(set(data.event_names)) == 48
  for name, words in zip(data.event_names, data.event_words):
    assert name == f"{words[0]} {words[1]}"
  vocab = set(data.vocab)
  labels = set()
  for split in ("train", "val"):
    for rec, events in zip(data.records[split], data.clip_events[split]):
      lengths = (rec["segments"][:, 1] - rec["segments"][:, 0]).astype(int)
      frames = collections.Counter()
      for e, n in zip(events, lengths):
        frames[e] += n
      best = max(frames.values())
      dominant = next(e for e in events if frames[e] == best)
      assert rec["label"] == data.event_names[dominant]
      labels.add(rec["label"])
  assert len(labels) > 20
  seen = [w for label in labels for w in label.split()]
  assert np.mean([w in vocab for w in seen]) > 0.9


def test_ordered_words_keep_each_events_word_order_and_default_is_unchanged():
  from data_prep import demo  # pylint: disable=g-import-not-at-top
  plain = demo.generate_demo(num_train=20, num_val=5)
  again = demo.generate_demo(num_train=20, num_val=5, ordered_words=False)
  assert [r["sentences"] for r in plain.records["train"]] == [
      r["sentences"] for r in again.records["train"]]
  ordered = demo.generate_demo(num_train=20, num_val=5, ordered_words=True)
  repeated = 0
  for split, records in ordered.records.items():
    for r, events in zip(records, ordered.clip_events[split]):
      for sentence, e in zip(r["sentences"], events):
        words = ordered.event_words[e]
        content = [words.index(w) for w in sentence.split() if w in words]
        assert len(content) >= 2 and content == sorted(set(content)), sentence
  for r, events in zip(plain.records["train"], plain.clip_events["train"]):
    for sentence, e in zip(r["sentences"], events):
      content = [w for w in sentence.split() if w in plain.event_words[e]]
      repeated += len(content) > len(set(content))
  assert repeated > 0   # the default draws each position independently
