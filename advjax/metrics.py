"""How the paper scores a classifier: error, and confidence on its mistakes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from advjax import _validation

Array = jax.Array


def mistakes(probs: Array, labels: Array) -> Array:
  """Where the model is wrong: its top class is not the label, or its row holds a NaN."""
  wrong = jnp.argmax(probs, axis=-1) != labels
  return wrong | jnp.any(jnp.isnan(probs), axis=-1)


def error_and_confidence(probs: Array, labels: Array) -> tuple[Array, Array]:
  """Error rate and mean confidence on the misclassified examples.

  "Confidence" is the probability the model gives its predicted class,
  averaged over the examples it gets wrong, as the paper reports it (for
  instance 89.4% error with 97.6% confidence for FGSM on maxout). ``probs``
  need not sum to one: the RBF network's per-class scores are used as they are.

  Args:
    probs: class probabilities or scores, shape ``(n, classes)``.
    labels: integer labels, shape ``(n,)``.

  Returns:
    ``(error, confidence)``: scalars in [0, 1]; confidence is NaN when there
    is no mistake.

  Example:
    >>> error, confidence = error_and_confidence(jax.nn.softmax(logits), y)
  """
  _validation.check_batch(probs, labels)
  predicted = jnp.argmax(probs, axis=-1)
  wrong = predicted != labels
  confidence = jnp.max(probs, axis=-1)
  return jnp.mean(wrong), _masked_mean(confidence, wrong)


def rubbish_error_and_confidence(probs: Array, threshold: float = 0.5) -> tuple[Array, Array]:
  """Error on inputs of no class: any class given probability above ``threshold``.

  Section 9 of the paper counts a Gaussian rubbish input as misclassified when
  the model gives some class a probability above 0.5.

  Args:
    probs: class probabilities or scores, shape ``(n, classes)``.
    threshold: probability above which a class counts as claimed.

  Returns:
    ``(error, confidence)``: the fraction of inputs with a claimed class, and the
    mean top probability over those (NaN when there is none).

  Example:
    >>> error, confidence = rubbish_error_and_confidence(jax.nn.softmax(logits))
  """
  top = jnp.max(probs, axis=-1)
  wrong = top > threshold
  return jnp.mean(wrong), _masked_mean(top, wrong)


def _masked_mean(values: Array, mask: Array) -> Array:
  """Mean of ``values`` where ``mask`` holds; NaN where it never does."""
  count = jnp.sum(mask)
  total = jnp.sum(jnp.where(mask, values, 0))
  return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)
