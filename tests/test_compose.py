"""advjax composes like any JAX function, inside code nobody here wrote (issue 16).

Each test is one way a JAX user reaches for the library: a whole Equinox
model, a gradient in alpha, a loss closing over a traced value, shard_map,
an auxiliary output, forward mode, the submodules on first use.
"""

import functools
import importlib
import inspect
import re
import subprocess
import sys

from absl.testing import parameterized
import chex
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import advjax
from tests.conftest import mlp_loss
from tests.conftest import mlp_problem

D, CLASSES = 6, 3


def cross_entropy(logits, y):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def eqx_model(seed=0):
  """An Equinox MLP: its activation functions are non-array leaves."""
  return eqx.nn.MLP(D, CLASSES, 5, 1, activation=jnp.tanh, key=jax.random.key(seed))


def eqx_loss(model, x, y):
  return cross_entropy(jax.vmap(model)(x), y)


def eqx_probs(model, x):
  return jax.nn.softmax(jax.vmap(model)(x))


def data(seed=0, n=8):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=(n, D)), jnp.float32)
  y = jnp.asarray(rng.integers(0, CLASSES, size=n), jnp.int32)
  return x, y


def plain_objective(loss_fn, params, x, y, eps, alpha):
  """eq. (6) written out: the reference every test compares against."""
  x_adv = jax.lax.stop_gradient(advjax.fgsm(loss_fn, params, x, y, eps))
  return alpha * loss_fn(params, x, y) + (1 - alpha) * loss_fn(params, x_adv, y)


class EquinoxTest(chex.TestCase):

  def test_adversarial_loss_takes_a_whole_equinox_model(self):
    model, (x, y) = eqx_model(), data()
    value, grads = eqx.filter_value_and_grad(advjax.adversarial_loss(eqx_loss, 0.1, 0.3))(
        model, x, y
    )
    expected_value, expected_grads = eqx.filter_value_and_grad(
        functools.partial(plain_objective, eqx_loss, eps=0.1, alpha=0.3)
    )(model, x, y)
    chex.assert_trees_all_close(value, expected_value, rtol=1e-6)
    chex.assert_trees_all_close(
        eqx.filter(grads, eqx.is_array), eqx.filter(expected_grads, eqx.is_array), rtol=1e-5
    )

  def test_epsilon_sweep_takes_an_equinox_model(self):
    model, (x, y) = eqx_model(), data()
    eps_values = jnp.array([0.0, 0.1, 0.5])
    sweep = advjax.epsilon_sweep(eqx_loss, eqx_probs, model, x, y, eps_values)
    for k, eps in enumerate(eps_values):
      x_adv = advjax.fgsm(eqx_loss, model, x, y, eps)
      error, _ = advjax.error_and_confidence(eqx_probs(model, x_adv), y)
      self.assertEqual(sweep.error[k], error)
    logits = advjax.direction_sweep(
        lambda m, v: jax.vmap(m)(v), model, x, jnp.ones_like(x), eps_values
    )
    chex.assert_trees_all_close(logits[1], jax.vmap(model)(x + 0.1), rtol=1e-5)

  def test_ensembles_take_equinox_models(self):
    (x, y), members = data(), [eqx_model(seed) for seed in range(3)]
    stacked = advjax.stack(members)
    self.assertEqual(advjax.ensemble_size(stacked), 3)
    self.assertIs(stacked.activation, jnp.tanh)  # shared, not stacked
    chex.assert_trees_all_equal(
        eqx.filter(advjax.member(stacked, 1), eqx.is_array), eqx.filter(members[1], eqx.is_array)
    )
    expected = sum(eqx_probs(m, x) for m in members) / 3
    chex.assert_trees_all_close(advjax.ensemble_probs(eqx_probs, stacked, x), expected, rtol=1e-6)
    x_adv = advjax.fgsm(advjax.ensemble_loss(eqx_probs), stacked, x, y, 0.1)
    chex.assert_shape(x_adv, x.shape)
    initialised = advjax.init_ensemble(
        lambda key: eqx.nn.MLP(D, CLASSES, 5, 1, activation=jnp.tanh, key=key), jax.random.key(0), 3
    )
    self.assertEqual(advjax.ensemble_size(initialised), 3)
    with self.assertRaisesRegex(ValueError, r"non-array leaves; leaf \.activation"):
      advjax.stack([members[0], eqx.tree_at(lambda m: m.activation, members[1], jax.nn.relu)])

  def test_ensemble_step_trains_equinox_members(self):
    optimizer = optax.sgd(0.1)
    (x, y), members = data(), [eqx_model(seed) for seed in range(2)]

    def train_step(state, batch, rng):
      del rng
      model, opt_state = state
      loss, grads = eqx.filter_value_and_grad(advjax.adversarial_loss(eqx_loss, 0.1))(model, *batch)
      updates, opt_state = optimizer.update(grads, opt_state, model)
      return (eqx.apply_updates(model, updates), opt_state), loss

    states = [(m, optimizer.init(eqx.filter(m, eqx.is_array))) for m in members]
    rngs = jax.random.split(jax.random.key(0), 2)
    stepped, losses = advjax.ensemble_step(train_step)(advjax.stack(states), (x, y), rngs)
    for k, state in enumerate(states):
      expected_state, expected_loss = train_step(state, (x, y), rngs[k])
      chex.assert_trees_all_close(losses[k], expected_loss, rtol=1e-6)
      chex.assert_trees_all_close(
          eqx.filter(advjax.member(stepped, k), eqx.is_array),
          eqx.filter(expected_state, eqx.is_array),
          rtol=1e-5,
      )


