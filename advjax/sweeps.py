"""Many epsilons for the price of one gradient: FGSM sweeps and Fig. 4's lines.

The FGSM direction ``sign(grad_x J(params, x, y))`` does not depend on eps, so
`epsilon_sweep` takes the input gradient once per batch and evaluates the model
at every eps of the sweep in one vmapped computation. `direction_sweep` gives
the model's outputs along any fixed direction, as in Fig. 4 of the paper.

A model whose first layer is affine in its input can be handed over split as a
`LinearFirst`: since ``W (x + eps s) + b = (W x + b) + eps W s``, the first layer
then runs twice (on ``x`` and on ``s``) instead of once per eps, and only the
layers above it pay for each eps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import _trees
from advjax import _validation
from advjax._batching import map_batches
from advjax._types import Array
from advjax._types import Clip
from advjax._types import LossFn
from advjax.attacks import input_grad
from advjax.attacks import sign_step
from advjax.metrics import mistakes

__all__ = [
    "LinearFirst",
    "ModelFn",
    "SweepResult",
    "direction_sweep",
    "epsilon_sweep",
]

ModelFn = Callable[[Any, Array], Array]


@dataclasses.dataclass(frozen=True)
class LinearFirst:
  """A model ``rest(params, first(params, x))`` whose ``first`` is affine in ``x``.

  Use it wherever a model function ``(params, x) -> outputs`` is expected; the
  sweeps of this module recognise it and run ``first`` only on ``x`` and on the
  direction, not once per eps. ``first`` must be affine in ``x`` (a dense or
  convolutional layer with its bias, before any nonlinearity); anything else
  gives wrong sweeps, since the split is taken on trust.

  Being a frozen dataclass of two functions, it is hashable and compares equal
  to another split of the same functions, so jitted sweeps reuse their
  compilation across calls.

  Attributes:
    first: ``(params, x) -> h``, affine in ``x``.
    rest: ``(params, h) -> outputs`` (probabilities for `epsilon_sweep`,
      logits or probabilities for `direction_sweep`).

  Example:
    >>> probs_fn = LinearFirst(lambda p, x: x @ p["w"] + p["b"],
    ...                        lambda p, h: jax.nn.softmax(h))
    >>> probs_fn({"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}, jnp.ones((1, 3)))
    Array([[0.5, 0.5]], dtype=float32)
  """

  first: ModelFn
  rest: ModelFn

  def __call__(self, params: Any, x: Array) -> Array:
    return self.rest(params, self.first(params, x))


class SweepResult(NamedTuple):
  """Scores of a model under FGSM at each eps of a sweep (a pytree).

  Attributes:
    eps: the epsilons, shape ``(K,)``.
    error: fraction of all examples misclassified at each eps, shape ``(K,)``;
      a prediction holding a NaN counts as misclassified.
    confidence: mean probability of the predicted class over the
      misclassified examples, shape ``(K,)``; NaN where there is no mistake,
      or where a misclassified prediction holds a NaN.
  """

  eps: Array
  error: Array
  confidence: Array


def epsilon_sweep(
    loss_fn: LossFn,
    probs_fn: ModelFn,
    params: Any,
    x: Array,
    y: Array,
    eps_values: Any,
    *,
    clip: Clip = None,
    batch_size: int | None = None,
) -> SweepResult:
  """Error and confidence on the mistakes under FGSM, at each of K epsilons.

  Equal to looping ``advjax.fgsm`` and ``advjax.error_and_confidence`` over
  ``eps_values``, but the input gradient is taken once per batch, and all
  epsilons are evaluated in one jitted, vmapped computation. Pass a
  `LinearFirst` as ``probs_fn`` (and no ``clip``, which breaks the linearity)
  to also run the first layer once instead of K times.

  The computation is compiled once per ``loss_fn``, ``probs_fn`` and
  ``batch_size`` (compared by identity for plain functions: keep the same
  function objects across calls), per shape and per non-array leaf of
  ``params``; new eps values of the same count reuse it. ``params`` may be any
  pytree: its arrays are traced, its other leaves (an Equinox model's
  activation, Python numbers) are static, as ``eqx.filter_jit`` treats them.

  A prediction that holds a NaN counts as a mistake (see `advjax.mistakes`),
  so NaN inputs or parameters show as errors, never as right answers.

  With ``batch_size``, ``x`` is processed that many examples at a time and the
  mistakes are counted exactly across batches, so a whole test set fits in
  memory (about ``K * batch_size`` inputs live at once). This assumes the loss
  sums or averages per-example terms, as does any loss without batch
  statistics, so that an example's FGSM direction does not depend on its batch.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss`` that FGSM raises.
    probs_fn: ``(params, x) -> probs`` of shape ``(n, classes)``, or a
      `LinearFirst` split of it.
    params: the model parameters, any pytree.
    x: clean inputs, floating, with a leading batch axis of size ``n >= 1``.
    y: integer labels, shape ``(n,)``.
    eps_values: the epsilons, a 1-D array of ``K >= 1`` finite values ``>= 0``
      (checked under ``jax.experimental.checkify.checkify`` when traced).
    clip: optional ``(lo, hi)`` box for the adversarial inputs.
    batch_size: examples per batch, or None for all of ``x`` at once.

  Returns:
    A `SweepResult` of arrays of shape ``(K,)``.

  Example:
    >>> probs_fn = model.probabilities
    >>> x_test, y_test = data.test.x, data.test.y
    >>> sweep = advjax.epsilon_sweep(loss_fn, probs_fn, params, x_test, y_test,
    ...                              jnp.linspace(0., 0.3, 32), batch_size=50)
    >>> error, _ = advjax.error_and_confidence(probs_fn(params, x_test), y_test)
    >>> bool(sweep.error[0] == error)  # at eps = 0, the clean error
    True
  """
  _check_examples(x, y)
  _validation.check_clip(clip)
  eps_values = _eps_array(eps_values, x, nonnegative=True)
  num_examples = np.shape(x)[0]
  if batch_size is None:
    batch_size = num_examples
  elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}.")
  arrays, static = _trees.partition(params)
  result, classes = _epsilon_sweep(
      loss_fn, probs_fn, static, arrays, x, y, eps_values, clip, min(batch_size, num_examples)
  )
  # Known labels are checked once the program has told the number of classes:
  # a label outside them would count as a mistake at every eps.
  if _validation.concrete_value(y) is not None:
    _validation.check_labels(y, int(classes))
  return result


@functools.partial(jax.jit, static_argnames=("loss_fn", "probs_fn", "static", "batch_size"))
def _epsilon_sweep(
    loss_fn: LossFn,
    probs_fn: ModelFn,
    static: _trees.Static,
    arrays: list[Any],
    x: Array,
    y: Array,
    eps_values: Array,
    clip: Clip,
    batch_size: int,
) -> tuple[SweepResult, Array]:
  """The sweep, and the number of classes that ``probs_fn`` gives."""
  params = _trees.combine(arrays, static)
  classes = []

  def batch_mistakes(x_batch, y_batch):
    direction = jnp.sign(input_grad(loss_fn, params, x_batch, y_batch))
    if isinstance(probs_fn, LinearFirst) and clip is None:
      probs = _linear_first_along(probs_fn, params, x_batch, direction, eps_values)
    else:
      probs = jax.vmap(lambda eps: probs_fn(params, sign_step(x_batch, direction, eps, clip=clip)))(
          eps_values
      )
    classes.append(probs.shape[-1])
    wrong = mistakes(probs, y_batch)  # (K, batch)
    return wrong.T, jnp.where(wrong, jnp.max(probs, axis=-1), 0).T

  wrong, top = map_batches(batch_mistakes, (x, y), batch_size)  # (n, K) each
  count = wrong.sum(0)
  confidence = jnp.where(count > 0, top.sum(0) / jnp.maximum(count, 1), jnp.nan)
  return SweepResult(eps_values, count / x.shape[0], confidence), jnp.asarray(classes[0])


def direction_sweep(
    apply_fn: ModelFn, params: Any, x: Array, direction: Array, eps_values: Any
) -> Array:
  """The model's outputs at ``x + eps * direction`` for each eps (Fig. 4).

  The paper plots the logits of a maxout network as eps sweeps through
  ``[-eps_max, eps_max]`` along the FGSM direction of one example, and finds
  nearly straight lines. ``direction`` is used as given: pass
  ``jnp.sign(advjax.input_grad(...))`` for the FGSM direction. A `LinearFirst`
  ``apply_fn`` runs its first layer once instead of once per eps.

  Args:
    apply_fn: ``(params, x) -> outputs``, typically logits, or a `LinearFirst`.
    params: the model parameters, any pytree (its non-array leaves are static).
    x: floating inputs: one example, or a batch, as ``apply_fn`` takes them.
    direction: an array of the shape of ``x``.
    eps_values: a 1-D array of ``K >= 1`` finite epsilons, of either sign.

  Returns:
    ``apply_fn``'s outputs stacked along a new leading axis of size K, for
    instance logits of shape ``(K, n, classes)`` for a batch of ``n``.

  Example:
    >>> direction = jnp.sign(advjax.input_grad(loss_fn, params, x[:1], y[:1]))
    >>> logits = advjax.direction_sweep(model.scores, params, x[:1], direction,
    ...                                 jnp.linspace(-1., 1., 101))
    >>> logits.shape  # (eps, examples, classes)
    (101, 1, 10)
  """
  _check_inputs(x)
  if np.shape(direction) != np.shape(x):
    raise ValueError(
        f"direction must have the shape of x {np.shape(x)}, got " f"{np.shape(direction)}."
    )
  eps_values = _eps_array(eps_values, x, nonnegative=False)
  arrays, static = _trees.partition(params)
  return _direction_sweep(apply_fn, static, arrays, x, direction, eps_values)


@functools.partial(jax.jit, static_argnames=("apply_fn", "static"))
def _direction_sweep(
    apply_fn: ModelFn,
    static: _trees.Static,
    arrays: list[Any],
    x: Array,
    direction: Array,
    eps_values: Array,
) -> Array:
  params = _trees.combine(arrays, static)
  direction = direction.astype(x.dtype)
  if isinstance(apply_fn, LinearFirst):
    return _linear_first_along(apply_fn, params, x, direction, eps_values)
  return jax.vmap(lambda eps: apply_fn(params, x + eps * direction))(eps_values)


def _linear_first_along(
    model_fn: LinearFirst, params: Any, x: Array, direction: Array, eps_values: Array
) -> Array:
  """``model_fn(params, x + eps * direction)`` stacked over ``eps_values``.

  The first layer runs once: jvp of an affine map gives ``(W x + b, W
  direction)`` in one pass, without subtracting the bias back out of
  ``W direction + b``.
  """
  hidden, hidden_step = jax.jvp(
      functools.partial(model_fn.first, params), (x,), (direction.astype(x.dtype),)
  )
  return jax.vmap(lambda eps: model_fn.rest(params, hidden + eps * hidden_step))(eps_values)


def _check_examples(x: Array, y: Array) -> None:
  """Raises unless ``x`` is a floating batch of examples and ``y`` its ``(n,)`` labels."""
  _check_inputs(x)
  if np.ndim(x) < 2:
    raise ValueError(
        f"x must have a batch axis and at least one feature axis, " f"got shape {np.shape(x)}."
    )
  _validation.check_batch(x, y)
  _validation.check_label_vector(y)


def _check_inputs(x: Array) -> None:
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f"x must be a floating array, got dtype {jnp.result_type(x)}.")
  if np.ndim(x) >= 1 and np.shape(x)[0] == 0:
    raise ValueError("x must hold at least one example, got an empty batch.")


def _eps_array(eps_values: Any, x: Array, *, nonnegative: bool) -> Array:
  """``eps_values`` as a 1-D array in the dtype of ``x``, checked where known."""
  if np.ndim(eps_values) != 1 or np.size(eps_values) == 0:
    raise ValueError(
        "eps_values must be a 1-D array of at least one epsilon, "
        f"got shape {np.shape(eps_values)}."
    )
  if nonnegative:
    _validation.check_eps(eps_values, "eps_values")
  else:
    known = _validation.concrete_value(eps_values)
    if known is not None and not np.all(np.isfinite(known)):
      raise ValueError(f"eps_values must be finite, got {eps_values!r}.")
  return jnp.asarray(eps_values, dtype=jnp.result_type(x))
