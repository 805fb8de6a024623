"""The init chain: config.init_from entries loaded after init, config.trainable freezing."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs.hse import demo as hse_demo
from hvt_jax import pretrained, train
from hvt_jax.models import layers, text
from tests import tiny_data


def _config(data_dir, **kw):
  c = hse_demo.get_config("runlocal")
  c.input.data_dir = data_dir
  c.update_from_flattened_dict(kw)
  return c


def _params(state):
  return pretrained.flatten(nnx.to_pure_dict(jax.device_get(state["params"])))


def test_word_vectors_entry_is_loaded_after_init_not_traced(data_dir, tmp_path):
  vocab = len(tiny_data.VOCAB)
  vectors = np.random.default_rng(0).normal(size=(vocab, 7)).astype(np.float32)
  np.save(tmp_path / "vectors.npy", vectors)
  c = _config(data_dir)
  c.model.word_vectors = str(tmp_path / "vectors.npy")   # word_dim follows the file: 7
  s = train.setup(c)
  # The jitted init holds no copy of the vectors: its program is the same size as without.
  init_text = jax.jit(train._init_fn(s)).lower().as_text()
  assert f"{vectors[3, 2]:.6e}"[:8] not in init_text
  state = train.init_state(s)
  np.testing.assert_array_equal(_params(state)["words/table"], vectors)
  sh = state["params"]["words"]["table"][...].sharding
  assert sh == s.state_shardings["params"]["words"]["table"].value


def test_checkpoint_entry_into_a_model_and_strictness(data_dir, tmp_path):
  source = tmp_path / "source"
  train.train_and_evaluate(_config(data_dir, num_train_steps=2), str(source))
  src = _params(train.restore_or_init(train.setup(_config(data_dir)),
                                      train.checkpoint_manager(str(source), _config(data_dir))))
  # FSE shares HSE's word embedding and low-level encoder shapes: load those, skip the rest.
  c = _config(data_dir, seed=7)
  c.init_from = (dict(source=str(source), format="checkpoint", into="", strict=False),)
  state = train.init_state(train.setup(c))
  got = _params(state)
  for k in src:
    np.testing.assert_array_equal(got[k], src[k], err_msg=k)
  # strict: a source array the model does not have is an error naming it.
  fse = hse_demo.get_config("runlocal,model=fse")
  fse.input.data_dir = data_dir
  fse.init_from = (dict(source=str(source), format="checkpoint"),)
  with pytest.raises(ValueError, match=r"init_from\[0\].*'clip_decoder/b_h' has no parameter"):
    train.init_state(train.setup(fse))
  fse.init_from = (dict(source=str(source), format="checkpoint", strict=False),)
  fse_state = _params(train.init_state(train.setup(fse)))
  np.testing.assert_array_equal(fse_state["words/table"], src["words/table"])
  # A shape mismatch is always an error with both shapes.
  wide = _config(data_dir)
  wide.model.hidden = 48
  wide.init_from = (dict(source=str(source), format="checkpoint", strict=False),)
  with pytest.raises(ValueError, match=r"has shape \[.*32.*\] in the source but \[.*48.*\]"):
    train.init_state(train.setup(wide))


def test_init_from_entry_errors(data_dir, tmp_path):
  c = _config(data_dir)
  c.init_from = (dict(source=str(tmp_path / "nope.npy"), format="word_vectors",
                      into="words/table"),)
  with pytest.raises(FileNotFoundError, match=r"config.init_from\[0\].source"):
    train.init_state(train.setup(c))
  c.init_from = (dict(source=data_dir, format="glove"),)
  with pytest.raises(ValueError, match=r"config.init_from\[0\].format='glove'"):
    train.init_state(train.setup(c))
  np.save(tmp_path / "v.npy", np.zeros((len(tiny_data.VOCAB), 16), np.float32))
  c.init_from = (dict(source=str(tmp_path / "v.npy"), format="word_vectors",
                      into="word/table"),)
  with pytest.raises(ValueError, match=r"into='word/table' matches no parameter .*'words'"):
    train.init_state(train.setup(c))
  c.init_from = (dict(source=str(tmp_path / "v.npy"), format="word_vectors",
                      into="text_low", strict=False),)
  with pytest.raises(ValueError, match=r"no source array matches a parameter under "
                     r"'text_low'"):
    train.init_state(train.setup(c))


def test_trainable_regex_freezes_the_rest_bit_identically(data_dir, tmp_path):
  c = _config(data_dir, num_train_steps=3, trainable="text_.*")
  s = train.setup(c)
  before = _params(train.init_state(s))
  train.train_and_evaluate(c, str(tmp_path))
  after = _params(train.restore_or_init(s, train.checkpoint_manager(str(tmp_path), c)))
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert changed and all(k.startswith("text_") for k in changed), changed
  assert "video_low/gru/w_i" not in changed and "words/table" not in changed
  with pytest.raises(ValueError, match="matches no parameter"):
    train.setup(_config(data_dir, trainable="nothing_.*"))


# Parameters as hvt_jax saved them before its transformer layers, MLM transform and LSTM
# became flax.nnx library layers (recorded from that code): a 1-layer text tower with an MLM
# head (E 8, 2 heads, M 16, V 11, P 6) and the caption decoder's 2-layer LSTM (in 3, H 4,
# gates i, f, g, o on the middle axis).
OLD_LAYOUT = {
    "decoder/lstm/b/0": (4, 4), "decoder/lstm/b/1": (4, 4),
    "decoder/lstm/w_h/0": (4, 4, 4), "decoder/lstm/w_h/1": (4, 4, 4),
    "decoder/lstm/w_i/0": (3, 4, 4), "decoder/lstm/w_i/1": (4, 4, 4),
    "text/embeddings/norm/bias": (8,), "text/embeddings/norm/scale": (8,),
    "text/embeddings/position": (6, 8), "text/embeddings/token_type": (2, 8),
    "text/embeddings/word": (11, 8),
    "text/encoder/layers/0/attention/key_bias": (2, 4),
    "text/encoder/layers/0/attention/key_kernel": (8, 2, 4),
    "text/encoder/layers/0/attention/out_bias": (8,),
    "text/encoder/layers/0/attention/out_kernel": (2, 4, 8),
    "text/encoder/layers/0/attention/query_bias": (2, 4),
    "text/encoder/layers/0/attention/query_kernel": (8, 2, 4),
    "text/encoder/layers/0/attention/value_bias": (2, 4),
    "text/encoder/layers/0/attention/value_kernel": (8, 2, 4),
    "text/encoder/layers/0/attention_norm/bias": (8,),
    "text/encoder/layers/0/attention_norm/scale": (8,),
    "text/encoder/layers/0/mlp/in_bias": (16,), "text/encoder/layers/0/mlp/in_kernel": (8, 16),
    "text/encoder/layers/0/mlp/out_bias": (8,), "text/encoder/layers/0/mlp/out_kernel": (16, 8),
    "text/encoder/layers/0/mlp_norm/bias": (8,), "text/encoder/layers/0/mlp_norm/scale": (8,),
    "text/mlm/bias": (11,), "text/mlm/norm/bias": (8,), "text/mlm/norm/scale": (8,),
    "text/mlm/transform_bias": (8,), "text/mlm/transform_kernel": (8, 8),
}


def _numpy_lstm(x, w_i, w_h, b):
  """PyTorch's stacked LSTM on [B, T, D] with per-layer [in, 4, H] / [H, 4, H] / [4, H]."""
  sig = lambda z: 1 / (1 + np.exp(-z))
  for wi, wh, bb in zip(w_i, w_h, b):
    h = c = np.zeros((x.shape[0], wh.shape[0]))
    outs = []
    for t in range(x.shape[1]):
      z = np.einsum("bd,dgk->bgk", x[:, t], wi) + np.einsum("bh,hgk->bgk", h, wh) + bb
      c = sig(z[:, 1]) * c + sig(z[:, 0]) * np.tanh(z[:, 2])
      h = sig(z[:, 3]) * np.tanh(c)
      outs.append(h)
    x = np.stack(outs, 1)
  return x


