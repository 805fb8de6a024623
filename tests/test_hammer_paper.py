"""HAMMER's paper defaults (issue 20), each against today's option: one query stack per
encoder (supp. 6.1.3, Table 8) loaded from the checkpoint into both, frames without
subtitles as zero vectors (supp. 6.1.2), and Table 6's ablation without the cross-modal
layer (our reading: model.py's docstring)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from safetensors import numpy as safetensors_np

from configs.hammer import activitynet, tvr
from hvt_jax import pretrained, train
from hvt_jax.families.hammer import model as hammer
from hvt_jax.input import pipeline
from hvt_jax.models import text
from tests import tiny_data

TOWER = text.TextConfig(vocab_size=40, hidden=16, num_layers=2, num_heads=2, mlp_dim=32,
                        max_positions=16)
B, F, L, DV, DS = 4, 8, 6, 5, 3


def _model(tower=TOWER, hierarchical=True, subtitle_dim=DS, **kw):
  c = hammer.HammerConfig(tower=tower, video_dim=DV, subtitle_dim=subtitle_dim, max_frames=F,
                          clip_length=4, hierarchical=hierarchical, **kw)
  return (hammer.HAMMER if hierarchical else hammer.FLAT)(c, rngs=nnx.Rngs(0))


def _batch(seed=0):
  """Frames of 8, 6, 5 and 3 valid frames; subtitles on some valid frames (zero rows and
  subtitle_mask False elsewhere, as hammer_view puts them)."""
  rng = np.random.default_rng(seed)
  frame_mask = np.arange(F)[None] < np.array([8, 6, 5, 3])[:, None]
  sub_mask = frame_mask & (rng.random((B, F)) < 0.5)
  sub_mask[:, 0] = True
  token_mask = np.arange(L)[None] < np.array([6, 4, 5, 3])[:, None]
  tokens = np.where(token_mask, rng.integers(5, 40, (B, L)), 0)
  return {"tokens": jnp.asarray(tokens, jnp.int32), "token_mask": jnp.asarray(token_mask),
          "frames": jnp.asarray(rng.normal(size=(B, F, DV)) * frame_mask[..., None],
                                jnp.float32),
          "frame_mask": jnp.asarray(frame_mask),
          "subtitle": jnp.asarray(rng.normal(size=(B, F, DS)) * sub_mask[..., None],
                                  jnp.float32),
          "subtitle_mask": jnp.asarray(sub_mask),
          "frame_seconds": jnp.ones((B,)), "duration": jnp.full((B,), 8.0)}


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, batch, query):
  """The pair outputs and the score matrix (one compile per model graph and shapes)."""
  m = nnx.merge(graphdef, state)
  q = m.encode_query(batch) if query is None else query
  v = m.encode_candidate(batch)
  out = m.pair(q, v)
  return dict(q=q, scores=m.score(q, v), **{k: out[k] for k in (
      "vr", "start", "end", "frame_logits", "clip_logits")})


def _outputs(model, batch, query=None):
  """The pair outputs of aligned (query, video) rows, and every query against every video."""
  graphdef, state = nnx.split(model)
  return jax.tree.map(np.asarray, _forward(graphdef, state, batch, query))


def _close(a, b):
  """The same outputs (frame logits at the valid frames: padding rows are computed too)."""
  valid = np.isfinite(a["start"])
  return (np.allclose(a["frame_logits"][valid], b["frame_logits"][valid], rtol=1e-5,
                      atol=1e-5)
          and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-5)
                  for k in ("vr", "start", "end", "clip_logits")))


def _params(model):
  return pretrained.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _set_params(model, flat):
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, pretrained.unflatten(flat))
  nnx.update(model, state)


def test_each_encoder_has_its_own_query_stack_by_default():
  """Φ reads the tower's stack, Ψ its own (``clip_text``), both on one embedding pass;
  with Ψ's stack a copy of Φ's the model is exactly ``query_stacks="shared"``."""
  per, batch = _model(), _batch()
  p_per = _params(per)
  stack = {k: v for k, v in p_per.items() if k.startswith("clip_text/")}
  assert len(stack) == sum(k.startswith("text/encoder/") for k in p_per) > 0
  out = _outputs(per, batch)
  assert set(out["q"]) == {"text", "clip_text", "text_mask"}
  assert not np.allclose(out["q"]["text"], out["q"]["clip_text"])     # untied
  # Ψ reads "clip_text": replacing it moves Ψ's outputs (VR, clip logits), not Φ's.
  other = dict(out["q"], clip_text=out["q"]["clip_text"][::-1].copy())
  moved = _outputs(per, batch, jax.tree.map(jnp.asarray, other))
  np.testing.assert_allclose(moved["frame_logits"], out["frame_logits"], rtol=1e-6)
  assert not np.allclose(moved["vr"], out["vr"], atol=1e-4)
  assert not np.allclose(moved["clip_logits"], out["clip_logits"], atol=1e-4)
  # Tied copies: the shared model's parameters with Φ's stack copied into Ψ's.
  shared = _model(query_stacks="shared")
  p_shared = _params(shared)
  assert set(p_per) - set(stack) == set(p_shared)                    # the option's cost
  tied = {k: p_shared.get(k, p_shared.get(k.replace("clip_text/", "text/"))) for k in p_per}
  _set_params(per, tied)
  out_s = _outputs(shared, batch)
  assert _close(_outputs(per, batch), out_s)
  assert set(out_s["q"]) == {"text", "text_mask"}
  # FLAT has one encoder: one stack whatever the option; "frame" needs the shared stack.
  assert not any(k.startswith("clip_text/") for k in _params(_model(hierarchical=False)))
  with pytest.raises(ValueError, match="query_stacks='shared'"):
    _model(clip_query="frame")


def _write_checkpoint(directory, c: text.TextConfig) -> str:
  """A random Hugging Face BERT checkpoint of ``c`` (config.json + model.safetensors)."""
  rng = np.random.default_rng(1)
  weights = {key: rng.normal(size=shape).astype(np.float32)
             for key, shape, _ in text.hf_layout(c).values()}
  directory.mkdir()
  (directory / "config.json").write_text(
      '{"model_type": "bert", "vocab_size": %d, "hidden_size": %d, "num_hidden_layers": %d,'
      ' "num_attention_heads": %d, "intermediate_size": %d, "max_position_embeddings": %d,'
      ' "type_vocab_size": 2, "hidden_act": "gelu"}'
      % (c.vocab_size, c.hidden, c.num_layers, c.num_heads, c.mlp_dim, c.max_positions))
  safetensors_np.save_file(weights, str(directory / "model.safetensors"))
  return str(directory)


def test_the_checkpoint_layers_load_into_both_query_stacks(tmp_path):
  """supp. 6.1.3/6.1.5: each encoder's query stack starts from the checkpoint's first
  layers (here 2 of 3); the embeddings load once, into the tower."""
  ckpt = _write_checkpoint(tmp_path / "bert", dataclasses.replace(TOWER, num_layers=3))
  tower = text.TextConfig.from_hf(ckpt, 2)
  model = _model(tower)
  config = ml_collections.ConfigDict({"model": {"text": {"checkpoint": ckpt, "num_layers": 2},
                                                "query_stacks": "per_encoder"}})
  entries = hammer.HAMMER.pretrained_entries(config, None)
  before = _params(model)
  state = pretrained.load_into(nnx.state(model, nnx.Param), entries)
  after = pretrained.flatten(nnx.to_pure_dict(state))
  want = pretrained.flatten(text.load_hf_bert(ckpt, 2))
  phi = {k[len("text/"):]: v for k, v in after.items() if k.startswith("text/encoder/")}
  psi = {k[len("clip_text/"):]: v for k, v in after.items() if k.startswith("clip_text/")}
  assert set(phi) == set(psi) == {k for k in want if k.startswith("encoder/")}
  for k in phi:
    np.testing.assert_array_equal(phi[k], want[k])
    np.testing.assert_array_equal(psi[k], want[k])
    assert not np.array_equal(before["clip_text/" + k], want[k])
  np.testing.assert_array_equal(after["text/embeddings/word"], want["embeddings/word"])
  # One stack, one entry: FLAT, and HAMMER with the shared stack.
  assert [e["into"] for e in entries] == ["text", "clip_text"]
  assert len(hammer.FLAT.pretrained_entries(config, None)) == 1
  config.model.query_stacks = "shared"
  assert len(hammer.HAMMER.pretrained_entries(config, None)) == 1


def test_frames_without_subtitles_attend_as_zero_vectors():
  """supp. 6.1.2: a valid frame without subtitles is a zero vector of the ASR stream, so the
  model is the same whether its subtitle_mask says "no subtitle" or "a zero subtitle";
  frames past the video's end stay masked. ``asr_missing="mask"`` (the option) masks them."""
  batch = _batch()
  valid, sub_mask = np.asarray(batch["frame_mask"]), np.asarray(batch["subtitle_mask"])
  assert (valid & ~sub_mask).any()                       # frames without subtitles
  as_zero_rows = dict(batch, subtitle_mask=batch["frame_mask"])
  padding = dict(batch, subtitle=jnp.where(valid[..., None], batch["subtitle"], 7.0),
                 subtitle_mask=jnp.ones((B, F), bool))
  no_sub = valid & ~sub_mask
  other_values = dict(batch, subtitle=jnp.where(no_sub[..., None], 3.0, batch["subtitle"]))
  model = _model()
  out = _outputs(model, batch)
  assert _close(out, _outputs(model, as_zero_rows))
  assert _close(out, _outputs(model, padding))
  assert not _close(out, _outputs(model, other_values))   # those frames are attended
  masked = _model(asr_missing="mask")
  out_m = _outputs(masked, batch)
  assert not _close(out, out_m)
  # Masked: no other token attends to them (their own rows are still computed).
  moved = _outputs(masked, other_values)
  for k in ("vr", "clip_logits"):
    np.testing.assert_allclose(moved[k], out_m[k], rtol=1e-5, atol=1e-6)
  keep = sub_mask | ~valid
  np.testing.assert_allclose(moved["frame_logits"][keep], out_m["frame_logits"][keep],
                             rtol=1e-5, atol=1e-6)
  assert not _close(out_m, _outputs(masked, as_zero_rows))


