"""Gradient-sign attacks: FGSM, its targeted form, and projected gradient descent.

Every attack is a plain function of a loss function and an input. ``loss_fn``
has the signature ``loss_fn(params, x, y) -> scalar``, for any params pytree, so
the attacks work with Flax, Haiku, Equinox or hand-written models, and compose
with ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

The step is taken in float32 (or wider) and rounded toward ``x``, so that
``|x_adv - x| <= eps`` holds exactly in every dtype, bfloat16 and float16
included. Arguments known when the function is traced are checked at once;
traced ones (``eps`` under ``jit``) only inside
``jax.experimental.checkify.checkify`` (see `advjax._validation`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from advjax import _validation
from advjax._types import Array
from advjax._types import Clip
from advjax._types import LossFn

__all__ = [
    "Clip",
    "LossFn",
    "broadcast_eps",
    "fgsm",
    "input_grad",
    "pgd",
    "project_linf",
    "sign_step",
    "targeted_fgsm",
]


def input_grad(loss_fn: LossFn, params: Any, x: Array, y: Array) -> Array:
  """Gradient of ``loss_fn(params, x, y)`` with respect to the input ``x``.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``.
    params: the model parameters, any pytree.
    x: the inputs.
    y: the labels, in whatever form ``loss_fn`` takes them.

  Returns:
    An array of the shape and dtype of ``x``.

  Example:
    >>> loss = lambda w, x, y: jnp.mean(jax.nn.softplus(-y * (x @ w)))
    >>> input_grad(loss, jnp.ones(3), jnp.zeros((2, 3)), jnp.ones(2))
    Array([[-0.25, -0.25, -0.25],
           [-0.25, -0.25, -0.25]], dtype=float32)
  """
  _validation.check_batch(x, y)
  return jax.grad(loss_fn, argnums=1)(params, x, y)


def broadcast_eps(eps: Any, x: Array) -> Array:
  """Aligns ``eps`` with the leading axes of ``x``: one value, or one per example.

  Args:
    eps: a scalar, or an array whose shape is a prefix of ``x.shape`` (for
      example one epsilon per example of the batch).
    x: the inputs to perturb.

  Returns:
    ``eps`` in the dtype of ``x`` with trailing unit axes, ready to broadcast.
  """
  eps = jnp.asarray(eps, dtype=x.dtype)
  if eps.ndim > x.ndim or eps.shape != x.shape[: eps.ndim]:
    raise ValueError(
        f"eps must be a scalar or match the leading axes of x {x.shape}, " f"got shape {eps.shape}."
    )
  return eps.reshape(eps.shape + (1,) * (x.ndim - eps.ndim))


def sign_step(x: Array, direction: Array, eps: Any, *, clip: Clip = None) -> Array:
  """Moves ``x`` by ``eps * sign(direction)``, then clips it into the box.

  This is the step FGSM takes along its gradient; it is exposed so that a
  gradient computed once can be reused for many epsilons. ``sign(0) = 0``:
  pixels the loss does not depend on stay where they are. The step is taken
  in float32 (or wider) and rounded toward ``x``: ``|result - x| <= eps``
  holds exactly in every dtype, for ``x`` inside the ``clip`` box.

  Args:
    x: the inputs.
    direction: an array of the shape of ``x``, typically the input gradient.
    eps: step size: a scalar or one value per example (see `broadcast_eps`).
    clip: optional ``(lo, hi)`` box for the result.

  Returns:
    The moved inputs, in the dtype of ``x``.

  Raises:
    ValueError: for a negative or non-finite ``eps`` or a ``clip`` with
      lo > hi. Traced values (under ``jit``) are checked only inside
      ``jax.experimental.checkify.checkify``.

  Example:
    >>> sign_step(jnp.zeros(3), jnp.array([2., 0., -1.]), 0.1)
    Array([ 0.1,  0. , -0.1], dtype=float32)
  """
  _validation.check_eps(eps)
  _validation.check_clip(clip)
  wide = _widen(x)
  radius = broadcast_eps(eps, wide)
  moved = wide + radius * jnp.sign(direction).astype(wide.dtype)
  return _clip(_round_into_ball(x, moved, radius), clip)


def _widen(x: Array) -> Array:
  """``x`` in the dtype its steps are computed in: float32, or wider if ``x`` is."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _round_into_ball(x: Array, target: Array, radius: Array) -> Array:
  """``target`` in the dtype of ``x``, with ``|result - x| <= radius`` exactly.

  ``target`` (within ``radius`` of ``x`` up to its own rounding, in the dtype of
  `_widen`) is rounded to the nearest value of ``x``'s dtype; where that lies
  outside the ball, it is moved one value toward ``x``, which brings it back
  in. Whether it lies outside is decided on the exact difference, which
  TwoSum (Knuth) recovers from the rounded one; the optimization barrier keeps
  XLA from simplifying ``(x + step) - x`` to ``step`` when ``x`` is a constant.
  """
  result = target.astype(x.dtype)
  # The check and the nudge have no derivative: the result's is that of target.
  fixed_result, fixed_x, radius = jax.lax.stop_gradient((result, x, radius))
  a, b = jax.lax.optimization_barrier(
      (fixed_result.astype(target.dtype), -fixed_x.astype(target.dtype))
  )
  gap = a + b
  b_part = gap - a
  error = (a - (gap - b_part)) + (b - b_part)  # gap + error == a + b exactly
  outside = (jnp.abs(gap) > radius) | ((jnp.abs(gap) == radius) & (gap * error > 0))
  back = jnp.nextafter(fixed_result, fixed_x) - fixed_result  # exact: one value
  return result + jnp.where(outside, back, jnp.zeros_like(back))


