"""Device-side scorer: exact ranks and top-K against retrieval.py, ties bit-identical.

Most data here has exactly representable dot products (small multiples of 1/8), so numpy's
full similarity matrix is exact and ranks can be compared with no tolerance, ties included.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hvt_jax import sharding
from hvt_jax.evaluation import retrieval, scorer


@pytest.fixture(scope="module")
def mesh1():
  return sharding.make_mesh(num_devices=1)


@pytest.fixture(scope="module")
def mesh8():
  # tests/conftest.py simulates 8 CPU devices before jax is imported.
  assert jax.device_count() >= 8, "the 1 vs 8 device checks need 8 (simulated) devices"
  return sharding.make_mesh(num_devices=8)


def _exact(rng, n, dim, levels=8):
  """[n, dim] float32 multiples of 1/8 in [-1, 1]: dot products are exact in float32."""
  return (rng.integers(-levels, levels + 1, (n, dim)) / 8).astype(np.float32)


def _round_robin(n):
  """Rounds of disjoint pairs covering every unordered pair of range(n) (n odd)."""
  for r in range(n):
    yield [((r + k) % n, (r - k) % n) for k in range(1, (n + 1) // 2)]


def test_duplicate_candidate_ties_at_every_pair_of_offsets(mesh1, mesh8):
  # 17 candidates in blocks of 8 (blocks 0, 1 and a last block shifted back to end at 16)
  # or in one padded block of 32; over the rounds every pair of positions (within a block,
  # across an edge, in the last block) holds a duplicated candidate, targeted from both
  # sides, from query blocks of 3 with padding.
  rng = np.random.default_rng(0)
  n, dim = 17, 32
  for pairs in _round_robin(n):
    cand = rng.standard_normal((n, dim)).astype(np.float32)
    for a, b in pairs:
      cand[b] = cand[a]
    targets = np.array([i for pair in pairs for i in pair])
    query = 4 * cand[targets]  # its own target (and the copy) scores highest
    for mesh, cand_block in itertools.product((mesh1, mesh8), (8, 32)):
      res = scorer.rank_corpus(query, cand, targets, mesh=mesh, top_k=2, query_block=3,
                               cand_block=cand_block)
      np.testing.assert_array_equal(res.ranks, np.full(len(targets), 1.5))
      np.testing.assert_array_equal(res.top_indices, np.sort(
          np.stack([targets, np.array([j for p in pairs for j in p[::-1]])], 1), axis=1))
      assert np.all(res.top_scores[:, 0] == res.top_scores[:, 1])


def test_duplicate_across_1024_blocks_and_in_the_last_block(mesh1, mesh8):
  rng = np.random.default_rng(1)
  n, dim = 2049, 64
  cand = rng.standard_normal((n, dim)).astype(np.float32)
  pairs = [(0, 1), (1021, 1022), (1023, 1024), (5, 1500), (2047, 2048), (3, 2046),
           (1030, 2045)]
  for a, b in pairs:
    cand[b] = cand[a]
  targets = np.array([i for pair in pairs for i in pair])
  query = 4 * cand[targets]
  results = [scorer.rank_corpus(query, cand, targets, mesh=mesh, top_k=3, query_block=4,
                                cand_block=1024) for mesh in (mesh1, mesh8)]
  for res in results:
    np.testing.assert_array_equal(res.ranks, np.full(len(targets), 1.5))
  np.testing.assert_array_equal(results[0].top_indices, results[1].top_indices)
  np.testing.assert_array_equal(results[0].top_scores, results[1].top_scores)


def test_same_bits_on_1_and_8_devices_random_floats(mesh1, mesh8):
  rng = np.random.default_rng(2)
  query = rng.standard_normal((300, 48)).astype(np.float32)
  cand = rng.standard_normal((2049, 48)).astype(np.float32)
  cand[1500] = cand[7]  # a tie between blocks on generic floats
  targets = rng.integers(0, 2049, 300)
  targets[:5] = 7
  a, b = (scorer.rank_corpus(query, cand, targets, mesh=m, top_k=10, query_block=16,
                             cand_block=1024) for m in (mesh1, mesh8))
  np.testing.assert_array_equal(a.ranks, b.ranks)
  np.testing.assert_array_equal(a.top_indices, b.top_indices)
  np.testing.assert_array_equal(a.top_scores, b.top_scores)
  assert np.all(a.ranks[:5] == np.floor(a.ranks[:5]) + 0.5)  # tied with its copy


@pytest.mark.parametrize("levels", [1, 8])  # 1: heavy ties; 8: few ties
def test_single_target_matches_retrieval(mesh8, levels):
  rng = np.random.default_rng(3)
  query, cand = _exact(rng, 203, 16, levels), _exact(rng, 150, 16, levels)
  targets = rng.integers(0, 150, 203)
  res = scorer.rank_corpus(query, cand, targets, mesh=mesh8, query_block=8, cand_block=64)
  sim = query @ cand.T
  np.testing.assert_array_equal(res.ranks, retrieval.ranks(sim, targets))
  assert res.metrics() == retrieval.retrieval_metrics(sim, targets)


def test_multi_target_matches_retrieval(mesh8):
  rng = np.random.default_rng(4)
  query, cand = _exact(rng, 60, 16, 2), _exact(rng, 300, 16, 2)
  lists = [rng.choice(300, rng.integers(1, 6), replace=False) for _ in range(60)]
  padded = np.full((60, 5), -1)
  for i, t in enumerate(lists):
    padded[i, :len(t)] = t
  res = scorer.rank_corpus(query, cand, padded, mesh=mesh8, top_k=0, query_block=4,
                           cand_block=128)
  assert res.top_indices.shape == res.top_scores.shape == (60, 0)
  sim = query @ cand.T
  np.testing.assert_array_equal(res.ranks, retrieval.ranks(sim, lists))
  assert res.metrics() == retrieval.retrieval_metrics(sim, lists)


def test_diagonal_default_and_top_k_match_numpy_sort(mesh1):
  rng = np.random.default_rng(5)
  query, cand = _exact(rng, 37, 8, 2), _exact(rng, 90, 8, 2)
  res = scorer.rank_corpus(query, cand, mesh=mesh1, top_k=20, query_block=8, cand_block=32)
  sim = query @ cand.T
  np.testing.assert_array_equal(res.ranks, retrieval.ranks(sim))
  order = np.argsort(-sim, axis=1, kind="stable")[:, :20]  # ties: lower index first
  np.testing.assert_array_equal(res.top_indices, order)
  np.testing.assert_array_equal(res.top_scores, np.take_along_axis(sim, order, axis=1))


def test_host_and_device_inputs_under_transfer_guard(mesh8):
  rng = np.random.default_rng(7)
  query, cand = _exact(rng, 45, 8), _exact(rng, 30, 8)
  targets = rng.integers(0, 30, (45, 2))
  on_device = jax.device_put((query, cand))
  with jax.transfer_guard("disallow"):  # only explicit device_put / device_get
    host = scorer.rank_corpus(query, cand, targets, mesh=mesh8, query_block=4, cand_block=16)
    # cand_block > N: the candidates are padded on the device.
    dev = scorer.rank_corpus(*on_device, targets, mesh=mesh8, query_block=4, cand_block=64)
  np.testing.assert_array_equal(host.ranks, retrieval.ranks(query @ cand.T, targets))
  np.testing.assert_array_equal(dev.ranks, host.ranks)
  np.testing.assert_array_equal(dev.top_indices, host.top_indices)


def _max_over_clips(query, cand, params):
  """A pytree score: text [Bq, D] against videos' clips [Bc, C, D], plus a per-video bias;
  ``params["scale"]`` [D] weights the text (standing in for model weights)."""
  clip = jnp.einsum("qd,ckd->qck", query["text"] * params["scale"], cand["clips"],
                    precision=jax.lax.Precision.HIGHEST)
  return clip.max(axis=2) + cand["bias"][None, :]


def test_pytree_encodings_and_params_without_retrace(mesh8):
  rng = np.random.default_rng(6)
  query = {"text": _exact(rng, 40, 8)}
  cand = {"clips": _exact(rng, 70, 24).reshape(70, 3, 8), "bias": _exact(rng, 70, 1)[:, 0]}
  targets = rng.integers(0, 70, 40)
  traces = []

  def score_fn(q, c, params):
    traces.append(1)
    return _max_over_clips(q, c, params)

  for scale in (np.ones(8, np.float32), _exact(rng, 1, 8)[0]):
    res = scorer.rank_corpus(query, cand, targets, score_fn, mesh=mesh8,
                             params={"scale": scale}, top_k=4, query_block=2, cand_block=16)
    sim = np.einsum("qd,ckd->qck", query["text"] * scale, cand["clips"]).max(2) + cand["bias"]
    np.testing.assert_array_equal(res.ranks, retrieval.ranks(sim, targets))
  # New weights reuse the cached step: score_fn was traced once (target scores + loop).
  assert len(traces) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(query_to_target=np.array([0, 9])), "not a candidate index"),
    (dict(query_to_target=np.array([[0, -1], [-1, -1]])), "query 1 has no target"),
    (dict(query_to_target=np.array([0, 1, 2])), "expected"),
    (dict(query_to_target=[[0, 1], [2]]), "-1 pads"),
    (dict(top_k=9), "top_k"),
    (dict(cand_enc=np.ones((8, 3), np.float32)), "does not match"),
    (dict(cand_enc={"a": np.ones((8, 4)), "b": np.ones((7, 4))}), "leading dim"),
    (dict(score_fn=lambda q, c: scorer.dot_score(q, c)[:, :1]), "score_fn returned shape"),
])
def test_bad_inputs_raise(mesh1, kwargs, match):
  args = dict(query_enc=np.ones((2, 4), np.float32), cand_enc=np.ones((8, 4), np.float32),
              query_to_target=np.array([0, 1]), mesh=mesh1, cand_block=4, top_k=2)
  args.update(kwargs)
  with pytest.raises((ValueError, TypeError), match=match):
    scorer.rank_corpus(**args)


def test_non_finite_and_position_dependent_scores_raise(mesh1):
  query, cand = np.ones((2, 4), np.float32), np.ones((8, 4), np.float32)
  cand[3] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    scorer.rank_corpus(query, cand, np.array([0, 1]), mesh=mesh1, cand_block=4, top_k=2)

  def by_position(q, c):  # adds the column's position in the block to the score
    return jnp.zeros((q.shape[0], 1)) + c[:, 0] + 0.25 * jnp.arange(c.shape[0])

  ids = np.repeat(np.arange(8, dtype=np.float32)[:, None], 4, axis=1)
  with pytest.raises(RuntimeError, match="deterministic per pair"):
    scorer.rank_corpus(query, ids, np.array([5, 6]), by_position, mesh=mesh1, cand_block=4,
                       top_k=2)


def _pairs_scored(mesh, **kwargs):
  """The pairs score_fn evaluates in one rank_corpus call (counted on the host)."""
  pairs = []

  def counting(q, c):
    jax.debug.callback(lambda: pairs.append(q.shape[0] * c.shape[0]))
    return scorer.dot_score(q, c)

  res = scorer.rank_corpus(score_fn=counting, mesh=mesh, **kwargs)
  jax.effects_barrier()
  return res, sum(pairs)


def test_targets_scored_in_the_corpus_pass_only(mesh1, mesh8):
  # Each pair is scored once, in the corpus pass, plus the probe's two blocks once per
  # run; before, every query block also scored ceil(query_block * T / cand_block) blocks
  # of its targets (here 40 queries x 2 targets in blocks of 4 x 16: +10 x 16 x 4 pairs).
  rng = np.random.default_rng(8)
  query, cand = _exact(rng, 40, 8, 2), _exact(rng, 37, 8, 2)
  targets = rng.integers(0, 37, (40, 2))
  for mesh in (mesh1, mesh8):
    kw = dict(query_enc=query, cand_enc=cand, query_to_target=targets, top_k=5,
              query_block=4, cand_block=16)
    res, pairs = _pairs_scored(mesh, **kw)
    steps = -(-40 // (4 * mesh.size))
    corpus_pass = steps * mesh.size * 4 * 16 * 3            # 3 candidate blocks per row
    assert pairs == corpus_pass + 2 * mesh.size * 4 * 16    # + the probe, once
    np.testing.assert_array_equal(res.ranks, retrieval.ranks(query @ cand.T, targets))


@pytest.mark.parametrize("mesh_name", ["mesh1", "mesh8"])
def test_ties_several_targets_and_last_block_shift_match_retrieval(request, mesh_name):
  # Heavy exact ties (levels=1), up to 4 targets with -1 padding, duplicated candidates,
  # N = 101 in blocks of 16 (the last block shifted back over 11 seen columns) or 128.
  mesh = request.getfixturevalue(mesh_name)
  rng = np.random.default_rng(9)
  query, cand = _exact(rng, 70, 6, 1), _exact(rng, 101, 6, 1)
  cand[90:] = cand[:11]
  targets = rng.integers(-1, 101, (70, 4))
  targets[:, 0] = rng.integers(0, 101, 70)
  sim = query @ cand.T
  order = np.argsort(-sim, axis=1, kind="stable")[:, :12]
  for cand_block in (16, 128):
    res = scorer.rank_corpus(query, cand, targets, mesh=mesh, top_k=12, query_block=3,
                             cand_block=cand_block)
    np.testing.assert_array_equal(res.ranks, retrieval.ranks(sim, [t[t >= 0] for t in targets]))
    np.testing.assert_array_equal(res.top_indices, order)
    np.testing.assert_array_equal(res.top_scores, np.take_along_axis(sim, order, axis=1))


@pytest.mark.parametrize("name, score_fn", [
    # the candidate's row in its block shifts its score, by one ulp
    ("candidate position", lambda q, c: jnp.nextafter(
        scorer.dot_score(q, c), jnp.where(jnp.arange(c.shape[0]) % 2, jnp.inf, -jnp.inf))),
    # each score relative to the block's other candidates (composition, not position)
    ("block composition", lambda q, c: scorer.dot_score(q, c)
     - scorer.dot_score(q, c).mean(axis=1, keepdims=True)),
])
def test_probe_raises_on_position_or_composition_dependent_scores(mesh8, name, score_fn):
  del name
  rng = np.random.default_rng(10)
  query, cand = _exact(rng, 20, 4), _exact(rng, 30, 4)
  with pytest.raises(RuntimeError, match=r"query \d+ scored differently against candidate "
                                         r"\d+ .*deterministic per pair"):
    scorer.rank_corpus(query, cand, np.arange(20), score_fn, mesh=mesh8, top_k=2,
                       query_block=2, cand_block=8)


def test_blocks_from_memory_fit_the_budget_and_keep_overrides(mesh8):
  rng = np.random.default_rng(11)
  query, cand = _exact(rng, 2000, 64), _exact(rng, 500, 64)
  kw = dict(query_enc=query, cand_enc=cand, score_fn=scorer.dot_score, mesh=mesh8)
  roomy = scorer.choose_blocks(**kw, budget_bytes=2**30)
  assert roomy[:2] == (250, 500)                 # every query of a device in one step
  qb, cb, est = scorer.choose_blocks(**kw, budget_bytes=roomy[2] // 4)
  assert qb < 250 and cb == 500 and est <= roomy[2] // 4
  assert scorer.choose_blocks(**kw, budget_bytes=2**30, query_block=16)[:2] == (16, 500)
  assert scorer.choose_blocks(**kw, query_block=3, cand_block=7) == (3, 7, 0)
  with pytest.raises(MemoryError, match="more than"):
    scorer.choose_blocks(**kw, budget_bytes=1000)


BUDGET = 62_500   # bytes "free" per device: 0.8 x this fits about 16 of the 38 queries per device


def test_ranks_do_not_depend_on_the_block_choice(mesh8, monkeypatch):
  rng = np.random.default_rng(12)
  query, cand = _exact(rng, 300, 16, 2), _exact(rng, 130, 16, 2)
  targets = rng.integers(0, 130, (300, 2))
  sim = query @ cand.T
  want = retrieval.ranks(sim, targets)
  results = [scorer.rank_corpus(query, cand, targets, mesh=mesh8, top_k=7, query_block=qb,
                                cand_block=cb) for qb, cb in ((1, 1), (5, 33), (38, 130))]
  monkeypatch.setattr(scorer, "free_bytes", lambda mesh: (BUDGET, "test"))
  auto = scorer.rank_corpus(query, cand, targets, mesh=mesh8, top_k=7, query_block=0,
                            cand_block=0)
  assert auto.blocks[0] < 38 and auto.memory_estimate <= 0.8 * BUDGET
  for res in results + [auto]:
    np.testing.assert_array_equal(res.ranks, want)
    np.testing.assert_array_equal(res.top_indices, results[0].top_indices)
    np.testing.assert_array_equal(res.top_scores, results[0].top_scores)


def _masked_tokens(q, c):
  """A score over a padded token axis: the sum over real tokens of each token's best
  dot product with the candidate's rows; padding is masked."""
  s = jnp.einsum("qld,cjd->qclj", q["tokens"], c, precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(jnp.where(q["mask"][:, None, :], s.max(axis=3), 0.0), axis=2)


def test_token_trim_cuts_blocks_and_keeps_every_result(mesh8):
  rng = np.random.default_rng(13)
  lengths = rng.integers(0, 30, 90)
  lengths[:3] = (0, 1, 30)
  mask = np.arange(30)[None] < lengths[:, None]
  mask[5, 0] = False                               # a gap before the last token
  query = {"tokens": _exact(rng, 90 * 30, 4).reshape(90, 30, 4), "mask": mask,
           "bias": _exact(rng, 90, 1)[:, 0]}
  cand = _exact(rng, 40 * 3, 4).reshape(40, 3, 4)
  widths = []

  def score_fn(q, c):
    widths.append(q["tokens"].shape[1])
    return _masked_tokens(q, c) + q["bias"][:, None]

  trim = scorer.TokenTrim("mask", ("tokens",), bucket=8)
  np.testing.assert_array_equal(trim.lengths(query), lengths)
  kw = dict(mesh=mesh8, top_k=6, query_block=2, cand_block=16)
  full = scorer.rank_corpus(query, cand, np.arange(90) % 40, score_fn, **kw)
  assert set(widths) == {30}
  widths.clear()
  cut = scorer.rank_corpus(query, cand, np.arange(90) % 40, score_fn, trim=trim, **kw)
  assert set(widths) == {8, 16, 24}     # one trace per bucket (30: the compiled full width)
  for f in ("ranks", "top_indices", "top_scores"):
    np.testing.assert_array_equal(getattr(cut, f), getattr(full, f))


def test_stage2_pair_block_from_memory(mesh8, monkeypatch):
  from hvt_jax.evaluation import moments  # pylint: disable=g-import-not-at-top

  @jax.jit
  def fn(params, q, v):   # [B, 4, 3]: (q . v_k, k, score) per video row, a stand-in
    s = jnp.einsum("bd,bkd->bk", q * params, v, precision=jax.lax.Precision.HIGHEST)
    return jnp.stack([s, jnp.broadcast_to(jnp.arange(4.0), s.shape), -s], axis=-1)

  rng = np.random.default_rng(14)
  query, video = _exact(rng, 50, 16), _exact(rng, 30, 64).reshape(30, 4, 16)
  params = jax.device_put(np.float32(0.5))
  qi, vi = rng.integers(0, 50, 333), rng.integers(0, 30, 333)
  kw = dict(params=params, query_enc=query, video_enc=video, mesh=mesh8)
  roomy, est = moments.choose_pair_block(fn, num_pairs=333, budget_bytes=2**30, **kw)
  assert roomy == 42                              # all 333 pairs in one step
  small, small_est = moments.choose_pair_block(fn, num_pairs=333, budget_bytes=est // 3, **kw)
  assert small < roomy and small_est <= est // 3
  want = moments.localize_pairs(fn, params, query, video, qi, vi, mesh=mesh8, block=3)
  monkeypatch.setattr(scorer, "free_bytes", lambda mesh: (est // 3, "test"))
  got = moments.localize_pairs(fn, params, query, video, qi, vi, mesh=mesh8, block=0)
  np.testing.assert_array_equal(got, want)
