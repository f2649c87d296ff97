"""Training objectives of the paper: the adversarial loss and its controls.

- `adversarial_loss` turns any loss into ``alpha*J(x) + (1-alpha)*J(x_adv)``
  (eq. 6), a plain JAX function of all its inputs;
- `logistic_loss` and `logistic_worst_case_loss` are the closed forms of
  section 5 for logistic regression;
- `sign_noise`, `uniform_noise` and `rubbish_inputs` are the controls of
  sections 6 and 9.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from advjax import _validation
from advjax.attacks import Array
from advjax.attacks import Clip
from advjax.attacks import LossFn
from advjax.attacks import broadcast_eps
from advjax.attacks import fgsm

__all__ = [
    "adversarial_loss",
    "logistic_loss",
    "logistic_worst_case_loss",
    "noise_loss",
    "rubbish_inputs",
    "sign_noise",
    "uniform_noise",
]


def adversarial_loss(
    loss_fn: Callable[..., Any],
    eps: Any,
    alpha: Any = 0.5,
    *,
    clip: Clip = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
  """Wraps ``loss_fn`` into the adversarial objective of eq. (6).

  The returned function computes
  ``alpha * J(params, x, y) + (1 - alpha) * J(params, x_adv, y)`` with
  ``x_adv = advjax.fgsm(J, params, x, y, eps, clip=clip)`` regenerated from the
  current ``params`` on every call. It is a plain JAX function of all its
  inputs, traced values that ``loss_fn``, ``eps`` or ``alpha`` close over
  included, so it composes with ``grad``, ``jvp``, ``vmap``, ``jit``,
  ``checkpoint`` and ``shard_map``, and ``params`` may be any pytree that
  ``loss_fn`` takes (an Equinox model under ``eqx.filter_grad``).

  ``x_adv`` is treated as a constant, as in the paper. Hence the gradient with
  respect to ``params`` is ``alpha * grad J(x) + (1 - alpha) * grad J(x_adv)``,
  with respect to ``x`` only the clean term's ``alpha * grad_x J(x)``, with
  respect to ``alpha`` ``J(x) - J(x_adv)``, and with respect to ``eps`` zero.

  Differentiating it costs two forward passes (XLA merges the attack's forward
  pass with the clean term's) and three backward passes: one to the input for
  the attack, one to the parameters for each term. A custom VJP that shares
  the clean backward pass was no faster on CPU and broke the compositions
  above, so there is none.

  A ``loss_fn`` with dropout should close over its PRNG key: the same dropout
  mask then serves the attack, the clean term and the adversarial term.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``, or with ``has_aux``
      ``(params, x, y) -> (loss, aux)``.
    eps: max-norm of the FGSM perturbation (0.25 on MNIST in the paper): a
      scalar, or one value per example.
    alpha: weight of the clean term, in [0, 1] (0.5 in the paper).
    clip: optional ``(lo, hi)`` box for the adversarial inputs.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``. The objective then
      returns ``(objective, aux)`` with the clean pass's ``aux`` (logits,
      updated batch statistics), for ``jax.value_and_grad(..., has_aux=True)``.

  Returns:
    A loss function with the signature of ``loss_fn``.

  Raises:
    ValueError: for a negative or non-finite ``eps``, an ``alpha`` outside
      [0, 1], a ``clip`` with lo > hi, or (when called) ``x`` and ``y`` of
      different batch sizes. A traced ``eps``, ``alpha`` or ``clip`` (under
      ``jit``) is checked only inside ``jax.experimental.checkify.checkify``.

  Example:
    >>> adv_loss = advjax.adversarial_loss(loss_fn, eps=0.25, alpha=0.5)
    >>> grads = jax.jit(jax.grad(adv_loss))(params, x, y)
    >>> bool(adv_loss(params, x, y) > loss_fn(params, x, y))  # J~ > J
    True
  """
  _validation.check_eps(eps)
  _validation.check_alpha(alpha)
  _validation.check_clip(clip)
  value_fn = (lambda params, x, y: loss_fn(params, x, y)[0]) if has_aux else loss_fn

  def loss(params: Any, x: Array, y: Array) -> Any:
    _validation.check_batch(x, y)
    x_adv = jax.lax.stop_gradient(fgsm(value_fn, params, x, y, eps, clip=clip))
    clean, aux = loss_fn(params, x, y) if has_aux else (loss_fn(params, x, y), None)
    value = alpha * clean + (1 - alpha) * value_fn(params, x_adv, y)
    return (value, aux) if has_aux else value

  return loss


def logistic_loss(w: Array, b: Array, x: Array, y: Array) -> Array:
  """Mean logistic loss ``softplus(-y (w.x + b))`` for labels ``y`` in {-1, +1}.

  Args:
    w: weights, shape ``(d,)``.
    b: bias, a scalar.
    x: inputs, shape ``(n, d)``.
    y: labels in {-1, +1}, shape ``(n,)``.

  Returns:
    The mean loss, a scalar.

  Example:
    >>> logistic_loss(jnp.ones(2), 0., jnp.zeros((1, 2)), jnp.ones(1))  # log 2
    Array(0.6931472, dtype=float32)
  """
  _validation.check_batch(x, y)
  return jnp.mean(jax.nn.softplus(-y * (x @ w + b)))


def logistic_worst_case_loss(w: Array, b: Array, x: Array, y: Array, eps: Any) -> Array:
  """Closed-form logistic loss at the FGSM point: ``softplus(-y (w.x + b) + eps |w|_1)``.

  Section 5 of the paper: against a max-norm perturbation of size ``eps`` the
  worst case for example ``(x, y)`` is ``x - eps * y * sign(w)``, which lowers
  the margin by exactly ``eps * ||w||_1``.

  Args:
    w: weights, shape ``(d,)``.
    b: bias, a scalar.
    x: inputs, shape ``(n, d)``.
    y: labels in {-1, +1}, shape ``(n,)``.
    eps: max-norm of the perturbation.

  Returns:
    The mean worst-case loss, a scalar.

  Example:
    >>> w, b = jnp.ones(2), 0.
    >>> x, y = jnp.zeros((1, 2)), jnp.ones(1)
    >>> logistic_worst_case_loss(w, b, x, y, eps=0.25)  # softplus(0.25 * |w|_1)
    Array(0.974077, dtype=float32)
  """
  _validation.check_batch(x, y)
  _validation.check_eps(eps)
  return jnp.mean(jax.nn.softplus(-y * (x @ w + b) + eps * jnp.sum(jnp.abs(w))))


def sign_noise(key: Array, x: Array, eps: Any) -> Array:
  """Adds ``eps * s`` with ``s`` uniform in {-1, +1} per coordinate (section 6 control).

  Args:
    key: PRNG key.
    x: inputs.
    eps: noise size: a scalar, or one value per example.

  Returns:
    The noisy inputs, in the shape and dtype of ``x``.

  Example:
    >>> x_noisy = advjax.sign_noise(jax.random.key(0), x, 0.25)
    >>> bool(jnp.allclose(jnp.abs(x_noisy - x), 0.25))
    True
  """
  _validation.check_eps(eps)
  signs = jax.random.rademacher(key, x.shape, dtype=x.dtype)
  return x + broadcast_eps(eps, x) * signs


def uniform_noise(key: Array, x: Array, eps: Any) -> Array:
  """Adds noise drawn uniformly from ``[-eps, eps]`` per coordinate (section 6 control).

  Args:
    key: PRNG key.
    x: inputs.
    eps: half-width of the noise: a scalar, or one value per example.

  Returns:
    The noisy inputs, in the shape and dtype of ``x``.

  Example:
    >>> x_noisy = advjax.uniform_noise(jax.random.key(0), x, 0.25)
    >>> bool(jnp.all(jnp.abs(x_noisy - x) <= 0.25))
    True
  """
  _validation.check_eps(eps)
  noise = jax.random.uniform(key, x.shape, x.dtype, minval=-1, maxval=1)
  return x + broadcast_eps(eps, x) * noise


def rubbish_inputs(
    key: Array, num: int, shape: tuple[int, ...] = (784,), dtype: Any = jnp.float32
) -> Array:
  """Samples of ``N(0, I)``: inputs that belong to no class (section 9).

  Args:
    key: PRNG key.
    num: number of samples.
    shape: shape of one sample (784 for flattened MNIST).
    dtype: floating dtype of the samples.

  Returns:
    An array of shape ``(num, *shape)``.

  Example:
    >>> advjax.rubbish_inputs(jax.random.key(0), 10_000).shape
    (10000, 784)
  """
  if not isinstance(num, int) or num < 0:
    raise ValueError(f"num must be an int >= 0, got {num!r}.")
  return jax.random.normal(key, (num, *shape), dtype)


def noise_loss(
    loss_fn: LossFn,
    noise_fn: Callable[[Array, Array, Any], Array],
    key: Array,
    eps: Any,
    alpha: Any = 0.5,
) -> LossFn:
  """The noise control of eq. (6): ``alpha*J(x) + (1-alpha)*J(noise_fn(key, x, eps))``.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``.
    noise_fn: `sign_noise` or `uniform_noise`, or any ``(key, x, eps) -> x``.
    key: PRNG key for the noise of this call.
    eps: noise size.
    alpha: weight of the clean term, in [0, 1].

  Returns:
    A loss function with the signature of ``loss_fn``.

  Example:
    >>> loss = advjax.noise_loss(loss_fn, advjax.sign_noise, key, 0.25)
    >>> grads = jax.grad(loss)(params, x, y)
  """
  _validation.check_eps(eps)
  _validation.check_alpha(alpha)

  def loss(params: Any, x: Array, y: Array) -> Array:
    noisy = noise_fn(key, x, eps)
    return alpha * loss_fn(params, x, y) + (1 - alpha) * loss_fn(params, noisy, y)

  return loss
