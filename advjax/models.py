"""The paper's MNIST models as Flax modules, each paired with its output head.

A `Classifier` bundles a Flax linen module with a `Head`: how its scores turn
into the class probabilities the paper's confidence uses, and the training
loss on those scores. Every classifier offers the same pure functions of
``(params, x)``, so the trainer, the attacks and the experiments treat them
alike:

- `softmax_regression`: one linear layer, softmax (row M1 of the paper);
- `logistic_regression`: one output, labels in {-1, +1} (row M2);
- `maxout_mlp`: the maxout network with dropout and the max column-norm
  constraint of Goodfellow et al. (2013) (rows M3 to M7), with softmax outputs
  or, for the rubbish-class experiment (row R), one sigmoid per class;
- `rbf_network`: the shallow RBF network with per-class scores
  ``exp(q_k(x))`` (row M8);
- `small_cnn`: beyond the paper, the small MNIST CNN that robust training
  since the paper is measured on (Wong et al. 2020).

Example:
  >>> model = maxout_mlp(units=8, pieces=2)     # the paper's M3: maxout_mlp()
  >>> params = model.init(jax.random.key(0), x[:1])
  >>> loss_fn = model.loss_fn()                # (params, x, y) -> scalar
  >>> x_adv = advjax.fgsm(loss_fn, params, x, y, eps=0.25)
  >>> probs = model.probabilities(params, x_adv)
  >>> probs.shape
  (8, 10)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from advjax import _validation
from advjax._types import Array
from advjax._types import LossFn
from advjax._types import Params
from advjax.sweeps import LinearFirst

__all__ = [
    "Classifier",
    "DROPOUT_MASKS",
    "Dropout",
    "EXP",
    "Head",
    "INIT_RANGE",
    "LOGISTIC",
    "Linear",
    "LossFn",
    "MAX_COL_NORM",
    "Maxout",
    "Params",
    "RBF",
    "SIGMOID",
    "SOFTMAX",
    "SmallCNN",
    "clip_column_norms",
    "logistic_regression",
    "max_over_pieces",
    "maxout_linear_first",
    "maxout_mlp",
    "rbf_network",
    "small_cnn",
    "softmax_regression",
    "split_among_ties",
]


# The recipe of Goodfellow et al. (2013) for permutation-invariant MNIST.
MAX_COL_NORM = 1.9365
INIT_RANGE = 0.005


# ---------------------------------------------------------------------------
# Heads: scores -> probabilities, and the training loss on the scores.
# ---------------------------------------------------------------------------


class Head(NamedTuple):
  """How a model's scores become class probabilities, and how they are trained.

  Attributes:
    name: a short name, shown in reprs and run fingerprints.
    probabilities: ``scores -> probs`` of shape ``(n, classes)``, the numbers
      whose maximum over the mistakes is the paper's "confidence".
    loss: ``(scores, labels) -> scalar``, the mean training loss.
  """

  name: str
  probabilities: Callable[[Array], Array]
  loss: Callable[[Array, Array], Array]


def _softmax_cross_entropy(logits: Array, labels: Array) -> Array:
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _sigmoid_cross_entropy(logits: Array, labels: Array) -> Array:
  # One binary problem per class ("is it a k?"), summed over the classes.
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), -1))


def _log1mexp(q: Array) -> Array:
  """``log(1 - exp(q))`` for ``q < 0``, accurate near 0 and for large ``-q``."""
  return jnp.where(q > -jnp.log(2.0), jnp.log(-jnp.expm1(q)), jnp.log1p(-jnp.exp(q)))


def _exp_cross_entropy(log_probs: Array, labels: Array) -> Array:
  # Binary cross-entropy of p_k = exp(q_k) against one-hot targets. q_k = 0
  # (x exactly at a centre) would make log(1 - p_k) infinite, hence the cap.
  log_probs = jnp.minimum(log_probs, -1e-6)
  targets = jax.nn.one_hot(labels, log_probs.shape[-1], dtype=log_probs.dtype)
  per_class = -(targets * log_probs + (1 - targets) * _log1mexp(log_probs))
  return jnp.mean(jnp.sum(per_class, -1))


def _binary_probabilities(scores: Array) -> Array:
  p = jax.nn.sigmoid(scores)
  return jnp.stack([1 - p, p], axis=-1)


def _logistic_loss(scores: Array, labels: Array) -> Array:
  return jnp.mean(jax.nn.softplus(-labels * scores))


SOFTMAX = Head("softmax", jax.nn.softmax, _softmax_cross_entropy)
"""Softmax over the logits, cross-entropy with integer labels."""

SIGMOID = Head("sigmoid", jax.nn.sigmoid, _sigmoid_cross_entropy)
"""One sigmoid per class, binary cross-entropy per class against one-hot labels."""

EXP = Head("exp", jnp.exp, _exp_cross_entropy)
"""Scores are log-probabilities ``q_k <= 0``; ``exp(q_k)`` per class, binary
cross-entropy per class. The probabilities need not sum to one, so the RBF
network can be unsure of every class (a softmax could not go below 0.1)."""

LOGISTIC = Head("logistic", _binary_probabilities, _logistic_loss)
"""One score ``s`` per example, labels in {-1, +1}, loss ``softplus(-y s)``.
Its probabilities are ``[P(y=-1), P(y=+1)]``: class index 1 stands for +1."""


# ---------------------------------------------------------------------------
# Flax modules
# ---------------------------------------------------------------------------


def _uniform_init(scale: float) -> nn.initializers.Initializer:
  def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


class Linear(nn.Module):
  """One dense layer: softmax regression's logits, or logistic regression's score.

  Attributes:
    outputs: number of outputs; with ``squeeze`` it must be 1 and the output
      is of shape ``(n,)``.
    squeeze: drop the output axis (logistic regression).
  """

  outputs: int
  squeeze: bool = False

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    del train  # No dropout; the argument keeps the modules interchangeable.
    scores = nn.Dense(self.outputs, kernel_init=nn.initializers.zeros)(x)
    return scores[..., 0] if self.squeeze else scores


def split_among_ties(max_fn: Callable[[Array], Array]) -> Callable[[Array], Array]:
  """``max_fn``, a max over the last axis, with JAX's derivative of ``jnp.max`` as a custom JVP.

  The tangent goes to the winning piece, split evenly among tied pieces, as
  ``jnp.max``'s derivative sends it, but written as a sum over the pieces
  (a maxout unit has a few) rather than as a reduction with a broadcast
  compare: the same numbers wherever a piece wins alone, and at ties up to
  the order of a sum of equal shares.

  Args:
    max_fn: ``z -> max(z, axis=-1)`` in some form.

  Returns:
    ``max_fn`` with the custom derivative; it works under ``jit``, ``vmap``,
    ``grad`` and ``jvp``.

  Example:
    >>> z = jnp.array([[1., 3., 3.], [2., 0., 1.]])
    >>> jax.grad(lambda z: split_among_ties(lambda z: jnp.max(z, axis=-1))(z).sum())(z)
    Array([[0. , 0.5, 0.5],
           [1. , 0. , 0. ]], dtype=float32)
  """
  fn = jax.custom_jvp(max_fn)

  @fn.defjvp
  def jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (z,), (t,) = primals, tangents
    h = fn(z)
    hits = [(z[..., k] == h).astype(z.dtype) for k in range(z.shape[-1])]
    tangent = sum(hit * t[..., k] for k, hit in enumerate(hits)) / sum(hits)
    return h, cast(Array, tangent)  # sum's start, 0, is not an Array to the type checker

  return fn


max_over_pieces = split_among_ties(lambda z: jnp.max(z, axis=-1))
"""A maxout unit's max over its pieces (the last axis): ``jnp.max``'s values and derivative.