def test_checkpoints_from_before_the_nnx_layers_init_from_converted_not_resumed(tmp_path,
                                                                                caplog):
  rng = np.random.default_rng(0)
  old = {k: rng.normal(size=shape).astype(np.float32) for k, shape in OLD_LAYOUT.items()}
  config = ml_collections.ConfigDict(
      {"checkpoint": dict(max_to_keep=1, every_steps=1, asynchronous=False)})
  with train.checkpoint_manager(str(tmp_path), config) as mngr:
    mngr.save(3, args=ocp.args.StandardSave({"params": pretrained.unflatten(old),
                                             "step": np.int32(3)}))
  tower = text.TextConfig(vocab_size=11, hidden=8, num_layers=1, num_heads=2, mlp_dim=16,
                          max_positions=6, mlm_head=True)
  model = nnx.Dict(text=text.TextEncoder(tower, rngs=nnx.Rngs(0)),
                   decoder=nnx.Dict(lstm=layers.LSTM(3, 4, 2, rngs=nnx.Rngs(1))))
  # init_from (strict: every parameter provided, every saved array used) converts them.
  with caplog.at_level("WARNING"):
    params = pretrained.load_into(nnx.state(model, nnx.Param),
                                  [dict(source=str(tmp_path), format="checkpoint")])
  assert "saved under their paths from before the flax.nnx layers" in caplog.text
  got = pretrained.flatten(nnx.to_pure_dict(params))
  for path, value in old.items():
    if "/lstm/" in path:
      continue
    new = (path.replace("_kernel", "/kernel").replace("_bias", "/bias")
           .replace("mlp/in/", "mlp/fc_in/").replace("mlp/out/", "mlp/fc_out/"))
    np.testing.assert_array_equal(got[new], value, err_msg=path)
  nnx.update(model, params)
  x = rng.normal(size=(2, 5, 3)).astype(np.float32)
  lstm = [[old[f"decoder/lstm/{name}/{l}"] for l in range(2)] for name in ("w_i", "w_h", "b")]
  np.testing.assert_allclose(model["decoder"]["lstm"](x)[0], _numpy_lstm(x, *lstm), atol=1e-5)
  # Resuming or evaluating it: one error naming the old path and the way on.
  with pytest.raises(ValueError, match=r"cannot restore step 3 .*written before the "
                     r"transformer and LSTM layers became flax.nnx layers \('params/decoder/"
                     r"lstm/b/0' is now 'params/decoder/lstm/layers/0/cell/dense_h/bias'\).*"
                     r"init_from="):
    step_dir = str(tmp_path / "checkpoints" / "3")
    train._check_restorable(step_dir, {}, {})  # pylint: disable=protected-access
