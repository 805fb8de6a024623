"""A new family in this one file: a bag-of-features two-tower model.

The family (model, view, ``FAMILY``) is defined here; its config is written to ``tmp_path``;
it joins the families table at run time by one entry, exactly as a real family is added
(``hvt_jax.families.FAMILIES``); then ``hvt-train`` trains it, a second ``hvt-train``
resumes it and ``hvt-eval`` evaluates its checkpoint, through the console scripts' own
``main`` functions. Nothing outside this file knows the family.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from typing import Any

import jax
import jax.numpy as jnp
import tensorflow as tf
from flax import nnx

from hvt_jax import families, losses
from hvt_jax.input import ops, pipeline
from hvt_jax.models import base
from tests import data_fixtures, tiny_data


def toy_view(example: dict[str, Any], cfg: Any,
             seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """A record's feature rows and all its words (the paragraph), padded to fixed sizes."""
  del seed
  feats = tf.cast(example[f"features/{cfg.modality}"], tf.float32)
  rows = tf.shape(feats)[0]
  words = tf.cast(example["tokens"].flat_values, tf.int32)
  return {"frames": ops.pad_to(feats, [cfg.max_frames, None]),
          "frame_mask": ops.pad_to(tf.ones([rows], tf.bool), [cfg.max_frames], False),
          "words": ops.pad_to(words, [cfg.max_words]),
          "word_mask": ops.pad_to(tf.ones_like(words, tf.bool), [cfg.max_words], False),
          "example_mask": tf.constant(True), "empty_video": rows == 0}


def _mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  m = mask[..., None].astype(jnp.float32)
  return (x * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)


class BagOfFeatures(base.TwoTower, nnx.Module):
  """Mean frame feature and mean word embedding, each through a linear map, cosine score."""

  PREDICT_FNS = ("encode_query", "encode_candidate", "score")

  def __init__(self, video_dim: int, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab_size, dim, rngs=rngs)
    self.video = nnx.Linear(video_dim, dim, rngs=rngs)
    self.text = nnx.Linear(dim, dim, rngs=rngs)

  @classmethod
  def create(cls, config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs) -> "BagOfFeatures":
    return cls(int(meta["modalities"][config.input.modality]), int(meta["vocab_size"]),
               int(config.model.dim), rngs=rngs)

  @classmethod
  def pretrained_entries(cls, config: Any, data_dir: str) -> list[dict[str, Any]]:
    del config, data_dir
    return []

  def encode_candidate(self, batch: base.Batch) -> base.Encoding:
    return {"embedding": losses.unit(self.video(_mean(batch["frames"], batch["frame_mask"])))}

  def encode_query(self, batch: base.Batch) -> base.Encoding:
    words = _mean(self.embed(batch["words"]), batch["word_mask"])
    return {"embedding": losses.unit(self.text(words))}

  def __call__(self, batch: base.Batch, *, train: bool,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    del train, rngs
    return {"video": self.encode_candidate(batch)["embedding"],
            "text": self.encode_query(batch)["embedding"]}

  def loss(self, out: dict[str, jax.Array], batch: base.Batch,
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    match = losses.match_loss(out["video"], out["text"], batch["example_mask"],
                              margin=cfg.margin)
    return match, {"match": match}


FAMILY = families.Family(
    name="toy", models={"bag_of_features": BagOfFeatures},
    views={"bag_of_features": pipeline.View(toy_view)})

# The experiment, as a user writes it: a config file that imports nothing from hvt_jax.
CONFIG = '''
"""A bag-of-features two-tower model on a tiny dataset."""
import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = dict(name="bag_of_features", dim=16)
  c.input = dict(data_dir={data_dir!r}, dataset="", modality="frames", train_split="train",
                 max_frames=32, max_words=24, shuffle_buffer=64)
  c.loss = dict(margin=0.2)
  c.schedule = dict(name="constant", learning_rate=1e-2)
  c.optax = dict(b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0)
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_train_steps = 4
  c.mesh = (("data", -1), ("model", 1))
  c.mesh_devices = 0
  c.sharding_rules = ()
  c.init_from = ()
  c.trainable = ""
  c.checkpoint = dict(every_steps=2, max_to_keep=3, asynchronous=True)
  c.log_every_steps = 2
  c.max_steps_in_flight = 8
  c.progress_bar = False
  c.evals = dict(val=dict(type="retrieval", split="val", pred="score", prefix="t2v",
                          reverse_prefix="v2t", top_k=5, log_steps=0))
  return c
'''

# One process runs the console scripts' mains, as test_readme_commands does; the family
# joins the table there by its one entry.
_DRIVER = """
import json, sys
from absl import flags
from hvt_jax import families
from hvt_jax.cli import eval as hvt_eval, train
families.FAMILIES["toy"] = "tests.test_toy_family"
status = []
for argv in json.loads(sys.argv[1]):
  sys.argv = argv
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)
  try:
    {"hvt-train": train.main, "hvt-eval": hvt_eval.main}[argv[0]]()
  except SystemExit as e:
    status.append(e.code or 0)
  print(f"@@ exit {status[-1] if status else 0}", flush=True)
"""


def test_a_family_defined_in_one_file_trains_resumes_and_evaluates(tmp_path):
  data_dir = tiny_data.write(str(tmp_path / "data"), num_train=24, num_val=12)
  config = tmp_path / "toy_config.py"
  config.write_text(CONFIG.format(data_dir=data_dir), encoding="utf-8")
  workdir = str(tmp_path / "run")
  jobs = [["hvt-train", f"--config={config}", f"--workdir={workdir}"],
          ["hvt-train", f"--config={config}", f"--workdir={workdir}",
           "--config.num_train_steps=6"],
          ["hvt-eval", f"--config={config}", f"--workdir={workdir}"]]
  proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(jobs)], cwd=tmp_path,
                        env=data_fixtures.console_script_env(devices=2), capture_output=True,
                        text=True, timeout=600)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0 and out.count("@@ exit 0") == 3, out[-6000:]
  # The second run resumed from the first run's last checkpoint and went on to step 6.
  assert re.search(r"resuming \S+ at step 4 ", out), out[-6000:]
  assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                if p.name.isdigit())[-1] == 6
  # hvt-eval evaluated that checkpoint; its metrics are those the trainer wrote at step 6.
  assert f"{workdir}: checkpoint step 6" in out, out[-6000:]
  metrics = json.loads((tmp_path / "run" / "eval" / "val" / "metrics.json").read_text())
  assert metrics["step"] == 6.0 and metrics["num_examples"] == 12.0
  assert 0.0 <= metrics["t2v/R@1"] <= 100.0 and metrics["v2t/MdR"] >= 1.0
  # Nothing about the family leaked into the table of this process.
  assert "toy" not in families.FAMILIES


