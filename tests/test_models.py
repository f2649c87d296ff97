"""Tests of advjax.models: shapes, initialisation, constraint, dropout, heads.

Computations run under ``jax.jit``: one compilation per test is much cheaper
than compiling each of dozens of eager operations.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import models

KEY = jax.random.key(0)
X = jax.random.uniform(jax.random.key(1), (6, 784))
Y = jnp.array([0, 1, 2, 3, 4, 5])


@functools.partial(jax.jit, static_argnums=0)
def init(model, x):
  return model.init(KEY, x[:1])


@functools.partial(jax.jit, static_argnums=0)
def scores(model, params, x, dropout_key=None):
  return model.scores(params, x, dropout_key=dropout_key)


@functools.partial(jax.jit, static_argnums=0)
def probabilities(model, params, x):
  return model.probabilities(params, x)


def kernels(params):
  return [
      leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "kernel"
  ]


@pytest.mark.parametrize(
    "model, shape",
    [
        (models.softmax_regression(), (6, 10)),
        (models.maxout_mlp(units=12, pieces=3), (6, 10)),
        (models.maxout_mlp(units=12, output="sigmoid"), (6, 10)),
        (models.rbf_network(), (6, 10)),
        (models.logistic_regression(), (6,)),
    ],
)
def test_scores_probabilities_and_loss_shapes(model, shape):
  params = init(model, X)
  y = jnp.where(Y % 2 == 0, 1.0, -1.0) if len(shape) == 1 else Y

  @jax.jit
  def outputs(params):
    # The loss plugs into the attacks as it is.
    return (
        model.scores(params, X),
        model.probabilities(params, X),
        model.loss(params, X, y),
        advjax.fgsm(model.loss_fn(), params, X, y, 0.25),
    )

  logits, probs, loss, x_adv = outputs(params)
  assert logits.shape == shape
  assert probs.shape == (6, shape[1] if len(shape) == 2 else 2)
  assert bool(jnp.all((probs >= 0) & (probs <= 1)))
  assert loss.shape == () and bool(jnp.isfinite(loss))
  assert x_adv.shape == X.shape


def test_maxout_layout_and_initialisation():
  model = models.maxout_mlp(units=20, pieces=5, layers=2)
  params = init(model, X)
  assert params["maxout_0"]["kernel"].shape == (784, 100)
  assert params["maxout_1"]["kernel"].shape == (20, 100)
  assert params["output"]["kernel"].shape == (20, 10)
  for kernel in kernels(params):
    assert float(jnp.max(jnp.abs(kernel))) <= models.INIT_RANGE
    # Uniform on the whole range, not a narrower distribution.
    assert float(jnp.max(jnp.abs(kernel))) > 0.9 * models.INIT_RANGE
  for name in params:
    assert not np.any(params[name]["bias"])


def test_maxout_takes_the_max_over_the_pieces_of_each_unit():
  model = models.maxout_mlp(units=2, pieces=3, layers=1, classes=1, max_col_norm=None)
  params = init(model, jnp.zeros((1, 2)))
  # Unit 0 owns columns 0..2, unit 1 columns 3..5; the output sums the units.
  params["maxout_0"]["kernel"] = jnp.array(
      [[1.0, -1.0, 0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, -3.0, 0.0]]
  )
  params["output"]["kernel"] = jnp.ones((2, 1))
  x = jnp.array([[1.0, 2.0]])
  # Unit 0: max(1, -1, 2) = 2; unit 1: max(2, -6, 0) = 2.
  np.testing.assert_allclose(scores(model, params, x), [[4.0]])


@pytest.mark.parametrize("mode", ["grad", "jvp", "vmap of grad", "grad of grad"])
def test_max_over_pieces_has_the_values_and_derivatives_of_jnp_max(mode):
  # Integers drawn from a few values: many ties, two and three pieces wide.
  z = jax.random.randint(jax.random.key(2), (4, 6, 5), 0, 3).astype(jnp.float32)
  t = jax.random.normal(jax.random.key(3), z.shape)
  weights = jax.random.normal(jax.random.key(4), z.shape[:-1])
  ours, jaxs = models.max_over_pieces, lambda z: jnp.max(z, axis=-1)
  assert int(jnp.sum(jnp.sum(z == jaxs(z)[..., None], -1) > 1)) > 5  # ties are tested
  total = lambda f: lambda z: jnp.sum(weights * jnp.tanh(f(z)))  # non-linear above the max
  transforms = {
      "grad": lambda f: jax.jit(jax.grad(total(f)))(z),
      "jvp": lambda f: jax.jit(lambda z, t: jax.jvp(f, (z,), (t,)))(z, t),
      "vmap of grad": lambda f: jax.vmap(jax.grad(total(f)))(z),
      "grad of grad": lambda f: jax.grad(lambda z: jnp.sum(jax.grad(total(f))(z) * t))(z),
  }
  np.testing.assert_array_equal(ours(z), jaxs(z))
  close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)
  jax.tree.map(close, transforms[mode](ours), transforms[mode](jaxs))


def test_max_over_pieces_gradient_matches_central_differences():
  z = jax.random.normal(jax.random.key(5), (2, 3, 5))  # no ties
  loss = jax.jit(lambda z: jnp.sum(jnp.sin(models.max_over_pieces(z))))
  step = 1e-2
  bumps = step * jnp.eye(z.size).reshape(-1, *z.shape)
  numeric = jax.vmap(lambda bump: (loss(z + bump) - loss(z - bump)) / (2 * step))(bumps)
  gradient = jax.grad(loss)(z)
  np.testing.assert_allclose(gradient.ravel(), numeric, atol=1e-3)
  assert int(jnp.sum(gradient != 0)) == 6  # one winner per unit


def test_clip_column_norms_closed_form():
  kernel = jnp.array([[3.0, 0.3, 0.0], [4.0, 0.4, 0.0]])  # column norms 5, 0.5, 0
  bias = jnp.array([10.0, 10.0, 10.0])
  out = models.clip_column_norms({"kernel": kernel, "bias": bias}, 1.9365)
  np.testing.assert_allclose(out["kernel"][:, 0], [0.6 * 1.9365, 0.8 * 1.9365], rtol=1e-6)
  # Columns within the bound, and biases, are left exactly as they were.
  np.testing.assert_array_equal(out["kernel"][:, 1:], kernel[:, 1:])
  np.testing.assert_array_equal(out["bias"], bias)


def test_constrain_bounds_every_column_of_every_layer():
  model = models.maxout_mlp(units=8, pieces=2)
  params = jax.tree.map(lambda p: 10 * jnp.ones_like(p), init(model, X))
  constrained = jax.jit(model.constrain)(params)
  for kernel in kernels(constrained):
    norms = jnp.linalg.norm(kernel, axis=0)
    # Every column was too long, so every column now sits on the bound.
    np.testing.assert_allclose(norms, models.MAX_COL_NORM, rtol=1e-5)
  assert float(jnp.min(constrained["output"]["bias"])) == 10.0
  unconstrained = models.maxout_mlp(units=8, pieces=2, max_col_norm=None)
  assert unconstrained.constrain(params) is params


def test_dropout_only_with_a_key_and_same_key_same_mask():
  model = models.maxout_mlp(units=16)
  params = jax.tree.map(lambda p: p * 100, init(model, X))
  evaluation = scores(model, params, X)
  np.testing.assert_array_equal(evaluation, scores(model, params, X))
  a = scores(model, params, X, jax.random.key(5))
  b = scores(model, params, X, jax.random.key(5))
  c = scores(model, params, X, jax.random.key(6))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, evaluation)
  assert not np.allclose(a, c)


class FlaxDropoutMaxout(nn.Module):
  """The maxout network as it was written with Flax's own dropout layers."""

  units: int

  @nn.compact
  def __call__(self, x, *, train=False):
    dense = lambda n, name: nn.Dense(n, name=name)
    h = nn.Dropout(1 - 0.8, deterministic=not train)(x)
    for i in range(2):
      z = dense(self.units * 2, f"maxout_{i}")(h)
      h = models.max_over_pieces(z.reshape(*z.shape[:-1], self.units, 2))
      h = nn.Dropout(1 - 0.5, deterministic=not train)(h)
    return dense(10, "output")(h)


