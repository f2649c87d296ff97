"""Argument checks shared by the public functions.

A check raises ValueError at once on values that are known when the function
is traced (Python numbers, NumPy arrays, concrete JAX arrays). Values only
known at run time (traced under ``jit``, ``vmap`` or ``grad``) get a
``checkify.debug_check`` instead: a no-op in plain ``jit``, it raises when the
caller wraps the computation in ``jax.experimental.checkify.checkify``::

    err, x_adv = checkify.checkify(jax.jit(attack))(params, x, y, eps)
    err.throw()  # ValueError: eps must be finite and >= 0, got nan.
"""

from __future__ import annotations

from typing import Any

import jax
from jax import core
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np


def concrete_value(value: Any) -> np.ndarray | None:
  """Returns ``value`` as a NumPy array, or None when it is only known at run time."""
  if isinstance(value, core.Tracer):
    return None
  try:
    return np.asarray(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def check_eps(eps: Any, name: str = "eps") -> None:
  """Raises ValueError if ``eps`` is negative or not finite (under checkify if traced)."""
  value = concrete_value(eps)
  if value is not None and not np.issubdtype(value.dtype, np.number):
    raise ValueError(f"{name} must be a number or an array of numbers, got {eps!r}.")
  if value is None:
    eps = jnp.asarray(eps)
    checkify.debug_check(
        jnp.all(jnp.isfinite(eps) & (eps >= 0)), f"{name} must be finite and >= 0, got {{}}.", eps
    )
    return
  if not np.all(np.isfinite(value)):
    raise ValueError(f"{name} must be finite, got {eps!r}.")
  if np.any(value < 0):
    raise ValueError(f"{name} must be >= 0, got {eps!r}.")


def check_alpha(alpha: Any) -> None:
  """Raises ValueError if ``alpha`` lies outside [0, 1] (under checkify if traced)."""
  value = concrete_value(alpha)
  if value is None:
    alpha = jnp.asarray(alpha)
    checkify.debug_check(
        jnp.all((alpha >= 0) & (alpha <= 1)), "alpha must lie in [0, 1], got {}.", alpha
    )
    return
  if not np.all(np.isfinite(value)) or np.any(value < 0) or np.any(value > 1):
    raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}.")


def check_clip(clip: tuple[Any, Any] | None) -> None:
  """Raises ValueError unless ``clip`` is None or a ``(lo, hi)`` pair with lo <= hi.

  Traced bounds are compared under checkify. NaN bounds fail, known or traced.
  """
  if clip is None:
    return
  if not isinstance(clip, (tuple, list)) or len(clip) != 2:
    raise ValueError(f"clip must be None or a (lo, hi) pair, got {clip!r}.")
  lo, hi = (concrete_value(bound) for bound in clip)
  if lo is None or hi is None:
    lo, hi = (jnp.asarray(bound) for bound in clip)
    checkify.debug_check(jnp.all(lo <= hi), "clip must have lo <= hi, got ({}, {}).", lo, hi)
    return
  if not np.all(lo <= hi):  # NaN bounds fail too, as under checkify
    raise ValueError(f"clip must have lo <= hi, got {clip!r}.")


def check_batch(x: Any, y: Any) -> None:
  """Raises ValueError when batched ``x`` and ``y`` disagree on the batch size.

  ``x`` counts as batched when it has two or more axes (one example is a
  vector); ``y`` when it has one or more (integer labels, +-1 targets or
  one-hot rows). A single unbatched image with one-hot labels should be given
  a leading batch axis of 1.
  """
  x_shape, y_shape = np.shape(x), np.shape(y)
  if len(x_shape) >= 2 and len(y_shape) >= 1 and x_shape[0] != y_shape[0]:
    raise ValueError(
        "x and y must have the same batch size, got x with shape "
        f"{tuple(x_shape)} and y with shape {tuple(y_shape)}."
    )


def check_label_vector(y: Any) -> None:
  """Raises ValueError unless ``y`` has the shape ``(n,)`` of integer labels."""
  if np.ndim(y) != 1:
    raise ValueError(f"y must hold integer labels of shape (n,), got shape {np.shape(y)}.")


def check_labels(y: Any, classes: int) -> None:
  """Raises ValueError when known integer labels ``y`` fall outside ``0..classes-1``.

  Traced labels are not checked (a comparison under ``jit`` would cost a
  host round trip on every step); float labels (one-hot rows, +-1 targets)
  are left to the loss.
  """
  value = concrete_value(y)
  if value is None or not np.issubdtype(value.dtype, np.integer) or value.size == 0:
    return
  low, high = int(value.min()), int(value.max())
  if low < 0 or high >= classes:
    bad = low if low < 0 else high
    raise ValueError(f"y must hold class labels in 0..{classes - 1}, got {bad}.")
