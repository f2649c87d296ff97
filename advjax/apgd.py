"""Auto-PGD (Croce & Hein, ICML 2020): PGD with its own step-size schedule, and its losses.

APGD needs the logits, not only a loss: its losses (the DLR loss among them) and
its success test (a misclassified point) read them. ``logits_fn`` has the
signature ``logits_fn(params, x) -> logits`` of shape ``(batch, classes)`` for
any params pytree; each example's logits must depend on that example only (no
batch statistics), since the attack differentiates the batch's summed loss.

An ``objective`` is a per-example loss ``objective(logits, y) -> (batch,)``
that the attack raises: `cross_entropy`, `dlr_loss`, or a targeted one bound to
its targets, ``functools.partial(targeted_dlr_loss, target=target)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from advjax import _validation
from advjax import attacks
from advjax._types import Array
from advjax._types import Clip
from advjax._types import LogitsFn

__all__ = [
    "LogitsFn",
    "Objective",
    "apgd",
    "apgd_checkpoints",
    "cross_entropy",
    "dlr_loss",
    "targeted_dlr_loss",
]

Objective = Callable[[Array, Array], Array]


def cross_entropy(logits: Array, y: Array) -> Array:
  """Per-example softmax cross-entropy of integer labels ``y``.

  Args:
    logits: ``(batch, classes)`` scores.
    y: ``(batch,)`` integer labels.

  Returns:
    ``(batch,)`` losses.

  Example:
    >>> cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))
    Array([1.3862944], dtype=float32)
  """
  log_probs = jax.nn.log_softmax(logits)
  return -jnp.take_along_axis(log_probs, y[:, None], axis=1)[:, 0]


def dlr_loss(logits: Array, y: Array) -> Array:
  """The difference of logits ratio: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``.

  ``pi`` orders the logits decreasingly. The loss is invariant to shifting and
  to (positive) scaling of the logits, and is positive exactly where the point
  is misclassified. Needs three or more classes.

  Args:
    logits: ``(batch, classes)`` scores.
    y: ``(batch,)`` integer labels.

  Returns:
    ``(batch,)`` losses.

  Example:
    >>> dlr_loss(jnp.array([[3., 1., 0.]]), jnp.array([0]))
    Array([-0.6666667], dtype=float32)
  """
  ordered = jnp.sort(logits, axis=1)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  top_is_y = jnp.argmax(logits, axis=1) == y
  other = jnp.where(top_is_y, ordered[:, -2], ordered[:, -1])
  return -(z_y - other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def targeted_dlr_loss(logits: Array, y: Array, target: Array) -> Array:
  """The targeted DLR loss: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

  Args:
    logits: ``(batch, classes)`` scores, four or more classes.
    y: ``(batch,)`` true labels.
    target: ``(batch,)`` labels the attack pushes toward.

  Returns:
    ``(batch,)`` losses.

  Example:
    >>> targeted_dlr_loss(jnp.array([[3., 1., 0., -1.]]), jnp.array([0]), jnp.array([1]))
    Array([-0.5714286], dtype=float32)
  """
  ordered = jnp.sort(logits, axis=1)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  z_t = jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]
  return -(z_y - z_t) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12)


def apgd_checkpoints(num_steps: int) -> tuple[int, int, int]:
  """APGD's checkpoint spacing: the first interval, its minimum and its decrement.

  The step size is reviewed after the first interval, then after intervals
  that shrink by the decrement down to the minimum: 22%, 6% and 3% of the
  budget (at least one step each), as in the reference code.

  Args:
    num_steps: the iteration budget.

  Returns:
    ``(first, minimum, decrement)`` in steps.

  Example:
    >>> apgd_checkpoints(100)
    (22, 6, 3)
  """
  return max(int(0.22 * num_steps), 1), max(int(0.06 * num_steps), 1), max(int(0.03 * num_steps), 1)


def apgd(
    logits_fn: LogitsFn,
    params: Any,
    x: Array,
    y: Array,
    eps: Any,
    *,
    objective: Objective,
    key: Array,
    num_steps: int = 100,
    num_restarts: int = 1,
    clip: Clip = (0.0, 1.0),
    rho: float = 0.75,
    momentum: float = 0.75,
) -> Array:
  """Auto-PGD under the L-infinity norm, keeping the worst case of its restarts.

  Each run starts from a random corner-scaled point of the ball, steps by
  ``step * sign(grad)`` with ``momentum`` on the previous move, and starts
  with ``step = 2 * eps``. At each checkpoint (see `apgd_checkpoints`) an
  example's step halves, and it goes back to its best point, when its
  objective rose on at most a fraction ``rho`` of the steps since the last
  checkpoint, or when its step was not halved last time and its best
  objective did not improve since. Restarts run on every example (the
  shapes stay fixed under ``jit``); an example keeps the first misclassified
  point found, or else the point of highest objective over all runs. Run
  ``r`` draws its start from ``jax.random.fold_in(key, r)``, so the first
  ``n`` runs do not depend on ``num_restarts``.

  Args:
    logits_fn: ``(params, x) -> (batch, classes)`` logits.
    params: the model parameters, any pytree.
    x: the clean inputs, inside ``clip``.
    y: ``(batch,)`` integer labels: a point counts as broken when its
      prediction differs from ``y``, targeted objective or not.
    eps: radius of the L-infinity ball: a scalar, or one value per example.
    objective: per-example loss ``(logits, y) -> (batch,)`` to raise.
    key: PRNG key for the random starts.
    num_steps: iterations per run, a Python int >= 1.
    num_restarts: independent runs, a Python int >= 1.
    clip: ``(lo, hi)`` box of valid inputs, or None.
    rho: the fraction of rising steps below which the step halves.
    momentum: weight of the new step against the previous move (0.75).

  Returns:
    The adversarial inputs, with the shape and dtype of ``x``, within ``eps``
    of ``x`` exactly.

  Example:
    >>> x_adv = advjax.apgd(model.scores, params, x, y, 0.1,
    ...                     objective=advjax.cross_entropy, key=key, num_steps=10)
    >>> bool(jnp.all(jnp.abs(x_adv - x) <= 0.1))
    True
  """
  _validation.check_eps(eps)
  _validation.check_clip(clip)
  _validation.check_batch(x, y)
  for name, value in (("num_steps", num_steps), ("num_restarts", num_restarts)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be an int >= 1, got {value!r}.")

  def run(carry, restart):
    best, broken, best_loss = carry
    run_key = jax.random.fold_in(key, restart)
    x_adv, x_broken, loss = _apgd_run(
        logits_fn, params, x, y, eps, objective, run_key, num_steps, clip, rho, momentum
    )
    take = ~broken & (x_broken | (loss > best_loss))
    best = jnp.where(_rows(take, x), x_adv, best)
    return (best, broken | x_broken, jnp.where(take, loss, best_loss)), None

  start = (x, jnp.zeros(x.shape[0], bool), jnp.full(x.shape[0], -jnp.inf))
  (best, _, _), _ = jax.lax.scan(run, start, jnp.arange(num_restarts))
  return best


def _rows(mask: Array, x: Array) -> Array:
  """A per-example mask shaped to broadcast against ``x``."""
  return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def _apgd_run(logits_fn, params, x, y, eps, objective, key, num_steps, clip, rho, momentum):
  """One APGD run: its adversarial point, whether it is misclassified, and its objective."""
  wide = attacks._widen(x)  # pylint: disable=protected-access
  radius = attacks.broadcast_eps(eps, wide)
  batch = x.shape[0]
  first, minimum, decrement = apgd_checkpoints(num_steps)

  def project(point):
    return attacks._widen(attacks.project_linf(x, point, eps, clip=clip))  # pylint: disable=protected-access

  def evaluate(point):
    def total(point):
      logits = logits_fn(params, point)
      losses = objective(logits, y)
      return jnp.sum(losses), (losses, logits)

    grad, (losses, logits) = jax.grad(total, has_aux=True)(point)
    return losses, jnp.argmax(logits, axis=1) != y, grad

  noise = jax.random.uniform(key, x.shape, wide.dtype, minval=-1, maxval=1)
  peak = jnp.max(jnp.abs(noise.reshape(batch, -1)), axis=1)
  x_adv = project(wide + radius * noise / _rows(peak, x))
  loss, broken, grad = evaluate(x_adv)
  state = dict(
      x_adv=x_adv,
      x_old=x_adv,
      grad=grad,
      x_best=x_adv,
      grad_best=grad,
      loss_best=loss,
      x_found=x_adv,
      broken=broken,
      step=jnp.broadcast_to(2.0 * radius, (batch,) + (1,) * (x.ndim - 1)),
      losses=jnp.zeros((num_steps, batch), loss.dtype),
      since=jnp.int32(0),
      interval=jnp.int32(first),
      loss_at_check=loss,
      halved_at_check=jnp.ones(batch, bool),
  )

  def body(i, s):
    weight = jnp.where(i > 0, momentum, 1.0).astype(wide.dtype)
    moved = project(s["x_adv"] + s["step"] * jnp.sign(s["grad"]))
    x_new = project(
        s["x_adv"] + (moved - s["x_adv"]) * weight + (s["x_adv"] - s["x_old"]) * (1 - weight)
    )
    loss, wrong, grad = evaluate(x_new)
    losses = s["losses"].at[i].set(loss)
    better = loss > s["loss_best"]
    x_best = jnp.where(_rows(better, x), x_new, s["x_best"])
    grad_best = jnp.where(_rows(better, x), grad, s["grad_best"])
    loss_best = jnp.where(better, loss, s["loss_best"])
    since = s["since"] + 1
    check = since == s["interval"]
    stalled = _stalled(losses, i, s["interval"], rho, s, loss_best)
    halve = check & stalled
    return dict(
        x_adv=jnp.where(_rows(halve, x), x_best, x_new),
        x_old=s["x_adv"],
        grad=jnp.where(_rows(halve, x), grad_best, grad),
        x_best=x_best,
        grad_best=grad_best,
        loss_best=loss_best,
        x_found=jnp.where(_rows(wrong, x), x_new, s["x_found"]),
        broken=s["broken"] | wrong,
        step=jnp.where(_rows(halve, x), s["step"] / 2, s["step"]),
        losses=losses,
        since=jnp.where(check, 0, since),
        interval=jnp.where(check, jnp.maximum(s["interval"] - decrement, minimum), s["interval"]),
        loss_at_check=jnp.where(check, loss_best, s["loss_at_check"]),
        halved_at_check=jnp.where(check, stalled, s["halved_at_check"]),
    )

  s = jax.lax.fori_loop(0, num_steps, body, state)
  x_out = jnp.where(_rows(s["broken"], x), s["x_found"], s["x_best"])
  return attacks.project_linf(x, x_out, eps, clip=clip), s["broken"], s["loss_best"]


def _stalled(losses, i, interval, rho, s, loss_best):
  """APGD's checkpoint test: too few rising steps, or no gain since an unhalved checkpoint."""
  # The reference compares losses[j] with losses[j - 1] cyclically: at the
  # first checkpoint losses[0] meets the still-zero last entry.
  rises = losses > jnp.roll(losses, 1, axis=0)
  steps = jnp.arange(losses.shape[0])[:, None]
  window = (steps <= i) & (steps > i - interval)
  stalled = jnp.sum(rises & window, axis=0) <= interval * rho
  return stalled | (~s["halved_at_check"] & (s["loss_at_check"] >= loss_best))
