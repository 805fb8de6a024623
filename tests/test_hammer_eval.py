"""The two-stage moment evaluator (hvt_jax/evaluation/moments.py): hand-made metric cases, a
NumPy transcription of the stage 1 ranking, and stage 2's aligned pairs.

``_Double`` implements the model contract of HAMMER's prediction functions (a dot-product
VR score, start/end distributions from frame scores) so the evaluator's code paths run
without the real model; the end-to-end test with HAMMER itself is in this file too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data_prep import builder, demo_moments
from hvt_jax.evaluation import localization, moments
from hvt_jax import families, flops
from hvt_jax.evaluation import corpus
from hvt_jax.models import base

D, F = 6, 12


class _Double(nnx.Module):
  """A stand-in with HAMMER's prediction functions: score = max over frames of <q, frame>;
  start/end log-probabilities from the rising/falling edges of the frame scores."""

  PREDICT_FNS = ("encode_query", "encode_candidate", "score", "localize")

  def __init__(self, max_frames: int = 8):
    self.scale = nnx.Param(jnp.ones((D,), jnp.float32))
    self.max_frames = max_frames

  def encode_query(self, batch):
    return {"q": batch["q"]}

  def encode_candidate(self, batch):
    return {"frames": batch["frames"] * self.scale[...], "frame_mask": batch["frame_mask"],
            "frame_seconds": batch["frame_seconds"], "duration": batch["duration"]}

  def score(self, q, v):
    s = jnp.einsum("qd,vfd->qvf", q["q"], v["frames"], precision=jax.lax.Precision.HIGHEST)
    return jnp.where(v["frame_mask"][None], s, -1e9).max(-1)

  def localize(self, q, v, top_k):
    s = jnp.einsum("bd,bfd->bf", q["q"], v["frames"], precision=jax.lax.Precision.HIGHEST)
    mask = v["frame_mask"]
    pad = lambda x: jnp.pad(x, ((0, 0), (1, 1)), constant_values=0.0)
    sp = pad(jnp.where(mask, s, 0.0))
    start = jax.nn.log_softmax(jnp.where(mask, sp[:, 1:-1] - sp[:, :-2], -jnp.inf))
    end = jax.nn.log_softmax(jnp.where(mask, sp[:, 1:-1] - sp[:, 2:], -jnp.inf))
    t = jnp.arange(F)
    ok = (t[None, :] > t[:, None]) & (t[None, :] - t[:, None] < self.max_frames)
    table = jnp.where(ok, start[:, :, None] + end[:, None, :], -jnp.inf).reshape(-1, F * F)
    score, idx = jax.lax.top_k(table, top_k)
    dt, dur = v["frame_seconds"][:, None], v["duration"][:, None]
    st = jnp.clip((idx // F) * dt, 0, dur)
    ed = jnp.clip((idx % F + 1) * dt, 0, dur)
    return jnp.stack([st, ed, score], -1)


def _corpus(num_videos=9, queries_per_video=2, seed=0):
  """A tiny corpus: each query's vector is planted in a random window of its video."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(4, F + 1, num_videos)
  frames = rng.normal(0, 0.5, (num_videos, F, D)).astype(np.float32)
  mask = np.arange(F)[None] < lengths[:, None]
  frames *= mask[..., None]
  q, qv, segs = [], [], []
  for v in range(num_videos):
    for _ in range(queries_per_video):
      vec = rng.normal(size=D).astype(np.float32)
      a = int(rng.integers(0, lengths[v] - 1))
      b = int(rng.integers(a + 1, lengths[v]))
      frames[v, a:b + 1] += vec
      q.append(vec)
      qv.append(v)
      segs.append((a * 1.5, (b + 1) * 1.5))
  dur = (lengths * 1.5).astype(np.float32)
  video_enc = {"frames": frames, "frame_mask": mask, "frame_seconds": np.full(num_videos, 1.5,
                                                                              np.float32),
               "duration": dur}
  return moments.CorpusData(
      query_enc={"q": np.stack(q)}, video_enc=video_enc,
      query_ids=[str(i) for i in range(len(q))], query_video=np.asarray(qv),
      segments=np.asarray(segs, np.float32), video_ids=[f"v{i}" for i in range(num_videos)],
      video_index=np.arange(num_videos), durations=dur)