The derivative is `split_among_ties`'s form of ``jnp.max``'s. XLA:CPU runs
``jnp.max``'s own backward pass (a reduction, a broadcast compare, a tie
count) at about a third of PyTorch's speed; in five interleaved rounds on an
Intel Xeon this form took FGSM on the 240 x 5 maxout to 0.76x its time and a
compiled epoch to 0.86x, with the same adversarial examples and bit-equal
parameters after 500 steps (benchmarks/FGSM_STUDY.md).
"""


DROPOUT_MASKS = "dropout_masks"


class Dropout(nn.Module):
  """Flax's ``nn.Dropout``, with a mask a caller can draw once and pass back in.

  It draws the mask as ``nn.Dropout`` does (``bernoulli(make_rng("dropout"),
  1 - rate)``; under the same name, the same bits) and scales the kept inputs
  by ``1 / (1 - rate)``. Applied with the `DROPOUT_MASKS` collection mutable,
  it also records its mask there; applied with that collection given, it uses
  the mask it holds instead of drawing one. `Classifier.dropout_masks` and
  `Classifier.scores` do both, so that the forward passes of one training step
  (the attack's, the clean and the adversarial term's) share one draw that
  every pass reads rather than one draw per pass. XLA merged the repeated
  draws of a jitted step itself, but not inside a loop, where its loop
  optimisations move each draw's counters out of the loop first: the compiled
  epoch then drew every mask three times and ran three forward passes a step
  instead of two (benchmark item 8).

  Attributes:
    rate: the probability of dropping an input (one minus the keep probability).
  """

  rate: float

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    if self.rate == 1.0:  # as nn.Dropout: no 0 / 0 in the gradient
      return jnp.zeros_like(x)
    keep = 1.0 - self.rate  # as nn.Dropout computes it, for the same scale to the last bit
    if self.has_variable(DROPOUT_MASKS, "mask"):
      mask = self.get_variable(DROPOUT_MASKS, "mask")
    else:
      mask = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
      if self.is_mutable_collection(DROPOUT_MASKS):
        self.put_variable(DROPOUT_MASKS, "mask", mask)
    return jax.lax.select(mask, x / keep, jnp.zeros_like(x))


class Maxout(nn.Module):
  """Maxout MLP: ``layers`` maxout layers, then a linear output layer, with dropout.

  Each maxout unit is the maximum of ``pieces`` affine functions of its input.
  Dropout follows the recipe: keep probability ``input_keep`` on the network's
  input and ``hidden_keep`` on the input of every later layer. Dropout is
  inverted (kept values are scaled by ``1/keep``), so evaluation uses the
  weights as they are. Goodfellow et al.'s pylearn2 file did not rescale the
  input (``input_scales: {h0: 1.}``), which trains the first layer on inputs
  0.8 times as bright as the test inputs; scaling it too removes that mismatch.

  Attributes:
    units: maxout units per layer (240 in the paper's M3, 1600 in M5).
    pieces: affine pieces per unit (5).
    layers: number of maxout layers (2).
    outputs: number of classes (10).
    input_keep: keep probability of the input (0.8).
    hidden_keep: keep probability of the inputs of the later layers (0.5).
  """

  units: int = 240
  pieces: int = 5
  layers: int = 2
  outputs: int = 10
  input_keep: float = 0.8
  hidden_keep: float = 0.5

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    dense = lambda n, name: nn.Dense(
        n, kernel_init=_uniform_init(INIT_RANGE), bias_init=nn.initializers.zeros, name=name
    )
    # The names nn.Dropout would get: the PRNG keys, hence the masks, follow them.
    h = Dropout(1 - self.input_keep, name="Dropout_0")(x, deterministic=not train)
    for i in range(self.layers):
      # Unit j owns the output columns j*pieces .. j*pieces + pieces - 1.
      z = dense(self.units * self.pieces, f"maxout_{i}")(h)
      h = self.unit_max(z.reshape(*z.shape[:-1], self.units, self.pieces))
      h = Dropout(1 - self.hidden_keep, name=f"Dropout_{i + 1}")(h, deterministic=not train)
    return dense(self.outputs, "output")(h)

  def unit_max(self, z: Array) -> Array:
    """Each unit's max over its pieces (the last axis of ``z``): `max_over_pieces`."""
    return max_over_pieces(z)


class SmallCNN(nn.Module):
  """The MNIST CNN of Wong, Rice & Kolter (2020), on flat 784-pixel inputs.

  Conv(1->16, 4x4, stride 2, pad 1), ReLU, Conv(16->32, 4x4, stride 2,
  pad 1), ReLU, Dense(1568->100), ReLU, Dense(100->outputs). Inputs of shape
  ``(n, 784)`` are read as 28x28 images with one channel (NHWC); the
  flattened 7x7x32 features are in Flax's HWC order. Flax's default
  initialisation: LeCun-normal kernels and zero biases (not PyTorch's uniform
  Kaiming), no dropout.

  Attributes:
    outputs: number of classes (10).
  """

  outputs: int = 10

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    del train  # No dropout; the argument keeps the modules interchangeable.
    h = x.reshape(*x.shape[:-1], 28, 28, 1)
    for channels in (16, 32):
      h = nn.relu(nn.Conv(channels, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))(h))
    h = nn.relu(nn.Dense(100)(h.reshape(*h.shape[:-3], -1)))
    return nn.Dense(self.outputs)(h)


