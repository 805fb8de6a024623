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
