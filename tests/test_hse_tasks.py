"""HSE beyond retrieval (hvt_jax.families.hse.tasks, and the retrieval evaluator's
incomplete observations): zero-shot action recognition, embedding pictures."""

from __future__ import annotations

import dataclasses
import json

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from hvt_jax import train
from hvt_jax.evaluation import evaluators
from hvt_jax.families.hse import tasks as hse_tasks
from hvt_jax.families.hse import view as hse_view


def _cfg(**kw):
  cfg = dict(modality="frames", max_clips=4, max_frames_per_clip=6, max_video_frames=32,
             max_words=4, max_paragraph_words=12, clip_source="segments",
             num_uniform_clips=4, clip_rule="overlap", zero_length="keep",
             frame_sampling="authors")
  cfg.update(kw)
  return ml_collections.ConfigDict(cfg)


def _record():
  """12 one-second rows whose features are their row number + 1; 3 segments tiling
  [1, 11] s (rows 1-3, 4-6, 7-10 under "overlap"), sentence i's words are 10i+1, 10i+2."""
  rows = np.arange(12, dtype=np.float32)
  return {
      "video_id": tf.constant("v"), "label": tf.constant("run fast"),
      "duration": tf.constant(12.0),
      "features/frames": tf.constant(np.repeat(rows[:, None] + 1, 3, axis=1)),
      "timestamps/frames": tf.constant(np.stack([rows, rows + 1], 1)),
      "segments": tf.constant([[1.0, 4.0], [4.0, 7.0], [7.0, 11.0]]),
      "tokens": tf.ragged.constant([[11, 12], [21, 22, 23], [31, 32]], dtype=tf.int32),
  }


def test_instance_view_cuts_each_instance_and_blanks_empty_ones():
  rec = _record()
  rec["instances/segments"] = tf.constant([[1.0, 4.0], [7.0, 11.0], [20.0, 21.0]], tf.float64)
  rec["instances/labels"] = tf.constant(["jump", "run fast", "swim"])
  out = _np(hse_tasks.instance_view(rec, _cfg(max_video_frames=3)))
  # "overlap": rows 1-3 and rows 7-10, the latter subsampled to 3 (authors: offsets 0, 1, 2);
  # [20, 21] s lies past the 12 rows: no frames, no label.
  np.testing.assert_array_equal(out["video_frame_mask"],
                                [[True] * 3, [True] * 3, [False] * 3])
  np.testing.assert_array_equal(out["video_frames"][..., 0], [[2, 3, 4], [8, 9, 10], [0, 0, 0]])
  assert out["label"].tolist() == [b"jump", b"run fast", b""]


def _np(d):
  return {k: np.asarray(v) for k, v in d.items()}


def test_observe_first_cuts_clips_sentences_and_contexts():
  cfg = _cfg()
  full = _np(hse_view.hse_view(_record(), cfg))
  one = _np(hse_tasks.observe_first(_record(), cfg, 1))
  two = _np(hse_tasks.observe_first(_record(), cfg, 2))
  np.testing.assert_array_equal(one["clip_mask"], [True, False, False, False])
  np.testing.assert_array_equal(one["sentence_mask"], [True, False, False, False])
  np.testing.assert_array_equal(two["clip_mask"], [True, True, False, False])
  np.testing.assert_array_equal(two["sentence_mask"], [True, True, False, False])
  # Observed clips/sentences are unchanged; cut rows look like padding.
  np.testing.assert_array_equal(two["clip_frames"][:2], full["clip_frames"][:2])
  assert not two["clip_frame_mask"][2:].any() and not two["clip_frames"][2:].any()
  assert not two["sentence_token_mask"][2:].any() and not two["sentence_tokens"][2:].any()
  np.testing.assert_array_equal(two["sentence_tokens"][:2], full["sentence_tokens"][:2])
  # Paragraph context: the observed sentences' words only.
  np.testing.assert_array_equal(one["paragraph_tokens"][one["paragraph_token_mask"]], [11, 12])
  np.testing.assert_array_equal(two["paragraph_tokens"][two["paragraph_token_mask"]],
                                [11, 12, 21, 22, 23])
  # Video context: the rows of the observed clips' span (feature value = row + 1).
  rows = lambda ex: ex["video_frames"][ex["video_frame_mask"], 0] - 1
  np.testing.assert_array_equal(rows(one), [1, 2, 3])
  np.testing.assert_array_equal(rows(two), [1, 2, 3, 4, 5, 6])
  np.testing.assert_array_equal(rows(full), np.arange(12))
  # n >= the number of segments (a video with fewer clips uses all it has): no cut at all.
  for n in (3, 5):
    got = _np(hse_tasks.observe_first(_record(), cfg, n))
    for key, value in full.items():
      np.testing.assert_array_equal(got[key], value, err_msg=f"n={n} {key}")
  with pytest.raises(ValueError, match="clip_source"):
    hse_tasks.observe_first(_record(), _cfg(clip_source="uniform"), 1)