class GradientTest(chex.TestCase):

  def test_gradient_in_alpha_is_clean_minus_adversarial_loss(self):
    params, x, y = mlp_problem()
    grad = jax.grad(lambda a: advjax.adversarial_loss(mlp_loss, 0.3, a)(params, x, y))(0.5)
    x_adv = advjax.fgsm(mlp_loss, params, x, y, 0.3)
    expected = mlp_loss(params, x, y) - mlp_loss(params, x_adv, y)
    self.assertGreater(abs(float(expected)), 0.1)
    chex.assert_trees_all_close(grad, expected, rtol=1e-5)

  def test_gradient_in_eps_is_zero_since_x_adv_is_a_constant(self):
    params, x, y = mlp_problem()
    grad = jax.grad(lambda e: advjax.adversarial_loss(mlp_loss, e)(params, x, y))(0.3)
    self.assertEqual(float(grad), 0.0)

  def test_loss_fn_may_close_over_a_traced_value(self):
    params, x, y = mlp_problem()

    def objective(form, temperature):
      scaled = lambda p, v, labels: mlp_loss(p, v, labels) * temperature
      if form == "plain":
        return plain_objective(scaled, params, x, y, 0.1, 0.5)
      return advjax.adversarial_loss(scaled, 0.1)(params, x, y)

    grad = jax.grad(functools.partial(objective, "advjax"))(2.0)
    chex.assert_trees_all_close(
        grad, jax.grad(functools.partial(objective, "plain"))(2.0), rtol=1e-6
    )

  def test_forward_mode_matches_reverse_mode(self):
    params, x, y = mlp_problem()
    loss = advjax.adversarial_loss(mlp_loss, 0.1)
    tangent = jax.tree.map(jnp.ones_like, params)
    _, derivative = jax.jvp(lambda p: loss(p, x, y), (params,), (tangent,))
    grads = jax.grad(loss)(params, x, y)
    expected = sum(jnp.sum(g) for g in jax.tree.leaves(grads))
    chex.assert_trees_all_close(derivative, expected, rtol=1e-5)

  def test_grad_under_shard_map(self):
    params, x, y = mlp_problem()  # 8 examples, 2 on each of 4 devices
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("batch",))
    spec = jax.sharding.PartitionSpec

    def sharded_grad(params, x, y):
      # The gradient of the replicated params is summed over the devices:
      # the mean of the per-device losses is the global mean.
      loss = advjax.adversarial_loss(mlp_loss, 0.1)
      return jax.grad(lambda p: loss(p, x, y) / jax.lax.axis_size("batch"))(params)

    grads = jax.jit(
        jax.shard_map(
            sharded_grad,
            mesh=mesh,
            in_specs=(spec(), spec("batch"), spec("batch")),
            out_specs=spec(),
        )
    )(params, x, y)
    # FGSM's sign does not see the loss's scale: each device's x_adv is the global one.
    chex.assert_trees_all_close(
        grads, jax.grad(advjax.adversarial_loss(mlp_loss, 0.1))(params, x, y), rtol=1e-5, atol=1e-6
    )