class RBF(nn.Module):
  """Shallow RBF network: ``q_k(x) = -sum_i beta_ki (x_i - mu_ki)^2`` per class.

  ``beta_k = softplus(rho_k) >= 0`` makes ``q_k <= 0``, so ``exp(q_k)`` lies
  in (0, 1] and is 1 only at the centre ``mu_k``: the unit is confident only
  near what it has seen. Centres start at 0.5 (mid-grey) and
  ``beta = softplus(-5) ~ 0.0067``, so that on MNIST, where
  ``(x_i - 0.5)^2`` is about 0.25 per pixel, every score starts near
  ``exp(-1.2) ~ 0.3``: neither saturated nor vanishing.

  Attributes:
    outputs: number of classes (10).
  """

  outputs: int = 10

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    del train
    dim = x.shape[-1]
    mu = self.param("mu", nn.initializers.constant(0.5), (self.outputs, dim))
    rho = self.param("rho", nn.initializers.constant(-5.0), (self.outputs, dim))
    beta = jax.nn.softplus(rho)
    # Expand the square as three matmuls: one (n, d) x (d, k) product each
    # instead of an (n, k, d) difference tensor.
    q = 2 * x @ (beta * mu).T - (x * x) @ beta.T - jnp.sum(beta * mu * mu, axis=-1)
    # Rounding can push q a hair above the true maximum of 0.
    return jnp.minimum(q, 0.0)


