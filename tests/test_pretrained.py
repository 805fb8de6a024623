"""The init chain: config.init_from entries loaded after init, config.trainable freezing."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from configs.hse import demo as hse_demo
from hvt_jax import pretrained, train
from tests import tiny_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("tiny")
  tiny_data.write(str(out))
  return str(out)


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
