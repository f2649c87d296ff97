"""Tests of the adversarial objective, the paper's noise and rubbish controls, and L1 decay."""

import re

from absl.testing import parameterized
import chex
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import loop
from advjax import objectives
from tests.conftest import logistic
from tests.conftest import logistic_problem
from tests.conftest import mlp_loss
from tests.conftest import mlp_problem


def separate_gradient(loss_fn, params, x, y, eps, alpha):
  """alpha*grad J(x) + (1-alpha)*grad J(x_adv), each computed on its own."""
  x_adv = advjax.fgsm(loss_fn, params, x, y, eps)
  clean = jax.grad(loss_fn)(params, x, y)
  adversarial = jax.grad(loss_fn)(params, x_adv, y)
  return jax.tree.map(lambda c, a: alpha * c + (1 - alpha) * a, clean, adversarial)


class AdversarialLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.5, 0.2)
  def test_gradient_is_weighted_sum_of_clean_and_adversarial(self, alpha):
    params, x, y = mlp_problem()
    grad = self.variant(jax.grad(advjax.adversarial_loss(mlp_loss, 0.1, alpha)))
    chex.assert_trees_all_close(
        grad(params, x, y),
        separate_gradient(mlp_loss, params, x, y, 0.1, alpha),
        rtol=1e-5,
        atol=1e-6,
    )

  def test_value_is_weighted_sum(self):
    params, x, y = mlp_problem()
    x_adv = advjax.fgsm(mlp_loss, params, x, y, 0.1)
    expected = 0.3 * mlp_loss(params, x, y) + 0.7 * mlp_loss(params, x_adv, y)
    value, _ = jax.value_and_grad(advjax.adversarial_loss(mlp_loss, 0.1, 0.3))(params, x, y)
    chex.assert_trees_all_close(
        advjax.adversarial_loss(mlp_loss, 0.1, 0.3)(params, x, y), expected, rtol=1e-6
    )
    chex.assert_trees_all_close(value, expected, rtol=1e-6)

  def test_logistic_regression_reaches_the_closed_form(self):
    params, x, y = logistic_problem()
    value = advjax.adversarial_loss(logistic, 0.25, alpha=0.0)(params, x, y)
    chex.assert_trees_all_close(
        value, advjax.logistic_worst_case_loss(params["w"], params["b"], x, y, 0.25), rtol=1e-5
    )

  @parameterized.parameters((0.0, 0.5), (0.1, 1.0))
  def test_reduces_to_the_clean_loss(self, eps, alpha):
    params, x, y = mlp_problem()
    adversarial = advjax.adversarial_loss(mlp_loss, eps, alpha)
    chex.assert_trees_all_close(adversarial(params, x, y), mlp_loss(params, x, y), rtol=1e-6)
    chex.assert_trees_all_close(
        jax.grad(adversarial)(params, x, y), jax.grad(mlp_loss)(params, x, y), rtol=1e-5, atol=1e-7
    )

  def test_costs_two_forward_and_three_backward_passes(self):
    # A two-layer model runs 2 matrix products per forward pass, 2 in the
    # attack's backward pass to the input (by W2 and W1 transposed) and 3 in
    # each backward pass to the parameters (by W2 transposed, and one per
    # weight gradient). Once XLA has merged the attack's forward pass with the
    # clean term's, that is 2*2 + 2 + 2*3 = 12 products; a third forward pass
    # would make 14.
    if jax.default_backend() != "cpu":
      self.skipTest("counts the dot instructions of the CPU backend's HLO")

    def two_layer_loss(params, x, y):
      logits = jnp.tanh(x @ params["w1"]) @ params["w2"]
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    params = {"w1": jnp.ones((5, 4)), "w2": jnp.ones((4, 3))}
    x, y = jnp.ones((4, 5)), jnp.array([0, 1, 2, 0])
    grad = jax.jit(jax.grad(advjax.adversarial_loss(two_layer_loss, 0.1)))
    compiled = grad.lower(params, x, y).compile().as_text()
    self.assertEqual(len(re.findall(r"\bdot\(", compiled)), 12)

  def test_gradient_with_respect_to_x_treats_x_adv_as_constant(self):
    params, x, y = mlp_problem()
    grad_x = jax.grad(advjax.adversarial_loss(mlp_loss, 0.1, 0.5), argnums=1)(params, x, y)
    chex.assert_trees_all_close(grad_x, 0.5 * advjax.input_grad(mlp_loss, params, x, y), rtol=1e-6)

  def test_vmap_over_eps_and_over_stacked_params(self):
    params, x, y = mlp_problem()
    eps = jnp.array([0.0, 0.05, 0.1])
    values = jax.vmap(lambda e: advjax.adversarial_loss(mlp_loss, e)(params, x, y))(eps)
    for k in range(3):
      chex.assert_trees_all_close(
          values[k], advjax.adversarial_loss(mlp_loss, float(eps[k]))(params, x, y), rtol=1e-6
      )
    members = [mlp_problem(seed)[0] for seed in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
    grads = jax.vmap(jax.grad(advjax.adversarial_loss(mlp_loss, 0.1)), in_axes=(0, None, None))(
        stacked, x, y
    )
    for k, member in enumerate(members):
      chex.assert_trees_all_close(
          jax.tree.map(lambda g, k=k: g[k], grads),
          separate_gradient(mlp_loss, member, x, y, 0.1, 0.5),
          rtol=1e-5,
          atol=1e-6,
      )

  def test_no_retrace_when_eps_changes(self):
    params, x, y = mlp_problem()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, x, y, eps):
      return jax.grad(advjax.adversarial_loss(mlp_loss, eps))(params, x, y)

    chex.clear_trace_counter()
    for eps in (0.1, 0.2, 0.3):
      step(params, x, y, eps)

  @parameterized.parameters(jnp.float32, jnp.bfloat16)
  def test_dtypes(self, dtype):
    params, x, y = mlp_problem()
    params, x = jax.tree.map(lambda a: a.astype(dtype), (params, x))
    value, grad = jax.value_and_grad(advjax.adversarial_loss(mlp_loss, 0.1))(params, x, y)
    self.assertEqual(value.dtype, dtype)
    chex.assert_trees_all_equal_dtypes(grad, params)

  @parameterized.parameters(-0.5, 1.5, float("nan"))
  def test_bad_alpha(self, alpha):
    with pytest.raises(ValueError, match="alpha"):
      advjax.adversarial_loss(mlp_loss, 0.1, alpha)

  def test_bad_eps_and_batch(self):
    params, x, y = mlp_problem()
    with pytest.raises(ValueError, match="eps"):
      advjax.adversarial_loss(mlp_loss, -0.1)
    with pytest.raises(ValueError, match="batch size"):
      advjax.adversarial_loss(mlp_loss, 0.1)(params, x, y[:3])

  @parameterized.named_parameters(
      ("nan_eps", float("nan"), 0.5),
      ("negative_eps", -0.1, 0.5),
      ("alpha_above_one", 0.1, 1.5),
      ("nan_alpha", 0.1, float("nan")),
  )
  def test_traced_bad_eps_or_alpha_raise_under_checkify(self, eps, alpha):
    params, x, y = mlp_problem()
    step = jax.jit(
        lambda eps, alpha: jax.grad(advjax.adversarial_loss(mlp_loss, eps, alpha))(params, x, y)
    )
    error, _ = checkify.checkify(step)(eps, alpha)
    with pytest.raises(checkify.JaxRuntimeError, match="eps|alpha"):
      error.throw()
    error, _ = checkify.checkify(step)(0.1, 0.5)
    self.assertIsNone(error.get())


