"""Tests of hvt_jax.evaluation.retrieval against hand-computed ranks and scipy's rankdata."""

import struct

import numpy as np
import pytest
from scipy import stats

from hvt_jax.evaluation import retrieval, tables


def _reference_ranks(sim, targets):
  """Tie-averaged 1-based ranks via scipy: best rank over each query's target set."""
  out = []
  for row, ts in zip(np.asarray(sim, np.float64), targets):
    r = stats.rankdata(-row, method="average")
    out.append(min(r[t] for t in ts))
  return np.asarray(out)


def test_identity_matrix_is_perfect():
  m = retrieval.retrieval_metrics(np.eye(5))
  assert m == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "R@50": 100.0,
               "MdR": 1.0, "MnR": 1.0}
  assert list(m) == list(retrieval.METRIC_KEYS)


def test_known_ranks_and_even_median():
  # Correct score (diagonal) is 1st, 1st, 2nd and 4th in its row.
  sim = np.array([
      [0.9, 0.1, 0.2, 0.3],  # rank 1
      [0.1, 0.9, 0.2, 0.3],  # rank 1
      [0.1, 0.8, 0.5, 0.3],  # 0.8 > 0.5: rank 2
      [0.9, 0.8, 0.7, 0.1],  # three higher: rank 4
  ])
  np.testing.assert_array_equal(retrieval.ranks(sim), [1, 1, 2, 4])
  m = retrieval.retrieval_metrics(sim)
  assert m["R@1"] == 50.0
  assert m["R@5"] == m["R@10"] == m["R@50"] == 100.0
  # Median of an even count is the mean of the middle two: (1 + 2) / 2 = 1.5. The HSE
  # code's floor(median of 0-based ranks [0, 0, 1, 3]) + 1 = floor(0.5) + 1 would give 1.
  assert m["MdR"] == 1.5
  assert m["MnR"] == 2.0


def test_true_recall_at_10_differs_from_hse_r50():
  # 20 queries whose correct candidate is at rank 20 of 60 (19 higher scores): R@10 is 0,
  # R@50 is 100. The HSE code's "R@10" (ranks < 50) would report 100.
  rng = np.random.default_rng(0)
  sim = rng.uniform(0, 1, size=(20, 60))
  for i in range(20):
    others = [j for j in range(60) if j != i]
    sim[i, i] = 2.0
    sim[i, others[:19]] = 3.0 + rng.uniform(size=19)
  np.testing.assert_array_equal(retrieval.ranks(sim), np.full(20, 20.0))
  m = retrieval.retrieval_metrics(sim)
  assert (m["R@10"], m["R@50"], m["MdR"]) == (0.0, 100.0, 20.0)


def test_permutation_with_query_to_target():
  perm = np.array([2, 0, 3, 1])
  sim = np.zeros((4, 4))
  sim[np.arange(4), perm] = 1.0
  np.testing.assert_array_equal(retrieval.ranks(sim, perm), np.ones(4))
  np.testing.assert_array_equal(retrieval.ranks(sim, list(perm)), np.ones(4))
  # On the diagonal the correct score is 0: one candidate above it (the 1) and a tie of
  # three zeros including itself -> 1 + (3 + 1) / 2 = 3.
  np.testing.assert_array_equal(retrieval.ranks(sim), np.full(4, 3.0))


