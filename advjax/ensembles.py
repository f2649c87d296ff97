"""Ensembles as stacked pytrees: N members run, train and get attacked as one.

An ensemble is the members' params (or training states) stacked along a new
leading member axis, so that ``jax.vmap`` runs all members in one computation.
The ensemble's prediction is the mean of its members' probabilities, the
natural reading of section 7 of the paper, where an ensemble of 12 maxout
networks is attacked as a whole (91.1% error) or through one member (87.9%):

- ``advjax.fgsm(ensemble_loss(probs_fn), stacked, x, y, eps)`` attacks the
  ensemble, by the gradient of the loss of its mean probabilities;
- ``advjax.fgsm(member_loss, member(stacked, i), x, y, eps)`` attacks member i.

Members may be any pytree, Equinox modules included: their array leaves are
stacked and vmapped; every other leaf (an activation function, a Python number
or flag) is shared by all members, as ``eqx.filter_vmap`` treats it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from advjax import _trees
from advjax import _validation
from advjax._types import Array
from advjax._types import LossFn

__all__ = [
    "ProbsFn",
    "TrainStep",
    "ensemble_logits",
    "ensemble_loss",
    "ensemble_probs",
    "ensemble_size",
    "ensemble_step",
    "init_ensemble",
    "member",
    "stack",
    "unstack",
]

ProbsFn = Callable[[Any, Array], Array]
TrainStep = Callable[[Any, Any, Array], tuple[Any, Any]]


def stack(params_list: Sequence[Any]) -> Any:
  """Stacks the members' pytrees along a new leading member axis.

  Array leaves are stacked; every other leaf (an Equinox model's activation
  function) must be equal across the members and is kept once.

  Args:
    params_list: one or more pytrees of one structure, equal non-array leaves
      and array leaves of equal shapes.

  Returns:
    A pytree of that structure whose array leaves have a leading axis of size
    ``len(params_list)``.

  Example:
    >>> params_a, params_b = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    >>> stacked = stack([params_a, params_b])
    >>> stacked["w"].shape
    (2, 2)
    >>> unstack(stacked)[1]  # params_b
    {'w': Array([1., 1.], dtype=float32)}
  """
  if len(params_list) == 0:
    raise ValueError("params_list must hold at least one member, got none.")
  structure = jax.tree.structure(params_list[0])
  for index, params in enumerate(params_list):
    if jax.tree.structure(params) != structure:
      raise ValueError(
          f"params_list members must share one tree structure; member {index} "
          f"is {jax.tree.structure(params)}, member 0 is {structure}."
      )
  member_arrays, statics = zip(*(_trees.partition(params) for params in params_list))
  paths = [
      jax.tree_util.keystr(path)
      for path, _ in jax.tree_util.tree_flatten_with_path(params_list[0])[0]
  ]
  for index, static in enumerate(statics):
    for path, first, other in zip(paths, statics[0].leaves, static.leaves):
      if first is not other and first != other:
        raise ValueError(
            "params_list members must share their non-array leaves; leaf "
            f"{path} is {other!r} in member {index}, {first!r} in member 0."
        )
  for path, *leaves in zip(paths, *member_arrays):
    shapes = [np.shape(leaf) for leaf in leaves]
    if leaves[0] is not None and len(set(shapes)) > 1:
      raise ValueError(
          f"params_list members must have leaves of equal shapes; leaf {path} "
          f"has shapes {shapes}."
      )
  stacked = [None if leaves[0] is None else jnp.stack(leaves) for leaves in zip(*member_arrays)]
  return _trees.combine(stacked, statics[0])


def ensemble_size(stacked: Any, name: str = "stacked_params") -> int:
  """The number of members of a stacked pytree: its leaves' common leading axis.

  Args:
    stacked: a pytree whose array leaves all have a leading member axis.
    name: the argument's name, for the error message.

  Returns:
    The size of the member axis.

  Example:
    >>> params_a, params_b = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    >>> ensemble_size(stack([params_a, params_b]))
    2
  """
  leaves = [leaf for leaf in _trees.partition(stacked)[0] if leaf is not None]
  if not leaves:
    raise ValueError(
        f"{name} must have array leaves with a member axis, got " "a pytree without array leaves."
    )
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
  size = sizes.pop() if len(sizes) == 1 else None
  if size is None:
    shapes = [np.shape(leaf) for leaf in leaves]
    raise ValueError(
        f"{name} must have one leading member axis on every leaf, "
        f"got leaves of shapes {shapes}."
    )
  if size == 0:
    raise ValueError(f"{name} must hold at least one member, got none.")
  return size


def member(stacked: Any, index: Any) -> Any:
  """Member ``index`` of a stacked pytree, as a single model's pytree.

  Args:
    stacked: a stacked pytree (see `stack`).
    index: an int in ``[-N, N)``, or a traced integer under ``jit``.

  Returns:
    The member's pytree, without the member axis.

  Example:
    >>> x_adv = advjax.fgsm(loss_fn, member(stacked, 0), x, y, 0.25)  # member 0 alone
  """
  size = ensemble_size(stacked)
  known = _validation.concrete_value(index)
  if known is not None and not -size <= known < size:
    raise ValueError(
        f"index must lie in [-{size}, {size}) for an ensemble of " f"{size} members, got {index!r}."
    )
  arrays, static = _trees.partition(stacked)
  return _trees.combine([None if leaf is None else leaf[index] for leaf in arrays], static)


def unstack(stacked: Any) -> list[Any]:
  """Splits a stacked pytree into the list of its members (inverse of `stack`).

  Args:
    stacked: a stacked pytree (see `stack`).

  Returns:
    A list of N pytrees, without the member axis.

  Example:
    >>> params_list = unstack(stacked)
    >>> len(params_list), ensemble_size(stack(params_list))
    (3, 3)
  """
  return [member(stacked, index) for index in range(ensemble_size(stacked))]


def init_ensemble(init_fn: Callable[[Array], Any], key: Array, n: int) -> Any:
  """Initialises N members from N independent keys, in one vmapped call.

  Args:
    init_fn: ``key -> params`` (or any pytree, such as a training state or an
      Equinox model).
    key: PRNG key, split into one key per member.
    n: number of members, an int >= 1.

  Returns:
    The stacked pytree of the N members, equal to
    ``stack([init_fn(k) for k in jax.random.split(key, n)])``.

  Example:
    >>> stacked = init_ensemble(lambda k: {"w": jax.random.normal(k, (3,))}, key, 12)
    >>> stacked["w"].shape, bool(jnp.all(stacked["w"][0] != stacked["w"][1]))
    ((12, 3), True)
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"n must be an int >= 1, got {n!r}.")
  return _trees.vmap(init_fn, in_axes=(0,))(jax.random.split(key, n))


