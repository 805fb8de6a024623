"""Readers for per-video feature files, in the layouts the datasets ship them.

`open_feature_source(path, key)` returns a `FeatureSource` whose `get(video_id)` gives a
float32 [T, D] array, or None when the video is not in the source (the converter counts a
skip). A file that exists but cannot be read (corrupt, truncated, wrong shape) raises
`FeatureFileError` naming the file and the key: that is a broken download, not a quirk of
one video, so the conversion stops.

Supported layouts:
- one HDF5 file keyed by video: `f[video_id]` is the [T, D] dataset itself, or a group
  holding it under `key` (ActivityNet C3D: `f["v_<id>"]["c3d_features"]`); a group with a
  single dataset needs no key. `key` may be a nested path ("a/b").
- a directory of per-video `.npy` / `.npz` files named `<video_id>.npy|.npz`; an `.npz` with
  one array needs no key, otherwise `key` names the array.

Sources are picklable and open their files lazily, so each worker process of a parallel
conversion opens its own handle (HDF5 handles must not cross a fork/spawn).
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Any

import numpy as np

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


class FeatureFileError(OSError):
  """A feature file exists but is unreadable or has the wrong layout."""


def _as_rows(array: Any, where: str) -> np.ndarray:
  arr = np.asarray(array)
  if arr.dtype.kind not in "fiu":
    raise FeatureFileError(f"{where}: expected a numeric [T, D] array, got dtype {arr.dtype}")
  if arr.ndim != 2:
    raise FeatureFileError(f"{where}: expected a [T, D] array, got shape {list(arr.shape)}")
  return arr.astype(np.float32, copy=False)


class FeatureSource:
  """Base class: features of many videos, looked up by video id."""

  path: str
  key: str | None

  def get(self, video_id: str) -> np.ndarray | None:
    """The video's float32 [T, D] features, or None if the source has no such video."""
    raise TypeError(f"{type(self).__name__} must implement get()")

  def video_ids(self) -> list[str]:
    """All video ids in the source (sorted)."""
    raise TypeError(f"{type(self).__name__} must implement video_ids()")

  def close(self) -> None:
    """Releases open file handles (the source reopens them on the next `get`)."""

  def __enter__(self) -> FeatureSource:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


class Hdf5FeatureSource(FeatureSource):
  """One HDF5 file keyed by video id (see module docstring)."""

  def __init__(self, path: str, key: str | None = None):
    self.path, self.key = os.fspath(path), key
    self._file = None
    self._open()  # Fail now, in the parent process, on a missing or corrupt file.

  def _open(self):
    if self._file is None:
      import h5py  # pylint: disable=g-import-not-at-top
      try:
        self._file = h5py.File(self.path, "r")
      except (OSError, ValueError) as e:
        raise FeatureFileError(f"cannot open HDF5 feature file {self.path}: {e}") from e
    return self._file

  def __getstate__(self) -> dict:
    return {"path": self.path, "key": self.key, "_file": None}

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def video_ids(self) -> list[str]:
    return sorted(self._open().keys())

  def get(self, video_id: str) -> np.ndarray | None:
    # Low-level h5py (object ids, not `Group`/`Dataset` objects): the high-level `in`, `[]`
    # and `[()]` cost more than reading a [T, 500] array.
    from h5py import h5d, h5g, h5o, h5s  # pylint: disable=g-import-not-at-top
    fid = self._open().id
    where = f"{self.path}[{video_id!r}]"
    try:
      name = video_id.encode("utf-8")
      if not h5g._path_valid(fid, name, None):  # pylint: disable=protected-access
        return None
      node = h5o.open(fid, name)
      if isinstance(node, h5g.GroupID):
        if self.key is not None:
          key = self.key.encode("utf-8")
          if not h5g._path_valid(node, key, None):  # pylint: disable=protected-access
            return None
          node, where = h5o.open(node, key), f"{self.path}[{video_id!r}][{self.key!r}]"
        else:
          names = [n.decode("utf-8") for n in node]
          if len(names) != 1:
            raise FeatureFileError(f"{where} is a group with entries {names[:10]}: pass the "
                                   "feature key (e.g. --feature-key c3d_features)")
          node = h5o.open(node, names[0].encode("utf-8"))
          where = f"{self.path}[{video_id!r}][{names[0]!r}]"
      if not isinstance(node, h5d.DatasetID):
        raise FeatureFileError(f"{where} is not an array dataset")
      if node.dtype.kind not in "fiu":
        raise FeatureFileError(f"{where}: expected a numeric [T, D] array, got dtype "
                               f"{node.dtype}")
      array = np.empty(node.shape, node.dtype)
      if array.size:
        node.read(h5s.ALL, h5s.ALL, array)
      return _as_rows(array, where)
    except FeatureFileError:
      raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
      # h5py reports truncated or corrupt chunks as OSError/KeyError while reading.
      raise FeatureFileError(f"cannot read {where} (key {self.key!r}): {e}") from e