def _numpy_scores(data):
  s = np.einsum("qd,vfd->qvf", data.query_enc["q"].astype(np.float64),
                data.video_enc["frames"].astype(np.float64))
  return np.where(data.video_enc["frame_mask"][None], s, -1e9).max(-1)


@pytest.fixture(scope="module")
def double():
  graphdef, params = nnx.split(_Double(), nnx.Param)
  return graphdef, params


def test_stage1_ranks_match_numpy_and_stage2_pairs_align(double):
  graphdef, params = double
  data = _corpus()
  mesh = jax.make_mesh((8, 1), ("data", "model"))
  assert mesh.size == 8
  # Blocks smaller than the corpus so that blocks, padding and the shifted last candidate
  # block are all exercised.
  preds = base.PredictFns(graphdef, _Double.PREDICT_FNS)
  out = moments.predict(data, preds, params, mesh, top_k_videos=4, svmr_moments=5,
                        blocks=(1, 4, 1))
  sim = _numpy_scores(data)
  own = sim[np.arange(len(sim)), data.query_video][:, None]
  expected = (sim > own).sum(1) + ((np.isclose(sim, own, rtol=0, atol=1e-5)).sum(1) + 1) / 2
  np.testing.assert_array_equal(out["ranks"], expected)
  order = np.argsort(-sim, axis=1, kind="stable")[:, :4]
  np.testing.assert_array_equal(out["top_videos"], order)
  # Stage 2 runs the model on exactly the aligned pairs: compare with one call per pair.
  model = nnx.merge(graphdef, params)
  for qi in (0, 7, len(data.query_ids) - 1):
    v = data.query_video[qi]
    one = lambda tree, i: jax.tree.map(lambda x: x[i:i + 1], tree)
    direct = np.asarray(model.localize(one(data.query_enc, qi), one(data.video_enc, v), 5))[0]
    np.testing.assert_allclose(out["svmr"][qi][:, 1:], direct, rtol=1e-5)
    assert np.all(out["svmr"][qi][:, 0] == v)
    top = out["top_videos"][qi, 1]
    direct = np.asarray(model.localize(one(data.query_enc, qi), one(data.video_enc, top), 1))
    row = out["vcmr"][qi][1]
    assert row[0] == top and row[3] == pytest.approx(out["top_scores"][qi, 1])
    np.testing.assert_allclose(row[1:3], direct[0, 0, :2], rtol=1e-6)
  metrics = moments.moment_metrics(data, out["ranks"], out["vcmr"], out["svmr"], buckets=2)
  assert metrics["vr/R@1"] > 50   # the planted signal is found
  assert metrics["vr/R@100"] == 100.0


def _data(durations, query_video, segments):
  n = len(durations)
  return moments.CorpusData(
      query_enc=None, video_enc=None, query_ids=[str(i) for i in range(len(query_video))],
      query_video=np.asarray(query_video), segments=np.asarray(segments, np.float32),
      video_ids=[f"v{i}" for i in range(n)], video_index=np.arange(n),
      durations=np.asarray(durations, np.float32))