def project_linf(x: Array, x_adv: Array, eps: Any, *, clip: Clip = None) -> Array:
  """Moves ``x_adv`` onto the L-infinity ``eps``-ball around ``x``, then into the box.

  The result is rounded toward ``x`` as `sign_step`'s is: ``|result - x| <= eps``
  holds exactly in every dtype, for ``x`` inside the ``clip`` box (clipping then
  only moves a value toward ``x``).

  Args:
    x: the clean inputs.
    x_adv: the points to project, of the shape of ``x`` (any float dtype).
    eps: radius of the ball: a scalar, or one value per example.
    clip: optional ``(lo, hi)`` box for the result.

  Returns:
    The projected points, in the dtype of ``x``.

  Example:
    >>> project_linf(jnp.zeros(3), jnp.array([0.5, -0.05, -2.]), 0.1, clip=(0., 1.))
    Array([0.1, 0. , 0. ], dtype=float32)
  """
  wide = _widen(x)
  radius = broadcast_eps(eps, wide)
  moved = wide + jnp.clip(_widen(x_adv) - wide, -radius, radius)
  return _clip(_round_into_ball(x, moved, radius), clip)


def _clip(x: Array, clip: Clip) -> Array:
  if clip is None:
    return x
  lo, hi = clip
  return jnp.clip(x, lo, hi).astype(x.dtype)


def fgsm(loss_fn: LossFn, params: Any, x: Array, y: Array, eps: Any, *, clip: Clip = None) -> Array:
  """The fast gradient sign method: ``x + eps * sign(grad_x loss_fn(params, x, y))``.

  Goodfellow, Shlens & Szegedy (2015), eq. (3). The paper's numbers use no
  clipping; pass ``clip=(0., 1.)`` to keep images valid.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss`` that the attack raises.
    params: the model parameters, any pytree.
    x: the inputs.
    y: the true labels.
    eps: max-norm of the perturbation: a scalar, or one value per example.
    clip: optional ``(lo, hi)`` box for the adversarial inputs.

  Returns:
    The adversarial inputs, with the shape and dtype of ``x``, within ``eps``
    of ``x`` exactly in every dtype.

  Raises:
    ValueError: for a negative or non-finite ``eps``, a ``clip`` with lo > hi
      or ``x`` and ``y`` of different batch sizes. A traced ``eps`` or
      ``clip`` (under ``jit``) is checked only inside
      ``jax.experimental.checkify.checkify``.

  Example:
    >>> x_adv = advjax.fgsm(loss_fn, params, x, y, eps=0.25)
    >>> float(jnp.abs(x_adv - x).max())
    0.25
  """
  return sign_step(x, input_grad(loss_fn, params, x, y), eps, clip=clip)