class NpyDirFeatureSource(FeatureSource):
  """A directory of `<video_id>.npy` / `<video_id>.npz` files (see module docstring)."""

  def __init__(self, path: str, key: str | None = None):
    self.path, self.key = os.fspath(path), key
    self._index: dict[str, pathlib.Path] = {}
    for entry in os.scandir(self.path):
      stem, suffix = os.path.splitext(entry.name)
      if suffix not in (".npy", ".npz") or not entry.is_file():
        continue
      if stem in self._index:
        raise FeatureFileError(f"{self.path}: video {stem!r} has two feature files "
                               f"({self._index[stem].name}, {entry.name})")
      self._index[stem] = pathlib.Path(entry.path)

  def video_ids(self) -> list[str]:
    return sorted(self._index)

  def get(self, video_id: str) -> np.ndarray | None:
    path = self._index.get(video_id)
    if path is None:
      return None
    try:
      if path.suffix == ".npy":
        return _as_rows(np.load(path, allow_pickle=False), os.fspath(path))
      with np.load(path, allow_pickle=False) as npz:
        names = list(npz.keys())
        if self.key is None:
          if len(names) != 1:
            raise FeatureFileError(f"{path} holds arrays {names[:10]}: pass the feature key")
          name = names[0]
        elif self.key in names:
          name = self.key
        else:
          return None
        return _as_rows(npz[name], f"{path}[{name!r}]")
    except FeatureFileError:
      raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
      raise FeatureFileError(f"cannot read feature file {path} (key {self.key!r}): "
                             f"{e}") from e


def open_feature_source(path: str, key: str | None = None) -> FeatureSource:
  """Opens per-video features stored as one HDF5 file or a directory of .npy/.npz files.

  Args:
    path: an HDF5 file, or a directory of `<video_id>.npy|.npz` files.
    key: the dataset name inside each video's HDF5 group / the array name inside each .npz;
      None when each video holds a single array.

  Returns:
    A `FeatureSource`; `get(video_id)` returns float32 [T, D] or None for a missing video.

  Raises:
    FileNotFoundError: if `path` does not exist.
    FeatureFileError: if the file is not a readable HDF5 file (names the file).
  """
  p = pathlib.Path(path)
  if not p.exists():
    raise FileNotFoundError(f"feature path {path} does not exist")
  if p.is_dir():
    return NpyDirFeatureSource(os.fspath(p), key)
  if p.suffix.lower() in _HDF5_SUFFIXES or _looks_like_hdf5(p):
    return Hdf5FeatureSource(os.fspath(p), key)
  raise FeatureFileError(f"{path}: unsupported feature layout (expected an HDF5 file or a "
                         "directory of per-video .npy/.npz files)")


def _looks_like_hdf5(path: pathlib.Path) -> bool:
  with open(path, "rb") as f:
    return f.read(8) == b"\x89HDF\r\n\x1a\n"