def test_metrics_hand_made():
  # Query 0: gt [0, 10] in v0. Query 1: gt [20, 30] in v1. Query 2: gt [0, 10] in v2.
  data = _data([40.0, 60.0, 100.0], [0, 1, 2], [[0, 10], [20, 30], [0, 10]])
  ranks = np.array([1.0, 2.0, 150.0])
  vcmr = [
      # IoU exactly 0.5 ([0, 5]) and exactly 0.7 ([0, 7]): >= counts at equality.
      np.array([[0, 0, 5, 9.0], [0, 0, 7, 8.0]]),
      # The right window in the wrong video first (IoU 0), then the right video at rank 2.
      np.array([[0, 20, 30, 9.0], [1, 20, 30, 8.0]]),
      # The correct moment is the 101st: only the first 100 count.
      np.array([[1, 0, 10, 200.0 - i] for i in range(100)] + [[2, 0, 10, 1.0]]),
  ]
  svmr = [np.array([[0, 0, 5, 1.0]]), np.array([[1, 20, 30, 1.0]]),
          np.array([[2, 0, 2, 1.0], [2, 0, 10, 0.5]])]
  m = moments.moment_metrics(data, ranks, vcmr, svmr, buckets=(0, 50, 200))
  third = 100 / 3
  assert m["vcmr/R@1@IoU0.5"] == pytest.approx(third)       # query 0 only
  assert m["vcmr/R@1@IoU0.7"] == 0.0                         # [0, 5] is 0.5 < 0.7
  assert m["vcmr/R@5@IoU0.7"] == pytest.approx(2 * third)    # [0, 7] = 0.7 and query 1
  assert m["vcmr/R@100@IoU0.5"] == pytest.approx(2 * third)  # query 2's 101st never counts
  assert m["svmr/R@1@IoU0.5"] == pytest.approx(2 * third)
  assert m["svmr/R@5@IoU0.5"] == 100.0
  assert m["vr/R@1"] == pytest.approx(third) and m["vr/R@100"] == pytest.approx(2 * third)
  assert m["vr/MdR"] == 2.0
  # TL: the first SVMR moment: IoU 0.5, 1.0, 0.2.
  assert m["tl/mIoU"] == pytest.approx(100 * (0.5 + 1.0 + 0.2) / 3)
  assert m["tl/R@1@IoU0.3"] == pytest.approx(2 * third)
  # Buckets by the ground-truth video's duration: [0, 50) holds query 0, [50, 200] 1 and 2.
  assert m["by_duration/0-50s/num_queries"] == 1.0
  assert m["by_duration/50-200s/num_queries"] == 2.0
  assert m["by_duration/0-50s/vcmr/R@1@IoU0.5"] == 100.0
  assert m["by_duration/50-200s/vcmr/R@1@IoU0.5"] == 0.0
  assert m["by_duration/50-200s/vr/MdR"] == 76.0
  assert m["by_duration/50-200s/tl/mIoU"] == pytest.approx(60.0)


def test_duration_buckets():
  edges = moments.duration_edges(np.array([10.0, 20, 30, 40]), 2)
  np.testing.assert_allclose(edges, [10, 25, 40])
  # [lo, hi) inside; the outer buckets are open-ended: no duration is left out.
  np.testing.assert_array_equal(moments.bucket_of([10, 24.9, 25, 40, 41, 5], edges),
                                [0, 0, 1, 1, 1, 0])
  np.testing.assert_array_equal(moments.bucket_of([0, 500], np.array([0, 60, np.inf])),
                                [0, 1])
  # In the durations' precision: float32 2.3 (2.2999999523) is on an edge of 2.3.
  np.testing.assert_array_equal(
      moments.bucket_of(np.float32([2.3, 2.2]), np.array([0.0, 2.3, 5.0])), [1, 0])
  # Equal durations: one bucket holding them all.
  edges = moments.duration_edges(np.full(3, 7.0, np.float32), 4)
  np.testing.assert_array_equal(edges, [7, 7])
  np.testing.assert_array_equal(moments.bucket_of(np.full(3, 7.0, np.float32), edges), 0)
  with pytest.raises(ValueError, match="increasing"):
    moments.duration_edges(np.zeros(3), (10, 5))


def test_given_duration_edges_count_videos_outside_them_in_the_outer_buckets(caplog):
  data = _data([40.0, 60.0, 300.0], [0, 1, 2], [[0, 10]] * 3)
  rows = [np.array([[i, 0.0, 10.0, 1.0]]) for i in range(3)]
  with caplog.at_level("WARNING"):
    m = moments.moment_metrics(data, np.ones(3), rows, rows, buckets=(0, 50, 200))
  assert m["by_duration/0-50s/num_queries"] == 1.0
  assert m["by_duration/50-200s/num_queries"] == 2.0     # the 300 s video too
  assert "1 queries have a video outside duration_buckets [0, 200] s" in caplog.text


