"""Tests for hvt_jax.losses against plain-python loops written from the paper's sums.

The references below loop over k, k' (and clips i, sentences j) with explicit mask checks and
an explicit hardest-negative search, in float64 numpy, using the authors'-code sign of the
hinge (see the module docstring of hvt_jax.losses).
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from hvt_jax import losses
from hvt_jax.models import layers

RTOL = 1e-5
ATOL = 1e-6


# ----------------------------------------------------------------------------------------------
# float64 references, one loop per sum of the paper.


def ref_match(u, v, eps=1e-8):
  """MATCH(u, v) of Eq. 2 for two vectors."""
  u = np.asarray(u, np.float64)
  v = np.asarray(v, np.float64)
  return float(u @ v) / (max(np.linalg.norm(u), eps) * max(np.linalg.norm(v), eps))


def ref_ranking(match_fn, n, valid, margin, hardest, normalize, bidirectional=True):
  """sum_k sum_{k'!=k} [m - M(k,k) + M(k',k)]_+ + [m - M(k,k) + M(k,k')]_+ over valid k, k'."""
  total = 0.0
  for k in range(n):
    if not valid[k]:
      continue
    pos = match_fn(k, k)
    text_query, video_query = [], []
    for kp in range(n):
      if kp == k or not valid[kp]:
        continue
      text_query.append(max(0.0, margin - pos + match_fn(kp, k)))
      video_query.append(max(0.0, margin - pos + match_fn(k, kp)))
    if hardest:
      best_t = 0.0
      for c in text_query:
        best_t = c if c > best_t else best_t
      best_v = 0.0
      for c in video_query:
        best_v = c if c > best_v else best_v
      total += best_t + (best_v if bidirectional else 0.0)
    else:
      total += sum(text_query) + (sum(video_query) if bidirectional else 0.0)
  n_valid = sum(bool(m) for m in valid)
  if normalize == "pairs":
    total /= max(n_valid * n_valid, 1)
  return total


def ref_match_loss(a, b, mask, margin, hardest, normalize):
  n = a.shape[0]
  valid = [True] * n if mask is None else list(mask)
  return ref_ranking(lambda i, j: ref_match(a[i], b[j]), n, valid, margin, hardest, normalize)


def ref_cluster_loss(x, mask, margin, hardest, normalize, bidirectional):
  n = x.shape[0]
  valid = [True] * n if mask is None else list(mask)
  # The paper: MATCH(x_k, x_k) = 1 by definition.
  fn = lambda i, j: 1.0 if i == j else ref_match(x[i], x[j])
  return ref_ranking(fn, n, valid, margin, hardest, normalize, bidirectional)


def ref_weak_match_loss(clips, clip_mask, sents, sent_mask, margin, hardest, normalize):
  b = clips.shape[0]

  def match_bar(k, kp):  # Eq. 13 as a double sum.
    total, count = 0.0, 0
    for i in range(clips.shape[1]):
      for j in range(sents.shape[1]):
        if clip_mask[k, i] and sent_mask[kp, j]:
          total += ref_match(clips[k, i], sents[kp, j])
          count += 1
    return total / count

  valid = [bool(clip_mask[k].any() and sent_mask[k].any()) for k in range(b)]
  return ref_ranking(match_bar, b, valid, margin, hardest, normalize)


def ref_reconstruction(pred, target, mask, distance, reduce):
  lead = pred.shape[:-2]
  t = pred.shape[-2]
  total, count = 0.0, 0
  for idx in itertools.product(*[range(s) for s in lead]):
    seq_total, seq_count = 0.0, 0
    for step in range(t):
      if mask is not None and not mask[idx + (step,)]:
        continue
      diff = np.asarray(pred[idx + (step,)], np.float64) - target[idx + (step,)]
      sq = float(np.sum(diff * diff))
      seq_total += np.sqrt(sq) if distance == "l2" else sq
      seq_count += 1
    if reduce == "sequence_mean":
      total += seq_total / seq_count if seq_count else 0.0
    else:
      total += seq_total
    count += seq_count
  if reduce == "mean":
    return total / max(count, 1)
  return total


def ref_masked_max(x, mask):
  out = np.zeros(x.shape[:-2] + x.shape[-1:], np.float64)
  for idx in itertools.product(*[range(s) for s in x.shape[:-2]]):
    for d in range(x.shape[-1]):
      best = None
      for step in range(x.shape[-2]):
        if mask[idx + (step,)] and (best is None or x[idx + (step, d)] > best):
          best = float(x[idx + (step, d)])
      out[idx + (d,)] = 0.0 if best is None else best
  return out


# ----------------------------------------------------------------------------------------------
# Inputs.


def random_mask(rng, shape, p_valid=0.7):
  return rng.random(shape) < p_valid


def assert_close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=RTOL, atol=ATOL)


def value_and_grad(fn, argnums):
  """Eager value_and_grad: the per-op executables are shared across cases, which is cheaper
  here than one jit compilation per case (jit is compared with eager in test_jit_matches_eager).
  """
  return jax.value_and_grad(fn, argnums=argnums)


def assert_finite_tree(tree):
  for leaf in jax.tree.leaves(tree):
    assert np.all(np.isfinite(np.asarray(leaf))), "non-finite gradient"


# Pair-loss cases: (n, d, mask kind). "partial" is random, "one" has a single valid row
# (no negatives), "none" has no valid row, None is mask=None.
PAIR_CASES = [(6, 4, "partial"), (9, 16, "partial"), (5, 3, None), (4, 4, "one"), (3, 5, "none")]


def make_pair_inputs(seed, n, d, mask_kind, close_pairs=True):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, d)).astype(np.float32)
  # Text close to its video so that some hinges are active and some are not.
  b = (a + 0.8 * rng.normal(size=(n, d))).astype(np.float32) if close_pairs else (
      rng.normal(size=(n, d)).astype(np.float32))
  if mask_kind is None:
    mask = None
  elif mask_kind == "partial":
    mask = random_mask(rng, (n,))
    mask[0] = mask[1] = True
  elif mask_kind == "one":
    mask = np.zeros((n,), bool)
    mask[1] = True
  else:
    mask = np.zeros((n,), bool)
  return a, b, mask


# ----------------------------------------------------------------------------------------------
# cosine_similarity.


def test_cosine_similarity_matches_loop():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(5, 7)).astype(np.float32)
  b = rng.normal(size=(3, 7)).astype(np.float32)
  b[1] = 0.0  # Zero vector: similarity 0, not NaN.
  got = losses.cosine_similarity(a, b)
  assert got.shape == (5, 3)
  want = np.array([[ref_match(a[i], b[j]) for j in range(3)] for i in range(5)])
  assert_close(got, want)
  grads = jax.grad(lambda a, b: jnp.sum(losses.cosine_similarity(a, b)), argnums=(0, 1))(a, b)
  assert_finite_tree(grads)


# ----------------------------------------------------------------------------------------------
# match_loss (Eq. 4 / 5).


@pytest.mark.parametrize("hardest", [False, True])
@pytest.mark.parametrize("normalize", ["pairs", "none"])
@pytest.mark.parametrize("case", range(len(PAIR_CASES)))
def test_match_loss_matches_loop(case, normalize, hardest):
  n, d, mask_kind = PAIR_CASES[case]
  a, b, mask = make_pair_inputs(100 + case, n, d, mask_kind)
  fn = functools.partial(losses.match_loss, margin=0.2, hardest_negative=hardest,
                         normalize=normalize)
  got, grads = value_and_grad(fn, (0, 1))(a, b, mask)
  assert_close(got, ref_match_loss(a, b, mask, 0.2, hardest, normalize))
  assert_finite_tree(grads)


def test_match_loss_hand_computed():
  eye = np.eye(2, dtype=np.float32)
  # Aligned pairs, orthogonal negatives: every hinge is 0.2 - 1 + 0 < 0.
  assert_close(losses.match_loss(eye, eye), 0.0)
  # Swapped pairs: S = [[0, 1], [1, 0]]; each of the 2 negatives per direction costs
  # 0.2 - 0 + 1 = 1.2, total 4 * 1.2 = 4.8, / N^2 = 1.2.
  swapped = eye[::-1].copy()
  assert_close(losses.match_loss(eye, swapped, normalize="none"), 4.8)
  assert_close(losses.match_loss(eye, swapped, normalize="pairs"), 1.2)
  # The gradient must move the texts toward their videos (authors'-code sign, not the
  # paper's printed sign): one gradient step lowers the loss.
  g = jax.grad(losses.match_loss, argnums=1)(eye, swapped)
  assert float(losses.match_loss(eye, swapped - 0.1 * g)) < 1.2


def test_match_loss_hardest_negative_by_hand():
  a = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
  b = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
  s = np.array([[ref_match(a[i], b[j]) for j in range(3)] for i in range(3)])
  m = 0.2
  hinge = lambda x: max(0.0, x)
  want = 0.0
  for k in range(3):
    want += max(hinge(m - s[k, k] + s[kp, k]) for kp in range(3) if kp != k)
    want += max(hinge(m - s[k, k] + s[k, kp]) for kp in range(3) if kp != k)
  got = losses.match_loss(a, b, hardest_negative=True, normalize="none")
  assert_close(got, want)
  assert want > 0


# ----------------------------------------------------------------------------------------------
# cluster_loss (Eq. 6 / 7).


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("hardest", [False, True])
@pytest.mark.parametrize("normalize", ["pairs", "none"])
@pytest.mark.parametrize("case", range(len(PAIR_CASES)))
def test_cluster_loss_matches_loop(case, normalize, hardest, bidirectional):
  n, d, mask_kind = PAIR_CASES[case]
  x, _, mask = make_pair_inputs(200 + case, n, d, mask_kind)
  # Put near-duplicates in so that the cluster hinge (cosine > 0.8) is active somewhere.
  x[2 % n] = x[0] + 0.1 * x[2 % n]
  fn = functools.partial(losses.cluster_loss, margin=0.2, hardest_negative=hardest,
                         normalize=normalize, bidirectional=bidirectional)
  got, grads = value_and_grad(fn, (0,))(x, mask)
  assert_close(got, ref_cluster_loss(x, mask, 0.2, hardest, normalize, bidirectional))
  assert_finite_tree(grads)


def test_cluster_loss_hand_computed():
  x = np.array([[1, 0], [2, 0], [0, 1]], np.float32)
  # Only (0, 1) and (1, 0) are too close: 0.2 - 1 + 1 = 0.2 each; orthogonal pairs give
  # 0.2 - 1 + 0 < 0. Paper text counts each ordered pair once: 0.4; the authors' code
  # counts both directions: 0.8.
  assert_close(losses.cluster_loss(x, normalize="none", bidirectional=False), 0.4)
  assert_close(losses.cluster_loss(x, normalize="none", bidirectional=True), 0.8)
  assert_close(losses.cluster_loss(x, normalize="pairs"), 0.8 / 9)
  # MATCH(x_k, x_k) = 1 by definition, even for a zero embedding (whose computed cosine is 0):
  # 0.2 - 1 + 0 < 0, so the loss is 0 rather than 2 * 0.2.
  zero_row = np.array([[1, 0], [0, 0]], np.float32)
  assert_close(losses.cluster_loss(zero_row, normalize="none"), 0.0)


# ----------------------------------------------------------------------------------------------
# weak_match_loss (Eq. 13-14).

WEAK_CASES = [(4, 3, 2, 5), (6, 2, 4, 3), (3, 1, 1, 4)]


def make_weak_inputs(seed, b, c, s, d):
  rng = np.random.default_rng(seed)
  clips = rng.normal(size=(b, c, d)).astype(np.float32)
  sents = (np.mean(clips, axis=1, keepdims=True) + rng.normal(size=(b, s, d))).astype(np.float32)
  clip_mask = random_mask(rng, (b, c))
  sent_mask = random_mask(rng, (b, s))
  clip_mask[:, 0] = True
  sent_mask[:, 0] = True
  clip_mask[b - 1] = False  # A video with no valid clip: masked out.
  if b > 3:
    sent_mask[1] = False  # A paragraph with no valid sentence: masked out.
  return clips, clip_mask, sents, sent_mask


@pytest.mark.parametrize("hardest", [False, True])
@pytest.mark.parametrize("normalize", ["pairs", "none"])
@pytest.mark.parametrize("case", range(len(WEAK_CASES)))
def test_weak_match_loss_matches_loop(case, normalize, hardest):
  clips, clip_mask, sents, sent_mask = make_weak_inputs(300 + case, *WEAK_CASES[case])
  fn = functools.partial(losses.weak_match_loss, margin=0.2, hardest_negative=hardest,
                         normalize=normalize)
  got, grads = value_and_grad(fn, (0, 2))(clips, clip_mask, sents, sent_mask)
  want = ref_weak_match_loss(clips, clip_mask, sents, sent_mask, 0.2, hardest, normalize)
  assert_close(got, want)
  assert_finite_tree(grads)


def test_weak_match_equals_match_for_single_clips():
  # With one clip and one sentence per video, MATCH-bar is MATCH and Eq. 14 is Eq. 4.
  a, b, mask = make_pair_inputs(7, 6, 5, "partial")
  weak = losses.weak_match_loss(a[:, None], mask[:, None], b[:, None], mask[:, None])
  assert_close(weak, float(losses.match_loss(a, b, mask)))


# ----------------------------------------------------------------------------------------------
# reconstruction_loss (Eq. 10).

RECON_SHAPES = [(5, 3), (2, 4, 3), (3, 2, 6, 4)]


def make_recon_inputs(seed, shape):
  rng = np.random.default_rng(seed)
  pred = rng.normal(size=shape).astype(np.float32)
  target = rng.normal(size=shape).astype(np.float32)
  mask = random_mask(rng, shape[:-1])
  if len(shape) > 2:
    mask.reshape(-1, shape[-2])[0] = False  # One sequence with no valid row.
  pred.reshape(-1, shape[-1])[1] = target.reshape(-1, shape[-1])[1]  # A zero difference.
  return pred, target, mask


@pytest.mark.parametrize("reduce", ["mean", "sum", "sequence_mean"])
@pytest.mark.parametrize("distance", ["l2", "squared_l2"])
@pytest.mark.parametrize("shape", RECON_SHAPES)
@pytest.mark.parametrize("use_mask", [True, False])
def test_reconstruction_loss_matches_loop(use_mask, shape, distance, reduce):
  pred, target, mask = make_recon_inputs(400 + len(shape), shape)
  mask = mask if use_mask else None
  fn = functools.partial(losses.reconstruction_loss, mask=mask, distance=distance,
                         reduce=reduce)
  got, (g_pred, g_target) = value_and_grad(fn, (0, 1))(pred, target)
  assert_close(got, ref_reconstruction(pred, target, mask, distance, reduce))
  assert_finite_tree(g_pred)
  # The target is detached (stop_gradient).
  np.testing.assert_array_equal(np.asarray(g_target), 0.0)


@pytest.mark.parametrize("distance", ["l2", "squared_l2"])
def test_reconstruction_grad_finite_when_equal(distance):
  x = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
  loss, grad = jax.value_and_grad(losses.reconstruction_loss)(x, x, None, distance)
  assert float(loss) == 0.0
  assert_finite_tree(grad)
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_reconstruction_hand_computed():
  pred = np.array([[[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]]], np.float32)
  target = np.zeros_like(pred)
  mask = np.array([[True, True, False]])
  # Row norms 5 and 0 (third row masked): mean 2.5; squared 25 and 0: mean 12.5.
  assert_close(losses.reconstruction_loss(pred, target, mask), 2.5)
  assert_close(losses.reconstruction_loss(pred, target, mask, "squared_l2"), 12.5)
  assert_close(losses.reconstruction_loss(pred, target, mask, reduce="sum"), 5.0)


# ----------------------------------------------------------------------------------------------
# masked_max (hvt_jax.models.layers: the GRU encoders' pooling, padding-safe like the losses).


@pytest.mark.parametrize("shape", [(4, 3), (3, 5, 2), (2, 3, 4, 6)])
def test_masked_max_matches_loop(shape):
  rng = np.random.default_rng(500 + len(shape))
  x = rng.normal(size=shape).astype(np.float32) - 3.0  # Mostly negative: 0-fill would show.
  mask = random_mask(rng, shape[:-1])
  if len(shape) > 2:
    mask.reshape(-1, shape[-2])[0] = False  # An all-invalid row -> 0.
  got = layers.masked_max(x, mask)
  assert got.shape == shape[:-2] + shape[-1:]
  assert_close(got, ref_masked_max(x, mask))
  assert_finite_tree(jax.grad(lambda x: jnp.sum(layers.masked_max(x, mask)))(x))


def test_masked_max_all_invalid_gives_zero():
  x = np.full((2, 3, 4), -5.0, np.float32)
  mask = np.array([[False] * 3, [True, False, False]])
  got = np.asarray(layers.masked_max(x, mask))
  np.testing.assert_array_equal(got[0], 0.0)
  np.testing.assert_array_equal(got[1], -5.0)
  grad = jax.grad(lambda x: jnp.sum(layers.masked_max(x, mask)))(x)
  np.testing.assert_array_equal(np.asarray(grad)[0], 0.0)


# ----------------------------------------------------------------------------------------------
# Padding invariance, jit and sharding.


def _perturb(x, mask, rng, nan=False):
  """Writes garbage (large values, or NaN) into the rows where mask is False."""
  x = np.array(x, copy=True)
  noise = 100.0 * rng.normal(size=x.shape).astype(np.float32)
  if nan:
    noise[...] = np.nan
  x[~mask] = noise[~mask]
  return x


def _assert_same_value_and_grad(fn, args1, args2, argnums):
  """fn's value and gradients agree bit for bit on two inputs (one jitted function)."""
  value_and_grad = jax.jit(jax.value_and_grad(fn, argnums=argnums))
  (v1, g1), (v2, g2) = value_and_grad(*args1), value_and_grad(*args2)
  assert float(v1) == float(v2)
  for x, y in zip(g1, g2):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  return g2


@pytest.mark.parametrize("nan", [False, True])
def test_padding_changes_nothing(nan):
  rng = np.random.default_rng(600)
  a, b, mask = make_pair_inputs(601, 8, 6, "partial")
  a2, b2 = _perturb(a, mask, rng, nan), _perturb(b, mask, rng, nan)
  for hardest in (False, True):
    fn = functools.partial(losses.match_loss, mask=mask, hardest_negative=hardest)
    grads = _assert_same_value_and_grad(fn, (a, b), (a2, b2), (0, 1))
    for g in grads:
      np.testing.assert_array_equal(np.asarray(g)[~mask], 0.0)
    cl = functools.partial(losses.cluster_loss, mask=mask, hardest_negative=hardest)
    _assert_same_value_and_grad(cl, (a,), (a2,), (0,))

  clips, clip_mask, sents, sent_mask = make_weak_inputs(602, 5, 3, 4, 6)
  clips2, sents2 = _perturb(clips, clip_mask, rng, nan), _perturb(sents, sent_mask, rng, nan)
  weak = lambda c, s: losses.weak_match_loss(c, clip_mask, s, sent_mask)
  _assert_same_value_and_grad(weak, (clips, sents), (clips2, sents2), (0, 1))

  pred, target, rmask = make_recon_inputs(603, (3, 5, 4))
  pred2, target2 = _perturb(pred, rmask, rng, nan), _perturb(target, rmask, rng, nan)
  for reduce in ("mean", "sum", "sequence_mean"):
    rec = functools.partial(losses.reconstruction_loss, mask=rmask, reduce=reduce)
    grads = _assert_same_value_and_grad(rec, (pred, target), (pred2, target2), (0,))
    assert_finite_tree(grads)

  x = rng.normal(size=(3, 5, 4)).astype(np.float32)
  mm = lambda x: jnp.sum(layers.masked_max(x, rmask) ** 2)
  _assert_same_value_and_grad(mm, (x,), (_perturb(x, rmask, rng, nan),), (0,))


def test_jit_matches_eager():
  a, b, mask = make_pair_inputs(700, 7, 5, "partial")
  clips, clip_mask, sents, sent_mask = make_weak_inputs(701, 4, 3, 2, 5)
  pred, target, rmask = make_recon_inputs(702, (2, 4, 3))
  for hardest, normalize in itertools.product((False, True), ("pairs", "none")):
    match = functools.partial(losses.match_loss, hardest_negative=hardest, normalize=normalize)
    assert_close(jax.jit(match)(a, b, mask), float(match(a, b, mask)))
    cluster = functools.partial(losses.cluster_loss, hardest_negative=hardest,
                                normalize=normalize, bidirectional=False)
    assert_close(jax.jit(cluster)(a, mask), float(cluster(a, mask)))
    weak = functools.partial(losses.weak_match_loss, hardest_negative=hardest,
                             normalize=normalize)
    assert_close(jax.jit(weak)(clips, clip_mask, sents, sent_mask),
                 float(weak(clips, clip_mask, sents, sent_mask)))
  rec = functools.partial(losses.reconstruction_loss, distance="l2", reduce="mean")
  assert_close(jax.jit(rec)(pred, target, rmask), float(rec(pred, target, rmask)))
  assert_close(jax.jit(layers.masked_max)(pred, rmask), np.asarray(layers.masked_max(pred, rmask)))


def test_sharded_global_batch():
  """The losses run on a batch sharded over 8 devices and see all of it (global negatives)."""
  assert jax.device_count() >= 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  a, b, mask = make_pair_inputs(800, 16, 8, "partial")
  clips, clip_mask, sents, sent_mask = make_weak_inputs(801, 16, 3, 2, 8)
  shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))

  @jax.jit
  def total(a, b, mask, clips, clip_mask, sents, sent_mask):
    return (losses.match_loss(a, b, mask) + losses.cluster_loss(a, mask) +
            losses.weak_match_loss(clips, clip_mask, sents, sent_mask, hardest_negative=True))

  with jax.set_mesh(mesh):
    args = [shard(x) for x in (a, b, mask, clips, clip_mask, sents, sent_mask)]
    got = total(*args)
    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(*args)
  want = (ref_match_loss(a, b, mask, 0.2, False, "pairs") +
          ref_cluster_loss(a, mask, 0.2, False, "pairs", True) +
          ref_weak_match_loss(clips, clip_mask, sents, sent_mask, 0.2, True, "pairs"))
  assert_close(got, want)
  assert grads[0].sharding.is_equivalent_to(args[0].sharding, 2)
  assert_finite_tree(grads)