def test_encode_labels_counts_oov_words():
  vocab = ["<pad>", "<unk>", "run", "fast", "swim"]
  tokens, oov = hse_tasks.encode_labels(["run fast", "swim", "Ride bike"], vocab)
  np.testing.assert_array_equal(tokens, [[2, 3], [4, 0], [1, 1]])
  assert oov == pytest.approx(100.0 * 2 / 5)


def test_zero_shot_metrics_on_planted_embeddings():
  """Videos planted next to their class, except two planted next to another class."""
  mesh = jax.make_mesh((1, 1), ("data", "model"), devices=jax.devices()[:1])
  classes = [f"c{i}" for i in range(8)]
  class_emb = np.eye(8, 16, dtype=np.float32)
  rng = np.random.default_rng(0)
  labels = [classes[i % 8] for i in range(24)]
  nearest = [i % 8 for i in range(24)]
  nearest[0], nearest[9] = 3, 2          # two mistakes: class 0 -> 3, class 1 -> 2
  video = class_emb[nearest] + 0.01 * rng.normal(size=(24, 16)).astype(np.float32)
  video[0] += 0.5 * class_emb[0]          # ... the true class second-best
  video[9] -= 0.5 * class_emb[1]          # ... the true class last
  video /= np.linalg.norm(video, axis=1, keepdims=True)
  metrics, per_class = hse_tasks.zero_shot_metrics(video, labels, class_emb, classes, mesh)
  assert metrics["top1"] == pytest.approx(100.0 * 22 / 24)
  assert metrics["top5"] == pytest.approx(100.0 * 23 / 24)   # video 9: its class not near
  assert metrics["chance_top1"] == 12.5 and metrics["num_classes"] == 8
  assert metrics["majority_top1"] == 12.5
  assert metrics["mean_class_top1"] == pytest.approx((2 * 200 / 3 + 6 * 100) / 8)
  assert per_class["c0"] == {"videos": 3, "top1": pytest.approx(200 / 3)}
  assert per_class["c4"]["top1"] == 100.0


