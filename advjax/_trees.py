"""Any pytree through jit and vmap: its arrays apart from the rest, as `eqx.partition` does.

An Equinox module holds, beside its arrays, leaves that ``jax.jit`` and
``jax.vmap`` cannot take: its activation function, Python numbers and flags.
Where advjax itself jits or vmaps a user's pytree, it splits the tree into its
array leaves, which are traced, batched and stacked, and everything else,
which rides along unchanged as static structure. The rule is Equinox's
``eqx.is_array``: NumPy and JAX arrays are arrays, Python numbers are not.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np


def is_array(leaf: Any) -> bool:
  """True for a JAX or NumPy array (or NumPy scalar), the leaves advjax traces."""
  return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


@dataclasses.dataclass(frozen=True)
class Static:
  """The non-array part of a pytree: hashable, so it can be a static argument of jit.

  Two parts compare equal when their structures, leaves and leaf types agree
  (the types keep ``1``, ``1.0`` and ``True`` apart).

  Attributes:
    treedef: the structure of the whole tree.
    leaves: the non-array leaves, None where an array goes.
    types: the types of ``leaves``.
  """

  treedef: Any
  leaves: tuple[Any, ...]
  types: tuple[type, ...]


def partition(tree: Any) -> tuple[list[Any], Static]:
  """Splits ``tree`` into its array leaves (None elsewhere) and its `Static` rest."""
  leaves, treedef = jax.tree.flatten(tree)
  arrays = [leaf if is_array(leaf) else None for leaf in leaves]
  rest = tuple(None if is_array(leaf) else leaf for leaf in leaves)
  return arrays, Static(treedef, rest, tuple(map(type, rest)))


def combine(arrays: list[Any], static: Static) -> Any:
  """The inverse of `partition`."""
  leaves = [rest if array is None else array for array, rest in zip(arrays, static.leaves)]
  return jax.tree.unflatten(static.treedef, leaves)


def vmap(fn: Callable[..., Any], in_axes: tuple[int | None, ...]) -> Callable[..., Any]:
  """``jax.vmap(fn, in_axes)`` over the array leaves of the arguments and results.

  Non-array leaves of the arguments reach ``fn`` unchanged; those of its
  result are returned unchanged, as ``eqx.filter_vmap`` does.
  """

  def mapped(*args: Any) -> Any:
    parts = [partition(arg) for arg in args]
    result_static = []

    def on_arrays(*arrays):
      result = fn(*(combine(a, static) for a, (_, static) in zip(arrays, parts)))
      result_arrays, static = partition(result)
      result_static.append(static)
      return result_arrays

    result_arrays = jax.vmap(on_arrays, in_axes=in_axes)(*(a for a, _ in parts))
    return combine(result_arrays, result_static[0])

  return mapped
