"""HSE §4.3–4.4 heads: supervised classifier and caption generator on a frozen HSE/FSE
(hvt_jax.models.hse_heads, evaluation.classification, evaluation.captioning)."""

from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hvt_jax.evaluation import captioning, classification
from hvt_jax.models import hse_heads, layers


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
    w_i, w_h, b = (np.asarray(p[l][...]) for p in (lstm.w_i, lstm.w_h, lstm.b))
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
  corpus_scores, item = captioning.caption_metrics(preds, refs, per_item=True)
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


def test_caption_metrics_without_java_is_one_line(monkeypatch):
  monkeypatch.setattr(captioning.shutil, "which", lambda _: None)
  with pytest.raises(RuntimeError, match="Java runtime"):
    captioning.caption_metrics({"a": "x"}, {"a": ["x"]})


def test_nearest_captions_take_the_most_similar_train_vector():
  train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  got = captioning.nearest_captions(np.array([[0.1, 2.0], [3.0, 0.2], [1.0, 0.9]]), train,
                                    ["x", "y", "xy"], block=2)
  assert got == ["y", "x", "xy"]


# ------------------------------------------------------------------- on a trained demo HSE/FSE


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  from data_prep import demo as demo_data  # pylint: disable=g-import-not-at-top
  data = tmp_path_factory.mktemp("data")
  demo_data.write_demo(str(data), num_train=24, num_val=16, verbose=False)
  return data


@pytest.fixture(scope="module", params=["hse", "fse"])
def backbone_run(request, demo, tmp_path_factory):
  """A runlocal HSE/FSE trained 4 steps on the demo: the checkpoint the heads start from."""
  import importlib  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(f"configs.{request.param}.demo").get_config("runlocal")
  c.input.data_dir = str(demo)
  c.input.max_clips = 5
  workdir = tmp_path_factory.mktemp(request.param)
  train.train_and_evaluate(c, str(workdir))
  return request.param, c, workdir


def _head_config(task, backbone, workdir, demo):
  import importlib  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(f"configs.{task}.demo").get_config(
      f"runlocal,backbone={backbone},init={workdir}")
  c.input.data_dir = str(demo)
  c.input.max_clips = 5
  return c


def _backbone_params(params):
  from hvt_jax import pretrained  # pylint: disable=g-import-not-at-top
  flat = pretrained.flatten(nnx.to_pure_dict(params))
  return {k[len("backbone/"):]: np.asarray(v) for k, v in flat.items()
          if k.startswith("backbone/")}


def _checkpoint_params(workdir):
  from hvt_jax import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained._checkpoint(dict(source=str(workdir)), [])   # pylint: disable=protected-access


def test_classifier_trains_its_head_on_the_frozen_backbone(backbone_run, demo, tmp_path):
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  name, _, workdir = backbone_run
  c = _head_config("hse_classifier", name, workdir, demo)
  metrics = train.train_and_evaluate(c, str(tmp_path))
  out = json.loads((tmp_path / "eval" / "val" / "metrics.json").read_text())
  assert out["classify/num_videos"] == 16 and out["classify/num_unlabeled"] == 0
  assert 0.0 <= out["classify/top1"] <= out["classify/top5"] <= 100.0
  assert metrics["val/classify/top1"] == out["classify/top1"]


@pytest.mark.parametrize("backbone_run", ["hse"], indirect=True)   # FSE: the classifier's
def test_captioner_on_the_frozen_checkpoint(backbone_run, demo, tmp_path):
  """init_from fills ``backbone`` with the retrieval checkpoint bit for bit and training
  the decoder leaves it so (config.trainable); teacher-forcing targets; the evaluator's
  metrics (model and nearest-neighbour baseline) and dense-captioning predictions file."""
  from hvt_jax import pretrained, train  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  name, _, workdir = backbone_run
  want = _checkpoint_params(workdir)
  c = _head_config("hse_captioner", name, workdir, demo)
  c.evals.val.baseline = "nearest"
  s = train.setup(c)
  state = train.init_state(s)
  got = _backbone_params(state["params"])
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  view = pipeline.get_view("hse_captioner")
  ds, _, _ = pipeline.eval_dataset(c, "val", view)
  batch, host = next(pipeline.iterate(ds, s.mesh, view))
  model = nnx.merge(s.graphdef, state["params"])
  y, mask = model.targets(batch)
  tokens, tmask = np.asarray(batch["sentence_tokens"]), np.asarray(batch["sentence_token_mask"])
  paired = np.asarray(batch["clip_mask"] & batch["sentence_mask"] & batch["example_mask"][:, None])
  for b, ci in zip(*np.nonzero(paired)):
    n = int(tmask[b, ci].sum())
    np.testing.assert_array_equal(np.asarray(y[b, ci, :n]), tokens[b, ci, :n])
    assert int(y[b, ci, n]) == model.eos_id and bool(mask[b, ci, n])
    assert not np.asarray(mask[b, ci, n + 1:]).any()
  assert not np.asarray(mask)[~paired].any()
  refs = host["references"][0].decode().split("\n")
  assert len(refs) == int(paired[0].sum())
  # Train, evaluate: metrics for the model and the nearest-neighbour baseline, predictions
  # in the dense-captioning layout, one per ground-truth segment.
  train.train_and_evaluate(c, str(tmp_path))
  out = json.loads((tmp_path / "eval" / "val" / "metrics.json").read_text())
  for k in captioning.METRICS:
    assert 0.0 <= out[f"caption/{k}"] and 0.0 <= out[f"caption/nearest/{k}"]
  preds = json.loads((tmp_path / "eval" / "val" / "caption_predictions.json").read_text())
  n = sum(len(v) for v in preds["results"].values())
  assert n == out["caption/num_segments"] > 16
  first = next(iter(preds["results"].values()))[0]
  assert set(first) == {"sentence", "timestamp", "scores"}
  assert first["timestamp"][1] > first["timestamp"][0]
  assert set(first["scores"]) == set(captioning.METRICS)
  per_video = [e["scores"]["CIDEr"] for v in preds["results"].values() for e in v]
  assert np.mean(per_video) == pytest.approx(out["caption/CIDEr"], rel=1e-4)  # CIDEr: a mean
  trained = pretrained._checkpoint(dict(source=str(tmp_path)), [])   # pylint: disable=protected-access
  for k in want:
    np.testing.assert_array_equal(trained[f"backbone/{k}"], want[k])
  start = pretrained.flatten(nnx.to_pure_dict(state["params"]))
  head = [k for k in trained if k.startswith("decoder/")]
  assert head and any(not np.array_equal(trained[k], np.asarray(start[k])) for k in head)


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
