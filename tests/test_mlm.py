"""text_mlm: a real model of transformer blocks with dropout and random masking, through the
trainer: it trains, resumes bit-identically (same dropout and masks after a resume) and
takes the same step on 1 and 8 devices; BERT's masking rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common
from configs.text_mlm import activitynet
from hvt_jax import pretrained, train
from hvt_jax.input import pipeline
from hvt_jax.models import mlm
from tests import tiny_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("tiny_wp")
  tiny_data.write(str(out), num_train=24, num_val=8, tokenizer="wordpiece")
  return str(out)


def _config(data_dir, **kw):
  c = activitynet.get_config("runlocal")
  c.input.data_dir = data_dir
  # The warm-up schedule depends on num_train_steps; the resume test changes it (2 -> 4).
  c.schedule.name = "constant"
  c.update_from_flattened_dict(kw)
  return c


def _params(workdir, c):
  s = train.setup(c)
  state = train.restore_or_init(s, train.checkpoint_manager(str(workdir), c))
  return pretrained.flatten(nnx.to_pure_dict(jax.device_get(state["params"])))


def test_mask_tokens_follows_bert():
  c = mlm.MaskingConfig(mask_id=4, special_ids=(2, 3, 0), vocab_size=50)
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, 50, size=(64, 40)).astype(np.int32)
  tokens[:, 0], tokens[:, 30] = 2, 3
  tokens[:, 31:] = 0
  valid = np.arange(40)[None] < 31
  inputs, selected = (np.asarray(x) for x in mlm.mask_tokens(
      jnp.asarray(tokens), jnp.asarray(valid), jax.random.key(1), c))
  assert not selected[:, [0, 30]].any() and not selected[:, 31:].any()
  assert (inputs[~selected] == tokens[~selected]).all()
  rate = selected[:, 1:30].mean()
  assert 0.12 < rate < 0.18
  masked = (inputs[selected] == 4).mean()
  kept = (inputs[selected] == tokens[selected]).mean()
  assert 0.75 < masked < 0.85 and 0.05 < kept < 0.16
  inputs, selected = mlm.mask_tokens(jnp.asarray(tokens), jnp.asarray(valid),
                                     jax.random.key(1), mlm.MaskingConfig(
                                         4, (2, 3, 0), 50, scheme="mask_all"))
  assert (np.asarray(inputs)[np.asarray(selected)] == 4).all()
  with pytest.raises(ValueError, match="mask_scheme"):
    mlm.MaskingConfig(4, (2, 3, 0), 50, scheme="spans")


def test_every_example_starts_with_cls_and_ends_with_sep(data_dir):
  c = _config(data_dir)
  c.input.max_words = 5                       # shorter than most sentences: truncation
  ds, _, total = pipeline.eval_dataset(c, "val")
  rows = 0
  for b in ds.as_numpy_iterator():
    for t, m, real in zip(b["tokens"], b["token_mask"], b["example_mask"]):
      if real:
        n = int(m.sum())
        assert t[0] == 2 and t[n - 1] == 3 and (t[n:] == 0).all()
        rows += 1
  assert rows == total


def test_trains_and_resumes_bit_identically(data_dir, tmp_path):
  """Dropout and masks are drawn from (seed, step): 2 + 2 steps == 4 steps, bit for bit."""
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train.train_and_evaluate(_config(data_dir, num_train_steps=4), str(straight))
  train.train_and_evaluate(_config(data_dir, num_train_steps=2), str(resumed))
  train.train_and_evaluate(_config(data_dir, num_train_steps=4), str(resumed))
  c = _config(data_dir)
  a, b = _params(straight, c), _params(resumed, c)
  init = pretrained.flatten(nnx.to_pure_dict(jax.device_get(
      train.init_state(train.setup(c))["params"])))
  assert any(not np.array_equal(a[k], init[k]) for k in a)        # it trained
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # Another seed draws other dropout and masks: the same 4 steps give other weights.
  other = tmp_path / "other"
  train.train_and_evaluate(_config(data_dir, num_train_steps=4, seed=1), str(other))
  o = _params(other, _config(data_dir, seed=1))
  assert any(not np.array_equal(a[k], o[k]) for k in a if "encoder" in k)


def _one_step(c):
  s = train.setup(c)
  state = train.init_state(s)
  batch, _ = next(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh,
                                   pipeline.get_view(c.model.name)))
  with jax.set_mesh(s.mesh):
    state, metrics = train.make_train_step(s)(state, batch)
  return jax.device_get(state["params"]), jax.device_get(metrics)


def test_same_step_on_1_and_8_devices_with_dropout(data_dir):
  p1, m1 = _one_step(_config(data_dir, mesh_devices=1))
  p8, m8 = _one_step(_config(data_dir))
  p_fsdp, m_fsdp = _one_step(_config(data_dir, sharding_rules=common.FSDP_RULES))
  assert m1["loss"] > 0 and np.isfinite(m1["loss"])
  for m in (m8, m_fsdp):
    np.testing.assert_allclose(m["loss"], m1["loss"], rtol=2e-5)
    np.testing.assert_allclose(m["norm/grad"], m1["norm/grad"], rtol=2e-4)
  for p in (p8, p_fsdp):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), p1, p)


def test_init_from_the_minilm_checkpoint_through_the_trainer(tmp_path):
  """The configured Hugging Face checkpoint (first 2 of its 6 layers) arrives in ``text``
  after init, placed with the parameters' shardings; the absent MLM head stays initialised."""
  from data_prep import builder  # pylint: disable=g-import-not-at-top
  from hvt_jax.models import text  # pylint: disable=g-import-not-at-top
  bert_vocab = open(f"{text.resolve_checkpoint(text.OFFLINE_CHECKPOINT)}/vocab.txt",
                    encoding="utf-8").read().split("\n")[:30522]
  rng = np.random.default_rng(0)
  spec = builder.DatasetSpec(name="demo", modalities={"frames": 4}, tokenizer="wordpiece",
                            vocab=bert_vocab)
  rec = lambda i, split: dict(
      video_id=f"{split}{i}", duration=2.0, split=split, label="",
      features={"frames": np.ones((2, 4), np.float32)},
      timestamps={"frames": np.array([[0, 1], [1, 2]], np.float32)}, segments=[[0.0, 1.0]],
      sentences=["x"], tokens=[rng.integers(1000, 2000, size=5).tolist()])
  data = builder.write_dataset(spec, {"train": [rec(i, "train") for i in range(8)]},
                              str(tmp_path), counter=builder.SkipCounter())
  c = activitynet.get_config()
  c.input.data_dir = data
  c.model.text.checkpoint = text.OFFLINE_CHECKPOINT   # the default, bert-base-uncased, is 768 wide
  c.model.text.num_layers = 2
  c.batch_size = c.eval_batch_size = 8
  s = train.setup(c)
  got = pretrained.flatten(nnx.to_pure_dict(jax.device_get(train.init_state(s)["params"])))
  want = pretrained.flatten(text.load_hf_bert(text.OFFLINE_CHECKPOINT, num_layers=2))
  assert len(want) > 30 and not any(k.startswith("mlm") for k in want)
  for k, v in want.items():
    np.testing.assert_array_equal(got[f"text/{k}"], v, err_msg=k)
  assert "text/mlm/bias" in got and "text/encoder/layers/2/mlp/fc_in/bias" not in got