def test_ties_are_averaged():
  sim = np.array([
      [0.5, 0.5, 0.5, 0.1, 0.0, 0.0],  # correct (col 0) tied with 2 others at top: 2.0
      [0.7, 0.7, 0.2, 0.1, 0.0, 0.0],  # correct (col 1) tied with 1 other at top: 1.5
      [0.9, 0.3, 0.3, 0.3, 0.1, 0.0],  # 1 higher, tied with 2 others: 1 + 2 = 3.0
      [0.9, 0.8, 0.7, 0.6, 0.5, 0.5],  # 4 higher, tied with 1 other: 4 + 1.5 = 5.5
  ])
  r = retrieval.ranks(sim, [0, 1, 2, 4])
  np.testing.assert_array_equal(r, [2.0, 1.5, 3.0, 5.5])
  np.testing.assert_array_equal(r, _reference_ranks(sim, [[0], [1], [2], [4]]))
  m = retrieval.retrieval_metrics(sim, [0, 1, 2, 4])
  assert m["R@1"] == 0.0  # rank 1.5 is not <= 1
  assert m["R@5"] == 75.0  # rank 5.5 is not <= 5 (MMT's 0-based 4.5 < 5 would count it)
  assert m["R@10"] == 100.0
  assert m["MdR"] == 2.5  # median of [1.5, 2, 3, 5.5]
  assert m["MnR"] == 3.0


def test_constant_matrix_is_not_perfect():
  m = retrieval.retrieval_metrics(np.ones((4, 4)))
  assert m["MdR"] == m["MnR"] == 2.5  # (N + 1) / 2
  assert m["R@1"] == 0.0


def test_multiple_targets_take_best_rank():
  sim = np.array([
      [0.9, 0.2, 0.8, 0.7],  # targets {1, 3}: ranks 4 and 3 -> 3
      [0.5, 0.5, 0.1, 0.0],  # targets {0, 1} tied at top -> 1.5 each
      [0.1, 0.2, 0.3, 0.4],  # target 1 -> 3
  ])
  q2t = [{1, 3}, [0, 1], 1]
  r = retrieval.ranks(sim, q2t)
  np.testing.assert_array_equal(r, [3.0, 1.5, 3.0])
  np.testing.assert_array_equal(r, _reference_ranks(sim, [[1, 3], [0, 1], [1]]))
  # A [Q, K] int array means K targets per query.
  np.testing.assert_array_equal(
      retrieval.ranks(sim, np.array([[1, 3], [0, 1], [1, 1]])), [3.0, 1.5, 3.0])


def test_random_ties_match_scipy_rankdata():
  rng = np.random.default_rng(1)
  # Small integer scores: many ties; more candidates than queries; ragged target sets.
  sim = rng.integers(0, 6, size=(40, 25)).astype(np.float32)
  targets = [list(rng.choice(25, size=rng.integers(1, 4), replace=False)) for _ in range(40)]
  np.testing.assert_array_equal(retrieval.ranks(sim, targets), _reference_ranks(sim, targets))
  expected = _reference_ranks(sim, targets)
  m = retrieval.retrieval_metrics(sim, targets)
  assert m["R@5"] == pytest.approx(100.0 * np.mean(expected <= 5))
  assert m["MdR"] == pytest.approx(np.median(expected))
  # Integer similarities work too.
  np.testing.assert_array_equal(retrieval.ranks(sim.astype(np.int32), targets), expected)


@pytest.mark.parametrize("block_entries", [1, 7, 1 << 24])
def test_duplicate_pair_ties_wherever_it_sits(monkeypatch, block_entries):
  # Two candidates with the same scores tie exactly for every pair of positions and any
  # row sub-block size: the rank never depends on where a block ends.
  monkeypatch.setattr(retrieval, "_RANK_BLOCK_ENTRIES", block_entries)
  rng = np.random.default_rng(2)
  n = 7
  for i in range(n):
    for j in range(i + 1, n):
      sim = rng.normal(size=(n, n)).astype(np.float32)
      sim[:, j] = sim[:, i]
      r_i = retrieval.ranks(sim, np.full(n, i))
      np.testing.assert_array_equal(r_i, retrieval.ranks(sim, np.full(n, j)))
      np.testing.assert_array_equal(r_i, _reference_ranks(sim, [[i]] * n))


def test_integer_scores_compare_exactly():
  # Above 2**53 a float64 cast would merge 2**53 with 2**53 + 1: ties must be exact.
  big = 2**53
  sim = np.array([[big + 1, big, big + 1], [big, big + 1, big + 2]], np.int64)
  np.testing.assert_array_equal(retrieval.ranks(sim, [0, 0]), [1.5, 3.0])
  np.testing.assert_array_equal(retrieval.ranks(sim, [1, 1]), [3.0, 2.0])


