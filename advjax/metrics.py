"""How the paper scores a classifier: error, and confidence on its mistakes.

One rule decides what a mistake is, in every metric and sweep: `mistakes`. A
prediction holding a NaN (NaN inputs, NaN parameters) is a mistake, never the
class its argmax happens to land on.
"""

from __future__ import annotations

import jax.numpy as jnp

from advjax import _validation
from advjax._types import Array

__all__ = [
    "error_and_confidence",
    "mistakes",
    "rubbish_error_and_confidence",
]


def mistakes(probs: Array, labels: Array) -> Array:
  """Where the model is wrong: its top class is not the label, or its row holds a NaN.

  Args:
    probs: class probabilities, scores or logits, shape ``(..., classes)``.
    labels: integer labels, of the shape of ``probs`` without its last axis.

  Returns:
    A boolean array of the shape of ``labels``.

  Example:
    >>> mistakes(jnp.array([[0.9, 0.1], [jnp.nan, 0.0]]), jnp.array([0, 0]))
    Array([False,  True], dtype=bool)
  """
  wrong = jnp.argmax(probs, axis=-1) != labels
  return wrong | jnp.any(jnp.isnan(probs), axis=-1)


def error_and_confidence(probs: Array, labels: Array) -> tuple[Array, Array]:
  """Error rate and mean confidence on the misclassified examples.

  "Confidence" is the probability the model gives its predicted class,
  averaged over the examples it gets wrong, as the paper reports it (for
  instance 89.4% error with 97.6% confidence for FGSM on maxout). ``probs``
  need not sum to one: the RBF network's per-class scores are used as they are.
  A row holding a NaN counts as a mistake (see `mistakes`) whose confidence is
  NaN, so the mean confidence is NaN too.

  Args:
    probs: class probabilities or scores, shape ``(n, classes)``.
    labels: integer labels, shape ``(n,)``.

  Returns:
    ``(error, confidence)``: scalars in [0, 1]; confidence is NaN when there
    is no mistake, or when a mistaken row holds a NaN.

  Example:
    >>> probs = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> error, confidence = error_and_confidence(probs, jnp.array([0, 0, 1]))
    >>> round(float(error), 3), round(float(confidence), 3)  # two mistakes, at 0.8 and 0.6
    (0.667, 0.7)
  """
  _validation.check_batch(probs, labels)
  wrong = mistakes(probs, labels)
  return jnp.mean(wrong), _masked_mean(jnp.max(probs, axis=-1), wrong)


def rubbish_error_and_confidence(probs: Array, threshold: float = 0.5) -> tuple[Array, Array]:
  """Error on inputs of no class: any class given probability above ``threshold``.

  Section 9 of the paper counts a Gaussian rubbish input as misclassified when
  the model gives some class a probability above 0.5. A row holding a NaN
  counts as an error too, with NaN confidence.

  Args:
    probs: class probabilities or scores, shape ``(n, classes)``.
    threshold: probability above which a class counts as claimed.

  Returns:
    ``(error, confidence)``: the fraction of inputs with a claimed class (or a
    NaN), and the mean top probability over those (NaN when there is none, or
    when one of them holds a NaN).

  Example:
    >>> probs = jax.nn.softmax(jnp.array([[0.0, 0.0], [3.0, 0.0]]))
    >>> error, confidence = rubbish_error_and_confidence(probs)
    >>> round(float(error), 3), round(float(confidence), 3)  # row 2 claims class 0
    (0.5, 0.953)
  """
  top = jnp.max(probs, axis=-1)
  wrong = (top > threshold) | jnp.isnan(top)
  return jnp.mean(wrong), _masked_mean(top, wrong)


def _masked_mean(values: Array, mask: Array) -> Array:
  """Mean of ``values`` where ``mask`` holds; NaN where it never does."""
  count = jnp.sum(mask)
  total = jnp.sum(jnp.where(mask, values, 0))
  return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)
