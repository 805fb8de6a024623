"""Training objectives of HSE/FSE (Zhang, Hu and Sha, ECCV 2018) as pure jax functions, the
one bidirectional ranking hinge every family uses (``bidirectional_hinge``: HSE/FSE, MCHA) and
the one L2 normaliser (``unit``).

Every loss is a function of embeddings and boolean masks with static shapes, so it runs
inside ``jax.jit`` on global (sharded) arrays: contrastive terms see the whole global batch
and XLA inserts the gathers. Nothing branches in Python on array values; padded rows are
zeroed with ``jnp.where`` before any arithmetic, so neither their values nor their
gradients can leak into the loss (not even NaN or inf written into padding).

Equation numbers refer to section 3 of the paper (Zhang, Hu, Sha: "Cross-Modal and Hierarchical Modeling of
Video and Text", ECCV 2018).

Sign convention. The paper prints the hinge of Eq. 4/5/14 as
``[m + MATCH(v_k, p_k) - MATCH(v_k', p_k)]_+`` and Eq. 6/7 as ``[g + 1 - MATCH(x_k', x_k)]_+``.
Taken literally, both would raise the similarity of negatives and lower that of positives
(Eq. 6 would even pull every pair of videos together, while the text says the cluster loss
"separates" them). The authors' code (``ContrastiveLoss`` in their release, CMHSE
loss.py@e007cfe:86-117, ``cost =
margin + scores - diagonal``) uses the usual triplet sign, and so does this module:

  match hinge:   [m - S(k, k) + S(k', k)]_+   and   [m - S(k, k) + S(k, k')]_+
  cluster hinge: [g - 1 + S(k', k)]_+          (S(k, k) = 1 by definition)

where S(k', k) = MATCH(v_k', p_k), i.e. rows of S index the video (first) side and columns the
text (second) side.

Options versus the paper text and the authors' code (defaults follow the code):

  normalize:             "pairs" = sum / N_valid**2 (code)     | "none" = plain sum (text)
    (The supplementary says "each loss is normalized by its batch size"; "pairs" divides by
    the number of cells of the N x N similarity matrix, as the released `ContrastiveLoss`
    does with `norm=True` (loss.py:114-115), which every training command in its README
    selects with `--norm`; `norm=False` returns the plain sum.)
  hardest_negative:      False = sum over negatives (code, text) | True = VSE++ hardest only
  cluster bidirectional: False = each ordered pair once (code: the mean of its two
                         bidirectional (x, x) terms, model.py@762f91d:335; text) | True = twice
  distance:              "l2" = Euclidean norm (code)          | "squared_l2" (text, Eq. 10)
  reconstruction reduce: "mean" over valid rows (code's `EuclideanLoss(norm=True)`,
                         decoder/loss.py@e007cfe:23-24, i.e.
                         `--norm`) | "sum" (its `norm=False`) | "sequence_mean" (Eq. 10)
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Normalize = Literal["pairs", "none"]
Reduction = Literal["sum", "pairs", "mean"]
Distance = Literal["l2", "squared_l2"]
Reduce = Literal["mean", "sum", "sequence_mean"]

_NORMALIZE = ("pairs", "none")
_REDUCTIONS = ("sum", "pairs", "mean")
_DISTANCE = ("l2", "squared_l2")
_REDUCE = ("mean", "sum", "sequence_mean")


def _check_option(name: str, value: str, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"losses: {name}={value!r} is not one of {allowed}")


def _as_float(x: jax.Array) -> jax.Array:
  """Promotes to at least float32: cosines and hinge sums in bfloat16 lose the margin."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _row_mask(mask: jax.Array | None, shape: tuple[int, ...], name: str) -> jax.Array:
  """Returns a boolean mask of `shape` (all True when `mask` is None), checking its shape."""
  if mask is None:
    return jnp.ones(shape, dtype=bool)
  mask = jnp.asarray(mask)
  if mask.shape != tuple(shape):
    raise ValueError(f"losses: {name} has shape {mask.shape}, expected {tuple(shape)}")
  return mask.astype(bool)