def test_the_table_fails_with_the_valid_names():
  import pytest  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"unknown family 'toy'; valid: \['hammer', 'hse'"):
    families.get("toy")
  with pytest.raises(ValueError, match=r"unknown model 'bag_of_features'; valid: \['flat'"):
    families.of_model("bag_of_features")


def test_a_config_without_the_trainer_fields_names_them(tmp_path, monkeypatch):
  """A family's first config that forgets trainer fields: one error naming each of them,
  before anything is built; an unknown model names ``config.model.name``."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  namespace = {}
  exec(CONFIG.format(data_dir=str(tmp_path)), namespace)  # pylint: disable=exec-used
  monkeypatch.setitem(families.FAMILIES, "toy", __name__)
  c = namespace["get_config"]()
  train.check_config(c)                                  # complete: no error
  for key in ("eval_batch_size", "optax"):
    del c[key]
  del c.input["train_split"]
  with pytest.raises(ValueError, match=r"lacks config.eval_batch_size, config.input.train_"
                                       r"split, config.optax.b1, config.optax.b2, "):
    train.check_config(c)
  c = ml_collections.ConfigDict(namespace["get_config"]().to_dict())
  c.model.name = "hsee"
  with pytest.raises(ValueError, match=r"config.model.name='hsee': unknown model 'hsee'"):
    train.check_config(c)


def test_a_view_without_example_mask_is_named(tmp_path, monkeypatch):
  """The view contract: a view that returns no ``example_mask`` is an error naming it."""
  import pytest  # pylint: disable=g-import-not-at-top

  def no_mask(example, cfg, seed=None):
    out = toy_view(example, cfg, seed)
    del out["example_mask"]
    return out

  data_dir = tiny_data.write(str(tmp_path / "data"), num_train=8, num_val=4)
  namespace = {}
  exec(CONFIG.format(data_dir=data_dir), namespace)  # pylint: disable=exec-used
  monkeypatch.setitem(families.FAMILIES, "toy", __name__)
  monkeypatch.setitem(FAMILY.views, "bag_of_features", pipeline.View(no_mask))
  with pytest.raises(ValueError, match=r"input view 'no_mask' returns no 'example_mask'"):
    next(iter(pipeline.train_dataset(namespace["get_config"](), 0)))