def _real_query_durations(root):
  """[Q] float32 video duration of every query of TVR val (from tvr_video2dur_idx.json) and
  of ActivityNet Captions val_1 (one query per sentence), as the evaluator stores them."""
  index = json.loads((root / "tvr" / "tvr_video2dur_idx.json").read_text())["val"]
  lines = (root / "tvr" / "tvr_val_release.jsonl").read_text().splitlines()
  tvr = [index[json.loads(l)["vid_name"]][0] for l in lines]
  val_1 = json.loads((root / "activitynet_captions" / "val_1.json").read_text())
  anet = [a["duration"] for a in val_1.values() for _ in a["sentences"]]
  return {"tvr": np.float32(tvr), "activitynet": np.float32(anet)}


def test_duration_buckets_hold_every_real_query(each_annotations):
  """Every real query in exactly one by_duration bucket, the shortest and the longest video
  included (the excerpts keep both): before, TVR val lost its 184.02 s video's 5 queries
  (edge 184.0) and ActivityNet val_1 its 2.3 s video's 3 (float32 2.29999995 < 2.3)."""
  kind, root = each_annotations
  num_queries = {"excerpt": {"tvr": 120, "activitynet": 157},
                 "full": {"tvr": 10_895, "activitynet": 17_505}}[kind]
  extremes = {"tvr": (8.02, 184.02), "activitynet": (2.3, 745.5)}
  for name, durations in _real_query_durations(root).items():
    assert len(durations) == num_queries[name]
    assert (durations.min(), durations.max()) == tuple(np.float32(extremes[name]))
    edges = moments.duration_edges(durations, 4)
    assert len(edges) == 5, (name, edges)
    which = moments.bucket_of(durations, edges)
    counts = [int((which == b).sum()) for b in range(4)]
    assert sum(counts) == len(durations), (name, edges, counts)
    assert (which[durations == durations.min()] == 0).all()
    assert (which[durations == durations.max()] == 3).all()


def test_duration_bucket_metrics_add_up_on_the_real_excerpts(annotations):
  # Through moment_metrics: the buckets' num_queries add up to the split's, and the outer
  # buckets are named by the rounded extremes.
  for name, durations in _real_query_durations(annotations).items():
    q = len(durations)
    data = _data(durations, np.arange(q), [[0.0, 1.0]] * q)
    rows = [np.array([[i, 0.0, 1.0, 1.0]]) for i in range(q)]
    m = moments.moment_metrics(data, np.ones(q), rows, rows, buckets=4)
    counts = {k.split("/")[1]: v for k, v in m.items() if k.endswith("/num_queries")
              and k.startswith("by_duration/")}
    assert len(counts) == 4 and sum(counts.values()) == q, (name, counts)
    lo, hi = {"tvr": ("8-", "-184s"), "activitynet": ("2.3-", "-745.5s")}[name]
    assert sum(b.startswith(lo) for b in counts) == 1, counts
    assert sum(b.endswith(hi) for b in counts) == 1, counts


def test_per_video_vs_xml_ranking():
  top_videos = np.array([[3, 5]])
  top_scores = np.array([[2.0, 1.0]])            # VR prefers video 3
  lp = np.log
  m = np.array([[[[0, 4, lp(0.1)], [1, 3, lp(0.05)], [0, 1, -np.inf]],
                 [[5, 9, lp(0.9)], [2, 30, lp(0.8)], [6, 8, lp(0.01)]]]])
  per_video, dropped = moments.corpus_moments(top_videos, top_scores, m, "per_video")
  np.testing.assert_allclose(per_video[0], [[3, 0, 4, 2.0], [5, 5, 9, 1.0]])
  assert dropped == 0
  xml, _ = moments.corpus_moments(top_videos, top_scores, m, "xml")
  # log p(v) over the two videos, + log p_st p_ed; -inf moments are padding.
  log_pv = np.array([2.0, 1.0]) - np.logaddexp(2.0, 1.0)
  expected = sorted([(log_pv[0] + lp(0.1), 3, 0, 4), (log_pv[0] + lp(0.05), 3, 1, 3),
                     (log_pv[1] + lp(0.9), 5, 5, 9), (log_pv[1] + lp(0.8), 5, 2, 30),
                     (log_pv[1] + lp(0.01), 5, 6, 8)], reverse=True)
  np.testing.assert_allclose(xml[0], [[v, s, e, sc] for sc, v, s, e in expected])
  assert xml[0][0, 0] == 5                        # video 5's moment beats video 3's
  # max_seconds: video 5's second moment (28 s) is dropped; per_video falls back past
  # over-long first moments.
  xml, dropped = moments.corpus_moments(top_videos, top_scores, m, "xml", max_seconds=10)
  assert dropped == 1 and len(xml[0]) == 4
  m2 = m.copy()
  m2[0, 1, [0, 1]] = m2[0, 1, [1, 0]]
  per_video, dropped = moments.corpus_moments(top_videos, top_scores, m2, "per_video",
                                              max_seconds=10)
  np.testing.assert_allclose(per_video[0][1], [5, 5, 9, 1.0])
  assert dropped == 1


