"""Targeted FAB (Croce & Hein, ICML 2020) under the L-infinity norm.

FAB looks for the smallest perturbation that changes the decision: at each
step it linearises the margin between the true class and a target class,
projects both the current point and the clean input onto the linearised
boundary, and moves to a convex combination of the two projections,
overshooting a little; once a point is misclassified it steps back toward the
clean input. The attack counts as successful on an example when the smallest
misclassified point it found lies within ``eps``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from advjax import _validation
from advjax import attacks
from advjax._types import Array
from advjax._types import Clip
from advjax._types import LogitsFn

__all__ = ["fab_targeted", "project_onto_halfspace_linf"]


def project_onto_halfspace_linf(t: Array, w: Array, b: Array) -> Array:
  """The smallest L-infinity move of each row of ``t`` onto ``{z : w.z = b}`` within [0, 1].

  The exact solution of FAB's projection subproblem: the move ``d`` of least
  max-norm with ``w . (t + d) = b`` and ``t + d`` in the unit box, or, where the
  box forbids reaching the hyperplane, the move that comes closest. Rows are
  independent; the search over breakpoints is a fixed-length bisection.

  Args:
    t: ``(rows, features)`` points, inside [0, 1].
    w: ``(rows, features)`` normals.
    b: ``(rows,)`` offsets.

  Returns:
    ``(rows, features)`` moves ``d``.

  Example:
    >>> d = project_onto_halfspace_linf(jnp.full((1, 2), 0.5), jnp.ones((1, 2)), jnp.array([1.5]))
    >>> d
    Array([[0.25, 0.25]], dtype=float32)
  """
  features = w.shape[1]
  side = jnp.where(jnp.sum(w * t, axis=1) - b >= 0, 1.0, -1.0).astype(w.dtype)
  w = w * side[:, None]
  b = b * side
  active = (w != 0).astype(w.dtype)
  a = (w < 0).astype(w.dtype)
  d = (a - t) * active
  p = a - t * (2 * a - 1)
  order = jnp.argsort(p, axis=1)
  b = b - jnp.sum(w * t, axis=1)
  b0 = jnp.sum(w * d, axis=1)
  descending = order[:, ::-1]
  ws = jnp.take_along_axis(w, descending, axis=1)
  s = jnp.cumsum(jnp.abs(ws), axis=1)
  sb = jnp.cumsum(-ws * jnp.take_along_axis(d, descending, axis=1), axis=1) + b0[:, None]
  p_first = jnp.take_along_axis(p, order[:, :1], axis=1)[:, 0]
  beyond = b - (sb[:, -1] - s[:, -1] * p_first) > 0
  inside = (b - b0 > 0) & ~beyond

  def bisect(_, bounds):
    lo, hi = bounds
    mid = jnp.floor((lo + hi) / 2)
    at = mid.astype(jnp.int32)[:, None]
    index = jnp.take_along_axis(order, features - 1 - at, axis=1)
    level = (
        jnp.take_along_axis(sb, at, axis=1)
        - jnp.take_along_axis(s, at, axis=1) * jnp.take_along_axis(p, index, axis=1)
    )[:, 0]
    up = b - level > 0
    return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

  rows = w.shape[0]
  lo, _ = jax.lax.fori_loop(
      0,
      math.ceil(math.log2(features)),
      bisect,
      (jnp.zeros(rows, w.dtype), jnp.full(rows, features - 1, w.dtype)),
  )
  at = lo.astype(jnp.int32)[:, None]
  lambda_beyond = jnp.maximum((b - sb[:, -1]) / -s[:, -1], 0)[:, None]
  lambda_inside = jnp.maximum(
      (b[:, None] - jnp.take_along_axis(sb, at, axis=1)) / -jnp.take_along_axis(s, at, axis=1), 0
  )
  d_beyond = (2 * a - 1) * lambda_beyond
  d_inside = jnp.minimum(lambda_inside, d) * a + jnp.maximum(-lambda_inside, d) * (1 - a)
  d = jnp.where(beyond[:, None], d_beyond, jnp.where(inside[:, None], d_inside, d))
  return d * active


def _biased_step(x1: Array, x0: Array, w: Array, b: Array, alpha_max: float, eta: float) -> Array:
  """FAB's step from ``x1``, biased toward the clean ``x0``, before clipping to the box.

  Both points are projected onto the linearised boundary ``w . z = b``
  (overshot by ``eta``) and mixed, the clean one's weight ``alpha`` growing
  with how much farther the iterate's projection is (at most ``alpha_max``).
  """
  batch = x0.shape[0]
  moves = project_onto_halfspace_linf(
      jnp.concatenate([x1, x0]), jnp.concatenate([w, w]), jnp.concatenate([b, b])
  )
  d1, d2 = moves[:batch], moves[batch:]
  norms = jnp.maximum(jnp.max(jnp.abs(moves), axis=1, keepdims=True), 1e-8)
  a1, a2 = norms[:batch], norms[batch:]
  alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)
  return (x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha


def _linearised_margin(logits_fn, params, x1, x, y, target):
  """The margin ``z_target - z_y`` at the flat iterate ``x1``, linearised as ``w . z - b``."""

  def margin(flat):
    logits = logits_fn(params, flat.reshape(x.shape).astype(x.dtype))
    z_y = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    z_t = jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]
    return jnp.sum(z_t - z_y), z_t - z_y

  w, f = jax.grad(margin, has_aux=True)(x1)
  return w, -f + jnp.sum(w * x1, axis=1)


def fab_targeted(
    logits_fn: LogitsFn,
    params: Any,
    x: Array,
    y: Array,
    eps: Any,
    *,
    target: Array,
    num_steps: int = 100,
    clip: Clip = (0.0, 1.0),
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> Array:
  """Targeted FAB under the L-infinity norm, from the clean input (no random start).

  Args:
    logits_fn: ``(params, x) -> (batch, classes)`` logits; each example's
      logits depend on that example only.
    params: the model parameters, any pytree.
    x: the clean inputs, inside ``clip``.
    y: ``(batch,)`` integer labels.
    eps: the radius within which a misclassified point counts: a scalar, or
      one value per example.
    target: ``(batch,)`` the class whose margin against ``y`` is linearised.
    num_steps: iterations, a Python int >= 1.
    clip: ``(lo, hi)`` box of valid inputs (FAB's projection assumes the unit box).
    alpha_max: the largest weight of the clean input's projection.
    eta: overshoot of each projection.
    beta: factor toward the clean input after a misclassified step.

  Returns:
    The smallest misclassified point found where it lies within ``eps`` of
    ``x``, else ``x`` itself; shape and dtype of ``x``.

  Example:
    >>> target = jnp.argsort(model.scores(params, x), axis=1)[:, -2]
    >>> x_adv = advjax.fab_targeted(model.scores, params, x, y, 0.1, target=target, num_steps=10)
    >>> bool(jnp.all(jnp.abs(x_adv - x) <= 0.1))
    True
  """
  _validation.check_eps(eps)
  _validation.check_clip(clip)
  _validation.check_batch(x, y)
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}.")
  batch = x.shape[0]
  shape = x.shape
  x0 = attacks._widen(x).reshape(batch, -1)  # pylint: disable=protected-access
  lo, hi = (0.0, 1.0) if clip is None else clip

  def misclassified(flat):
    logits = logits_fn(params, flat.reshape(shape).astype(x.dtype))
    return jnp.argmax(logits, axis=1) != y

  def step(_, state):
    x1, best, best_norm = state
    w, b = _linearised_margin(logits_fn, params, x1, x, y, target)
    x1 = jnp.clip(_biased_step(x1, x0, w, b, alpha_max, eta), lo, hi)
    wrong = misclassified(x1)
    norm = jnp.max(jnp.abs(x1 - x0), axis=1)
    closer = wrong & (norm < best_norm)
    best = jnp.where(closer[:, None], x1, best)
    best_norm = jnp.where(closer, norm, best_norm)
    x1 = jnp.where(wrong[:, None], x0 + (x1 - x0) * beta, x1)
    return x1, best, best_norm

  _, best, best_norm = jax.lax.fori_loop(
      0, num_steps, step, (x0, x0, jnp.full(batch, jnp.inf, x0.dtype))
  )
  radius = jnp.broadcast_to(jnp.asarray(eps, x0.dtype), (batch,))
  found = best_norm <= radius
  x_adv = jnp.where(found[:, None], best, x0).reshape(shape)
  return attacks.project_linf(x, x_adv, eps, clip=clip)
