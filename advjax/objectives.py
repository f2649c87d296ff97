"""Training objectives: the paper's adversarial loss, its controls, and the robust training since.

- `adversarial_loss` turns any loss into ``alpha*J(x) + (1-alpha)*J(x_adv)``
  (eq. 6), a plain JAX function of all its inputs;
- `logistic_loss` and `logistic_worst_case_loss` are the closed forms of
  section 5 for logistic regression;
- `sign_noise`, `uniform_noise` and `rubbish_inputs` are the controls of
  sections 6 and 9, and `l1_norm` the weight decay the paper tried instead;
- `random_start_fgsm_loss`, `nfgsm_loss`, `pgd_loss` and `trades_loss` are the
  robust training objectives that followed the paper (Wong et al. 2020,
  de Jorge et al. 2022, Madry et al. 2018, Zhang et al. 2019);
- `Clean`, `Adversarial`, `Noise`, `L1`, `FGSMRandomStart`, `NFGSM`,
  `PGDTraining` and `TRADES` are the same objectives in the form `advjax.loop.fit` takes:
  pytrees whose leaves are their numbers, so that every member of a vmapped
  population may have its own.

A trainer form is called as ``objective(loss_fn, key, logits_fn=None)``, with
the model's loss (its dropout mask closed over), the step's PRNG key, and the
model's scores under the same mask ``logits_fn(params, x) -> logits`` (only
`TRADES` reads them); it returns the loss the step minimises.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from advjax import _validation
from advjax._types import Array
from advjax._types import Clip
from advjax._types import LogitsFn
from advjax._types import LossFn
from advjax.attacks import broadcast_eps
from advjax.attacks import fgsm
from advjax.attacks import pgd

__all__ = [
    "Adversarial",
    "Clean",
    "FGSMRandomStart",
    "L1",
    "LogitsFn",
    "NFGSM",
    "Noise",
    "PGDTraining",
    "TRADES",
    "adversarial_loss",
    "l1_norm",
    "logistic_loss",
    "logistic_worst_case_loss",
    "nfgsm_loss",
    "noise_loss",
    "pgd_loss",
    "random_start_fgsm_loss",
    "rubbish_inputs",
    "sign_noise",
    "trades_loss",
    "uniform_noise",
]

"""``(params, x) -> logits``: the model's scores, shape ``(n, classes)``."""


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


# ---------------------------------------------------------------------------
# Robust training since the paper: the loss at one adversarial point.
# ---------------------------------------------------------------------------


def l1_norm(params: Any) -> Array:
  """``sum |W|`` over every leaf named ``kernel`` of a parameter pytree (Flax's weights).

  Biases and other leaves do not count, as in pylearn2's ``L1WeightDecay``
  that the paper used.

  Args:
    params: the parameters, any pytree; a leaf counts when its last path key is
      ``"kernel"``.

  Returns:
    A scalar.

  Example:
    >>> l1_norm({"Dense_0": {"kernel": -jnp.ones((2, 3)), "bias": jnp.ones(3)}})
    Array(6., dtype=float32)
  """
  leaves = jax.tree_util.tree_leaves_with_path(params)
  kernels = [leaf for path, leaf in leaves if getattr(path[-1], "key", None) == "kernel"]
  return jnp.asarray(sum(jnp.sum(jnp.abs(kernel)) for kernel in kernels))


def _value_fn(loss_fn: Callable[..., Any], has_aux: bool) -> LossFn:
  """``loss_fn`` without its auxiliary output: what an attack ascends."""
  return (lambda params, x, y: loss_fn(params, x, y)[0]) if has_aux else loss_fn


def _check_num_steps(num_steps: Any) -> None:
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}.")