def test_dropout_draws_flax_dropouts_masks_and_reads_them_back():
  model = models.maxout_mlp(units=16, pieces=2)
  params = jax.tree.map(lambda p: p * 100, init(model, X))
  key = jax.random.key(5)
  masks = jax.jit(model.dropout_masks)(params, X, key)
  assert {name: mask["mask"].shape for name, mask in masks.items()} == {
      "Dropout_0": (6, 784),
      "Dropout_1": (6, 16),
      "Dropout_2": (6, 16),
  }
  drawn = scores(model, params, X, key)
  flax_drawn = jax.jit(functools.partial(FlaxDropoutMaxout(16).apply, train=True))(
      {"params": params}, X, rngs={"dropout": key}
  )
  np.testing.assert_array_equal(drawn, flax_drawn)  # the same masks, bit for bit

  read = jax.jit(functools.partial(model.scores, dropout_key=key))
  np.testing.assert_array_equal(read(params, X, dropout_masks=masks), drawn)
  other = jax.jit(model.dropout_masks)(params, X, jax.random.key(6))
  assert not np.allclose(read(params, X, dropout_masks=other), drawn)  # read, not drawn again
  assert (
      models.softmax_regression().dropout_masks(init(models.softmax_regression(), X), X, key) == {}
  )


def test_dropout_of_every_input_gives_zeros_and_a_finite_gradient():
  layer = models.Dropout(1.0)
  x = jnp.ones((2, 3))
  apply = lambda x: layer.apply({}, x, deterministic=False, rngs={"dropout": KEY})
  np.testing.assert_array_equal(apply(x), 0.0)
  np.testing.assert_array_equal(jax.grad(lambda x: apply(x).sum())(x), 0.0)