def test_without_the_cross_modal_layer():
  """Table 6's ✗ (our reading): no CoAttention parameters; the query still moves VR and TL
  (through the TCLS product); the computation differs from the default's."""
  batch = _batch()
  full, ablated = _model(), _model(cross_modal=False)
  p_full, p_abl = _params(full), _params(ablated)
  assert not any("/cross/" in k or "/fuse/" in k for k in p_abl)
  assert set(p_abl) < set(p_full)
  _set_params(ablated, {k: p_full[k] for k in p_abl})
  out, out_full = _outputs(ablated, batch), _outputs(full, batch)
  assert not _close(out, out_full)
  # Another query for the same videos: other VR scores and frame logits.
  scores = out["scores"]                                 # [query, video]
  assert np.ptp(scores, axis=0).min() > 1e-4
  swapped = dict(batch, tokens=batch["tokens"][::-1], token_mask=batch["token_mask"][::-1])
  assert not np.allclose(_outputs(ablated, swapped)["frame_logits"], out["frame_logits"],
                         atol=1e-4)
  with pytest.raises(ValueError, match="visual_width"):
    _model(cross_modal=False, visual_width=8)


def test_cross_modal_false_config_trains_a_step(tmp_path):
  """``:cross_modal=false`` (both paper configs) through the trainer's step."""
  for module in (activitynet, tvr):
    assert module.get_config().model.cross_modal is True
    assert module.get_config("cross_modal=false").model.cross_modal is False
  data_dir = tiny_data.write(str(tmp_path), num_train=8, num_val=2, modality="i3d",
                             val_split="val_1", tokenizer="wordpiece")
  c = activitynet.get_config("runlocal,cross_modal=false")
  c.input.data_dir, c.evals, c.mesh_devices = data_dir, {}, 1
  s = train.setup(c)
  state = train.init_state(s)
  batch, _ = next(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh,
                                   pipeline.get_view("hammer")))
  with jax.set_mesh(s.mesh):
    _, metrics = train.make_train_step(s)(state, batch)
  metrics = jax.device_get(metrics)
  assert np.isfinite(metrics["loss"]) and {"loss/vr", "loss/tl", "loss/mlm_frame"} <= set(
      metrics)