def pgd_loss(
    loss_fn: Callable[..., Any],
    key: Array,
    eps: Any,
    step: Any,
    num_steps: int,
    *,
    clip: Clip = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
  """PGD training (Madry et al. 2018): ``J(params, x_adv, y)`` at a PGD point.

  ``x_adv = advjax.pgd(J, params, x, y, eps, step_size=step,
  num_steps=num_steps, clip=clip, random_start=True, key=key)``: a uniform
  start in the ``eps``-ball, then ``num_steps`` sign steps of ``step``, each
  projected onto the ball and the ``clip`` box. ``x_adv`` is a constant for
  the gradient, as in the paper, so the parameter gradient is
  ``grad J(x_adv)``. Madry et al.'s MNIST setting: ``eps=0.3``, 40 steps of
  0.01, ``clip=(0, 1)``. The same guarantees as `adversarial_loss`: ``jit``,
  ``grad``, ``vmap`` over ``eps`` and ``step``, any params pytree.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``, or with ``has_aux``
      ``(params, x, y) -> (loss, aux)``.
    key: PRNG key of the random start of this call.
    eps: radius of the L-infinity ball: a scalar, or one value per example.
    step: size of each sign step.
    num_steps: number of steps, a Python int >= 1.
    clip: optional ``(lo, hi)`` box for the adversarial inputs.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the objective then
      returns the adversarial pass's ``(loss, aux)``.

  Returns:
    A loss function with the signature of ``loss_fn``.

  Raises:
    ValueError: for a negative or non-finite ``eps`` or ``step``, a bad
      ``num_steps``, a ``clip`` with lo > hi, or (when called) mismatched
      batches; traced values only inside ``checkify``.

  Example:
    >>> loss = advjax.pgd_loss(loss_fn, key, eps=0.3, step=0.1, num_steps=5, clip=(0., 1.))
    >>> grads = jax.jit(jax.grad(loss))(params, x, y)
    >>> bool(loss(params, x, y) > loss_fn(params, x, y))
    True
  """
  _validation.check_eps(eps)
  _validation.check_eps(step, "step")
  _validation.check_clip(clip)
  _check_num_steps(num_steps)
  value_fn = _value_fn(loss_fn, has_aux)

  def loss(params: Any, x: Array, y: Array) -> Any:
    x_adv = pgd(
        value_fn,
        params,
        x,
        y,
        eps,
        step_size=step,
        num_steps=num_steps,
        clip=clip,
        random_start=True,
        key=key,
    )
    return loss_fn(params, jax.lax.stop_gradient(x_adv), y)

  return loss


def random_start_fgsm_loss(
    loss_fn: Callable[..., Any],
    key: Array,
    eps: Any,
    step: Any,
    *,
    clip: Clip = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
  """FGSM from a random start (Wong, Rice & Kolter 2020): `pgd_loss` with one step.

  ``x_adv`` starts uniform in the ``eps``-ball (inside the ``clip`` box),
  takes one sign step of ``step`` and is projected back onto the ball and the
  box; the objective is ``J(params, x_adv, y)`` with ``x_adv`` a constant.
  Wong et al.'s MNIST setting: ``eps=0.3``, ``step=0.375`` (1.25 eps),
  ``clip=(0, 1)``; much larger steps overfit catastrophically.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``, or ``(loss, aux)`` with
      ``has_aux``.
    key: PRNG key of the random start of this call.
    eps: radius of the L-infinity ball: a scalar, or one value per example.
    step: size of the sign step.
    clip: optional ``(lo, hi)`` box for the adversarial inputs.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; see `pgd_loss`.

  Returns:
    A loss function with the signature of ``loss_fn``.

  Example:
    >>> loss = advjax.random_start_fgsm_loss(loss_fn, key, eps=0.3, step=0.375, clip=(0., 1.))
    >>> grads = jax.grad(loss)(params, x, y)
  """
  return pgd_loss(loss_fn, key, eps, step, 1, clip=clip, has_aux=has_aux)


def nfgsm_loss(
    loss_fn: Callable[..., Any],
    key: Array,
    eps: Any,
    noise: Any = None,
    step: Any = None,
    *,
    clip: Clip = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
  """N-FGSM (de Jorge et al. 2022): one FGSM step from a noisy point, not projected.

  ``x_adv = advjax.fgsm(J, params, x_noisy, y, step, clip=clip)`` with
  ``x_noisy = advjax.uniform_noise(key, x, noise)``: the noise is uniform in
  ``[-noise, noise]`` (``2 * eps`` by default), the step ``step`` (``eps`` by
  default), and ``x_adv`` may lie up to ``noise + step`` from ``x``: there is
  no projection onto the ``eps``-ball, only onto the ``clip`` box. The
  objective is ``J(params, x_adv, y)`` with ``x_adv`` a constant.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``, or ``(loss, aux)`` with
      ``has_aux``.
    key: PRNG key of the noise of this call.
    eps: the training radius; sets the defaults of ``noise`` and ``step``.
    noise: half-width of the uniform noise, ``2 * eps`` if None.
    step: size of the sign step, ``eps`` if None.
    clip: optional ``(lo, hi)`` box for the adversarial inputs.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; see `pgd_loss`.

  Returns:
    A loss function with the signature of ``loss_fn``.

  Example:
    >>> loss = advjax.nfgsm_loss(loss_fn, key, eps=0.3)  # noise 0.6, step 0.3
    >>> grads = jax.grad(loss)(params, x, y)
  """
  _validation.check_eps(eps)
  noise = 2 * eps if noise is None else noise
  step = eps if step is None else step
  _validation.check_eps(noise, "noise")
  _validation.check_eps(step, "step")
  _validation.check_clip(clip)
  value_fn = _value_fn(loss_fn, has_aux)

  def loss(params: Any, x: Array, y: Array) -> Any:
    _validation.check_batch(x, y)
    x_adv = fgsm(value_fn, params, uniform_noise(key, x, noise), y, step, clip=clip)
    return loss_fn(params, jax.lax.stop_gradient(x_adv), y)

  return loss


def _kl_to(params_logits_fn: LogitsFn) -> LossFn:
  """``(params, x, clean_logits) -> mean KL(softmax(clean_logits) || softmax(f(x)))``."""

  def kl(params: Any, x: Array, clean_logits: Array) -> Array:
    log_p = jax.nn.log_softmax(clean_logits)
    log_q = jax.nn.log_softmax(params_logits_fn(params, x))
    return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))

  return kl


def trades_loss(
    loss_fn: Callable[..., Any],
    logits_fn: LogitsFn,
    key: Array,
    eps: Any,
    beta: Any,
    step: Any,
    num_steps: int,
    *,
    clip: Clip = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
  """TRADES (Zhang et al. 2019): ``J(x) + beta * KL(f(x) || f(x'))``.

  ``f`` is ``softmax(logits_fn(params, .))`` and the KL is summed over the
  classes and averaged over the batch. ``x'`` maximises that KL: `advjax.pgd`
  from ``x + 0.001 * N(0, I)`` (drawn from ``key``), ``num_steps`` sign steps
  of ``step`` projected onto the ``eps``-ball and the ``clip`` box, with
  ``f(x)`` held fixed. ``x'`` is a constant for the parameter gradient; both
  ``f(x)`` and ``f(x')`` of the KL term are not.

  ``loss_fn`` and ``logits_fn`` describe one model: the paper's ``J`` is the
  cross-entropy of ``logits_fn``'s logits, e.g. a Flax classifier's
  ``model.loss_fn(k)`` with ``functools.partial(model.scores, dropout_key=k)``
  (the same dropout mask ``k`` for both). The trainer form `TRADES` gets the
  pair from the trainer.

  Args:
    loss_fn: scalar loss ``(params, x, y) -> loss``, or ``(loss, aux)`` with
      ``has_aux``.
    logits_fn: the same model's logits, ``(params, x) -> (n, classes)``.
    key: PRNG key of the start's Gaussian noise.
    eps: radius of the L-infinity ball: a scalar, or one value per example.
    beta: weight of the KL term (6 in the paper's CIFAR setting, 1/lambda).
    step: size of each sign step of the inner maximisation.
    num_steps: number of steps, a Python int >= 1.
    clip: optional ``(lo, hi)`` box for ``x'``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the objective then
      returns ``(objective, aux)`` with the clean pass's ``aux``.

  Returns:
    A loss function with the signature of ``loss_fn``.

  Raises:
    ValueError: for a negative or non-finite ``eps``, ``beta`` or ``step``, a
      bad ``num_steps``, a ``clip`` with lo > hi, or (when called) mismatched
      batches; traced values only inside ``checkify``.

  Example:
    >>> loss = advjax.trades_loss(loss_fn, model.scores, key, eps=0.3, beta=6.,
    ...                           step=0.1, num_steps=5, clip=(0., 1.))
    >>> grads = jax.jit(jax.grad(loss))(params, x, y)
    >>> bool(loss(params, x, y) >= loss_fn(params, x, y))  # KL >= 0
    True
  """
  _validation.check_eps(eps)
  _validation.check_eps(beta, "beta")
  _validation.check_eps(step, "step")
  _validation.check_clip(clip)
  _check_num_steps(num_steps)
  kl = _kl_to(logits_fn)

  def loss(params: Any, x: Array, y: Array) -> Any:
    _validation.check_batch(x, y)
    clean_logits = logits_fn(params, x)
    start = x + 0.001 * jax.random.normal(key, x.shape, x.dtype)
    target = jax.lax.stop_gradient(clean_logits)
    x_adv = pgd(
        kl, params, x, target, eps, step_size=step, num_steps=num_steps, clip=clip, start=start
    )
    clean, aux = loss_fn(params, x, y) if has_aux else (loss_fn(params, x, y), None)
    value = clean + beta * kl(params, jax.lax.stop_gradient(x_adv), clean_logits)
    return (value, aux) if has_aux else value

  return loss


# ---------------------------------------------------------------------------
# Trainer forms: pytrees of their numbers, for advjax.loop.fit.
# ---------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Clean:
  """Plain training on the model's loss.

  Passed to `advjax.loop.fit` as ``objective=`` (its default), like `Adversarial`.

  Example:
    >>> Clean()(loss_fn, key) is loss_fn  # the model's loss, as it is
    True
  """

  def __call__(self, loss_fn: LossFn, key: Array, logits_fn: LogitsFn | None = None) -> LossFn:
    del key, logits_fn
    return loss_fn


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Adversarial:
  """The adversarial objective of eq. (6), `advjax.adversarial_loss`.

  Attributes:
    eps: FGSM step (the paper uses 0.25 on MNIST).
    alpha: weight of the clean term (0.5 in the paper).
    clip: optional ``(lo, hi)`` box for the adversarial inputs (None in the paper).

  Example:
    >>> loss = Adversarial(eps=0.25)(model.loss_fn(), key)  # 0.5 J(x) + 0.5 J(x_fgsm)
    >>> grads = jax.grad(loss)(params, x, y)  # what `advjax.loop.fit` steps on
  """

  eps: Any
  alpha: Any = 0.5
  clip: tuple[float, float] | None = dataclasses.field(default=None, metadata={"static": True})

  def __call__(self, loss_fn: LossFn, key: Array, logits_fn: LogitsFn | None = None) -> LossFn:
    del key, logits_fn
    return adversarial_loss(loss_fn, self.eps, self.alpha, clip=self.clip)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Noise:
  """The noise controls of section 6, `advjax.noise_loss`.

  Attributes:
    noise_fn: ``(key, x, eps) -> noisy x``: `advjax.sign_noise` (``eps * s``,
      ``s`` uniform in {-1, +1}) or `advjax.uniform_noise` (``U(-eps, eps)``).
    eps: noise size.
    alpha: weight of the clean term.

  Passed to `advjax.loop.fit` as ``objective=`` like `Clean` and `Adversarial`.

  Example:
    >>> objective = Noise(advjax.sign_noise, eps=0.25)
    >>> loss = objective(model.loss_fn(), key)  # 0.5 J(x) + 0.5 J(x + eps * s)
    >>> grads = jax.grad(loss)(params, x, y)
  """

  noise_fn: Callable[[Array, Array, Any], Array] = dataclasses.field(metadata={"static": True})
  eps: Any
  alpha: Any = 0.5

  def __call__(self, loss_fn: LossFn, key: Array, logits_fn: LogitsFn | None = None) -> LossFn:
    del logits_fn
    return noise_loss(loss_fn, self.noise_fn, key, self.eps, self.alpha)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class L1:
  """The model's loss plus L1 weight decay ``coefficient * sum |W|``, `l1_norm`.

  The sum runs over every layer's ``kernel`` (output layer included), not the
  biases, as pylearn2's ``L1WeightDecay`` that the paper tried instead of
  adversarial training.

  Attributes:
    coefficient: the weight of the penalty, >= 0 (the paper: 0.0025, then smaller).

  Example:
    >>> loss = L1(0.0025)(loss_fn, key)  # J + 0.0025 * sum |W|
    >>> bool(loss(params, x, y) == loss_fn(params, x, y) + 0.0025 * l1_norm(params))
    True
  """

  coefficient: Any

  def __post_init__(self) -> None:
    if isinstance(self.coefficient, (int, float)) and not self.coefficient >= 0:
      raise ValueError(f"coefficient must be >= 0, got {self.coefficient!r}.")

  def __call__(self, loss_fn: LossFn, key: Array, logits_fn: LogitsFn | None = None) -> LossFn:
    del key, logits_fn
    return lambda params, x, y: loss_fn(params, x, y) + self.coefficient * l1_norm(params)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FGSMRandomStart:
  """FGSM from a random start (Wong et al. 2020), `random_start_fgsm_loss`.

  Attributes:
    eps: radius of the L-infinity ball (0.3 on MNIST).
    step: size of the sign step (0.375, 1.25 eps, on MNIST).
    clip: optional ``(lo, hi)`` box, ``(0, 1)`` for images.

  Example:
    >>> objective = FGSMRandomStart(eps=0.3, step=0.375, clip=(0., 1.))
    >>> grads = jax.grad(objective(loss_fn, key))(params, x, y)
  """

  eps: Any
  step: Any
  clip: tuple[float, float] | None = dataclasses.field(default=None, metadata={"static": True})

  def __call__(self, loss_fn: LossFn, key: Array, logits_fn: LogitsFn | None = None) -> LossFn:
    del logits_fn
    return random_start_fgsm_loss(loss_fn, key, self.eps, self.step, clip=self.clip)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NFGSM:
  """N-FGSM (de Jorge et al. 2022), `nfgsm_loss`.

  Attributes:
    eps: the training radius.
    noise: half-width of the uniform noise, ``2 * eps`` if None.
    step: size of the sign step, ``eps`` if None.
    clip: optional ``(lo, hi)`` box, ``(0, 1)`` for images.

  Example:
    >>> objective = NFGSM(eps=0.3, clip=(0., 1.))
    >>> grads = jax.grad(objective(loss_fn, key))(params, x, y)
  """

  eps: Any
  noise: Any = None
  step: Any = None
  clip: tuple[float, float] | None = dataclasses.field(default=None, metadata={"static": True})

  def __call__(self, loss_fn: LossFn, key: Array, logits_fn: LogitsFn | None = None) -> LossFn:
    del logits_fn
    return nfgsm_loss(loss_fn, key, self.eps, self.noise, self.step, clip=self.clip)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PGDTraining:
  """PGD training (Madry et al. 2018), `pgd_loss`.

  Attributes:
    eps: radius of the L-infinity ball (0.3 on MNIST).
    step: size of each sign step (0.01 on MNIST).
    num_steps: number of steps (40 on MNIST), static.
    clip: optional ``(lo, hi)`` box, ``(0, 1)`` for images.

  Example:
    >>> objective = PGDTraining(eps=0.3, step=0.1, num_steps=5, clip=(0., 1.))
    >>> grads = jax.grad(objective(loss_fn, key))(params, x, y)
  """

  eps: Any
  step: Any
  num_steps: int = dataclasses.field(metadata={"static": True})
  clip: tuple[float, float] | None = dataclasses.field(default=None, metadata={"static": True})

  def __call__(self, loss_fn: LossFn, key: Array, logits_fn: LogitsFn | None = None) -> LossFn:
    del logits_fn
    return pgd_loss(loss_fn, key, self.eps, self.step, self.num_steps, clip=self.clip)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TRADES:
  """TRADES (Zhang et al. 2019), `trades_loss`; the only form that reads ``logits_fn``.

  Attributes:
    eps: radius of the L-infinity ball (0.3 on MNIST).
    beta: weight of the KL term (6 in the paper).
    step: size of each sign step of the inner maximisation (0.01 on MNIST).
    num_steps: number of steps (40 on MNIST), static.
    clip: optional ``(lo, hi)`` box, ``(0, 1)`` for images.

  Example:
    >>> objective = TRADES(eps=0.3, beta=6., step=0.1, num_steps=5, clip=(0., 1.))
    >>> loss = objective(loss_fn, key, logits_fn=model.scores)
    >>> grads = jax.grad(loss)(params, x, y)
  """

  eps: Any
  beta: Any
  step: Any
  num_steps: int = dataclasses.field(metadata={"static": True})
  clip: tuple[float, float] | None = dataclasses.field(default=None, metadata={"static": True})

  def __call__(self, loss_fn: LossFn, key: Array, logits_fn: LogitsFn | None = None) -> LossFn:
    if logits_fn is None:
      raise ValueError("TRADES needs the model's logits: pass logits_fn=.")
    return trades_loss(
        loss_fn, logits_fn, key, self.eps, self.beta, self.step, self.num_steps, clip=self.clip
    )