def test_input_dropout_is_inverted_with_keep_probability():
  model = models.maxout_mlp(units=4, input_keep=0.8, hidden_keep=0.5)
  x = jnp.full((200, 784), 0.5)
  params = init(model, x)
  _, state = jax.jit(functools.partial(model.module.apply, train=True, capture_intermediates=True))(
      {"params": params}, x, rngs={"dropout": jax.random.key(3)}
  )
  dropped_input = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0])
  # Kept pixels are scaled by 1/0.8; about 20% are zeroed.
  assert set(np.unique(dropped_input).round(6)) == {0.0, 0.625}
  assert abs(np.mean(dropped_input == 0) - 0.2) < 0.01
  hidden = np.asarray(state["intermediates"]["Dropout_1"]["__call__"][0])
  assert abs(np.mean(hidden == 0) - 0.5) < 0.05


def test_rbf_matches_its_formula_and_is_confident_only_near_its_centre():
  model = models.rbf_network(classes=3)
  x = np.random.default_rng(2).uniform(size=(4, 5)).astype(np.float32)
  mu = np.random.default_rng(3).uniform(size=(3, 5)).astype(np.float32)
  params = jax.tree.map(jnp.asarray, {"mu": mu, "rho": np.zeros((3, 5), np.float32)})
  assert jax.tree.map(jnp.shape, init(model, x)) == jax.tree.map(jnp.shape, params)
  beta = np.log(2.0)  # softplus(0)
  expected = -beta * np.sum((x[:, None, :] - mu[None]) ** 2, axis=-1)
  np.testing.assert_allclose(scores(model, params, x), expected, rtol=1e-5, atol=1e-6)
  at_centre = probabilities(model, params, mu)
  np.testing.assert_allclose(np.diag(at_centre), 1.0, rtol=1e-5)
  far = probabilities(model, params, mu + 10.0)
  assert float(np.max(far)) < 1e-6
  # Unlike a softmax, the per-class probabilities may all be small together.
  assert float(np.max(np.sum(far, axis=-1))) < 0.1
  loss, grads = jax.jit(jax.value_and_grad(model.loss))(params, mu, jnp.arange(3))
  assert bool(jnp.isfinite(loss))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_rbf_initial_scores_are_neither_saturated_nor_vanishing():
  model = models.rbf_network()
  probs = probabilities(model, init(model, X), X)
  assert 0.01 < float(jnp.min(probs)) and float(jnp.max(probs)) < 0.9


def test_exp_head_loss_is_binary_cross_entropy_of_exp_q():
  q = jnp.array([[-0.1, -2.0, -30.0]])
  p = jnp.exp(q)
  expected = -(jnp.log(p[0, 0]) + jnp.log(1 - p[0, 1]) + jnp.log(1 - p[0, 2]))
  np.testing.assert_allclose(models.EXP.loss(q, jnp.array([0])), expected, rtol=1e-5)


def test_sigmoid_head_is_per_class_binary_cross_entropy():
  logits = jnp.array([[2.0, -1.0, 0.5]])
  p = jax.nn.sigmoid(logits)
  expected = -(jnp.log(p[0, 1]) + jnp.log(1 - p[0, 0]) + jnp.log(1 - p[0, 2]))
  np.testing.assert_allclose(models.SIGMOID.loss(logits, jnp.array([1])), expected, rtol=1e-5)


def test_softmax_probabilities_sum_to_one():
  model = models.maxout_mlp(units=8)
  params = jax.tree.map(lambda p: p * 300, init(model, X))
  np.testing.assert_allclose(np.sum(probabilities(model, params, X), -1), 1.0, rtol=1e-5)


