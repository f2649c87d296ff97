"""How the paper scores a trained model: clean error and error under FGSM, on a whole split.

Every function here is one compiled call over the whole split: the split is
cut into fixed-size batches on the device (the last one padded by repeating
its final example, then dropped from the results) and `jax.lax.map` walks
them, so there is no per-batch host loop and one compilation serves every
split of a size. The attack is FGSM against the model's evaluation loss
(dropout off), as the paper's numbers are; the scores are
`advjax.error_and_confidence`'s, where a NaN prediction counts as a mistake.

Example:
  >>> sorted(evaluate(model, params, data.test, eps=0.25))  # fgsm_error: 0.894 in the paper
  ['confidence', 'error', 'fgsm_confidence', 'fgsm_error']
  >>> x_adv = fgsm_examples(model, params, data.test.x, data.test.y, eps=0.25)
  >>> other_model = models.softmax_regression()
  >>> other_params = other_model.init(jax.random.key(1), x[:1])
  >>> error, confidence = score(other_model, other_params, x_adv, data.test.y)  # transfer
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import _trees
from advjax import metrics
from advjax._batching import map_batches
from advjax._types import Array
from advjax._types import Clip
from advjax._types import Params
from advjax.attacks import fgsm
from advjax.attacks import pgd
from advjax.models import Classifier

__all__ = [
    "DeviceSplit",
    "SCORES",
    "as_classes",
    "device_split",
    "evaluate",
    "evaluate_members",
    "fgsm_examples",
    "map_batches",
    "pgd_error",
    "probabilities",
    "score",
]

SCORES = ("error", "confidence", "fgsm_error", "fgsm_confidence")
"""The keys of `evaluate`'s scores."""


class DeviceSplit(NamedTuple):
  """A split's ``x`` and ``y`` held on a device."""

  x: Array
  y: Array


def device_split(split: Any) -> DeviceSplit:
  """``split``'s ``x`` and ``y`` on this host's first device, for repeated scoring.

  Scoring a split on the host copies it to the device on every call; this
  copies it once.

  Example:
    >>> valid = device_split(data.valid)
    >>> result = evaluate(model, params, valid, eps=0.25)
  """
  device = jax.local_devices()[0]
  return DeviceSplit(*jax.device_put((np.asarray(split.x), np.asarray(split.y)), device))


def as_classes(y: Array) -> Array:
  """Labels as class indices: +-1 labels (logistic regression) become 0/1."""
  y = jnp.asarray(y)
  return (y > 0).astype(jnp.int32) if jnp.issubdtype(y.dtype, jnp.floating) else y


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def probabilities(model: Classifier, params: Params, x: Array, *, batch_size: int = 1000) -> Array:
  """The model's class probabilities on many inputs, no dropout.

  Args:
    model: the classifier.
    params: its parameters.
    x: inputs, shape ``(n, features)``.
    batch_size: examples per batch (a memory knob only).

  Returns:
    An array of shape ``(n, classes)``.

  Example:
    >>> probs = probabilities(model, params, data.test.x)
    >>> probs.shape
    (100, 10)
  """
  return map_batches(functools.partial(model.probabilities, params), (x,), batch_size)


@functools.partial(jax.jit, static_argnames=("model", "clip", "batch_size"))
def fgsm_examples(
    model: Classifier,
    params: Params,
    x: Array,
    y: Array,
    eps: Any,
    *,
    clip: Clip = None,
    batch_size: int = 1000,
) -> Array:
  """FGSM examples against the model's evaluation loss (no dropout).

  Args:
    model: the classifier attacked.
    params: its parameters.
    x: clean inputs, shape ``(n, features)``.
    y: their labels.
    eps: the FGSM step.
    clip: optional ``(lo, hi)`` box (a tuple); the paper's numbers use none.
    batch_size: examples per batch; the sign of an example's gradient does
      not depend on it.

  Returns:
    An array shaped like ``x``.

  Example:
    >>> x_adv = fgsm_examples(model, params, data.test.x, data.test.y, eps=0.25)
    >>> float(jnp.abs(x_adv - data.test.x).max())
    0.25
  """
  attack = lambda xb, yb: fgsm(model.loss_fn(), params, xb, yb, eps, clip=clip)
  return map_batches(attack, (x, y), batch_size)