class BatchNormMLP(nn.Module):
  """A Flax model with batch statistics, as in Flax's own examples."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(5)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(CLASSES)(jnp.tanh(x))


class AuxTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    self.model = BatchNormMLP()
    self.x, self.y = data()
    self.variables = self.model.init(jax.random.key(0), self.x, train=False)

  def loss_with_aux(self, params, x, y):
    logits, updates = self.model.apply(
        {"params": params, "batch_stats": self.variables["batch_stats"]},
        x,
        train=True,
        mutable=["batch_stats"],
    )
    return cross_entropy(logits, y), (logits, updates["batch_stats"])

  def test_has_aux_returns_the_clean_pass_aux(self):
    params = self.variables["params"]
    objective = advjax.adversarial_loss(self.loss_with_aux, 0.1, has_aux=True)
    (value, (logits, stats)), grads = jax.value_and_grad(objective, has_aux=True)(
        params, self.x, self.y
    )
    _, (clean_logits, clean_stats) = self.loss_with_aux(params, self.x, self.y)
    chex.assert_trees_all_close((logits, stats), (clean_logits, clean_stats), rtol=1e-6)
    without_aux = lambda p, x, y: self.loss_with_aux(p, x, y)[0]
    expected_value, expected_grads = jax.value_and_grad(advjax.adversarial_loss(without_aux, 0.1))(
        params, self.x, self.y
    )
    chex.assert_trees_all_close((value, grads), (expected_value, expected_grads), rtol=1e-6)

  def test_aux_costs_no_extra_pass(self):
    if jax.default_backend() != "cpu":
      self.skipTest("counts the dot instructions of the CPU backend's HLO")
    params = self.variables["params"]
    without_aux = lambda p, x, y: self.loss_with_aux(p, x, y)[0]
    with_aux = jax.value_and_grad(
        advjax.adversarial_loss(self.loss_with_aux, 0.1, has_aux=True), has_aux=True
    )
    plain = jax.value_and_grad(advjax.adversarial_loss(without_aux, 0.1))

    def dots(fn):
      compiled = jax.jit(fn).lower(params, self.x, self.y).compile().as_text()
      return len(re.findall(r"\bdot\(", compiled))

    self.assertEqual(dots(with_aux), dots(plain))


class SubmodulesTest(parameterized.TestCase):

  def test_import_advjax_loads_no_flax_orbax_or_tfds(self):
    code = (
        "import sys, advjax\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} &\n"
        "               {'flax', 'orbax', 'tensorflow_datasets'})\n"
        "assert not heavy, heavy\n"
        "assert callable(advjax.data.load_mnist)\n"
        "assert callable(advjax.models.maxout_mlp)\n"
        "assert 'flax' in sys.modules\n"
        "assert callable(advjax.train.create_train_state)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

  def test_unknown_names_still_raise_attribute_error(self):
    self.assertFalse(hasattr(advjax, "no_such_module"))

  @parameterized.parameters(
      "attacks",
      "checkpoint",
      "data",
      "ensembles",
      "evaluation",
      "loop",
      "metrics",
      "models",
      "objectives",
      "sharding",
      "sweeps",
      "train",
  )
  def test_each_module_lists_its_public_api_in_all(self, name):
    module = importlib.import_module(f"advjax.{name}")
    self.assertEqual(module.__all__, sorted(set(module.__all__)))
    self.assertEqual([n for n in module.__all__ if not hasattr(module, n)], [])
    # Every public function and class defined here is listed.
    defined = [
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and getattr(value, "__module__", None) == module.__name__
    ]
    self.assertEqual(sorted(set(defined) - set(module.__all__)), [])

  def test_top_level_all_resolves(self):
    self.assertEqual([n for n in advjax.__all__ if not hasattr(advjax, n)], [])