def targeted_fgsm(
    loss_fn: LossFn, params: Any, x: Array, target: Array, eps: Any, *, clip: Clip = None
) -> Array:
  """One gradient-sign step that lowers the loss of a chosen ``target`` class.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``.
    params: the model parameters, any pytree.
    x: the inputs.
    target: the labels the attack wants the model to give.
    eps: max-norm of the perturbation: a scalar, or one value per example.
    clip: optional ``(lo, hi)`` box for the adversarial inputs.

  Returns:
    ``x - eps * sign(grad_x loss_fn(params, x, target))``, clipped if asked.

  Raises:
    ValueError: for a negative or non-finite ``eps``, a ``clip`` with lo > hi
      or ``x`` and ``target`` of different batch sizes. A traced ``eps`` or
      ``clip`` (under ``jit``) is checked only inside
      ``jax.experimental.checkify.checkify``.

  Example:
    >>> target = jnp.full_like(y, 7)
    >>> x_adv = advjax.targeted_fgsm(loss_fn, params, x, target, 0.25)
    >>> bool(loss_fn(params, x_adv, target) < loss_fn(params, x, target))
    True
  """
  return sign_step(x, -input_grad(loss_fn, params, x, target), eps, clip=clip)


def pgd(
    loss_fn: LossFn,
    params: Any,
    x: Array,
    y: Array,
    eps: Any,
    *,
    step_size: Any,
    num_steps: int,
    clip: Clip = None,
    random_start: bool = False,
    key: Array | None = None,
    start: Array | None = None,
    targeted: bool = False,
) -> Array:
  """The iterated gradient-sign method under the L-infinity norm (BIM / PGD).

  Each step moves by ``step_size * sign(grad)`` and projects back onto the
  ``eps``-ball around ``x`` and onto the ``clip`` box. Without a random start
  this is the basic iterative method of Kurakin et al. (2017); with one it is
  the PGD attack of Madry et al. (2018). One step of size ``eps`` from ``x`` is
  exactly `fgsm`.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``.
    params: the model parameters, any pytree.
    x: the clean inputs.
    y: the true labels, or the target labels when ``targeted``.
    eps: radius of the L-infinity ball: a scalar, or one value per example.
    step_size: size of each sign step: a scalar, or one value per example.
    num_steps: number of steps, a Python int >= 1.
    clip: optional ``(lo, hi)`` box for the adversarial inputs.
    random_start: start from a uniform point of the ball (needs ``key``).
    key: PRNG key for the random start.
    start: optional first iterate instead of ``x`` (projected onto the ball
      and the box), e.g. TRADES' ``x + 0.001 * N(0, I)``; not with
      ``random_start``.
    targeted: lower the loss of ``y`` instead of raising it.

  Returns:
    The adversarial inputs, with the shape and dtype of ``x``, within ``eps``
    of ``x`` exactly in every dtype.

  Raises:
    ValueError: for a negative or non-finite ``eps`` or ``step_size``, a
      ``clip`` with lo > hi, mismatched batches, a bad ``num_steps`` or a
      random start without ``key`` or with ``start``. A traced ``eps``, ``step_size`` or
      ``clip`` (under ``jit``) is checked only inside
      ``jax.experimental.checkify.checkify``.

  Example:
    >>> x_adv = advjax.pgd(loss_fn, params, x, y, 0.25, step_size=0.01,
    ...                    num_steps=40, clip=(0., 1.))
    >>> bool(jnp.all(jnp.abs(x_adv - x) <= 0.25)), float(x_adv.min()) >= 0.
    (True, True)
  """
  _validation.check_eps(eps)
  _validation.check_eps(step_size, "step_size")
  _validation.check_clip(clip)
  _validation.check_batch(x, y)
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}.")
  start = _pgd_start(x, eps, clip, random_start, key, start)
  sign = -1 if targeted else 1

  def step(_, x_adv):
    grad = input_grad(loss_fn, params, x_adv, y)
    return project_linf(x, sign_step(x_adv, sign * grad, step_size), eps, clip=clip)

  return jax.lax.fori_loop(0, num_steps, step, start)


def _pgd_start(x, eps, clip, random_start, key, start):
  """PGD's first iterate: ``x``, ``start`` projected, or a uniform point of the ball."""
  wide = _widen(x)
  radius = broadcast_eps(eps, wide)
  if random_start:
    if key is None:
      raise ValueError("random_start=True needs a PRNG key: pass key=.")
    if start is not None:
      raise ValueError("pass random_start=True or start=, not both.")
    start = wide + jax.random.uniform(key, x.shape, wide.dtype, minval=-1, maxval=1) * radius
  return x if start is None else project_linf(x, start, eps, clip=clip)