def test_subsample_keeps_ground_truth():
  rng = np.random.default_rng(0)
  query_video = rng.integers(0, 50, 300)
  q, v = moments.subsample(query_video, 50, max_queries=40, max_videos=20, seed=3)
  assert len(q) == 40 and len(v) == 20
  assert np.isin(query_video[q], v).all()
  q2, v2 = moments.subsample(query_video, 50, max_queries=40, max_videos=20, seed=3)
  np.testing.assert_array_equal(q, q2)
  np.testing.assert_array_equal(v, v2)
  # Few videos: queries of videos that do not fit are dropped, never their video.
  q, v = moments.subsample(query_video, 50, max_queries=0, max_videos=3, seed=1)
  assert len(v) == 3 and np.isin(query_video[q], v).all()
  assert len(q) == np.isin(query_video, v).sum()
  q, v = moments.subsample(query_video, 50, 0, 0)
  assert len(q) == 300 and len(v) == 50
  data = _data(np.arange(50.0), query_video, np.zeros((300, 2)))
  sub = data.take(*moments.subsample(query_video, 50, 10, 12, seed=0))
  assert [sub.video_ids[i] for i in sub.query_video] == [
      data.video_ids[query_video[int(i)]] for i in sub.query_ids]


class _TextDouble(_Double):
  """``_Double`` that reads the family's ``query`` view: the query vector is the sum of its
  tokens' random vectors."""

  def __init__(self, vocab_size: int):
    super().__init__()
    self.words = nnx.Param(jax.random.normal(jax.random.key(0), (vocab_size, D)))

  def encode_query(self, batch):
    counts = (jax.nn.one_hot(batch["tokens"], self.words.shape[0])
              * batch["token_mask"][..., None]).sum(1)
    return {"q": counts @ self.words[...]}


