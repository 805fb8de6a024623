"""Tests of hvt_jax.evaluation.localization on hand-computed cases and a brute-force reference."""

import json

import numpy as np
import pytest

from hvt_jax.evaluation import localization


@pytest.mark.parametrize("pred, gt, expected", [
    ([0, 10], [5, 15], 5 / 15),  # partial overlap: inter 5, union 15
    ([0, 2], [3, 5], 0.0),  # disjoint
    ([2, 4], [0, 10], 0.2),  # nested: 2 / 10
    ([0, 10], [2, 4], 0.2),  # nested, other way round
    ([3.5, 7.25], [3.5, 7.25], 1.0),  # identical
    ([0, 5], [5, 10], 0.0),  # touching: zero-length intersection
    ([5, 3], [0, 10], 0.0),  # start > end: empty prediction
    ([0, 10], [8, 4], 0.0),  # start > end: empty ground truth
    ([5, 5], [5, 5], 0.0),  # empty union
    ([0, 6], [3, 9], 1 / 3),  # inter 3, union 9
])
def test_temporal_iou_hand_cases(pred, gt, expected):
  iou = localization.temporal_iou(pred, gt)
  assert iou.shape == ()
  assert float(iou) == pytest.approx(expected, abs=1e-12)
  assert float(localization.temporal_iou(gt, pred)) == pytest.approx(expected, abs=1e-12)


def test_temporal_iou_shapes_and_reference():
  pred = np.array([[0, 10], [5, 15], [20, 30]], np.float64)
  gt = np.array([[0, 10], [10, 20]], np.float64)
  iou = localization.temporal_iou(pred, gt)
  np.testing.assert_allclose(iou, [[1.0, 0.0], [5 / 15, 5 / 15], [0.0, 0.0]])
  assert localization.temporal_iou(pred, gt[1]).shape == (3,)
  assert localization.temporal_iou(pred[0], gt).shape == (2,)

  # Brute force on random windows (some reversed): union of valid windows by lengths.
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 50, size=(40, 2))
  b = rng.uniform(0, 50, size=(30, 2))
  ref = np.zeros((40, 30))
  for i, (s1, e1) in enumerate(a):
    for j, (s2, e2) in enumerate(b):
      len1, len2 = max(0.0, e1 - s1), max(0.0, e2 - s2)
      inter = max(0.0, min(e1, e2) - max(s1, s2)) if len1 > 0 and len2 > 0 else 0.0
      union = len1 + len2 - inter
      ref[i, j] = inter / union if union > 0 else 0.0
  np.testing.assert_allclose(localization.temporal_iou(a, b), ref, atol=1e-12)


def test_temporal_iou_errors():
  with pytest.raises(ValueError, match="non-finite"):
    localization.temporal_iou([0, np.nan], [0, 1])
  with pytest.raises(ValueError, match=r"\[2\] or \[N, 2\]"):
    localization.temporal_iou([0, 1, 2], [0, 1])


def test_localization_metrics_hand_case():
  gt = [[0, 10]] * 4
  pred = [[0, 10], [0, 5], [0, 3], [20, 30]]  # IoU 1, 0.5, 0.3, 0
  m = localization.localization_metrics(pred, gt)
  assert m["mIoU"] == pytest.approx(100 * (1 + 0.5 + 0.3 + 0) / 4)  # 45 %
  assert m["R@1@IoU0.3"] == 75.0  # IoU exactly 0.3 counts (>=)
  assert m["R@1@IoU0.5"] == 50.0
  assert m["R@1@IoU0.7"] == 25.0
  assert list(m) == ["mIoU", "R@1@IoU0.3", "R@1@IoU0.5", "R@1@IoU0.7"]
  m = localization.localization_metrics(pred, gt, iou_thresholds=(0.25,))
  assert m == {"mIoU": pytest.approx(45.0), "R@1@IoU0.25": 75.0}
  with pytest.raises(ValueError, match=r"\[N, 2\]"):
    localization.localization_metrics(pred, gt[:3])
  with pytest.raises(ValueError, match="thresholds"):
    localization.localization_metrics(pred, gt, iou_thresholds=(0.0,))