def test_metrics_from_ranks_shared_formula():
  m = retrieval.metrics_from_ranks(np.array([1, 1.5, 5, 5.5, 10, 50, 51]))
  assert m["R@1"] == pytest.approx(100 / 7)
  assert m["R@5"] == pytest.approx(300 / 7)
  assert m["R@10"] == pytest.approx(500 / 7)
  assert m["R@50"] == pytest.approx(600 / 7)
  assert m["MdR"] == 5.5
  assert m["MnR"] == pytest.approx(124 / 7)
  with pytest.raises(ValueError, match="1-based"):
    retrieval.metrics_from_ranks(np.array([0.0, 1.0]))


def test_recall_curve():
  x, y = retrieval.recall_curve(np.array([1, 1.5, 3, 10]))
  np.testing.assert_array_equal(x, np.arange(1, 11))
  np.testing.assert_array_equal(y, [25, 50, 75, 75, 75, 75, 75, 75, 75, 100])
  x, y = retrieval.recall_curve(np.array([1, 1.5, 3, 10]), max_rank=3)
  np.testing.assert_array_equal(y, [25, 50, 75])
  # From a matrix: default max rank N, ending at 100 %.
  sim = np.array([[0.9, 0.1, 0.2], [0.9, 0.1, 0.2], [0.1, 0.2, 0.3]])  # ranks 1, 3, 1
  x, y = retrieval.recall_curve(sim)
  np.testing.assert_array_equal(x, [1, 2, 3])
  np.testing.assert_allclose(y, [200 / 3, 200 / 3, 100])


def test_plot_writes_png(tmp_path):
  curves = {
      "p2v": retrieval.recall_curve(np.array([1, 2, 2, 7, 30])),
      "v2p": retrieval.recall_curve(np.array([1, 1, 4, 9, 12])),
  }
  path = tmp_path / "sub" / "recall.png"
  retrieval.plot_recall_curves(curves, str(path), title="val_1")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  width, height = struct.unpack(">II", data[16:24])  # IHDR follows the signature
  assert width > 100 and height > 100
  with pytest.raises(ValueError, match="log scale"):
    retrieval.plot_recall_curves({"x": (np.array([0, 1]), np.array([0, 50]))},
                                 str(tmp_path / "bad.png"))


def test_format_table():
  table = tables.format_table(
      {"hse": {"R@1": 44.4, "MdR": 2.0}, "fse-long": {"R@1": 18.2}}, ["R@1", "MdR"])
  assert table == ("model       R@1   MdR\n"
                   "--------  -----  ----\n"
                   "hse       44.40  2.00\n"
                   "fse-long  18.20     -")


def test_errors():
  sim = np.eye(4)
  bad = sim.copy()
  bad[0, 1] = np.nan
  bad[2, 3] = np.inf
  with pytest.raises(ValueError, match="2 non-finite"):
    retrieval.retrieval_metrics(bad)
  with pytest.raises(ValueError, match="2-D"):
    retrieval.retrieval_metrics(np.ones(4))
  with pytest.raises(ValueError, match="3 entries but similarity has 4 rows"):
    retrieval.retrieval_metrics(sim, [0, 1, 2])
  with pytest.raises(ValueError, match=r"query_to_target\[2\] = 4 is out of range"):
    retrieval.retrieval_metrics(sim, [0, 1, 4, 3])
  with pytest.raises(ValueError, match="out of range"):
    retrieval.retrieval_metrics(sim, [[0], [1], [2], [-1]])
  with pytest.raises(ValueError, match="empty"):
    retrieval.retrieval_metrics(sim, [[0], [], [2], [3]])
  with pytest.raises(ValueError, match="must be ints"):
    retrieval.retrieval_metrics(sim, [0.0, 1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="at least as many candidates"):
    retrieval.retrieval_metrics(np.ones((5, 3)))