def test_video_without_frames_is_left_out(tmp_path, caplog):
  """A video with no feature row in the streams the config reads (frames; its subtitle
  rows are not read) is left out with its queries; the metrics are those of the split
  without it."""
  from configs.hammer import demo as hammer_demo  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  d = demo_moments.generate(num_train=2, num_val=4, seed=1, feature_dim=D, subtitle_dim=3,
                            subtitle_prob=1.0)
  val = d.records["val"]
  empty = dict(val[1], video_id="no_frames")
  empty["features"] = dict(empty["features"], frames=np.zeros((0, D), np.float32))
  empty["timestamps"] = dict(empty["timestamps"], frames=np.zeros((0, 2), np.float32))
  graphdef, params = nnx.split(_TextDouble(len(d.spec.vocab)), nnx.Param)
  mesh = jax.make_mesh((8, 1), ("data", "model"))
  metrics, results = {}, {}
  for name, records in (("with", val[:2] + [empty] + val[2:]), ("without", val)):
    builder.write_dataset(d.spec, {"train": d.records["train"], "val": records},
                          str(tmp_path / name), counter=builder.SkipCounter())
    c = hammer_demo.get_config("runlocal")
    c.input.data_dir, c.input.max_frames = str(tmp_path / name), F
    views = families.get("hammer").views
    ctx = corpus.EvalContext(base.PredictFns(graphdef, _TextDouble.PREDICT_FNS), c, mesh,
                             pipeline.dataset_info(c)[1], pipeline.dataset_info(c)[0], views,
                             views["hammer"])
    ev = moments.MomentEvaluator(ctx, "val", top_k_videos=3, svmr_moments=3,
                                 query_block=2, cand_block=2, pair_block=2, submission=False)
    metrics[name], results[name] = ev.run({"params": params}, 0)
  # The run's FLOPs (logged as <split>/perf/ranking_*): XLA's count of both stages on the
  # whole corpus in one block each (score on every pair; localize on each query's 3 top
  # videos and its own), less the per-call work (the localizer's [F, F] table) the
  # evaluator's per-pair count leaves out.
  data = results["without"]["data"]
  nq, nv = len(data.query_ids), len(data.video_ids)
  preds = base.PredictFns(graphdef, _TextDouble.PREDICT_FNS)
  full = lambda fn, *args: flops.program_flops(jax.jit(fn).lower(*args))
  qi = np.repeat(np.arange(nq), 4)
  want = (full(corpus.score_fn(preds["score"], False), data.query_enc, data.video_enc, params)
          + full(lambda p, q, v: preds["localize"](p, q, v, 1), params,
                 corpus.take(data.query_enc, qi), corpus.take(data.video_enc, qi % nv)))
  assert want > 0 and ev.perf.flops == pytest.approx(want, rel=0.02)
  assert ev.perf.seconds > 0
  assert metrics["with"].pop("num_empty_videos") == 1
  assert metrics["without"].pop("num_empty_videos") == 0
  assert metrics["with"] == metrics["without"]
  assert metrics["with"]["num_videos"] == 4
  assert metrics["with"]["num_queries"] == sum(len(r["sentences"]) for r in val)
  data = results["with"]["data"]
  assert "no_frames" not in data.video_ids
  assert not any(q.startswith("no_frames#") for q in data.query_ids)
  assert "no_frames" in caplog.text


def test_submission_layout_round_trip(tmp_path):
  """The written submission evaluates with corpus_moment_metrics to the same numbers."""
  data = _data([40.0, 60.0], [0, 1], [[0, 10], [20, 30]])
  vcmr = [np.array([[0, 0, 5, 9.0], [1, 0, 7, 8.0]]), np.array([[1, 20, 30, 3.0]])]
  entries = [{"desc_id": int(q), "predictions": [[data.video_ids[int(r[0])], *r[1:]]
                                                 for r in rows.tolist()]}
             for q, rows in zip(data.query_ids, vcmr)]
  sub = localization.write_tvr_submission(tmp_path / "s.json", {"v0": 7, "v1": 3}, entries)
  assert sub["VCMR"][0]["predictions"][1][0] == 3
  gt = [{"desc_id": 0, "vid_name": "v0", "ts": [0, 10]},
        {"desc_id": 1, "vid_name": "v1", "ts": [20, 30]}]
  from_file = localization.corpus_moment_metrics(sub["VCMR"], gt, video2idx=sub["video2idx"])
  ours = moments.moment_metrics(data, np.array([1.0, 1.0]), vcmr, vcmr, buckets=1)
  for k, v in from_file.items():
    if k.startswith("vcmr/"):
      assert ours[k] == v, k


