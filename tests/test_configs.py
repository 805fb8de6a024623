"""Every config file: every leaf can be overridden from the command line."""

from __future__ import annotations

import pathlib
import sys

import pytest
from absl import flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (REPO / "configs").glob("*/*.py") if p.name != "__init__.py")


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


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_leaf_can_be_overridden(path):
  """One parse overriding every leaf once (e.g. checkpoint.asynchronous, not a keyword)."""
  base = _parse(f"{path}:runlocal", []).to_dict()
  leaves = dict(_leaves(base))
  assert "checkpoint.asynchronous" in leaves
  overrides, want = [], {}
  for key, value in leaves.items():
    text, parsed = _other(value)
    overrides.append(f"--config.{key}={text}")
    want[key] = parsed
  got = dict(_leaves(_parse(f"{path}:runlocal", overrides).to_dict()))
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
  q = next(k for k in dp if k.endswith("query_kernel"))
  assert tuple(dp[q]) == (None, "model", None)            # heads over "model"
  assert tuple(fsdp[q]) == ("data", "model", None)        # + embed over "data"
  mlp = next(k for k in fsdp if k.endswith("in_kernel"))
  assert tuple(fsdp[mlp]) == ("data", "model")
  with pytest.raises(ValueError, match="logical axis 'experts' has no entry"):
    sharding.logical_to_mesh(("experts", "embed"), (4, 8), mesh, common.DATA_PARALLEL_RULES)