# ---------------------------------------------------------------------------
# Classifier: module + head, with pure functions of (params, x).
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A Flax module, its output head and its weight constraint.

  Instances are hashable, so they can be static arguments of ``jax.jit``.

  Attributes:
    module: the Flax module; ``module.apply(params, x, train=...)`` gives scores.
    head: how scores become probabilities and a loss (`SOFTMAX`, `SIGMOID`,
      `EXP` or `LOGISTIC`).
    max_col_norm: if set, `constrain` scales every column of every
      ``kernel`` (the incoming weights of one unit, or of one maxout piece)
      down to at most this L2 norm.

  Example:
    >>> model = softmax_regression()
    >>> params = model.init(jax.random.key(0), x[:1])
    >>> error, conf = advjax.error_and_confidence(model.probabilities(params, x), y)
    >>> round(float(error), 3), round(float(conf), 3)  # zero weights: class 0, p = 0.1
    (0.875, 0.1)
  """

  module: nn.Module
  head: Head
  max_col_norm: float | None = None

  def init(self, key: Array, x: Array) -> Params:
    """Initialises the parameters for inputs shaped like ``x`` (one example suffices).

    Args:
      key: PRNG key.
      x: example inputs, shape ``(n, features)``.

    Returns:
      The parameter pytree (the ``"params"`` collection, without the wrapper).
    """
    return self.module.init(key, x)["params"]

  def scores(
      self,
      params: Params,
      x: Array,
      *,
      dropout_key: Array | None = None,
      dropout_masks: Params | None = None,
  ) -> Array:
    """The model's raw outputs: logits, per-class ``q_k``, or one score per example.

    Args:
      params: the parameters.
      x: inputs, shape ``(n, features)``.
      dropout_key: PRNG key for dropout; dropout is on exactly when given.
      dropout_masks: masks that `dropout_masks` drew from ``dropout_key`` for
        inputs of ``x``'s shape; the layers that hold one use it instead of
        drawing it again.

    Returns:
      Scores of shape ``(n, classes)``, or ``(n,)`` for logistic regression.
    """
    train = dropout_key is not None
    rngs = {"dropout": dropout_key} if train else None
    variables = {"params": params}
    if train and dropout_masks:
      variables[DROPOUT_MASKS] = dropout_masks
    # Flax types `apply` as the output or, with `mutable`, (output, state);
    # without `mutable` it is the output, the module's scores.
    return cast(Array, self.module.apply(variables, x, train=train, rngs=rngs))

  def dropout_masks(self, params: Params, x: Array, dropout_key: Array) -> Params:
    """The masks of the module's `Dropout` layers for inputs shaped like ``x``.

    Drawn once, they let every forward pass of a training step read the same
    masks (`scores` with ``dropout_masks``): see `Dropout`. Under ``jit`` the
    forward pass that draws them is dead code and compiled away.

    Args:
      params: the parameters.
      x: inputs, shape ``(n, features)``.
      dropout_key: the PRNG key that `scores` would draw them from.

    Returns:
      The `DROPOUT_MASKS` collection (empty for a module without `Dropout`).

    Example:
      >>> key = jax.random.key(1)
      >>> masks = model.dropout_masks(params, x, key)
      >>> drawn = model.scores(params, x, dropout_key=key, dropout_masks=masks)
      >>> bool((drawn == model.scores(params, x, dropout_key=key)).all())
      True
    """
    _, variables = self.module.apply(
        {"params": params},
        x,
        train=True,
        rngs={"dropout": dropout_key},
        mutable=[DROPOUT_MASKS],
    )
    return variables.get(DROPOUT_MASKS, {})

  def probabilities(self, params: Params, x: Array) -> Array:
    """Class probabilities at evaluation time (no dropout), shape ``(n, classes)``.

    Args:
      params: the parameters.
      x: inputs, shape ``(n, features)``.

    Returns:
      What the paper's confidence is measured on: a softmax, per-class
      sigmoids, per-class ``exp(q_k)``, or ``[P(-1), P(+1)]``.
    """
    return self.head.probabilities(self.scores(params, x))

  def loss(
      self,
      params: Params,
      x: Array,
      y: Array,
      *,
      dropout_key: Array | None = None,
      dropout_masks: Params | None = None,
  ) -> Array:
    """The mean training loss of the head on a batch.

    Args:
      params: the parameters.
      x: inputs, shape ``(n, features)``.
      y: integer labels ``(n,)``, or +-1 for logistic regression.
      dropout_key: PRNG key for dropout; dropout is on exactly when given.
      dropout_masks: masks drawn from ``dropout_key`` (`scores`).

    Returns:
      A scalar.
    """
    scores = self.scores(params, x, dropout_key=dropout_key, dropout_masks=dropout_masks)
    if scores.ndim == 2 and np.ndim(y) == 1:
      _validation.check_labels(y, scores.shape[-1])
    return self.head.loss(scores, y)

  def loss_fn(
      self, dropout_key: Array | None = None, dropout_masks: Params | None = None
  ) -> LossFn:
    """`loss` as the ``(params, x, y) -> scalar`` function that advjax's attacks take.

    Args:
      dropout_key: if given, dropout is on with this key's masks for every call
        of the returned function: the attack, the clean and the adversarial
        term of a training step then share one mask.
      dropout_masks: the masks `dropout_masks` drew from ``dropout_key``, for
        the calls to read rather than draw again.

    Returns:
      ``loss_fn(params, x, y) -> scalar``.

    Example:
      >>> x_adv = advjax.fgsm(model.loss_fn(), params, x, y, eps=0.25)
    """
    if dropout_key is None:
      # The bound method: equal across calls, so jitted code that takes the
      # loss as a static argument compiles once per model.
      return self.loss
    return functools.partial(self.loss, dropout_key=dropout_key, dropout_masks=dropout_masks)

  def constrain(self, params: Params) -> Params:
    """Projects the weights onto the constraint set (identity without one).

    Args:
      params: the parameters.

    Returns:
      ``params`` with every ``kernel`` column rescaled to L2 norm at most
      ``max_col_norm``; other leaves untouched.
    """
    if self.max_col_norm is None:
      return params
    return clip_column_norms(params, self.max_col_norm)


def clip_column_norms(params: Params, max_norm: float) -> Params:
  """Rescales each column of every ``kernel`` leaf to L2 norm at most ``max_norm``.

  A Flax ``Dense`` kernel has shape ``(inputs, outputs)``: column ``j`` holds
  the incoming weights of output ``j`` (one unit, or one maxout piece), which
  is what pylearn2's ``max_col_norm`` constrains. Columns within the bound are
  left exactly as they are.

  Args:
    params: a parameter pytree.
    max_norm: the largest allowed column norm, > 0.

  Returns:
    The projected pytree.

  Example:
    >>> clip_column_norms({"kernel": 3 * jnp.ones((4, 2))}, 1.0)["kernel"]
    Array([[0.5, 0.5],
           [0.5, 0.5],
           [0.5, 0.5],
           [0.5, 0.5]], dtype=float32)
  """
  if not max_norm > 0:
    raise ValueError(f"max_norm must be > 0, got {max_norm!r}.")

  def project(path: tuple[Any, ...], leaf: Array) -> Array:
    if getattr(path[-1], "key", None) != "kernel":
      return leaf
    norms = jnp.sqrt(jnp.sum(leaf * leaf, axis=0, keepdims=True))
    return leaf * jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12))

  return jax.tree_util.tree_map_with_path(project, params)


# ---------------------------------------------------------------------------
# The paper's models
# ---------------------------------------------------------------------------


def softmax_regression(classes: int = 10) -> Classifier:
  """Shallow softmax regression (row M1), zero-initialised.

  Args:
    classes: number of classes.

  Returns:
    A `Classifier` with the `SOFTMAX` head.

  Example:
    >>> model = softmax_regression()
    >>> model.head.name
    'softmax'
  """
  return Classifier(Linear(classes), SOFTMAX)


def logistic_regression() -> Classifier:
  """Logistic regression for labels in {-1, +1} (row M2: 3s against 7s).

  Returns:
    A `Classifier` with the `LOGISTIC` head; its scores are ``w.x + b``, shape
    ``(n,)``, and its ``params["Dense_0"]`` hold ``kernel`` (d, 1) and ``bias``.

  Example:
    >>> model = logistic_regression()
    >>> params = model.init(jax.random.key(0), x[:1])
    >>> model.loss(params, x, jnp.where(y < 5, 1., -1.))  # y in {-1, +1}; zero weights
    Array(0.6931472, dtype=float32)
  """
  return Classifier(Linear(1, squeeze=True), LOGISTIC)


def maxout_mlp(
    units: int = 240,
    pieces: int = 5,
    layers: int = 2,
    classes: int = 10,
    *,
    input_keep: float = 0.8,
    hidden_keep: float = 0.5,
    max_col_norm: float | None = MAX_COL_NORM,
    output: Literal["softmax", "sigmoid"] = "softmax",
) -> Classifier:
  """The maxout network of the paper (rows M3 to M7, and R with sigmoid outputs).

  Weights start uniform in +-0.005 and biases at zero; after every update the
  trainer projects each column of every layer (the output layer included) to
  L2 norm at most 1.9365, as in Goodfellow et al. (2013).

  Args:
    units: maxout units per layer (240; 1600 for M5).
    pieces: affine pieces per unit.
    layers: number of maxout layers.
    classes: number of classes.
    input_keep: dropout keep probability of the input, in (0, 1].
    hidden_keep: dropout keep probability of the later layers' inputs, in (0, 1].
    max_col_norm: the column-norm bound, or None for no constraint.
    output: ``"softmax"``, or ``"sigmoid"`` (one sigmoid per class, trained with
      per-class binary cross-entropy) for the rubbish-class experiment.

  Returns:
    A `Classifier`.

  Example:
    >>> model = maxout_mlp(units=1600)
    >>> model.module.units, model.module.pieces
    (1600, 5)
  """
  for name, value in (
      ("units", units),
      ("pieces", pieces),
      ("layers", layers),
      ("classes", classes),
  ):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
  for name, value in (("input_keep", input_keep), ("hidden_keep", hidden_keep)):
    if not 0 < value <= 1:
      raise ValueError(f"{name} must lie in (0, 1], got {value!r}.")
  heads = {"softmax": SOFTMAX, "sigmoid": SIGMOID}
  if output not in heads:
    raise ValueError(f"output must be 'softmax' or 'sigmoid', got {output!r}.")
  if max_col_norm is not None and not max_col_norm > 0:
    raise ValueError(f"max_col_norm must be > 0 or None, got {max_col_norm!r}.")
  module = Maxout(units, pieces, layers, classes, input_keep, hidden_keep)
  return Classifier(module, heads[output], max_col_norm)


def small_cnn(classes: int = 10) -> Classifier:
  """The small MNIST CNN of the robust-training literature (Wong et al. 2020).

  Two 4x4 stride-2 convolutions (16 and 32 channels), a 100-unit dense layer,
  ReLU, softmax outputs: `SmallCNN`. It takes flat 784-pixel inputs like the
  other models here. No weight constraint, no dropout.

  Args:
    classes: number of classes.

  Returns:
    A `Classifier` with the `SOFTMAX` head.

  Example:
    >>> model = small_cnn()
    >>> params = model.init(jax.random.key(0), x[:1])
    >>> model.scores(params, x).shape
    (8, 10)
  """
  if not isinstance(classes, int) or classes < 1:
    raise ValueError(f"classes must be an int >= 1, got {classes!r}.")
  return Classifier(SmallCNN(classes), SOFTMAX)


def rbf_network(classes: int = 10) -> Classifier:
  """Shallow RBF network (row M8): per-class ``exp(q_k(x))`` probabilities.

  Trained with per-class binary cross-entropy on ``exp(q_k)`` (the `EXP`
  head), the network stays unsure far from its centres: that is the paper's
  low confidence on adversarial examples.

  Args:
    classes: number of classes.

  Returns:
    A `Classifier` with the `EXP` head.

  Example:
    >>> model = rbf_network()
    >>> model.head.name
    'exp'
  """
  return Classifier(RBF(classes), EXP)


@functools.cache
def maxout_linear_first(model: Classifier) -> LinearFirst:
  """A maxout classifier's probabilities split at its first dense layer.

  For the epsilon sweeps' fast path (`advjax.LinearFirst`): ``first`` is the
  first maxout layer's affine map, ``W x + b`` (input dropout, before it, is
  off at evaluation); ``rest`` runs the model's own Flax code with that
  layer's output replaced by ``h``, through a method interceptor. Cached per
  model, so that jitted sweeps reuse their compilation.

  Args:
    model: a `maxout_mlp` classifier.

  Returns:
    An `advjax.LinearFirst` equal to ``model.probabilities``.

  Example:
    >>> probs_fn = maxout_linear_first(model)
    >>> bool(jnp.allclose(probs_fn(params, x), model.probabilities(params, x)))
    True
    >>> sweep = advjax.epsilon_sweep(loss_fn, probs_fn, params, x, y, jnp.linspace(0., 0.3, 4))
  """
  if not isinstance(model.module, Maxout):
    raise ValueError(f"maxout_linear_first needs a maxout_mlp classifier, got {model!r}.")

  def first(params: Params, x: Array) -> Array:
    layer = params["maxout_0"]
    return x @ layer["kernel"] + layer["bias"]

  def rest(params: Params, h: Array) -> Array:
    def replace_first(next_fun, args, kwargs, context):
      if context.method_name == "__call__" and context.module.name == "maxout_0":
        return h
      return next_fun(*args, **kwargs)

    # Only the shape of this input matters: the layer that reads it returns h.
    placeholder = jnp.zeros(h.shape[:-1] + params["maxout_0"]["kernel"].shape[:1], h.dtype)
    with nn.intercept_methods(replace_first):
      return model.probabilities(params, placeholder)

  return LinearFirst(first, rest)