def test_submission_in_the_tvr_release_layout(tmp_path, annotations):
  """The evaluator's submission (TVR video indices from tvr_video2dur_idx.json, integer
  desc_ids) evaluated against the TVR val release lines as they ship, the way TVR's
  standalone_eval reads them, gives the evaluator's own VCMR/SVMR numbers."""
  import types  # pylint: disable=g-import-not-at-top
  lines = [json.loads(l) for l in
           (annotations / "tvr" / "tvr_val_release.jsonl").read_text().splitlines()[:60]]
  index = json.loads((annotations / "tvr" / "tvr_video2dur_idx.json").read_text())["val"]
  videos = sorted({l["vid_name"] for l in lines} | set(sorted(index)[:20]))
  pos = {v: i for i, v in enumerate(videos)}
  data = moments.CorpusData(
      query_enc=None, video_enc=None, query_ids=[str(l["desc_id"]) for l in lines],
      query_video=np.array([pos[l["vid_name"]] for l in lines]),
      segments=np.array([l["ts"] for l in lines], np.float32), video_ids=videos,
      video_index=np.arange(len(videos)) + 1000,
      durations=np.array([index[v][0] for v in videos], np.float32))
  vcmr, svmr = [], []
  for i, l in enumerate(lines):
    g, (st, ed) = pos[l["vid_name"]], l["ts"]
    other = (g + 1) % len(videos)
    shifted = [g, st + 0.2 * (ed - st), ed + 0.2 * (ed - st)]   # IoU 0.8 / 1.2 = 0.67
    rows = {0: [[g, st, ed], [other, st, ed]], 1: [[other, st, ed], shifted],
            2: [[other, st, ed]]}[i % 3]
    vcmr.append(np.array([r + [10.0 - j] for j, r in enumerate(rows)], np.float64))
    svmr.append(np.array([shifted + [1.0], [g, st, ed, 0.5]]))
  ranks = np.array([1.0 + i % 3 for i in range(len(lines))])
  metrics = moments.moment_metrics(data, ranks, vcmr, svmr, buckets=(0, 70, 200))
  ev = moments.MomentEvaluator.__new__(moments.MomentEvaluator)
  ev.ctx = types.SimpleNamespace(meta={"extra": {"video_index": {
      "val": {v: i for v, (_, i) in index.items()}}}})
  ev.split, ev.prefix, ev.submission = "val", "", True
  k = 3
  pred = {"vcmr": vcmr, "svmr": svmr, "top_videos": np.tile(np.arange(k), (len(lines), 1)),
          "top_scores": np.tile(-np.arange(k, dtype=np.float32), (len(lines), 1)),
          "best": np.zeros((len(lines), k, 2))}
  ev.write(str(tmp_path), 0, {"data": data, "pred": pred})
  sub = json.loads((tmp_path / "tvr_submission.json").read_text())
  assert sub["video2idx"] == {v: index[v][1] for v in videos}
  assert [e["desc_id"] for e in sub["VCMR"]] == [l["desc_id"] for l in lines]
  from_file = localization.corpus_moment_metrics(
      sub["VCMR"], lines, video2idx=sub["video2idx"], svmr_predictions=sub["SVMR"])
  for key, value in from_file.items():
    if not key.startswith("vr/"):
      assert metrics[key] == value, key
  assert metrics["vcmr/R@1@IoU0.5"] == pytest.approx(100 * 20 / 60)
  assert metrics["vcmr/R@5@IoU0.5"] == pytest.approx(100 * 40 / 60)
  assert metrics["vcmr/R@5@IoU0.7"] == pytest.approx(100 * 20 / 60)
  assert metrics["svmr/R@1@IoU0.5"] == 100.0 and metrics["svmr/R@1@IoU0.7"] == 0.0
  n_short = sum(index[l["vid_name"]][0] < 70 for l in lines)
  assert metrics["by_duration/0-70s/num_queries"] == n_short


# --------------------------------------------------------------------------------------
# End to end with the real HAMMER: runlocal train + hvt-eval through the console scripts.


def _e2e_dataset(out_dir):
  """The moments demo (train, val) plus a query-only split "test_public" stored as TVR's
  (its records are the corpus, its queries in the metadata: data_prep/tvr.py)."""
  d = demo_moments.generate(num_train=12, num_val=6, seed=1)
  corpus_records, queries = [], {"desc_ids": [], "sentences": [], "tokens": []}
  for i, rec in enumerate(d.records["val"][:4]):
    corpus_records.append(dict(rec, video_id=f"tp{i}", split="test_public",
                               segments=np.zeros((0, 2), np.float32), sentences=[],
                               tokens=[]))
    queries["desc_ids"] += [100 + 10 * i + j for j in range(len(rec["sentences"]))]
    queries["sentences"] += rec["sentences"]
    queries["tokens"] += rec["tokens"]
  spec = dataclasses.replace(d.spec, corpus_splits=("test_public",),
                             extra=dict(d.spec.extra, queries={"test_public": queries}))
  splits = {"train": d.records["train"], "val": d.records["val"],
            "test_public": corpus_records}
  builder.write_dataset(spec, splits, str(out_dir), counter=builder.SkipCounter())
  return d, queries