def test_tsne_separates_clusters():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(0, 0.1, (15, 8)), rng.normal(3, 0.1, (15, 8))])
  y = hse_tasks.tsne(x, perplexity=5, iterations=300)
  assert y.shape == (30, 2) and np.isfinite(y).all()
  d = ((y[:, None] - y[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  cluster = np.repeat([0, 1], 15)
  np.testing.assert_array_equal(cluster[d.argmin(1)], cluster)   # 2-D neighbours kept
  a, b = y[:15], y[15:]
  within = np.median([np.linalg.norm(a - a.mean(0), axis=1), np.linalg.norm(b - b.mean(0),
                                                                             axis=1)])
  assert np.linalg.norm(a.mean(0) - b.mean(0)) > 2 * within


class _Writer:
  def write_scalars(self, step, scalars):
    del step, scalars


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
  from data_prep import demo  # pylint: disable=g-import-not-at-top
  data = tmp_path_factory.mktemp("data")
  demo.write_demo(str(data), num_train=16, num_val=24, verbose=False)
  return data


@pytest.fixture(scope="module", params=["hse", "fse"])
def demo_run(request, demo_data):
  """An untrained runlocal HSE/FSE with every evaluator of the demo config."""
  from configs.hse import demo as demo_config  # pylint: disable=g-import-not-at-top
  data = demo_data
  c = demo_config.get_config(f"runlocal,model={request.param}")
  c.input.data_dir = str(data)
  c.input.max_clips = 5            # every demo video has <= 5 clips
  # the demo's evaluators (runlocal keeps only retrieval)
  full = demo_config.get_config(f"model={request.param}")
  c.evals = full.evals
  c.evals.embeddings.max_videos = 6
  c.evals.embeddings.iterations = 250
  s = train.setup(c)
  return c, s, train.init_state(s)


def test_demo_evaluators_write_metrics_curves_and_pictures(demo_run, tmp_path):
  c, s, state = demo_run
  evals = train.build_evaluators(s)
  assert sorted(type(e).__name__ for e in evals) == [
      "EmbeddingPlotEvaluator", "RetrievalEvaluator", "RetrievalEvaluator",
      "ZeroShotEvaluator", "ZeroShotEvaluator"]
  evaluators.run_all(evals, state, 3, _Writer(), str(tmp_path))
  out = tmp_path / "eval" / "val"
  metrics = json.loads((out / "metrics.json").read_text())
  # Everything observed (demo videos have 3-5 clips): exactly the full retrieval.
  for direction in ("p2v", "v2p"):
    for k in ("R@1", "R@5"):
      assert metrics[f"incomplete/{direction}/{k}@n=5"] == metrics[f"{direction}/{k}"]
      for n in range(1, 6):
        assert 0.0 <= metrics[f"incomplete/{direction}/{k}@n={n}"] <= 100.0
  curve = json.loads((out / "incomplete_curve.json").read_text())
  assert curve["n"] == [1, 2, 3, 4, 5] and len(curve["p2v"]["R@1"]) == 5
  assert (out / "incomplete_curve.png").stat().st_size > 5000
  # Zero-shot: every demo val video is labelled with an event name.
  assert metrics["zeroshot/num_videos"] == 24 and metrics["zeroshot/num_unlabeled"] == 0
  assert 1 <= metrics["zeroshot/num_classes"] <= 24
  assert 0.0 <= metrics["zeroshot/top1"] <= metrics["zeroshot/top5"] <= 100.0
  assert 0.0 <= metrics["zeroshot/oov_rate"] <= 100.0
  assert metrics["zeroshot/chance_top1"] <= metrics["zeroshot/majority_top1"] <= 100.0
  per_class = json.loads((out / "zeroshot_per_class.json").read_text())["per_class"]
  assert sum(v["videos"] for v in per_class.values()) == 24
  # Each labelled instance (the demo's clips): as many as the metadata counts, each covering
  # rows; the classes are the event names of the split's clips.
  from hvt_jax.input import reader  # pylint: disable=g-import-not-at-top
  instances = reader.load_metadata(s.data_dir)["instances"]["val"]
  assert 3 * 24 <= instances <= 5 * 24
  assert metrics["zeroshot_instances/num_instances"] == instances
  assert metrics["zeroshot_instances/num_empty_instances"] == 0
  assert metrics["zeroshot_instances/num_classes"] >= metrics["zeroshot/num_classes"]
  per_class = json.loads((out / "zeroshot_instances_per_class.json").read_text())["per_class"]
  assert sum(v["instances"] for v in per_class.values()) == instances
  # Embeddings: 6 videos, 3-5 clips and as many sentences each (FSE: video + paragraph).
  if c.model.name == "hse":
    assert 36 <= metrics["embeddings/num_points"] <= 60
  else:
    assert metrics["embeddings/num_points"] == 12
  assert (out / "embeddings_tsne.png").stat().st_size > 5000
  points = json.loads((out / "embeddings_tsne.json").read_text())
  assert len(points["xy"]) == metrics["embeddings/num_points"]
  assert len(set(points["group"])) > 1


def test_evaluators_reject_other_models_and_options(demo_run):
  c, s, _ = demo_run
  with pytest.raises(ValueError, match="pred"):
    hse_tasks.ZeroShotEvaluator(train.eval_context(s), "val", pred="score")
  with pytest.raises(ValueError, match="videos='clips'; valid"):
    hse_tasks.ZeroShotEvaluator(train.eval_context(s), "val", videos="clips")
  # A dataset written before instances were part of the schema: one clear error.
  old = dataclasses.replace(s, meta={k: v for k, v in s.meta.items() if k != "instances"})
  with pytest.raises(ValueError, match="no instances field.*convert it again"):
    hse_tasks.ZeroShotEvaluator(train.eval_context(old), "val", videos="instances")
  with pytest.raises(ValueError, match="colour_by"):
    hse_tasks.EmbeddingPlotEvaluator(train.eval_context(s), "val", colour_by="event")
  with pytest.raises(ValueError, match="clip_source"):
    c2 = c.copy_and_resolve_references()
    c2.input.clip_source = "uniform"
    evaluators.RetrievalEvaluator(
        train.eval_context(dataclasses.replace(s, config=c2)), "val", observe_first=2)


def test_zero_shot_uses_the_low_level_encoders(demo_run):
  """Videos: HSE's clip-level encoder over the whole video (= its context embedding); class
  names: the sentence-level encoder (= a sentence's embedding). FSE: its one level."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  c, s, state = demo_run
  ds, _, _ = pipeline.eval_dataset(c, "val", hse_tasks._view(None, with_label=True))
  batch, host = next(pipeline.iterate(ds, s.mesh, hse_tasks._view(None, with_label=True)))
  assert host["label"][0] and "label" not in batch
  out = jax.device_get(nnx.merge(s.graphdef, state["params"]).embed(batch))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  preds = train.eval_context(s).preds
  video = np.asarray(hse_tasks._video_low_fn(preds["encode_clip_level"])(state["params"],
                                                                         batch))
  if c.model.name == "hse":
    want_video, tokens, want_text = (out["video_context"], batch["sentence_tokens"][:, 0],
                                     out["sentences"][:, 0])
  else:
    want_video, tokens, want_text = out["video"], batch["paragraph_tokens"], out["paragraph"]
  text = np.asarray(hse_tasks._text_low_fn(preds["encode_sentence_level"])(state["params"],
                                                       np.asarray(tokens)))
  np.testing.assert_allclose(video, unit(want_video), atol=1e-5)
  np.testing.assert_allclose(text, unit(want_text), atol=1e-5)


def test_glove_fill_replaces_unknown_label_words(demo_run, tmp_path):
  """Label words outside the vocabulary take their vectors from a GloVe file (the paper's
  transfer to unseen actions); words the file lacks stay <unk> and count as OOV."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import reader  # pylint: disable=g-import-not-at-top
  c, s, state = demo_run
  vocab = reader.load_vocab(s.data_dir)
  known = vocab[5]
  dim = c.model.word_dim
  rng = np.random.default_rng(0)
  blorp, known_vec = rng.normal(size=dim), rng.normal(size=dim)
  path = tmp_path / "glove.txt"
  path.write_text(f"blorp {' '.join(map(str, blorp))}\n{known} {' '.join(map(str, known_vec))}\n")
  labels = [f"{known} blorp", "zorg"]
  filled, vectors = hse_tasks.glove_fill(labels, vocab, str(path), dim)
  assert filled == ["blorp"]
  np.testing.assert_allclose(vectors[0], blorp, rtol=1e-6)
  tokens, oov = hse_tasks.encode_labels(labels, vocab, filled)
  assert tokens[0].tolist() == [5, len(vocab)] and tokens[1].tolist() == [1, 0]
  assert oov == pytest.approx(100 / 3)
  assert hse_tasks.encode_labels(labels, vocab)[1] == pytest.approx(200 / 3)
  text_fn = hse_tasks._text_low_fn(train.eval_context(s).preds["encode_sentence_level"])
  got = np.asarray(text_fn(state["params"], tokens, vectors))
  model = nnx.merge(s.graphdef, state["params"])
  table = np.asarray(model.words.table[...])
  emb = np.stack([table[5], blorp.astype(np.float32)])[None]
  enc = model.text_low if hasattr(model, "text_low") else model.text_encoder
  want = np.asarray(enc(emb, np.ones((1, 2), bool)))[0]
  np.testing.assert_allclose(got[0], want / np.linalg.norm(want), atol=1e-5)
  # The evaluator reports both variants; the demo's class names are all in the vocabulary.
  ev = hse_tasks.ZeroShotEvaluator(train.eval_context(s), "val", word_vectors=str(path))
  metrics, _ = ev.run(state, 0)
  assert metrics["zeroshot/glove/filled_words"] == 0
  assert metrics["zeroshot/glove/top1"] == metrics["zeroshot/top1"]
  with pytest.raises(ValueError, match="not found"):
    hse_tasks.ZeroShotEvaluator(train.eval_context(s), "val",
                                word_vectors=str(tmp_path / "nope.txt"))


@pytest.mark.parametrize("model", ["hse", "fse"])
def test_activitynet_configs_take_the_tasks_argument(model):
  """``:tasks`` adds the demo's evaluators of HSE beyond retrieval on ActivityNet's val_1."""
  from configs.hse import activitynet_c3d  # pylint: disable=g-import-not-at-top
  from configs.hse import demo as demo_config  # pylint: disable=g-import-not-at-top
  get = lambda arg: activitynet_c3d.get_config(f"model={model},{arg}")
  demo = demo_config.get_config(f"model={model}")
  plain, tasks = get(""), get("tasks")
  assert sorted(plain.evals) == ["val"]
  assert sorted(tasks.evals) == sorted(demo.evals) == [
      "embeddings", "incomplete", "val", "zeroshot", "zeroshot_instances"]
  for name in ("incomplete", "zeroshot", "zeroshot_instances", "embeddings"):
    assert tasks.evals[name].split == "val_1" and demo.evals[name].split == "val"
  assert tasks.evals.zeroshot_instances.videos == "instances"
  assert sorted(demo_config.get_config(f"model={model},runlocal").evals) == ["val"]


def test_two_evaluators_writing_one_namespace_fail_before_training(demo_run):
  """Two evaluators of one split under one prefix would write the same metrics: an error
  naming both, when the evaluators are built (before the first step), not after training."""
  c, s, _ = demo_run
  c2 = c.copy_and_resolve_references()
  c2.evals.val2 = dict(c2.evals.val)
  with pytest.raises(ValueError, match=r"config.evals.val and config.evals.val2 both write "
                                       r"metrics of split 'val' under 'p2v'"):
    train.build_evaluators(dataclasses.replace(s, config=c2))
