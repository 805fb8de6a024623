"""HSE §4.3–4.4 heads, their parts on hand-made cases: beam search against exhaustive
search, the LSTM against its gate equations, the classification and captioning metrics
(hvt_jax.families.hse: heads, classification, captioning; hvt_jax.models.layers).
The heads trained on a frozen HSE/FSE: tests/test_hse_heads.py."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hvt_jax.families.hse import captioning
from hvt_jax.families.hse import classification
from hvt_jax.models import layers
from hvt_jax.families.hse import heads as hse_heads
# ------------------------------------------------------------------------------- beam search


def _table_step(table):
  """A decoder whose next-token log-probabilities depend on the last token only."""
  def step(state, tokens):
    del state
    return tokens, table[tokens]
  return step


def _exhaustive(logp0, table, eos, max_len, alpha):
  """Best (words, score) over every sequence: words then <eos>, or max_len words."""
  v = logp0.shape[0]
  words = [t for t in range(v) if t != eos]
  best = (None, -np.inf)
  for n in range(max_len + 1):
    for seq in itertools.product(words, repeat=n):
      full = list(seq) + ([eos] if n < max_len else [])
      lp, prev = 0.0, None
      for t in full:
        lp += float(logp0[t] if prev is None else table[prev, t])
        prev = t
      length = n if n < max_len else max_len
      score = lp / (length + 1) ** alpha
      if score > best[1] + 1e-9:
        best = (list(seq), score)
  return best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_with_enough_beams_is_exhaustive(alpha):
  rng = np.random.default_rng(0)
  v, eos, max_len = 4, 3, 3
  for trial in range(5):
    table = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(v, v)) * 2.0), -1)
    logp0 = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, v)) * 2.0), -1)
    beam = hse_heads.Beam(size=v ** max_len, max_len=max_len, alpha=alpha)
    tokens, lengths, scores = hse_heads.beam_search(
        _table_step(table), jnp.zeros((2,), jnp.int32), logp0, eos, beam)
    for n in range(2):
      seq, score = _exhaustive(np.asarray(logp0[n]), np.asarray(table), eos, max_len, alpha)
      assert list(np.asarray(tokens[n, :lengths[n]])) == seq, (trial, n)
      np.testing.assert_allclose(float(scores[n]), score, rtol=1e-5)
      assert (np.asarray(tokens[n, lengths[n]:]) == 0).all()


def test_beam_of_one_is_greedy():
  rng = np.random.default_rng(1)
  v, eos = 6, 5
  table = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(v, v)) * 3.0), -1)
  logp0 = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(3, v)) * 3.0), -1)
  tokens, lengths, _ = hse_heads.beam_search(_table_step(table), jnp.zeros((3,), jnp.int32),
                                             logp0, eos, hse_heads.Beam(1, 6, 0.0))
  for n in range(3):
    want, t = [], int(np.argmax(logp0[n]))
    while t != eos and len(want) < 6:
      want.append(t)
      t = int(np.argmax(table[t]))
    assert list(np.asarray(tokens[n, :lengths[n]])) == want


# --------------------------------------------------------------------------------------- LSTM


def test_lstm_matches_pytorch_gate_equations():
  lstm = layers.LSTM(3, 4, 2, rngs=nnx.Rngs(0))
  x = np.random.default_rng(2).normal(size=(2, 5, 3)).astype(np.float32)
  out, _ = lstm(jnp.asarray(x))
  sig = lambda z: 1 / (1 + np.exp(-z))
  inp = x
  for l in range(2):
    cell = lstm.layers[l].cell                      # gates i, f, g, o as blocks of 4H
    w_i, w_h, b = (np.asarray(p[...]).reshape(p[...].shape[:-1] + (4, -1))
                   for p in (cell.dense_i.kernel, cell.dense_h.kernel, cell.dense_h.bias))
    h, c, outs = np.zeros((2, 4)), np.zeros((2, 4)), []
    for t in range(5):
      z = np.einsum("bd,dgk->bgk", inp[:, t], w_i) + np.einsum("bh,hgk->bgk", h, w_h) + b
      i, f, g, o = sig(z[:, 0]), sig(z[:, 1]), np.tanh(z[:, 2]), sig(z[:, 3])
      c = f * c + i * g
      h = o * np.tanh(c)
      outs.append(h)
    inp = np.stack(outs, 1)
  np.testing.assert_allclose(np.asarray(out), inp, atol=1e-5)


# ------------------------------------------------------------------------------------ metrics


def test_class_ranks_average_ties():
  logits = np.array([[3.0, 1.0, 3.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
  np.testing.assert_array_equal(classification.class_ranks(logits, np.array([0, 0, 2])),
                                [1.5, 4.0, 2.5])
  acc = classification.top_k_accuracy(logits, np.array([0, 0, 2]), ks=(1, 2, 3))
  assert acc == {"top1": 0.0, "top2": pytest.approx(100 / 3), "top3": pytest.approx(200 / 3),
                 "mean_class_top1": 0.0}
  with pytest.raises(ValueError, match="outside"):
    classification.class_ranks(logits, np.array([0, 4, 1]))


def test_caption_metrics_on_known_cases():
  """One scoring pass (the Java scorers start once): per-caption values on known cases."""
  refs = {"a": ["the man rides a horse"], "b": ["a dog runs in the park"], "x": ["a b e f"],
          "c": ["the man rides a horse"], "d": ["a dog runs in the park"]}
  preds = {"a": "the man rides a horse", "b": "a dog runs in the park", "x": "a b c d",
           "c": "purple elephants sing loudly", "d": "purple elephants sing loudly"}
  # A second set (a/c and b/d captions swapped) in the same Java pass, scored on its own:
  # the captions that moved get the scores they had, the corpus values are the same.
  swapped = dict(preds, a=preds["c"], c=preds["a"], b=preds["d"], d=preds["b"])
  sets = captioning.caption_metric_sets({"": preds, "swapped": swapped}, refs)
  corpus_scores, item = sets[""]
  for k, j in (("a", "c"), ("c", "a"), ("b", "d"), ("d", "b"), ("x", "x")):
    assert sets["swapped"][1][k] == pytest.approx(item[j]), k
  for k in captioning.METRICS:
    assert sets["swapped"][0][k] == pytest.approx(corpus_scores[k], abs=1e-6), k
  assert set(item) == set(preds) and set(corpus_scores) == set(captioning.METRICS)
  for same in ("a", "b"):
    for k in ("BLEU@1", "BLEU@4", "ROUGE-L"):
      assert item[same][k] == pytest.approx(100.0, abs=1e-3), (same, k)
    assert item[same]["METEOR"] > 90.0
  # 2 of 4 unigrams match, same length: BLEU@1 = 1/2 (brevity penalty 1); LCS 2 of 4 ->
  # ROUGE-L F with beta 1.2 = 1/2.
  assert item["x"]["BLEU@1"] == pytest.approx(50.0, abs=1e-3)
  assert item["x"]["ROUGE-L"] == pytest.approx(50.0, abs=1e-3)
  for wrong, same in (("c", "a"), ("d", "b")):
    assert item[wrong]["BLEU@1"] == pytest.approx(0.0, abs=1e-6)
    assert item[wrong]["METEOR"] < item[same]["METEOR"]
    assert item[wrong]["CIDEr"] < item[same]["CIDEr"]
  assert all(0.0 <= v <= 100.0 for k, v in corpus_scores.items() if k != "CIDEr")
  assert corpus_scores["CIDEr"] == pytest.approx(np.mean([v["CIDEr"] for v in item.values()]))
  with pytest.raises(ValueError, match="different"):
    captioning.caption_metrics({"a": "x"}, {"b": ["x"]})
  with pytest.raises(ValueError, match="different"):
    captioning.caption_metric_sets({"": preds, "short": {"a": "x"}}, refs)


def test_caption_metrics_without_java_is_one_line(monkeypatch):
  monkeypatch.setattr(captioning.shutil, "which", lambda _: None)
  with pytest.raises(RuntimeError, match="Java runtime"):
    captioning.caption_metrics({"a": "x"}, {"a": ["x"]})


def test_nearest_captions_take_the_most_similar_train_vector():
  train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  got = captioning.nearest_captions(np.array([[0.1, 2.0], [3.0, 0.2], [1.0, 0.9]]), train,
                                    ["x", "y", "xy"], block=2)
  assert got == ["y", "x", "xy"]


def test_dense_caption_metrics_pair_by_tiou_over_every_reference_set(monkeypatch):
  """The pairing, with the scorers replaced by a recorder (they have their own test)."""
  calls = []

  def fake(preds, refs):
    calls.append(sorted((preds[k], refs[k][0]) for k in preds))
    return {k: float(len(calls)) for k in captioning.METRICS}

  monkeypatch.setattr(captioning, "caption_metrics", fake)
  refs1 = {"v": [((0.0, 10.0), "a man rides a horse")]}
  refs2 = {"v": [((0.0, 9.0), "the man on a horse"), ((20.0, 30.0), "a dog runs")]}
  preds = {"v": [((0.0, 10.0), "man riding"), ((50.0, 60.0), "dog running")],
           "w": [((0.0, 1.0), "nothing to compare")]}
  got = captioning.dense_caption_metrics(preds, [refs1, refs2], tious=(0.5, 0.95))
  # tIoU 0.5: pred 0 pairs with refs1[0] (tIoU 1) and refs2[0] (0.9); pred 1 overlaps
  # nothing -> one garbage reference; video w is in no reference set. At 0.95 the second
  # set's segment no longer matches. Metrics are averaged over the thresholds.
  assert calls == [
      sorted([("man riding", "a man rides a horse"), ("man riding", "the man on a horse"),
              ("dog running", captioning.GARBAGE)]),
      sorted([("man riding", "a man rides a horse"), ("dog running", captioning.GARBAGE)])]
  assert got == {k: 1.5 for k in captioning.METRICS}