def test_hammer_train_and_eval_through_console_scripts(tmp_path):
  repo = pathlib.Path(__file__).resolve().parents[1]
  data, queries = _e2e_dataset(tmp_path / "data")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             JAX_COMPILATION_CACHE_DIR=os.environ.get("HVT_TEST_JAX_CACHE",
                                                      "/tmp/hvt_jax_test_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  workdir = tmp_path / "run"
  flags = [f"--config={repo}/configs/hammer/demo.py:runlocal", f"--workdir={workdir}",
           f"--config.input.data_dir={tmp_path / 'data'}", "--config.evals.moments.log_steps=0"]

  def run(script, *extra):
    proc = subprocess.run([str(pathlib.Path(sys.executable).parent / script), *flags, *extra],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout

  # Trains; the evaluation at the end (a subsample: 2 queries, 2 videos) fills the compile
  # cache that hvt-eval then reads.
  run("hvt-train", "--config.num_train_steps=2", "--config.evals.moments.max_queries=2",
      "--config.evals.moments.max_videos=2")
  out = run("hvt-eval", "--split=val", "--split=test_public")
  assert "vcmr/R@1@IoU0.5" in out
  val = workdir / "eval" / "val"
  metrics = json.loads((val / "metrics.json").read_text())
  sub = json.loads((val / "tvr_submission.json").read_text())
  records = data.records["val"]
  num_q = sum(len(r["sentences"]) for r in records)
  assert metrics["num_queries"] == num_q and metrics["num_videos"] == len(records)
  # The file evaluates, as TVR's standalone_eval reads it, to the metrics written.
  gt = [{"desc_id": f"{r['video_id']}#{i}", "vid_name": r["video_id"], "ts": seg.tolist()}
        for r in records for i, seg in enumerate(r["segments"])]
  assert sorted(sub["video2idx"].values()) == list(range(len(records)))
  from_file = localization.corpus_moment_metrics(
      sub["VCMR"], gt, video2idx=sub["video2idx"], svmr_predictions=sub["SVMR"])
  for k, v in from_file.items():
    if not k.startswith("vr/"):
      assert metrics[k] == pytest.approx(v, abs=1e-9), k
  for entry in sub["VCMR"]:   # per_video: one moment per retrieved video, best first
    videos = [p[0] for p in entry["predictions"]]
    assert len(videos) == len(set(videos)) == 4   # runlocal: top_k_videos=4
    assert all(0 <= p[1] < p[2] for p in entry["predictions"])
  gt_video = {g["desc_id"]: sub["video2idx"][g["vid_name"]] for g in gt}
  for entry in sub["SVMR"]:
    assert {p[0] for p in entry["predictions"]} == {gt_video[entry["desc_id"]]}
  first = [e["predictions"][0][0] == gt_video[e["desc_id"]] for e in sub["VR"]]
  assert metrics["vr/R@1"] == pytest.approx(100 * np.mean(first))
  # The query-only split: predictions for its queries over its own corpus, no metrics.
  tp = workdir / "eval" / "test_public"
  tp_metrics = json.loads((tp / "metrics.json").read_text())
  assert tp_metrics["num_queries"] == len(queries["desc_ids"]) and "vr/R@1" not in tp_metrics
  tp_sub = json.loads((tp / "tvr_submission.json").read_text())
  assert "SVMR" not in tp_sub and set(tp_sub["video2idx"]) == {f"tp{i}" for i in range(4)}
  assert [e["desc_id"] for e in tp_sub["VCMR"]] == queries["desc_ids"]
  assert all(len(e["predictions"]) == 4 for e in tp_sub["VR"])