VIDEO2IDX = {"a": 0, "b": 1, "c": 2}
GROUND_TRUTH = [
    {"desc_id": 1, "desc": "q1", "vid_name": "a", "ts": [0, 10], "type": "v"},
    {"desc_id": 2, "desc": "q2", "vid_name": "b", "ts": [10, 20], "type": "v"},
    {"desc_id": 3, "desc": "q3", "vid_name": "c", "ts": [0, 4], "type": "v"},
]
PREDICTIONS = [
    # Rows out of order; by score: (b, 0-10) wrong video, (a, 0-5) IoU 0.5,
    # (a, 0-10) IoU 1, (c, 0-10) wrong video.
    {"desc_id": 1, "predictions": [[0, 0, 10, 0.7], [1, 0, 10, 0.9], [2, 0, 10, 0.6],
                                   [0, 0, 5, 0.8]]},
    # Videos by name: (b, 12-20) IoU 8/10 = 0.8, then (b, 10-20) IoU 1.
    {"desc_id": 2, "predictions": [["b", 12, 20, 0.5], ["b", 10, 20, 0.4]]},
    # Only a wrong video.
    {"desc_id": 3, "predictions": [["a", 0, 4, 0.9]]},
]


def test_corpus_moment_metrics_hand_case():
  m = localization.corpus_moment_metrics(PREDICTIONS, GROUND_TRUTH, ks=(1, 2, 3),
                                         video2idx=VIDEO2IDX)
  third, two_thirds = 100 / 3, 200 / 3
  expected = {
      # VCMR@0.5: q1 first correct at position 2, q2 at 1, q3 never.
      "vcmr/R@1@IoU0.5": third, "vcmr/R@2@IoU0.5": two_thirds, "vcmr/R@3@IoU0.5": two_thirds,
      # VCMR@0.7: q1 first correct at position 3 (IoU 1), q2 at 1 (IoU 0.8).
      "vcmr/R@1@IoU0.7": third, "vcmr/R@2@IoU0.7": third, "vcmr/R@3@IoU0.7": two_thirds,
      # SVMR: within the right video q1's list is (0-5: 0.5), (0-10: 1); q3 has none in c.
      "svmr/R@1@IoU0.5": two_thirds, "svmr/R@2@IoU0.5": two_thirds,
      "svmr/R@3@IoU0.5": two_thirds,
      "svmr/R@1@IoU0.7": third, "svmr/R@2@IoU0.7": two_thirds, "svmr/R@3@IoU0.7": two_thirds,
      # VR: distinct videos q1: b, a, c (a 2nd); q2: b (1st); q3: a (c missing).
      "vr/R@1": third, "vr/R@2": two_thirds, "vr/R@3": two_thirds,
  }
  assert m.keys() == expected.keys()
  for key, value in expected.items():
    assert m[key] == pytest.approx(value), key


def test_corpus_default_keys_and_truncation():
  m = localization.corpus_moment_metrics(PREDICTIONS, GROUND_TRUTH, video2idx=VIDEO2IDX)
  assert list(m)[:4] == ["vcmr/R@1@IoU0.5", "vcmr/R@5@IoU0.5", "vcmr/R@10@IoU0.5",
                         "vcmr/R@100@IoU0.5"]
  assert {k for k in m if k.startswith("vr/")} == {"vr/R@1", "vr/R@5", "vr/R@10", "vr/R@100"}
  assert len(m) == 2 * 2 * 4 + 4
  # Only the top prediction counts: q1's is in the wrong video, so only q2 is correct;
  # SVMR filters after truncation (as TVR), so q1 has no prediction in its video left.
  m = localization.corpus_moment_metrics(PREDICTIONS, GROUND_TRUTH, ks=(1, 2),
                                         video2idx=VIDEO2IDX, max_pred_per_query=1)
  assert m["vcmr/R@2@IoU0.5"] == pytest.approx(100 / 3)
  assert m["svmr/R@2@IoU0.5"] == pytest.approx(100 / 3)
  assert m["vr/R@2"] == pytest.approx(100 / 3)


def test_corpus_separate_svmr_and_vr_lists():
  svmr = [
      {"desc_id": 1, "predictions": [["a", 0, 7, 0.9]]},  # IoU 0.7: counts at 0.7 (>=)
      {"desc_id": 2, "predictions": [["b", 0, 10, 0.9]]},  # touching: IoU 0
      {"desc_id": 3, "predictions": [["c", 0, 4, 0.9]]},  # IoU 1
  ]
  vr = [
      {"desc_id": 1, "predictions": [["a", 0, 0, 0.9]]},
      {"desc_id": 2, "predictions": [["c", 0, 0, 0.9], ["b", 0, 0, 0.1]]},
      {"desc_id": 3, "predictions": [["c", 0, 0, 0.9]]},
  ]
  m = localization.corpus_moment_metrics(PREDICTIONS, GROUND_TRUTH, ks=(1, 2),
                                         svmr_predictions=svmr, vr_predictions=vr,
                                         video2idx=VIDEO2IDX)
  assert m["svmr/R@1@IoU0.7"] == pytest.approx(200 / 3)  # q1 and q3
  assert m["vr/R@1"] == pytest.approx(200 / 3)  # q1 and q3
  assert m["vr/R@2"] == 100.0
  # VCMR is unchanged by the other lists.
  assert m["vcmr/R@1@IoU0.5"] == pytest.approx(100 / 3)


