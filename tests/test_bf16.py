"""bf16 compute (``config.model.dtype="bfloat16"``) where a family was missing it: the text
tower of ``text_mlm`` and HSE's classifier and captioner heads (HSE's backbone had it).

Parameters and Adam's state stay float32; on a fixed batch and the same float32 weights the
loss is within LOSS_RTOL of float32's (docs/benchmarks.md, "bf16"), and differs from it (the
matmuls do run in bf16).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hvt_jax import train
from hvt_jax.input import pipeline
from tests import tiny_data

# bf16 matmul inputs (8-bit mantissa: 2^-9 ≈ 2e-3 relative rounding per input), float32
# accumulation; measured here 2e-5 (text_mlm), 2e-4 (classifier), 4e-6 (captioner).
LOSS_RTOL = 2e-3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  word = tmp_path_factory.mktemp("word")
  wordpiece = tmp_path_factory.mktemp("wordpiece")
  tiny_data.write(str(word), num_train=16, num_val=8)
  tiny_data.write(str(wordpiece), num_train=16, num_val=8, tokenizer="wordpiece")
  return {"word": str(word), "wordpiece": str(wordpiece)}


def _config(name, data):
  import importlib  # pylint: disable=g-import-not-at-top
  module, tokenizer = {"text_mlm": ("configs.text_mlm.activitynet", "wordpiece"),
                       "hse_classifier": ("configs.hse.demo_classifier", "word"),
                       "hse_captioner": ("configs.hse.demo_captioner", "word")}[name]
  c = importlib.import_module(module).get_config("runlocal")
  c.input.data_dir = data[tokenizer]
  return c


def _loss(c, params, batch):
  s = train.setup(c)
  _, _, other = nnx.split(nnx.eval_shape(lambda: train.families.create_model(
      c, s.meta, rngs=nnx.Rngs(0))), nnx.Param, ...)

  def loss(p, b):
    model = nnx.merge(s.graphdef, p, jax.tree.map(jnp.zeros_like, other))
    return model.loss(model(b, train=False), b, c.loss)[0]

  with jax.set_mesh(s.mesh):
    return float(jax.jit(loss)(params, batch)), s


@pytest.mark.parametrize("name", ["text_mlm", "hse_classifier", "hse_captioner"])
def test_bf16_loss_parity_and_float32_state(name, data):
  c32 = _config(name, data)
  c16 = _config(name, data)
  c16.model.dtype = "bfloat16"
  s32 = train.setup(c32)
  state = train.init_state(s32)
  batch, _ = next(pipeline.iterate(pipeline.train_dataset(c32, 0), s32.mesh,
                                   pipeline.get_view(c32.model.name)))
  f32, _ = _loss(c32, state["params"], batch)
  bf16, s16 = _loss(c16, state["params"], batch)
  assert np.isfinite(f32) and abs(bf16 - f32) <= LOSS_RTOL * abs(f32), (f32, bf16)
  assert bf16 != f32, "the bf16 config computed exactly the float32 loss"
  # The heads' own matmuls (not only the backbone's) take bf16 inputs.
  model = nnx.eval_shape(lambda: train.families.create_model(c16, s16.meta,
                                                             rngs=nnx.Rngs(0)))
  heads = [m for path, m in nnx.iter_graph(model) if isinstance(m, nnx.Linear) and path
           and (path[0] == "text" or (path[0] in ("head", "decoder") and len(path) == 2))]
  assert heads and all(m.dtype == jnp.bfloat16 for m in heads), name
  # Parameters and optimizer state of the bf16 model: float32 throughout.
  dtypes = {x.dtype for x in jax.tree.leaves(train.abstract_state(s16))
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype(jnp.float32)}, dtypes


@pytest.mark.parametrize("family", ["hammer", "mcha"])
def test_the_text_tower_follows_the_models_dtype(family):
  # HAMMER's and MCHA's towers (embeddings, query stacks) compute in config.model.dtype too.
  import importlib  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(f"configs.{family}.demo").get_config("runlocal")
  c.model.dtype = "bfloat16"
  if family == "hammer":
    c.model.mlm_frame = c.model.mlm_clip = False
    meta = {"modalities": {"frames": 8}, "vocab_size": 64}
  else:
    meta = {"modalities": {e: 8 for e in c.input.experts}, "vocab_size": 64}
  model = nnx.eval_shape(lambda: train.families.create_model(c, meta, rngs=nnx.Rngs(0)))
  tower = [m for path, m in nnx.iter_graph(model)
           if isinstance(m, (nnx.Linear, nnx.LinearGeneral)) and path
           and path[0] in ("text", "clip_text")]
  assert tower and all(m.dtype == jnp.bfloat16 for m in tower), family
