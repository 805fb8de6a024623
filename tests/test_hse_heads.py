"""HSE §4.3–4.4 heads trained on a frozen HSE/FSE: supervised classifier and caption
generator (hvt_jax.families.hse: heads, classification, captioning); their
parts on hand-made cases: tests/test_hse_head_parts.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from hvt_jax.families.hse import captioning

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
  from configs.hse import demo as demo_config  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  c = demo_config.get_config(f"runlocal,model={request.param}")
  c.input.data_dir = str(demo)
  c.input.max_clips = 5
  c.evals = {}   # only its checkpoint is needed
  workdir = tmp_path_factory.mktemp(request.param)
  train.train_and_evaluate(c, str(workdir))
  return request.param, c, workdir


def _head_config(name, backbone, workdir, demo):
  """configs/hse/<name>.py:runlocal on ``backbone``'s run in ``workdir``."""
  import importlib  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(f"configs.hse.{name}").get_config(
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
  c = _head_config("demo_classifier", name, workdir, demo)
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
  c = _head_config("demo_captioner", name, workdir, demo)
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