def test_corpus_names_without_video2idx():
  gt = [{"desc_id": "x", "video": "v1", "ts": [2, 6]}, {"desc_id": "y", "video": "v2",
                                                          "ts": [0, 3]}]
  preds = [{"desc_id": "x", "predictions": [["v2", 2, 6, 1.0], ["v1", 3, 6, 0.5]]},
           {"desc_id": "y", "predictions": [["v2", 0, 2, 1.0]]}]
  m = localization.corpus_moment_metrics(preds, gt, iou_thresholds=(0.5,), ks=(1, 2))
  # x: (v2) wrong video, then (v1, 3-6) IoU 3/4. y: (v2, 0-2) IoU 2/3.
  assert m == {"vcmr/R@1@IoU0.5": 50.0, "vcmr/R@2@IoU0.5": 100.0,
               "svmr/R@1@IoU0.5": 100.0, "svmr/R@2@IoU0.5": 100.0,
               "vr/R@1": 50.0, "vr/R@2": 100.0}


def test_corpus_numeric_looking_names_stay_names():
  # "1" is a video name here, not index 1 of video2idx (which is video "x").
  gt = [{"desc_id": 0, "vid_name": "1", "ts": [0, 4]}]
  preds = [{"desc_id": 0, "predictions": [["1", 0, 4, 1.0]]}]
  m = localization.corpus_moment_metrics(preds, gt, ks=(1,), video2idx={"1": 0, "x": 1})
  assert m["vcmr/R@1@IoU0.7"] == 100.0


def test_corpus_didemo_multi_window_rule():
  # 4 annotated windows: a prediction must reach the threshold with at least 2 of them.
  gt = [{"desc_id": 0, "vid_name": "a", "ts": [[0, 5], [0, 5], [0, 10], [20, 25]]}]
  # [0, 5]: IoUs 1, 1, 0.5, 0 -> 3 windows >= 0.5, 2 >= 0.7 -> correct at both.
  m = localization.corpus_moment_metrics(
      [{"desc_id": 0, "predictions": [["a", 0, 5, 1.0]]}], gt, ks=(1,))
  assert (m["vcmr/R@1@IoU0.5"], m["vcmr/R@1@IoU0.7"]) == (100.0, 100.0)
  # [0, 10]: IoUs 0.5, 0.5, 1, 0 -> 3 windows >= 0.5, only 1 >= 0.7 -> correct at 0.5 only.
  m = localization.corpus_moment_metrics(
      [{"desc_id": 0, "predictions": [["a", 0, 10, 1.0]]}], gt, ks=(1,))
  assert (m["vcmr/R@1@IoU0.5"], m["vcmr/R@1@IoU0.7"]) == (100.0, 0.0)
  # With fewer than 4 windows any single one suffices.
  gt2 = [{"desc_id": 0, "vid_name": "a", "ts": [[0, 5], [30, 40]]}]
  m = localization.corpus_moment_metrics(
      [{"desc_id": 0, "predictions": [["a", 30, 40, 1.0]]}], gt2, ks=(1,))
  assert m["vcmr/R@1@IoU0.7"] == 100.0


def _brute_force(preds, gt, thresholds, ks):
  """Per-query loops with Python floats, written from TVR's definitions."""
  out = {}
  gt_by_id = {g["desc_id"]: g for g in gt}
  for t in thresholds:
    for k in ks:
      vc = sv = 0
      for p in preds:
        g = gt_by_id[p["desc_id"]]
        rows = sorted(p["predictions"], key=lambda r: -r[3])
        def ok(r, g=g):
          s, e = r[1], r[2]
          gs, ge = g["ts"]
          inter = max(0.0, min(e, ge) - max(s, gs))
          union = (e - s) + (ge - gs) - inter
          return inter > 0 and inter / union >= t
        vc += any(r[0] == g["vid_name"] and ok(r) for r in rows[:k])
        sv += any(ok(r) for r in [r for r in rows if r[0] == g["vid_name"]][:k])
      out[f"vcmr/R@{k}@IoU{t:g}"] = 100 * vc / len(preds)
      out[f"svmr/R@{k}@IoU{t:g}"] = 100 * sv / len(preds)
  for k in ks:
    hits = 0
    for p in preds:
      seen = []
      for r in sorted(p["predictions"], key=lambda r: -r[3]):
        if r[0] not in seen:
          seen.append(r[0])
      hits += gt_by_id[p["desc_id"]]["vid_name"] in seen[:k]
    out[f"vr/R@{k}"] = 100 * hits / len(preds)
  return out