def ensemble_probs(probs_fn: ProbsFn, stacked_params: Any, x: Array) -> Array:
  """The ensemble's probabilities: the mean of its members' probabilities.

  Args:
    probs_fn: one member's ``(params, x) -> probs``.
    stacked_params: the members' params, stacked (see `stack`).
    x: the inputs, shared by all members.

  Returns:
    An array of the shape of ``probs_fn(member_params, x)``.

  Example:
    >>> probs = ensemble_probs(model.probabilities, stacked, x)
    >>> probs.shape  # the members' mean
    (8, 10)
    >>> error, confidence = advjax.error_and_confidence(probs, y)
  """
  ensemble_size(stacked_params)
  probs = _trees.vmap(probs_fn, in_axes=(0, None))(stacked_params, x)
  return jnp.mean(probs, axis=0)


def ensemble_loss(probs_fn: ProbsFn) -> LossFn:
  """The cross-entropy of the ensemble's mean probabilities, as a ``loss_fn``.

  The returned ``loss(stacked_params, x, y)`` is
  ``-mean(log(ensemble_probs(probs_fn, stacked_params, x)[y]))``, so FGSM with
  it attacks the ensemble as a whole. Probabilities are floored at the
  smallest normal float before the log: an example whose true class has
  underflowed to probability 0 gets a zero gradient instead of NaN.

  Args:
    probs_fn: one member's ``(params, x) -> probs`` of shape ``(n, classes)``.

  Returns:
    A loss function ``(stacked_params, x, y) -> scalar`` for integer labels
    ``y`` of shape ``(n,)``.

  Example:
    >>> x_adv = advjax.fgsm(ensemble_loss(model.probabilities), stacked, x, y, 0.25)
  """

  def loss(stacked_params: Any, x: Array, y: Array) -> Array:
    _validation.check_batch(x, y)
    _validation.check_label_vector(y)
    probs = ensemble_probs(probs_fn, stacked_params, x)
    _validation.check_labels(y, probs.shape[-1])
    true_class = jnp.take_along_axis(probs, y[:, None], axis=-1)[:, 0]
    return -jnp.mean(_floored_log(true_class))

  return loss


