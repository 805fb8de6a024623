"""Test setup: 8 simulated CPU devices before jax is imported anywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pathlib  # pylint: disable=g-import-not-at-top
import tempfile  # pylint: disable=g-import-not-at-top

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Tests compile many small, identical programs (one per trainer setup): a persistent cache
# shared by the whole session and XLA's cheaper optimisation level keep CI fast.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("HVT_TEST_JAX_CACHE",
                                 os.path.join(tempfile.gettempdir(), "hvt_jax_test_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_disable_most_optimizations", True)

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real annotation files (../shared/data beside the checkout)."""
  path = pathlib.Path(os.environ.get("HVT_SHARED_DATA", SHARED_DATA))
  if not path.exists():
    pytest.fail(f"real annotation files not found at {path}; set HVT_SHARED_DATA")
  return path
