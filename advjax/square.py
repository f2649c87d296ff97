"""The Square attack (Andriushchenko et al., ECCV 2020) under the L-infinity norm.

A score-based black-box attack: it reads only the logits, never a gradient.
Starting from vertical stripes of +-eps, each query proposes to overwrite a
random square window of the perturbation with +-2 eps per channel (projected
back onto the ball and the box) and keeps the proposal when the margin loss
``z_y - max_{i != y} z_i`` falls. The window's area, a fraction ``p`` of the
image, shrinks over the queries by `square_fraction`'s schedule.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from advjax import _validation
from advjax import attacks
from advjax._types import Array
from advjax._types import Clip
from advjax._types import LogitsFn

__all__ = ["margin", "square", "square_fraction"]


# Square's search narrows to the examples still unbroken, halving its width down to this.
_NARROWEST = 8

# Query counts after which the window fraction halves (on a 10,000-query scale).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def margin(logits: Array, y: Array) -> Array:
  """Per-example margin ``z_y - max_{i != y} z_i``: positive exactly where ``y`` wins.

  Args:
    logits: ``(batch, classes)`` scores.
    y: ``(batch,)`` integer labels.

  Returns:
    ``(batch,)`` margins.

  Example:
    >>> margin(jnp.array([[3., 1., 0.]]), jnp.array([1]))
    Array([-2.], dtype=float32)
  """
  z_y = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits)
  return z_y - jnp.max(others, axis=1)


def square_fraction(query: Any, p_init: float, *, num_queries: int | None = None) -> Array:
  """The fraction of the image a window covers at ``query``: ``p_init`` halved at 10, 50, ...

  The reference's schedule halves ``p`` after 10, 50, 200, 500, 1000, 2000,
  4000, 6000 and 8000 queries. With ``num_queries`` the query is first
  rescaled to a budget of 10,000 (torchattacks' default); AutoAttack's
  standard version does not rescale.

  Args:
    query: the query index (an int or a traced integer).
    p_init: the fraction at the first queries.
    num_queries: the budget to rescale from, or None.

  Returns:
    The fraction, a float32 scalar.

  Example:
    >>> [float(square_fraction(i, 1.0)) for i in (0, 11, 51, 9000)]
    [1.0, 0.5, 0.25, 0.001953125]
  """
  query = jnp.asarray(query)
  if num_queries is not None:
    query = (query * 10000 // num_queries).astype(query.dtype)
  halvings = jnp.sum(query > jnp.asarray(_HALVINGS))
  return jnp.float32(p_init) / 2.0 ** halvings.astype(jnp.float32)


def _image_shape(x: Array, image_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
  """``(height, width, channels)`` of one example of ``x``: ``image_shape``, or read off ``x``."""
  shape = tuple(image_shape or (x.shape[1:] + (1,) if x.ndim == 3 else x.shape[1:]))
  if len(shape) != 3 or math.prod(shape) != math.prod(x.shape[1:]):
    raise ValueError(
        f"image_shape must be (height, width, channels) of one example {x.shape[1:]}, "
        f"got {shape!r}."
    )
  return shape


def _window_steps(
    position_key: Array, sign_key: Array, fraction: Array, images: tuple[int, ...], dtype: Any
) -> Array:
  """Per image a random square window, ``fraction`` of its area, of +-2 per channel; 0 outside.

  ``images`` is ``(batch, height, width, channels)``; the result has that
  shape, in units of eps.
  """
  batch, height, width, channels = images
  side = jnp.maximum(jnp.round(jnp.sqrt(fraction * height * width)), 1).astype(jnp.int32)
  corner = jax.random.uniform(position_key, (2, batch, 1, 1, 1))
  top = (corner[0] * (height - side)).astype(jnp.int32)
  left = (corner[1] * (width - side)).astype(jnp.int32)
  rows = jnp.arange(height)[None, :, None, None]
  cols = jnp.arange(width)[None, None, :, None]
  window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
  signs = jax.random.rademacher(sign_key, (batch, 1, 1, channels), dtype)
  return jnp.where(window, 2 * signs, 0)


def square(
    logits_fn: LogitsFn,
    params: Any,
    x: Array,
    y: Array,
    eps: Any,
    *,
    key: Array,
    num_queries: int = 5000,
    p_init: float = 0.8,
    image_shape: tuple[int, int, int] | None = None,
    clip: Clip = (0.0, 1.0),
    rescale_schedule: bool = False,
) -> Array:
  """The L-infinity Square attack, stopping once every example is misclassified.

  Each example draws its own window position and signs (the reference shares
  them across the batch). The search is a ``jax.lax.while_loop`` over at most
  ``num_queries`` proposals; examples already misclassified stay put. Once at
  most half of the examples it queries are still correctly classified, it
  gathers those into a batch half as wide (down to 8 wide), as the reference
  queries only the examples not yet broken: a few robust examples do not pay
  for the whole batch's queries.

  Args:
    logits_fn: ``(params, x) -> (batch, classes)`` logits.
    params: the model parameters, any pytree.
    x: the clean inputs, inside ``clip``.
    y: ``(batch,)`` integer labels.
    eps: radius of the L-infinity ball: a scalar, or one value per example.
    key: PRNG key.
    num_queries: the largest number of proposals, a Python int >= 1.
    p_init: the window's initial fraction of the image (0.8 in AutoAttack).
    image_shape: ``(height, width, channels)`` of one example, when
      ``x.shape[1:]`` is not already that (for example flat MNIST vectors:
      ``(28, 28, 1)``); a 2-D ``x.shape[1:]`` means one channel.
    clip: ``(lo, hi)`` box of valid inputs, or None.
    rescale_schedule: rescale `square_fraction`'s schedule to ``num_queries``
      (torchattacks' default) instead of AutoAttack's fixed one.

  Returns:
    The adversarial inputs, with the shape and dtype of ``x``, within ``eps``
    of ``x`` exactly.

  Example:
    >>> x_adv = advjax.square(model.scores, params, x, y, 0.1, key=key,
    ...                       num_queries=20, image_shape=(28, 28, 1))
    >>> bool(jnp.all(jnp.abs(x_adv - x) <= 0.1)), bool(jnp.all(x_adv >= 0))
    (True, True)
  """
  _validation.check_eps(eps)
  _validation.check_clip(clip)
  _validation.check_batch(x, y)
  if not isinstance(num_queries, int) or num_queries < 1:
    raise ValueError(f"num_queries must be an int >= 1, got {num_queries!r}.")
  height, width, channels = _image_shape(x, image_shape)
  batch = x.shape[0]
  eps_rows = jnp.broadcast_to(jnp.asarray(eps), (batch,))

  def score(point, rows):
    return margin(logits_fn(params, point), y[rows])

  def project(point, rows):
    return attacks.project_linf(x[rows], point, eps_rows[rows], clip=clip)

  stripes_key, key = jax.random.split(key)
  stripes = jax.random.rademacher(stripes_key, (batch, 1, width, channels), x.dtype)
  radius = attacks.broadcast_eps(eps_rows, attacks._widen(x))  # pylint: disable=protected-access
  everyone = jnp.arange(batch)
  start = project(
      x + radius * jnp.broadcast_to(stripes, (batch, height, width, channels)).reshape(x.shape),
      everyone,
  )
  state = (jnp.int32(0), start, score(start, everyone), key)
  image = (height, width, channels)
  schedule = num_queries if rescale_schedule else None
  search = functools.partial(_search, score, project, radius, image, num_queries, p_init, schedule)
  for size, until in _stages(batch):
    state = search(state, size, until)
  return state[1]


def _stages(batch):
  """``(size, until)`` of each search stage: the whole batch, then halves down to `_NARROWEST`
  wide; a stage ends once at most ``until`` (the next stage's size) of its examples hold."""
  sizes = [batch]
  while sizes[-1] > _NARROWEST:
    sizes.append(sizes[-1] // 2)
  return list(zip(sizes, sizes[1:] + [0]))


def _search(score, project, radius, image, num_queries, p_init, schedule, state, size, until):
  """Square's random search on the ``size`` examples of ``state`` still correctly classified
  (and others to fill up), until at most ``until`` of them are or the queries run out.

  ``state`` is ``(query, best, best_margin, key)`` for the whole batch; the
  proposals go to ``size`` rows gathered from it and the rows are written back.
  """
  query, best, best_margin, key = state
  rows = jnp.argsort(best_margin <= 0, stable=True)[:size]  # the unbroken ones first
  rows_radius = radius[rows]

  def body(carry):
    query, point, point_margin, key = carry
    key, position_key, sign_key = jax.random.split(key, 3)
    fraction = square_fraction(query, p_init, num_queries=schedule)
    steps = _window_steps(position_key, sign_key, fraction, (size, *image), point.dtype)
    proposal = project(point + steps.reshape(point.shape) * rows_radius, rows)
    proposal_margin = score(proposal, rows)
    live = point_margin > 0
    better = live & ((proposal_margin < point_margin) | (proposal_margin <= 0))
    point = jnp.where(better.reshape((size,) + (1,) * (point.ndim - 1)), proposal, point)
    return query + 1, point, jnp.where(better, proposal_margin, point_margin), key

  def cond(carry):
    query, _, point_margin, _ = carry
    return (query < num_queries) & (jnp.sum(point_margin > 0) > until)

  query, point, point_margin, key = jax.lax.while_loop(
      cond, body, (query, best[rows], best_margin[rows], key)
  )
  return query, best.at[rows].set(point), best_margin.at[rows].set(point_margin), key
