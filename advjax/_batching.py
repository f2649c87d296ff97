"""Fixed-size batches on the device: the one batching helper of evaluation and sweeps.

A split is cut into batches of one size, the last padded by repeating its final
example (so a model only ever sees real inputs and compiles for one shape), and
`jax.lax.map` walks them inside the caller's program: no host loop, and one
compilation serves every split of a size. The padded rows are dropped from the
outputs, so per-example results are exact whatever the batch size.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["map_batches"]


def map_batches(fn: Callable[..., Any], arrays: tuple[jax.Array, ...], batch_size: int) -> Any:
  """``fn`` applied to fixed-size batches of ``arrays``, its outputs concatenated.

  Traceable: the batches are cut on the device and walked by `jax.lax.map`.
  ``fn`` must treat examples independently (no batch statistics).

  Args:
    fn: ``(*batch) -> pytree`` of arrays with a leading batch axis.
    arrays: arrays sharing their leading size ``n >= 1``.
    batch_size: examples per batch (at most ``n`` are used).

  Returns:
    ``fn``'s outputs for all ``n`` examples.

  Raises:
    ValueError: ``n`` is 0.

  Example:
    >>> probs = map_batches(lambda xb: model.probabilities(params, xb), (x,), 3)
    >>> probs.shape  # batches of 3, 3 and 2 (padded to 3)
    (8, 10)
  """
  n = arrays[0].shape[0]
  if n == 0:
    raise ValueError("cannot evaluate on an empty split.")
  batch_size = min(batch_size, n)
  num_batches = -(-n // batch_size)
  padding = num_batches * batch_size - n

  def in_batches(a):
    a = jnp.pad(a, [(0, padding)] + [(0, 0)] * (a.ndim - 1), mode="edge")
    return a.reshape((num_batches, batch_size) + a.shape[1:])

  outputs = jax.lax.map(lambda batch: fn(*batch), tuple(map(in_batches, arrays)))
  return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:n], outputs)
