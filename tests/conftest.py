"""Test setup: 8 simulated CPU devices before jax is imported anywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pathlib  # pylint: disable=g-import-not-at-top

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real annotation files (../shared/data beside the checkout)."""
  path = pathlib.Path(os.environ.get("HVT_SHARED_DATA", SHARED_DATA))
  if not path.exists():
    pytest.fail(f"real annotation files not found at {path}; set HVT_SHARED_DATA")
  return path
