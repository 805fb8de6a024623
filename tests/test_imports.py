"""Every module imports (catches stale imports in code no other test reaches)."""

import importlib
import pathlib
import pkgutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("hvt_jax", "data_prep", "configs")


def _modules():
  for pkg in PACKAGES:
    yield pkg
    for info in pkgutil.walk_packages([str(REPO / pkg)], prefix=f"{pkg}."):
      yield info.name


@pytest.mark.parametrize("name", sorted(set(_modules())))
def test_module_imports(name):
  module = importlib.import_module(name)
  assert module.__doc__, f"{name} has no module docstring"