def _paper_scores(
    model: Classifier,
    params: Params,
    x: Array,
    y: Array,
    eps: Any,
    *,
    clip: Clip = None,
    batch_size: int = 1000,
) -> dict[str, Array]:
  """The paper's scores as a pure, jittable and vmappable function.

  Args:
    model: the classifier.
    params: its parameters.
    x: inputs, shape ``(n, features)``.
    y: labels (for logistic regression +-1, scored as classes 0/1).
    eps: FGSM epsilon.
    clip: optional box for the FGSM examples (None in the paper).
    batch_size: examples per batch.

  Returns:
    ``{"error", "confidence", "fgsm_error", "fgsm_confidence"}`` as scalars:
    error rates and mean confidence on the mistakes (NaN without mistakes).
  """
  loss_fn = model.loss_fn()

  def both(xb, yb):
    x_adv = fgsm(loss_fn, params, xb, yb, eps, clip=clip)
    return model.probabilities(params, xb), model.probabilities(params, x_adv)

  clean, adversarial = map_batches(both, (x, y), batch_size)
  classes = as_classes(y)
  return dict(
      zip(
          SCORES,
          (
              *metrics.error_and_confidence(clean, classes),
              *metrics.error_and_confidence(adversarial, classes),
          ),
      )
  )


@functools.partial(jax.jit, static_argnames=("model", "clip", "batch_size"))
def _evaluate_members(
    model: Classifier,
    stacked_params: Params,
    x: Array,
    y: Array,
    eps: Array,
    clip: Clip,
    batch_size: int,
) -> dict[str, Array]:
  return jax.vmap(
      lambda params, e: _paper_scores(model, params, x, y, e, clip=clip, batch_size=batch_size)
  )(stacked_params, eps)


def evaluate_members(
    model: Classifier,
    stacked_params: Params,
    split: Any,
    *,
    eps: Any,
    clip: Clip = None,
    batch_size: int = 1000,
) -> dict[str, np.ndarray]:
  """`evaluate` of every member of a stacked population, in one compiled call.

  Args:
    model: the members' classifier.
    stacked_params: their parameters, stacked along a leading member axis.
    split: anything with ``x`` and ``y``, ideally already on the device.
    eps: FGSM epsilon: one for all, or one per member.
    clip: optional box (a tuple) for the FGSM examples.
    batch_size: examples per batch.

  Returns:
    The keys of `evaluate`, each a float64 NumPy array with one entry per member.

  Raises:
    ValueError: ``eps`` a list whose length is not the number of members.

  Example:
    >>> evaluate_members(model, stacked, data.valid, eps=0.25)["error"].shape
    (3,)
  """
  members = jax.tree.leaves(stacked_params)[0].shape[0]
  eps = _trees.per_member(eps, members)
  result = _evaluate_members(
      model,
      stacked_params,
      split.x,
      split.y,
      eps,
      None if clip is None else tuple(clip),
      batch_size,
  )
  return {name: np.asarray(value, np.float64) for name, value in result.items()}