def test_logistic_regression_agrees_with_the_core_loss():
  model = models.logistic_regression()
  w = jnp.asarray(np.random.default_rng(4).normal(size=784).astype(np.float32) * 0.01)
  params = {"Dense_0": {"kernel": w[:, None], "bias": jnp.array([0.3])}}
  assert jax.tree.map(jnp.shape, init(model, X)) == jax.tree.map(jnp.shape, params)
  y = jnp.where(Y % 2 == 0, 1.0, -1.0)
  np.testing.assert_allclose(
      jax.jit(model.loss)(params, X, y), jax.jit(advjax.logistic_loss)(w, 0.3, X, y), rtol=1e-5
  )
  probs = probabilities(model, params, X)
  np.testing.assert_allclose(probs[:, 1], 1 / (1 + np.exp(-(np.asarray(X) @ w + 0.3))), rtol=1e-5)


def test_classifiers_are_hashable_static_arguments():
  assert hash(models.maxout_mlp()) == hash(models.maxout_mlp())
  assert models.maxout_mlp() != models.maxout_mlp(output="sigmoid")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"units": 0},
        {"pieces": 2.5},
        {"input_keep": 0.0},
        {"hidden_keep": 1.5},
        {"output": "tanh"},
        {"max_col_norm": -1.0},
    ],
)
def test_maxout_rejects_bad_settings(kwargs):
  with pytest.raises(ValueError):
    models.maxout_mlp(**kwargs)


def test_clip_column_norms_rejects_a_non_positive_bound():
  with pytest.raises(ValueError, match="max_norm"):
    models.clip_column_norms({"kernel": jnp.ones((2, 2))}, 0.0)


def test_maxout_linear_first_equals_the_model_and_rejects_other_models():
  model = models.maxout_mlp(units=6, pieces=3, classes=4)
  x = jax.random.uniform(jax.random.key(0), (5, 12))
  params = model.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
  split = models.maxout_linear_first(model)
  np.testing.assert_allclose(split(params, x), model.probabilities(params, x), rtol=1e-5)
  with pytest.raises(ValueError, match="maxout"):
    models.maxout_linear_first(models.softmax_regression())


def torch_layout_cnn(params, x):
  """Wong et al.'s network written as PyTorch runs it: NCHW images, OIHW kernels."""
  conv = (
      lambda h, layer: jax.lax.conv_general_dilated(
          h,
          jnp.transpose(layer["kernel"], (3, 2, 0, 1)),  # HWIO -> OIHW
          window_strides=(2, 2),
          padding=((1, 1), (1, 1)),
          dimension_numbers=("NCHW", "OIHW", "NCHW"),
      )
      + layer["bias"][None, :, None, None]
  )
  h = jax.nn.relu(conv(x.reshape(-1, 1, 28, 28), params["Conv_0"]))
  h = jax.nn.relu(conv(h, params["Conv_1"]))
  # Flax flattens 7x7x32 features in HWC order, PyTorch in CHW.
  h = jnp.transpose(h, (0, 2, 3, 1)).reshape(h.shape[0], -1)
  h = jax.nn.relu(h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
  return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]


def test_small_cnn_has_wong_et_al_layers_and_matches_a_second_implementation():
  model = models.small_cnn()
  params = init(model, X)
  shapes = jax.tree.map(lambda leaf: leaf.shape, params)
  assert shapes == {
      "Conv_0": {"kernel": (4, 4, 1, 16), "bias": (16,)},
      "Conv_1": {"kernel": (4, 4, 16, 32), "bias": (32,)},
      "Dense_0": {"kernel": (1568, 100), "bias": (100,)},
      "Dense_1": {"kernel": (100, 10), "bias": (10,)},
  }
  # Wong et al.'s PyTorch model: 272 + 8,224 + 156,900 + 1,010 parameters.
  assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 166_406
  # Flax's defaults: LeCun-normal kernels (std 1/sqrt(fan_in)), zero biases.
  assert all(float(jnp.max(jnp.abs(b))) == 0 for b in jax.tree.leaves(params) if b.ndim == 1)
  np.testing.assert_allclose(float(jnp.std(params["Dense_0"]["kernel"])), 1 / 1568**0.5, rtol=0.05)
  params = jax.tree.map(lambda p: p + 0.01, params)  # biases too
  np.testing.assert_allclose(
      scores(model, params, X), jax.jit(torch_layout_cnn)(params, X), rtol=1e-5, atol=1e-5
  )
