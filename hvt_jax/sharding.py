"""Mesh construction, logical-axis rules and multi-host helpers.

Parameters carry logical axis names (e.g. ``("embed", None, "hidden")``); the config's
``sharding_rules`` table maps each logical name to a mesh axis (or None = replicated).
A dimension that the mapped mesh axes do not divide is replicated instead (logged once),
so one rules table serves every model size and device count.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "model")


def make_mesh(mesh_shape: Sequence[tuple[str, int]] | None = None,
              num_devices: int = 0) -> Mesh:
  """Builds the device mesh from ``config.mesh``, e.g. ``[("data", -1), ("model", 1)]``.

  One entry may be -1 ("whatever is left"). Axis types are Auto: XLA propagates shardings
  from the annotated inputs and parameters (``jax.make_mesh`` defaults to
  Explicit axes in this jax, which would require annotating every activation).
  ``num_devices`` > 0 uses only the first devices (single-process debugging and tests).
  """
  spec = dict(mesh_shape or [("data", -1), ("model", 1)])
  unknown = set(spec) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"config.mesh names unknown axes {sorted(unknown)}; valid: {MESH_AXES}")
  sizes = [int(spec.get(name, 1)) for name in MESH_AXES]
  devices = jax.devices()
  if num_devices:
    if jax.process_count() > 1 or num_devices > len(devices):
      raise ValueError(f"config.mesh_devices={num_devices} needs a single process with at "
                       f"least that many devices ({len(devices)} available)")
    devices = devices[:num_devices]
  n = len(devices)
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh={mesh_shape}: at most one axis may be -1")
  if -1 in sizes:
    rest = int(np.prod([s for s in sizes if s != -1]))
    if n % rest:
      raise ValueError(f"config.mesh={mesh_shape} does not divide {n} devices")
    sizes[sizes.index(-1)] = n // rest
  if int(np.prod(sizes)) != n:
    raise ValueError(f"config.mesh={mesh_shape} needs {int(np.prod(sizes))} devices, "
                     f"{n} are available")
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(sizes),
                       devices=devices)


def logical_to_mesh(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[tuple[str, Any]]) -> P:
  """Maps logical axis names of one array to a PartitionSpec under ``rules``.

  A dimension stays replicated when its rule is None, when its mesh axes are already used by
  another dimension of the array, or when its size is not divisible by theirs.

  Raises:
    ValueError: a logical name has no rule (it would silently stay replicated: list every
      name a model uses in ``config.sharding_rules``, mapped to None to replicate).
  """
  table = dict(rules)
  unknown = [n for n in names if n is not None and n not in table]
  if unknown:
    raise ValueError(f"logical axis {unknown[0]!r} has no entry in config.sharding_rules "
                     f"(rules cover {sorted(table)}); add ({unknown[0]!r}, <mesh axis or None>)")
  out, used = [], set()
  for name, dim in zip(names, shape):
    axis = table.get(name) if name is not None else None
    axes = () if axis is None else ((axis,) if isinstance(axis, str) else tuple(axis))
    size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if not axes or used & set(axes) or dim % size:
      out.append(None)
      continue
    used |= set(axes)
    out.append(axes[0] if len(axes) == 1 else axes)
  return P(*out)


def param_shardings(abstract_params: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, Any]]) -> Any:
  """NamedShardings for an (abstract) nnx.State of Params from their logical names.

  Returns:
    A tree with the same structure as ``abstract_params`` whose leaves are NamedShardings.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  def one(var):
    meta = var.get_metadata()
    # flax 0.12 stores the names given as ``sharding_names`` under ``out_sharding``.
    names = (meta.get("out_sharding") or meta.get("sharding_names")
             or (None,) * var.value.ndim)
    spec = logical_to_mesh(names, var.value.shape, mesh, rules)
    return var.replace(value=NamedSharding(mesh, spec))

  return jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def maybe_initialize_distributed() -> None:
  """Calls ``jax.distributed.initialize`` only for multi-process runs.

  On Cloud TPU and SLURM jax discovers the cluster itself (set HVT_DISTRIBUTED=1); for
  explicit setups set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    address = os.environ["JAX_COORDINATOR_ADDRESS"]
    kwargs = dict(coordinator_address=address,
                  num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
    if address.startswith("127.0.0.1"):
      kwargs["coordinator_bind_address"] = address
    if jax.config.jax_platforms in (None, "", "cpu"):
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
  elif os.environ.get("HVT_DISTRIBUTED") == "1":
    jax.distributed.initialize()
  logging.info("process %d/%d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