def test_corpus_matches_brute_force_on_random_corpus():
  rng = np.random.default_rng(4)
  videos = [f"v{i}" for i in range(6)]
  gt, preds = [], []
  for q in range(60):
    s = int(rng.integers(0, 20))
    gt.append({"desc_id": q, "vid_name": videos[rng.integers(6)],
               "ts": [s, s + int(rng.integers(1, 12))]})
    rows = []
    for _ in range(int(rng.integers(1, 15))):
      ps = int(rng.integers(0, 25))
      # Integer windows and distinct scores: no float32 boundary or sort-order ambiguity.
      rows.append([videos[rng.integers(6)], ps, ps + int(rng.integers(1, 12)),
                   float(rng.uniform())])
    preds.append({"desc_id": q, "predictions": rows})
  thresholds, ks = (0.3, 0.5, 0.7), (1, 3, 5, 10)
  m = localization.corpus_moment_metrics(preds, gt, thresholds, ks)
  ref = _brute_force(preds, gt, thresholds, ks)
  assert m.keys() == ref.keys()
  for key in ref:
    assert m[key] == pytest.approx(ref[key]), key


def test_write_tvr_submission_round_trip(tmp_path):
  path = tmp_path / "out" / "submission.json"
  desc_preds = [dict(p, desc=f"q{p['desc_id']}") for p in PREDICTIONS]
  sub = localization.write_tvr_submission(str(path), VIDEO2IDX, desc_preds, svmr=desc_preds,
                                          max_pred_per_query=3)
  loaded = json.loads(path.read_text())
  assert loaded == sub
  assert set(loaded) == {"video2idx", "VCMR", "SVMR"}  # VR not given: left out
  assert loaded["video2idx"] == VIDEO2IDX
  q1 = loaded["VCMR"][0]
  assert q1["desc_id"] == 1 and q1["desc"] == "q1"
  # Sorted by score, truncated to 3, videos as indices.
  assert q1["predictions"] == [[1, 0.0, 10.0, 0.9], [0, 0.0, 5.0, 0.8], [0, 0.0, 10.0, 0.7]]
  assert loaded["VCMR"][1]["predictions"] == [[1, 12.0, 20.0, 0.5], [1, 10.0, 20.0, 0.4]]
  # Evaluating the file gives the numbers of the in-memory predictions (top 3 suffice for
  # k <= 3).
  direct = localization.corpus_moment_metrics(PREDICTIONS, GROUND_TRUTH, ks=(1, 2, 3),
                                              video2idx=VIDEO2IDX)
  from_file = localization.corpus_moment_metrics(
      loaded["VCMR"], GROUND_TRUTH, ks=(1, 2, 3), video2idx=loaded["video2idx"])
  assert from_file == direct
  with pytest.raises(ValueError, match="not in video2idx"):
    localization.write_tvr_submission(
        str(tmp_path / "x.json"), VIDEO2IDX,
        [{"desc_id": 1, "predictions": [["zzz", 0, 1, 0.5]]}])
  with pytest.raises(ValueError, match="score"):
    localization.write_tvr_submission(
        str(tmp_path / "x.json"), VIDEO2IDX, [{"desc_id": 1, "predictions": [[0, 0, 1]]}])


def test_corpus_errors():
  with pytest.raises(ValueError, match="1 missing"):
    localization.corpus_moment_metrics(PREDICTIONS[:2], GROUND_TRUTH, video2idx=VIDEO2IDX)
  with pytest.raises(ValueError, match="pass video2idx"):
    localization.corpus_moment_metrics(PREDICTIONS, GROUND_TRUTH)
  with pytest.raises(ValueError, match="index 7 is not in video2idx"):
    localization.corpus_moment_metrics(
        [{"desc_id": 1, "predictions": [[7, 0, 1, 0.5]]}], GROUND_TRUTH[:1],
        video2idx=VIDEO2IDX)
  with pytest.raises(ValueError, match="non-finite"):
    localization.corpus_moment_metrics(
        [{"desc_id": 1, "predictions": [[0, 0, np.nan, 0.5]]}], GROUND_TRUTH[:1],
        video2idx=VIDEO2IDX)
  with pytest.raises(ValueError, match="twice"):
    localization.corpus_moment_metrics(PREDICTIONS, GROUND_TRUTH + GROUND_TRUTH[:1],
                                       video2idx=VIDEO2IDX)
  with pytest.raises(ValueError, match="vid_name"):
    localization.corpus_moment_metrics(PREDICTIONS[:1], [{"desc_id": 1, "ts": [0, 1]}],
                                       video2idx=VIDEO2IDX)