def ensemble_logits(probs_fn: ProbsFn) -> Callable[[Any, Array], Array]:
  """The log of the ensemble's mean probabilities, as a ``logits_fn``.

  For the attacks that take logits (`advjax.apgd`, `advjax.autoattack`): the
  softmax of these logits is the ensemble's mean probabilities, so the
  cross-entropy they give is `ensemble_loss`'s, and the ensemble predicts
  their argmax. Probabilities are floored as in `ensemble_loss`.

  Args:
    probs_fn: one member's ``(params, x) -> probs`` of shape ``(n, classes)``.

  Returns:
    ``(stacked_params, x) -> (n, classes)`` logits.

  Example:
    >>> logits_fn = ensemble_logits(model.probabilities)
    >>> np.allclose(jax.nn.softmax(logits_fn(stacked, x)),
    ...             ensemble_probs(model.probabilities, stacked, x), atol=1e-6)
    True
  """

  def logits(stacked_params: Any, x: Array) -> Array:
    return _floored_log(ensemble_probs(probs_fn, stacked_params, x))

  return logits


def _floored_log(probs: Array) -> Array:
  """``log`` of probabilities floored at the smallest normal float: finite, and a zero gradient
  where a probability underflowed (not NaN)."""
  return jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))


def ensemble_step(train_step: TrainStep, *, shared_batch: bool = True) -> TrainStep:
  """Turns a single model's training step into one step of N members at once.

  ``train_step(state, batch, rng) -> (state, metrics)`` may take any pytrees
  for ``state``, ``batch`` and ``metrics``. The returned step takes the
  members' states stacked (see `init_ensemble`) and one rng per member, so
  members differ in their initialisation and dropout masks; it returns the
  stacked new states and the stacked metrics. Wrap it in ``jax.jit`` to train
  all members in one compiled step.

  Args:
    train_step: one model's ``(state, batch, rng) -> (state, metrics)``.
    shared_batch: True to give every member the same batch; False to take a
      batch stacked along a leading member axis, one batch per member.

  Returns:
    ``step(states, batch, rngs) -> (states, metrics)``.

  Example:
    >>> train_step = train.make_train_step(model, train.Clean())
    >>> states = stack([train.create_train_state(model, k, x[:1], train.recipe_sgd(2))
    ...                 for k in jax.random.split(key, 3)])
    >>> step = jax.jit(ensemble_step(train_step))
    >>> states, losses = step(states, (x, y), jax.random.split(key, 3))
    >>> losses.shape  # one per member
    (3,)
  """
  stepped = _trees.vmap(train_step, in_axes=(0, None if shared_batch else 0, 0))

  def step(states: Any, batch: Any, rngs: Array) -> tuple[Any, Any]:
    size = ensemble_size(states, "states")
    _check_members(rngs, size, "rngs")
    if not shared_batch:
      _check_members(batch, size, "batch")
    return stepped(states, batch, rngs)

  return step


def _check_members(tree: Any, size: int, name: str) -> None:
  """Raises ValueError unless ``tree`` has a member axis of ``size``."""
  found = ensemble_size(tree, name)
  if found != size:
    raise ValueError(
        f"{name} must have one entry per member ({size}), got " f"a member axis of {found}."
    )
