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

# The real annotation files, as <dataset>/<file> under a root: the committed excerpts
# (tests/testdata, README there) and the full files (HVT_SHARED_DATA, or ../shared/data beside
# the checkout).
ANNOTATION_FILES = (
    "activitynet_captions/train.json", "activitynet_captions/val_1.json",
    "didemo/train_data_bwzhang.json", "didemo/val_data_bwzhang.json",
    "didemo/test_data_bwzhang.json", "msrvtt/train_list_jsfusion.txt",
    "msrvtt/val_list_jsfusion.txt", "tvr/tvr_val_release.jsonl", "tvr/tvr_video2dur_idx.json")
TESTDATA = pathlib.Path(__file__).resolve().parent / "testdata"
FULL_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _checked(root: pathlib.Path, what: str) -> pathlib.Path:
  if missing := [f for f in ANNOTATION_FILES if not (root / f).is_file()]:
    pytest.fail(f"{what} at {root} lack {missing}")
  return root


@pytest.fixture(scope="session")
def annotations() -> pathlib.Path:
  """The committed excerpts of the real annotation files (always there: missing ones fail)."""
  return _checked(TESTDATA, "the committed annotation excerpts")


@pytest.fixture(scope="session")
def full_annotations() -> pathlib.Path:
  """The full annotation files; the one skip of the suite when they are absent."""
  path = pathlib.Path(os.environ.get("HVT_SHARED_DATA") or FULL_DATA)
  if not path.exists():
    pytest.skip(f"full annotation files not present at {path}: set HVT_SHARED_DATA")
  return _checked(path, "the full annotation files")


@pytest.fixture(params=["excerpt", "full"])
def each_annotations(request) -> tuple[str, pathlib.Path]:
  """("excerpt" | "full", root): the test runs on the excerpts and on the full files."""
  fixture = "annotations" if request.param == "excerpt" else "full_annotations"
  return request.param, request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """The default tiny dataset (``tests/tiny_data.write``: HSE's word vocabulary, splits
  "train" and "val"), written once per session (read-only). A module that needs another
  dataset defines its own ``data_dir``."""
  from tests import tiny_data  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("tiny")
  tiny_data.write(str(out))
  return str(out)