def test_bad_options_raise():
  a = np.ones((3, 2), np.float32)
  with pytest.raises(ValueError, match="normalize"):
    losses.match_loss(a, a, normalize="batch")
  with pytest.raises(ValueError, match="distance"):
    losses.reconstruction_loss(a, a, distance="l1")
  with pytest.raises(ValueError, match="reduce"):
    losses.reconstruction_loss(a, a, reduce="max")
  with pytest.raises(ValueError, match="mask"):
    losses.match_loss(a, a, np.ones((4,), bool))
  with pytest.raises(ValueError, match="match_loss"):
    losses.match_loss(a, np.ones((3, 5), np.float32))


def test_groups_mask_pairs_of_one_video():
  """Rows with the same group id (video_index) are not each other's negatives."""
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  a[3], b[3] = a[1], b[1]                       # video 1 twice in the batch
  groups = np.array([0, 1, 2, 1])
  masked = losses.match_loss(a, b, groups=groups, normalize="none")
  # Reference: the plain hinge over pairs of different groups only.
  sim = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
      b / np.linalg.norm(b, axis=1, keepdims=True)).T
  d = np.diag(sim)
  want = sum(max(0.0, 0.2 - d[k] + sim[j, k]) + max(0.0, 0.2 - d[k] + sim[k, j])
             for k in range(4) for j in range(4) if groups[j] != groups[k])
  assert_close(masked, want)
  assert float(losses.match_loss(a, b, normalize="none")) > float(masked)
  cl = losses.cluster_loss(a, groups=groups, normalize="none", bidirectional=False)
  assert_close(cl, sum(max(0.0, 0.2 - 1 + s) for (j, k), s in np.ndenumerate(
      (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
          a / np.linalg.norm(a, axis=1, keepdims=True)).T) if groups[j] != groups[k]))


def test_hardest_negative_ties_send_the_gradient_to_one_entry():
  """The hardest negative is the first of tied maxima (argmax), for HSE as for MCHA: its
  gradient does not depend on how the batch is sharded (a max would split it between ties)."""
  sim = jnp.array([[1.0, 0.5, 0.5],       # row 0 as query: columns 1 and 2 tie
                   [0.1, 1.0, 0.0],
                   [0.1, 0.0, 1.0]])
  hinge = lambda s: losses.bidirectional_hinge(s, jnp.ones(3, bool), 0.6,
                                               hardest_negative=True)
  assert_close(hinge(sim), 0.3)           # row 0, columns 1 and 2 as queries: 0.1 each
  grad = np.asarray(jax.grad(hinge)(sim))
  # Column 1 and 2 as queries pick row 0; row 0 as query picks column 1 only.
  assert grad[0, 1] == 2.0 and grad[0, 2] == 1.0, grad