def unit(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Row-wise x / max(||x||, eps) along the last axis, at least float32 (torch's F.normalize).

  A zero row stays zero, with a finite (zero) gradient: the squared norm is clamped before
  the rsqrt, so no sqrt is differentiated at 0.

  Args:
    x: [..., D] float array.
    eps: lower bound on each row's norm (1e-12 as F.normalize; cosines use 1e-8).

  Returns:
    [..., D] float array of unit (or zero) rows.
  """
  x = _as_float(x)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def cosine_similarity(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Pairwise cosine similarity, MATCH of Eq. 2.

  Each vector is divided by ``max(||x||, eps)``, so a zero vector (e.g. zeroed padding) has
  similarity 0 with everything and a finite gradient.

  Args:
    a: [Na, D] float array (video side).
    b: [Nb, D] float array (text side).
    eps: lower bound on each vector norm.

  Returns:
    [Na, Nb] float array, entry (i, j) = a_i . b_j / (||a_i|| ||b_j||).
  """
  a, b = _as_float(a), _as_float(b)
  if a.ndim != 2 or b.ndim != 2 or a.shape[-1] != b.shape[-1]:
    raise ValueError(f"losses.cosine_similarity: expected [Na, D] and [Nb, D], got "
                     f"{a.shape} and {b.shape}")
  # HIGHEST: the default TPU f32 matmul uses bf16 passes, too coarse next to a 0.2 margin.
  return jnp.matmul(unit(a, eps), unit(b, eps).T, precision=jax.lax.Precision.HIGHEST)


def bidirectional_hinge(sim: jax.Array,
                        mask: jax.Array,
                        margin: float,
                        *,
                        hardest_negative: bool = False,
                        bidirectional: bool = True,
                        reduce: Reduction = "sum",
                        groups: jax.Array | None = None) -> jax.Array:
  """The one bidirectional ranking hinge of every family (HSE/FSE Eq. 4-7 and 14, MCHA Eq. 9
  and 12).

  With S = `sim`, positives on the diagonal and K the valid indices, each column k is a
  query ranked against the other rows, and each row k against the other columns:

    sum_{k in K} sum_{k' in K, k' != k} [m - S(k,k) + S(k',k)]_+      (column k as query)
                                       + [m - S(k,k) + S(k,k')]_+      (row k as query)

  (HSE: rows videos, columns texts; MCHA: rows texts, columns videos.) The second line is
  dropped when `bidirectional` is False. With `hardest_negative`, each inner sum keeps only
  the negative of highest similarity (VSE++, the HSE authors' `max_violation`, MCHA Eq. 9),
  picked by ``argmax`` (the first of tied maxima): its gradient goes to one entry whatever the
  batch's sharding (a max splits it between ties, and the split differed between 1 and 8
  devices). A query with no valid negative contributes 0.

  Args:
    sim: [N, N] float similarity.
    mask: [N] bool, valid rows/columns.
    margin: hinge margin (HSE's alpha, beta, gamma, eta; MCHA's Θ, Δ).
    hardest_negative: keep only the hardest negative per query and direction.
    bidirectional: count both directions (True) or only the column-query one.
    reduce: "sum"; "pairs": divided by N_valid**2 (HSE authors' code); "mean": divided by
      the number of hinge terms counted (MMT's, MCHA: the valid negative pairs, or with
      `hardest_negative` the queries that have one).
    groups: optional [N] int ids (the pipeline's ``video_index``): pairs of one group are
      not negatives of each other (the same video twice in a batch, e.g. across an epoch
      boundary, or one video's sentences). None: every other valid row is a negative.

  Returns:
    Scalar float loss.

  Raises:
    ValueError: an unknown `reduce`, or `sim` / `mask` not [N, N] / [N].
  """
  _check_option("reduce", reduce, _REDUCTIONS)
  n = sim.shape[0]
  if sim.shape != (n, n) or mask.shape != (n,):
    raise ValueError(f"losses: similarity {sim.shape} / mask {mask.shape} are not [N, N] / [N]")
  diag = jnp.diagonal(sim)
  negative = mask[:, None] & mask[None, :] & ~jnp.eye(n, dtype=bool)
  if groups is not None:
    negative &= groups[:, None] != groups[None, :]
  # (cost, axis of the negatives): element [k', k] has column k as query (video k' its
  # negative for HSE), element [k, k'] row k.
  costs = [(jnp.where(negative, jax.nn.relu(margin - diag[None, :] + sim), 0.0), 0)]
  if bidirectional:
    costs.append((jnp.where(negative, jax.nn.relu(margin - diag[:, None] + sim), 0.0), 1))
  total, count = 0.0, 0.0
  for cost, axis in costs:
    if hardest_negative:
      has_negative = jnp.any(negative, axis=axis)
      pick = jnp.argmax(jnp.where(negative, sim, -jnp.inf), axis=axis)
      cost = jnp.take_along_axis(cost, jnp.expand_dims(pick, axis), axis=axis).squeeze(axis)
      cost = jnp.where(has_negative, cost, 0.0)
      count = count + jnp.sum(has_negative)
    else:
      count = count + jnp.sum(negative)
    total = total + jnp.sum(cost)
  if reduce == "pairs":
    n_valid = jnp.sum(mask.astype(total.dtype))
    total = total / jnp.maximum(n_valid * n_valid, 1.0)
  elif reduce == "mean":
    total = total / jnp.maximum(count, 1.0)
  return total


def _reduction(normalize: Normalize) -> Reduction:
  """HSE's ``normalize`` option as a ``bidirectional_hinge`` reduction."""
  _check_option("normalize", normalize, _NORMALIZE)
  return "pairs" if normalize == "pairs" else "sum"


def match_loss(a: jax.Array,
               b: jax.Array,
               mask: jax.Array | None = None,
               margin: float = 0.2,
               hardest_negative: bool = False,
               normalize: Normalize = "pairs",
               groups: jax.Array | None = None) -> jax.Array:
  """Bidirectional matching hinge, Eq. 4 (videos/paragraphs) and Eq. 5 (clips/sentences).

  ``sum_k sum_{k' != k} [m - S(k,k) + S(k',k)]_+ + [m - S(k,k) + S(k,k')]_+`` with
  S = cosine(a, b), S(k', k) = MATCH(v_k', p_k). See the module docstring for the sign. For
  Eq. 5, pass the flattened clip and sentence embeddings [B*C, D] with the flattened clip
  mask: every other valid clip/sentence of the batch, in the same video or not, is a negative.

  Args:
    a: [N, D] float array, video-side embeddings (videos, or flattened clips).
    b: [N, D] float array, text-side embeddings; row k pairs with row k of `a`.
    mask: [N] bool array, or None for all valid. Masked rows are neither positives nor
      negatives and get zero gradient.
    margin: alpha (Eq. 4) or beta (Eq. 5); 0.2 in the paper.
    hardest_negative: False sums over all negatives (authors' default, paper text); True
      keeps the hardest negative per positive and direction (VSE++, authors' `max_violation`).
    normalize: "pairs" divides by N_valid**2 (authors' code); "none" is the plain sum of
      the paper text.
    groups: optional [N] int group ids (``video_index``): rows of one group are not each
      other's negatives.

  Returns:
    Scalar float loss.
  """
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"losses.match_loss: a {a.shape} and b {b.shape} must both be [N, D]")
  valid = _row_mask(mask, a.shape[:1], "match_loss mask")
  a = jnp.where(valid[:, None], _as_float(a), 0.0)
  b = jnp.where(valid[:, None], _as_float(b), 0.0)
  sim = cosine_similarity(a, b)
  return bidirectional_hinge(sim, valid, margin, hardest_negative=hardest_negative,
                             reduce=_reduction(normalize), groups=groups)


def cluster_loss(x: jax.Array,
                 mask: jax.Array | None = None,
                 margin: float = 0.2,
                 hardest_negative: bool = False,
                 normalize: Normalize = "pairs",
                 bidirectional: bool = True,
                 groups: jax.Array | None = None) -> jax.Array:
  """Within-modality cluster (contrastive) hinge, one modality of Eq. 6 or Eq. 7.

  ``sum_k sum_{k' != k} [g - 1 + MATCH(x_k', x_k)]_+`` (sign as in the authors' code, see the
  module docstring): distinct items are pushed below cosine ``1 - g``. It is the matching
  hinge on the self-similarity S = cosine(x, x) with the diagonal set to exactly 1, as the
  paper defines it. Eq. 6 = ``cluster_loss(v) + cluster_loss(p)``; Eq. 7 the same on
  flattened clips and sentences with their masks.

  Args:
    x: [N, D] float array, embeddings of one modality.
    mask: [N] bool array, or None for all valid.
    margin: gamma (Eq. 6) or eta (Eq. 7); 0.2 in the paper.
    hardest_negative: keep only the hardest other item per query (VSE++ style).
    normalize: "pairs" divides by N_valid**2 (authors' code); "none" is the plain sum.
    bidirectional: True counts both directions; since S is symmetric every ordered pair is
      counted twice, i.e. exactly 2x the paper text. False counts each ordered pair once:
      the paper text, and the released code, which applies its bidirectional matching loss
      to (v, v) and (p, p) and averages the two, ``(L(v, v) + L(p, p)) / 2``.
    groups: optional [N] int group ids (``video_index``): rows of one group are not each
      other's negatives.

  Returns:
    Scalar float loss.
  """
  if x.ndim != 2:
    raise ValueError(f"losses.cluster_loss: x must be [N, D], got {x.shape}")
  valid = _row_mask(mask, x.shape[:1], "cluster_loss mask")
  x = jnp.where(valid[:, None], _as_float(x), 0.0)
  sim = cosine_similarity(x, x)
  sim = jnp.where(jnp.eye(x.shape[0], dtype=bool), 1.0, sim)
  return bidirectional_hinge(sim, valid, margin, hardest_negative=hardest_negative,
                             bidirectional=bidirectional, reduce=_reduction(normalize),
                             groups=groups)


def weak_match_loss(clips: jax.Array,
                    clip_mask: jax.Array,
                    sents: jax.Array,
                    sent_mask: jax.Array,
                    margin: float = 0.2,
                    hardest_negative: bool = False,
                    normalize: Normalize = "pairs") -> jax.Array:
  """Low-level matching under weak (video-paragraph only) correspondence, Eq. 13-14.

  MATCH-bar(v_k, p_k') = mean over valid clips i of video k and valid sentences j of
  paragraph k' of cosine(c_ki, s_k'j) (Eq. 13; clip and sentence counts may differ), then
  the bidirectional hinge of `match_loss` over the [B, B] matrix (Eq. 14). Because the mean
  of dot products is the dot product of means, MATCH-bar is computed as the product of the
  masked means of the unit-normalised clips and sentences: O(B*(C+S)*D + B^2*D), never the
  [B, C, B, S] tensor. Same as the authors' `GroupWiseContrastiveLoss` with
  `max_violation=False` (their `max_violation=True` also swaps the mean for a max in Eq. 13;
  here `hardest_negative` only changes the hinge).

  Args:
    clips: [B, C, D] float array, clip embeddings.
    clip_mask: [B, C] bool array, valid clips.
    sents: [B, S, D] float array, sentence embeddings.
    sent_mask: [B, S] bool array, valid sentences.
    margin: beta' of Eq. 14; 0.2 in the paper.
    hardest_negative: keep only the hardest negative per query and direction.
    normalize: "pairs" divides by B_valid**2 (authors' code); "none" is the plain sum.

  Returns:
    Scalar float loss. Videos with no valid clip or no valid sentence are masked out.
  """
  if clips.ndim != 3 or sents.ndim != 3 or clips.shape[0] != sents.shape[0] or (
      clips.shape[-1] != sents.shape[-1]):
    raise ValueError(f"losses.weak_match_loss: clips {clips.shape} and sents {sents.shape} "
                     "must be [B, C, D] and [B, S, D]")
  clip_mask = _row_mask(clip_mask, clips.shape[:2], "weak_match_loss clip_mask")
  sent_mask = _row_mask(sent_mask, sents.shape[:2], "weak_match_loss sent_mask")
  clip_mean, n_clips = _masked_unit_mean(clips, clip_mask)
  sent_mean, n_sents = _masked_unit_mean(sents, sent_mask)
  valid = (n_clips > 0) & (n_sents > 0)
  sim = jnp.matmul(clip_mean, sent_mean.T, precision=jax.lax.Precision.HIGHEST)
  return bidirectional_hinge(sim, valid, margin, hardest_negative=hardest_negative,
                             reduce=_reduction(normalize))


def _masked_unit_mean(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean of the unit-normalised valid rows, [B, T, D] -> [B, D], and the valid counts [B]."""
  x_hat = unit(jnp.where(mask[..., None], _as_float(x), 0.0), 1e-8)
  count = jnp.sum(mask, axis=-1)
  total = jnp.sum(jnp.where(mask[..., None], x_hat, 0.0), axis=-2)
  return total / jnp.maximum(count, 1)[:, None].astype(total.dtype), count


def reconstruction_loss(pred: jax.Array,
                        target: jax.Array,
                        mask: jax.Array | None = None,
                        distance: Distance = "l2",
                        reduce: Reduce = "mean") -> jax.Array:
  """Layer-wise reconstruction distance, the terms of Eq. 10.

  The per-row distance is between `pred` and ``stop_gradient(target)``: the target is what
  the encoder computed (clip/sentence embeddings) or the input features (frames/words), and
  the authors detach it so the encoder is not pulled toward the decoder's output.

  Args:
    pred: [..., T, D] float array, decoder outputs.
    target: [..., T, D] float array, same shape; gets no gradient.
    mask: [..., T] bool array, or None for all valid; invalid rows contribute nothing.
    distance: "l2" = Euclidean norm ||pred - target|| (authors' `EuclideanLoss`); the
      "squared_l2" = squared norm of the paper's Eq. 10. The norm has a zero (not NaN)
      gradient where pred == target.
    reduce: "mean" over all valid rows (released `EuclideanLoss(norm=True)`, selected by the
      `--norm` flag of every README command); "sum" over all valid rows (its `norm=False`);
      "sequence_mean" averages over the valid rows
      of each [T, D] sequence and sums over the leading axes, which is Eq. 10's
      ``sum_i 1/n_i sum_j`` for frames/words given [C, T, D] (a sequence with no valid row
      adds 0).

  Returns:
    Scalar float loss.
  """
  _check_option("distance", distance, _DISTANCE)
  _check_option("reduce", reduce, _REDUCE)
  if pred.shape != target.shape or pred.ndim < 2:
    raise ValueError(f"losses.reconstruction_loss: pred {pred.shape} and target "
                     f"{target.shape} must share a [..., T, D] shape")
  valid = _row_mask(mask, pred.shape[:-1], "reconstruction_loss mask")
  diff = _as_float(pred) - jax.lax.stop_gradient(_as_float(target))
  diff = jnp.where(valid[..., None], diff, 0.0)
  sq = jnp.sum(diff * diff, axis=-1)
  if distance == "l2":
    # Double-where: sqrt's derivative is infinite at 0, so feed it a safe value there.
    positive = sq > 0
    dist = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  else:
    dist = sq
  if reduce == "sum":
    return jnp.sum(dist)
  count = jnp.sum(valid.astype(dist.dtype), axis=-1)
  if reduce == "sequence_mean":
    return jnp.sum(jnp.sum(dist, axis=-1) / jnp.maximum(count, 1.0))
  return jnp.sum(dist) / jnp.maximum(jnp.sum(count), 1.0)