class ControlsTest(chex.TestCase):

  def test_sign_noise_moves_every_pixel_by_eps(self):
    x = jnp.full((200, 50), 0.5)
    noisy = advjax.sign_noise(jax.random.key(0), x, 0.25)
    np.testing.assert_allclose(jnp.abs(noisy - x), 0.25)
    self.assertLess(abs(float(jnp.mean(jnp.sign(noisy - x)))), 0.05)

  def test_uniform_noise_stays_within_eps(self):
    x = jnp.zeros((200, 50))
    noisy = advjax.uniform_noise(jax.random.key(0), x, 0.25)
    self.assertLessEqual(float(jnp.max(jnp.abs(noisy))), 0.25)
    # U(-eps, eps) has variance eps^2 / 3.
    np.testing.assert_allclose(float(jnp.var(noisy)), 0.25**2 / 3, rtol=0.05)

  def test_rubbish_inputs_are_standard_normal(self):
    samples = advjax.rubbish_inputs(jax.random.key(0), 1000)
    chex.assert_shape(samples, (1000, 784))
    np.testing.assert_allclose(float(jnp.mean(samples)), 0.0, atol=0.01)
    np.testing.assert_allclose(float(jnp.std(samples)), 1.0, atol=0.01)
    with pytest.raises(ValueError, match="num"):
      advjax.rubbish_inputs(jax.random.key(0), -1)

  def test_noise_loss_is_weighted_sum(self):
    params, x, y = mlp_problem()
    key = jax.random.key(1)
    loss = advjax.noise_loss(mlp_loss, advjax.sign_noise, key, 0.1, 0.5)
    expected = 0.5 * mlp_loss(params, x, y) + 0.5 * mlp_loss(
        params, advjax.sign_noise(key, x, 0.1), y
    )
    chex.assert_trees_all_close(loss(params, x, y), expected, rtol=1e-6)


class L1Test(chex.TestCase):

  def test_adds_the_weight_decay_of_the_kernels_only(self):
    params = {"Dense_0": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0])}}
    loss = objectives.L1(0.5)(lambda p, x, y: jnp.sum(x), jax.random.key(0))
    self.assertAlmostEqual(float(loss(params, jnp.ones(3), None)), 3 + 0.5 * 3)

  def test_gradient_of_the_penalty_is_coefficient_times_sign_of_each_kernel(self):
    kernel = jnp.array([[1.0, -2.0], [0.5, -3.0]])
    params = {
        "Dense_0": {"kernel": kernel, "bias": jnp.array([5.0, -1.0])},
        "Dense_1": {"kernel": jnp.array([[-4.0], [2.0]]), "bias": jnp.array([1.0])},
    }
    loss = objectives.L1(0.25)(lambda p, x, y: 0.0, jax.random.key(0))
    grads = jax.grad(loss)(params, None, None)
    for layer in params:
      np.testing.assert_array_equal(grads[layer]["kernel"], 0.25 * np.sign(params[layer]["kernel"]))
      np.testing.assert_array_equal(grads[layer]["bias"], 0.0)

  def test_run_fingerprint_names_the_class_only(self):
    # Run folders are named after this: the committed L1 runs, trained when L1
    # lived in experiments/shallow.py, resume only while it stays the same.
    self.assertEqual(loop.describe(objectives.L1(0.0025)), {"type": "L1", "coefficient": 0.0025})

  def test_negative_coefficient(self):
    with pytest.raises(ValueError, match=re.escape("coefficient must be >= 0, got -1.0.")):
      objectives.L1(-1.0)
