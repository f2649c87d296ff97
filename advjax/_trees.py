"""Any pytree through jit and vmap: its arrays apart from the rest, as `eqx.partition` does.

An Equinox module holds, beside its arrays, leaves that ``jax.jit`` and
``jax.vmap`` cannot take: its activation function, Python numbers and flags.
Where advjax itself jits or vmaps a user's pytree, it splits the tree into its
array leaves, which are traced, batched and stacked, and everything else,
which rides along unchanged as static structure. The rule is Equinox's
``eqx.is_array``: NumPy and JAX arrays are arrays, Python numbers are not.

A training objective takes the same path, after one step first. Its numbers
(``eps=0.25``, ``alpha=[0.1, 0.2]``) are what a population's members may
vary, so `per_member` turns each into a float32 array with one value per
member; `partition` then makes those arrays the traced part of the compiled
epoch and leaves the rest (a noise function, a clip box, a step count, all
declared static by the objective) in its `Static` part, which fixes the
program. ``advjax.train.split_objective`` is exactly these two steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
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


def per_member(tree: Any, members: int) -> Any:
  """``tree`` with each number, or list of numbers, as a float32 array of shape ``(members,)``.

  A single number is shared by every member (broadcast); a list or tuple of
  ``members`` numbers gives each member its own. Other leaves are unchanged.

  Args:
    tree: a pytree, such as a training objective.
    members: the population's size.

  Returns:
    The tree with its numbers stacked per member.

  Raises:
    ValueError: a list of numbers, or an array, whose length is not ``members``.
  """

  def stacked(leaf: Any) -> Any:
    if not (_is_number(leaf) or _is_numbers(leaf)):
      return leaf
    value = jnp.asarray(leaf, jnp.float32)
    if value.ndim == 0:
      return jnp.broadcast_to(value, (members,))
    if value.shape != (members,):
      raise ValueError(
          f"a setting must be one number or one per member "
          f"({members}), got shape {value.shape} in {tree!r}."
      )
    return value

  return jax.tree.map(stacked, tree, is_leaf=_is_numbers)


def _is_number(leaf: Any) -> bool:
  return isinstance(leaf, (int, float, jax.Array)) or hasattr(leaf, "__array__")


def _is_numbers(value: Any) -> bool:
  """A list or tuple of numbers, such as one eps per member: one setting, not many."""
  return isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_number(v) for v in value)
