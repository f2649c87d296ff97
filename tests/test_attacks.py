"""Tests of the attacks against closed forms, finite differences and each other."""

import functools

from absl.testing import parameterized
import chex
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from tests.conftest import logistic
from tests.conftest import logistic_problem
from tests.conftest import mlp_loss
from tests.conftest import mlp_problem


class FgsmTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_logistic_regression_worst_case_is_closed_form(self):
    params, x, y = logistic_problem()
    eps = 0.25
    x_adv = self.variant(functools.partial(advjax.fgsm, logistic))(params, x, y, eps)
    expected = x - eps * y[:, None] * jnp.sign(params["w"])
    # Within one float32 value: where x + eta rounds out of the eps-ball, the
    # attack takes the neighbour toward x.
    np.testing.assert_array_max_ulp(x_adv, expected, maxulp=1)
    chex.assert_trees_all_close(
        logistic(params, x_adv, y),
        advjax.logistic_worst_case_loss(params["w"], params["b"], x, y, eps),
        rtol=1e-5,
    )

  @chex.variants(with_jit=True, without_jit=True)
  def test_perturbation_has_max_norm_eps_where_gradient_is_nonzero(self):
    params, x, y = mlp_problem()
    params["w1"] = params["w1"].at[2].set(0.0)  # input 2 does not matter
    eps = 0.1
    x_adv = self.variant(functools.partial(advjax.fgsm, mlp_loss))(params, x, y, eps)
    delta = np.abs(np.asarray(x_adv - x))
    np.testing.assert_allclose(np.delete(delta, 2, axis=1), eps, rtol=1e-5)
    np.testing.assert_array_equal(delta[:, 2], 0.0)  # sign(0) = 0

  def test_eps_zero_returns_x(self):
    params, x, y = mlp_problem()
    np.testing.assert_array_equal(advjax.fgsm(mlp_loss, params, x, y, 0.0), x)

  def test_one_eps_per_example(self):
    params, x, y = mlp_problem()
    eps = jnp.linspace(0.0, 0.3, x.shape[0])
    x_adv = advjax.fgsm(mlp_loss, params, x, y, eps)
    for i in range(x.shape[0]):
      single = advjax.fgsm(mlp_loss, params, x, y, float(eps[i]))
      np.testing.assert_allclose(x_adv[i], single[i], rtol=1e-6)

  def test_clip_keeps_inputs_in_box(self):
    params, x, y = mlp_problem()
    x_adv = advjax.fgsm(mlp_loss, params, x, y, 0.5, clip=(0.0, 1.0))
    self.assertGreaterEqual(float(x_adv.min()), 0.0)
    self.assertLessEqual(float(x_adv.max()), 1.0)

  def test_fgsm_raises_the_loss(self):
    params, x, y = mlp_problem()
    x_adv = advjax.fgsm(mlp_loss, params, x, y, 0.05)
    self.assertGreater(float(mlp_loss(params, x_adv, y)), float(mlp_loss(params, x, y)))

  def test_targeted_step_lowers_the_target_loss(self):
    params, x, _ = mlp_problem()
    target = jnp.full(x.shape[0], 2, jnp.int32)
    x_adv = advjax.targeted_fgsm(mlp_loss, params, x, target, 0.05)
    self.assertLess(float(mlp_loss(params, x_adv, target)), float(mlp_loss(params, x, target)))
    np.testing.assert_array_max_ulp(
        x_adv, x - 0.05 * jnp.sign(advjax.input_grad(mlp_loss, params, x, target)), maxulp=1
    )

  @parameterized.parameters(jnp.float32, jnp.bfloat16)
  def test_output_dtype_follows_input(self, dtype):
    params, x, y = mlp_problem()
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    x = x.astype(dtype)
    self.assertEqual(advjax.fgsm(mlp_loss, params, x, y, 0.1).dtype, dtype)
    self.assertEqual(
        advjax.pgd(mlp_loss, params, x, y, 0.1, step_size=0.05, num_steps=2).dtype, dtype
    )