def evaluate(
    model: Classifier,
    params: Params,
    split: Any,
    *,
    eps: Any,
    clip: Clip = None,
    batch_size: int = 1000,
) -> dict[str, float]:
  """The paper's scores of a model on a split: clean, and under FGSM.

  Args:
    model: the classifier.
    params: its parameters.
    split: anything with ``x`` and ``y`` (an `advjax.data.Split`).
    eps: FGSM epsilon (the paper uses 0.25 on MNIST).
    clip: optional box for the FGSM examples (None in the paper).
    batch_size: examples per batch.

  Returns:
    ``{"error", "confidence", "fgsm_error", "fgsm_confidence"}``: error rates
    and mean confidence on the mistakes, as floats (NaN without mistakes).

  Example:
    >>> result = evaluate(model, params, data.test, eps=0.25)
    >>> result["fgsm_error"] > result["error"]
    True
  """
  stacked = jax.tree.map(lambda leaf: jnp.asarray(leaf)[None], params)
  result = evaluate_members(model, stacked, split, eps=eps, clip=clip, batch_size=batch_size)
  return {name: float(value[0]) for name, value in result.items()}


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def _error_and_confidence(
    model: Classifier, params: Params, x: Array, y: Array, batch_size: int
) -> tuple[Array, Array]:
  probs = probabilities(model, params, x, batch_size=batch_size)
  return metrics.error_and_confidence(probs, as_classes(y))


def score(
    model: Classifier, params: Params, x: Any, y: Any, *, batch_size: int = 1000
) -> tuple[float, float]:
  """Error and confidence on the mistakes (`advjax.error_and_confidence`) on ``(x, y)``.

  Args:
    model: the classifier.
    params: its parameters.
    x: inputs.
    y: labels (for logistic regression +-1, scored as classes 0/1).
    batch_size: examples per batch.

  Returns:
    ``(error, confidence)`` as floats; confidence is NaN without mistakes.

  Example:
    >>> x_adv = fgsm_examples(model, params, x, y, eps=0.25)
    >>> error, _ = score(model, params, x_adv, y)
    >>> error >= score(model, params, x, y)[0]
    True
  """
  error, confidence = _error_and_confidence(model, params, x, y, batch_size)
  return float(error), float(confidence)


@functools.partial(
    jax.jit, static_argnames=("model", "num_steps", "restarts", "clip", "batch_size")
)
def pgd_error(
    model: Classifier,
    params: Params,
    x: Array,
    y: Array,
    eps: Any,
    *,
    step_size: Any,
    num_steps: int,
    restarts: int,
    key: Array,
    clip: Clip = None,
    batch_size: int = 1000,
) -> Array:
  """Error under PGD with random starts: an example counts once any restart fools it.

  The attack is `advjax.pgd` against the model's evaluation loss (dropout
  off), from ``restarts`` uniform random starts in the eps-ball, each
  ``num_steps`` sign steps of ``step_size``, projected onto the ball and the
  ``clip`` box. "Best of R restarts": an example is misclassified when the
  model errs on the adversarial input of at least one of them.

  Args:
    model: the classifier attacked.
    params: its parameters.
    x: clean inputs, shape ``(n, features)``.
    y: their labels.
    eps: radius of the L-infinity ball.
    step_size: size of each sign step.
    num_steps: steps per restart.
    restarts: random starts, >= 1.
    key: PRNG key of the random starts.
    clip: optional ``(lo, hi)`` box (a tuple), e.g. ``(0., 1.)`` for images.
    batch_size: examples per batch.

  Returns:
    The error rate, a scalar.

  Example:
    >>> error = pgd_error(model, params, data.test.x, data.test.y, 0.25, step_size=0.0156,
    ...                   num_steps=40, restarts=3, key=jax.random.key(0), clip=(0., 1.))
    >>> 0 <= float(error) <= 1
    True
  """
  loss_fn = model.loss_fn()

  def fooled(xb, yb, index):
    batch_key = jax.random.fold_in(key, index[0])

    def restart(restart_key):
      x_adv = pgd(
          loss_fn,
          params,
          xb,
          yb,
          eps,
          step_size=step_size,
          num_steps=num_steps,
          clip=clip,
          random_start=True,
          key=restart_key,
      )
      return metrics.mistakes(model.probabilities(params, x_adv), as_classes(yb))

    return jnp.any(jax.vmap(restart)(jax.random.split(batch_key, restarts)), axis=0)

  wrong = map_batches(fooled, (x, y, jnp.arange(x.shape[0])), batch_size)
  return jnp.mean(wrong)
