"""Data parallelism on a device mesh, with JAX's own SPMD machinery (`jax.sharding`).

One mesh axis, ``"data"``, spans the devices. A batch is split along it, the
parameters and optimizer state are replicated, and ``jax.jit`` inserts the
gradient all-reduce itself, so the same training code runs on one device or
many, CPU, GPU or TPU. Ensembles and epsilon sweeps place their members or
their epsilons along the same axis.

Several hosts: call `initialize_distributed` first on every host (it wraps
``jax.distributed.initialize``); the mesh then spans every host's devices and
`shard_batch` takes from each host only the rows its devices hold.

Example:
  >>> mesh = data_mesh(4)
  >>> state = replicate(state, mesh)
  >>> x, y = shard_batch((x, y), mesh)
  >>> x.addressable_shards[0].data.shape  # 2 of the 8 rows on each device
  (2, 784)
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "initialize_distributed",
    "local_copy",
    "replicate",
    "replicated",
    "shard_batch",
    "split_leading",
]

DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh:
  """A one-axis mesh over the first ``num_devices`` devices (all of them by default).

  Args:
    num_devices: how many devices to use; None for all of ``jax.devices()``.

  Returns:
    A ``jax.sharding.Mesh`` with the single axis ``"data"``.

  Example:
    >>> mesh = data_mesh()     # every device, on every host
    >>> mesh.axis_names
    ('data',)
  """
  devices = jax.devices()
  if num_devices is None:
    num_devices = len(devices)
  if not isinstance(num_devices, int) or not 1 <= num_devices <= len(devices):
    raise ValueError(
        f"num_devices must be an int from 1 to the {len(devices)} "
        f"available devices ({devices[0].platform}), got {num_devices!r}."
    )
  return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding that keeps a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def split_leading(mesh: Mesh) -> NamedSharding:
  """The sharding that splits the leading axis (batch, members, epsilons) over ``mesh``."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copies every leaf of ``tree`` (params, optimizer state) to every device.

  Example:
    >>> state = replicate(state, data_mesh())
    >>> state.params["output"]["kernel"].is_fully_replicated
    True
  """
  return jax.device_put(tree, replicated(mesh))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """Splits the leading axis of every leaf of ``tree`` across the devices of ``mesh``.

  Works for a batch ``(x, y)``, a stacked ensemble (members on the leading
  axis) or an array of epsilons. With several hosts, every host passes the
  same global array and keeps only the rows of its own devices.

  Args:
    tree: a pytree of arrays sharing their leading size.
    mesh: from `data_mesh`.

  Returns:
    The same pytree of global ``jax.Array``s, split along the ``"data"`` axis.

  Raises:
    ValueError: a leading size that the number of devices does not divide.

  Example:
    >>> x, y = shard_batch((x, y), data_mesh(4))   # 2 rows of 8 per device
    >>> [shard.data.shape[0] for shard in y.addressable_shards]
    [2, 2, 2, 2]
  """
  sharding = split_leading(mesh)
  for leaf in jax.tree.leaves(tree):
    size = np.shape(leaf)[0] if np.ndim(leaf) else None
    if size is None or size % mesh.size:
      raise ValueError(
          f"the leading axis ({size}) must split evenly over the {mesh.size} "
          f"devices of the mesh; choose a batch size divisible by {mesh.size}."
      )
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda leaf: jax.make_array_from_callback(
          np.shape(leaf), sharding, lambda index: np.asarray(leaf[index])
      ),
      tree,
  )


def local_copy(tree: Any) -> Any:
  """This host's full copy of a replicated pytree, on its first device.

  Lets a host evaluate replicated parameters on its own, without the other
  devices (or hosts) taking part. Leaves that are not ``jax.Array`` pass through.

  Example:
    >>> state = replicate(state, data_mesh())
    >>> params = local_copy(state.params)
    >>> params["output"]["kernel"].devices() == {jax.local_devices()[0]}
    True
  """

  def copy(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_replicated:
      raise ValueError(
          "local_copy needs replicated arrays, got one sharded as " f"{leaf.sharding}."
      )
    return leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf

  return jax.tree.map(copy, tree)


def initialize_distributed(**kwargs: Any) -> None:
  """Joins a multi-host run: ``jax.distributed.initialize`` on every host.

  On Cloud TPU, SLURM and Open MPI the coordinator, process count and index
  come from the environment; elsewhere pass ``coordinator_address``,
  ``num_processes`` and ``process_id`` (see the README). Call it before any
  other JAX call.

  Args:
    **kwargs: passed to ``jax.distributed.initialize``.

  Example:
    >>> initialize_distributed(coordinator_address="10.0.0.1:1234",
    ...                        num_processes=2, process_id=0)  # doctest: +SKIP
  """
  jax.distributed.initialize(**kwargs)