class BallTest(chex.TestCase):
  """``|x_adv - x| <= eps`` exactly, in every dtype: bfloat16 rounding used to overshoot."""

  def low_precision_problem(self, dtype):
    params, _, _ = mlp_problem()
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(size=(256, 6)), dtype)  # pixels in [0, 1]
    y = jnp.asarray(rng.integers(0, 3, size=256), jnp.int32)
    return jax.tree.map(lambda a: a.astype(dtype), params), x, y

  def assert_in_ball(self, x_adv, x, eps):
    distance = np.abs(np.asarray(x_adv, np.float64) - np.asarray(x, np.float64))
    self.assertLessEqual(distance.max(), float(np.float32(eps)))
    self.assertGreater(distance.max(), eps - 2**-7)  # and not needlessly short

  @parameterized.product(
      dtype=[jnp.bfloat16, jnp.float16, jnp.float32], eps=[0.1, 0.25, 0.3], jit=[False, True]
  )
  def test_fgsm_stays_in_the_eps_ball_in_every_dtype(self, dtype, eps, jit):
    params, x, y = self.low_precision_problem(dtype)
    attack = functools.partial(advjax.fgsm, mlp_loss)
    x_adv = (jax.jit(attack) if jit else attack)(params, x, y, eps)
    self.assertEqual(x_adv.dtype, dtype)
    self.assert_in_ball(x_adv, x, eps)

  @parameterized.product(
      dtype=[jnp.bfloat16, jnp.float16], eps=[0.1, 0.25, 0.3], random_start=[False, True]
  )
  def test_pgd_stays_in_its_ball_in_every_dtype(self, dtype, eps, random_start):
    params, x, y = self.low_precision_problem(dtype)
    x_adv = advjax.pgd(
        mlp_loss,
        params,
        x,
        y,
        eps,
        step_size=eps / 3,
        num_steps=5,
        random_start=random_start,
        key=jax.random.key(0),
    )
    self.assertEqual(x_adv.dtype, dtype)
    self.assert_in_ball(x_adv, x, eps)

  def test_the_step_stays_differentiable(self):
    params, x, y = mlp_problem()
    grad = jax.grad(lambda v: jnp.sum(advjax.fgsm(mlp_loss, params, v, y, 0.1)))(x)
    np.testing.assert_array_equal(grad, 1.0)  # x_adv = x + a step constant in x


class InputGradTest(chex.TestCase):

  def test_matches_finite_differences(self):
    params, x, y = mlp_problem()
    grad = np.asarray(advjax.input_grad(mlp_loss, params, x, y), np.float64)
    h = 1e-2
    numeric = np.zeros_like(grad)
    for index in np.ndindex(*x.shape):
      up = mlp_loss(params, x.at[index].add(h), y)
      down = mlp_loss(params, x.at[index].add(-h), y)
      numeric[index] = (float(up) - float(down)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=2e-4, rtol=2e-2)

  def test_no_retrace_when_eps_changes(self):
    params, x, y = mlp_problem()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def attack(params, x, y, eps):
      return advjax.fgsm(mlp_loss, params, x, y, eps)

    chex.clear_trace_counter()
    for eps in (0.1, 0.2, 0.3):
      attack(params, x, y, eps)


class VmapTest(chex.TestCase):

  def test_vmap_over_eps(self):
    params, x, y = mlp_problem()
    eps = jnp.array([0.0, 0.1, 0.2])
    batched = jax.vmap(lambda e: advjax.fgsm(mlp_loss, params, x, y, e))(eps)
    for k in range(3):
      np.testing.assert_allclose(batched[k], advjax.fgsm(mlp_loss, params, x, y, eps[k]), rtol=1e-6)

  def test_vmap_over_examples(self):
    params, x, y = logistic_problem()
    single = lambda xi, yi: advjax.fgsm(logistic, params, xi[None], yi[None], 0.25)[0]
    np.testing.assert_allclose(
        jax.vmap(single)(x, y), advjax.fgsm(logistic, params, x, y, 0.25), rtol=1e-6
    )

  def test_vmap_over_stacked_params(self):
    members = [mlp_problem(seed)[0] for seed in range(3)]
    _, x, y = mlp_problem()
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
    batched = jax.vmap(lambda p: advjax.fgsm(mlp_loss, p, x, y, 0.1))(stacked)
    for k, member in enumerate(members):
      np.testing.assert_allclose(batched[k], advjax.fgsm(mlp_loss, member, x, y, 0.1), rtol=1e-6)


class PgdTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_step_without_random_start_is_fgsm(self):
    params, x, y = mlp_problem()
    attack = self.variant(
        lambda p, x, y: advjax.pgd(mlp_loss, p, x, y, 0.1, step_size=0.1, num_steps=1)
    )
    np.testing.assert_allclose(
        attack(params, x, y), advjax.fgsm(mlp_loss, params, x, y, 0.1), atol=1e-6
    )

  @parameterized.parameters(False, True)
  def test_stays_in_ball_and_box(self, random_start):
    params, x, y = mlp_problem()
    eps = 0.3
    x_adv = advjax.pgd(
        mlp_loss,
        params,
        x,
        y,
        eps,
        step_size=0.07,
        num_steps=10,
        clip=(0.0, 1.0),
        random_start=random_start,
        key=jax.random.key(0),
    )
    self.assertLessEqual(float(jnp.max(jnp.abs(x_adv - x))), eps + 1e-6)
    self.assertGreaterEqual(float(x_adv.min()), 0.0)
    self.assertLessEqual(float(x_adv.max()), 1.0)

  def test_more_steps_raise_the_loss_at_least_as_much_as_fgsm(self):
    params, x, y = mlp_problem()
    x_fgsm = advjax.fgsm(mlp_loss, params, x, y, 0.1)
    x_pgd = advjax.pgd(mlp_loss, params, x, y, 0.1, step_size=0.02, num_steps=20)
    self.assertGreaterEqual(
        float(mlp_loss(params, x_pgd, y)), float(mlp_loss(params, x_fgsm, y)) - 1e-4
    )


class BadInputTest(chex.TestCase):

  @parameterized.parameters(-0.1, float("nan"), float("inf"))
  def test_bad_eps(self, eps):
    params, x, y = mlp_problem()
    with pytest.raises(ValueError, match="eps"):
      advjax.fgsm(mlp_loss, params, x, y, eps)

  def test_bad_eps_raises_at_trace_time_when_static(self):
    params, x, y = mlp_problem()
    with pytest.raises(ValueError, match="eps"):
      jax.jit(lambda p, x, y: advjax.fgsm(mlp_loss, p, x, y, -1.0))(params, x, y)

  @parameterized.named_parameters(
      ("nan_eps", float("nan"), None),
      ("negative_eps", -0.1, None),
      ("clip_lo_above_hi", 0.1, (1.0, 0.0)),
  )
  def test_traced_bad_arguments_raise_under_checkify(self, eps, clip):
    params, x, y = mlp_problem()

    @jax.jit
    def attack(eps, clip):
      return advjax.fgsm(mlp_loss, params, x, y, eps, clip=clip)

    error, _ = checkify.checkify(attack)(eps, clip)
    with pytest.raises(checkify.JaxRuntimeError, match="eps|clip"):
      error.throw()
    attack(eps, clip)  # plain jit: no check, no error

  def test_traced_good_arguments_pass_checkify(self):
    params, x, y = mlp_problem()
    attack = jax.jit(
        lambda eps, step: advjax.pgd(
            mlp_loss, params, x, y, eps, step_size=step, num_steps=2, clip=(0.0, 1.0)
        )
    )
    error, x_adv = checkify.checkify(attack)(0.1, 0.05)
    self.assertIsNone(error.get())
    np.testing.assert_array_equal(x_adv, attack(0.1, 0.05))
    error, _ = checkify.checkify(attack)(0.1, -0.05)
    with pytest.raises(checkify.JaxRuntimeError, match="step_size"):
      error.throw()

  def test_batch_size_mismatch(self):
    params, x, y = mlp_problem()
    with pytest.raises(ValueError, match="batch size"):
      advjax.fgsm(mlp_loss, params, x, y[:-1], 0.1)

  @parameterized.parameters((1.0, 0.0), (float("nan"), 1.0))
  def test_clip_lo_above_hi(self, lo, hi):
    params, x, y = mlp_problem()
    with pytest.raises(ValueError, match="clip"):
      advjax.fgsm(mlp_loss, params, x, y, 0.1, clip=(lo, hi))

  def test_eps_of_wrong_shape(self):
    params, x, y = mlp_problem()
    with pytest.raises(ValueError, match="eps"):
      advjax.fgsm(mlp_loss, params, x, y, jnp.ones(3))

  def test_pgd_needs_key_for_random_start(self):
    params, x, y = mlp_problem()
    with pytest.raises(ValueError, match="key"):
      advjax.pgd(mlp_loss, params, x, y, 0.1, step_size=0.1, num_steps=1, random_start=True)

  @parameterized.parameters(0, 1.5)
  def test_pgd_num_steps(self, num_steps):
    params, x, y = mlp_problem()
    with pytest.raises(ValueError, match="num_steps"):
      advjax.pgd(mlp_loss, params, x, y, 0.1, step_size=0.1, num_steps=num_steps)
