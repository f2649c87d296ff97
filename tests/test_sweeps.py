"""Tests of the eps sweeps against loops of FGSM and of the model."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import sweeps
from tests.conftest import apply_fn
from tests.conftest import first_layer
from tests.conftest import loss_fn
from tests.conftest import problem
from tests.conftest import probs_fn
from tests.conftest import upper_layers

EPS = jnp.array([0.0, 0.05, 0.1, 0.3, 1.0])


SPLIT_PROBS = sweeps.LinearFirst(
    first_layer, lambda params, h: jax.nn.softmax(upper_layers(params, h))
)


def counting_backward(loss):
  """``loss`` with a run-time count of its backward passes.

  The count is taken at run time by a debug callback on the input gradient:
  it sees every backward pass XLA executes, one per eps when the gradient is
  vmapped over eps, and it cannot be merged away as duplicate work.
  """
  calls = []

  @jax.custom_vjp
  def counted(params, x, y):
    return loss(params, x, y)

  def forward(params, x, y):
    return jax.vjp(lambda p, v: loss(p, v, y), params, x)

  def backward(vjp, cotangent):
    grad_params, grad_x = vjp(cotangent)
    jax.debug.callback(lambda _: calls.append(1), grad_x)
    return grad_params, grad_x, None

  counted.defvjp(forward, backward)
  return counted, calls


@functools.partial(jax.jit, static_argnames="clip")
def fgsm_scores(params, x, y, eps, clip=None):
  x_adv = advjax.fgsm(loss_fn, params, x, y, eps, clip=clip)
  return advjax.error_and_confidence(probs_fn(params, x_adv), y)


def fgsm_loop(params, x, y, eps_values, clip=None):
  """The reference: a jitted FGSM and evaluation, called once per eps."""
  scores = [fgsm_scores(params, x, y, eps, clip) for eps in eps_values]
  return np.array([s[0] for s in scores]), np.array([s[1] for s in scores])


class EpsilonSweepTest(parameterized.TestCase):

  @parameterized.product(
      model=["plain", "split"], clip=[None, (0.0, 1.0)], batch_size=[None, 4, 10]
  )
  def test_agrees_with_a_loop_of_fgsm(self, model, clip, batch_size):
    params, x, y = problem()
    model_fn = SPLIT_PROBS if model == "split" else probs_fn
    sweep = sweeps.epsilon_sweep(
        loss_fn, model_fn, params, x, y, EPS, clip=clip, batch_size=batch_size
    )
    error, confidence = fgsm_loop(params, x, y, EPS, clip)
    np.testing.assert_allclose(sweep.error, error, rtol=1e-6)
    np.testing.assert_allclose(sweep.confidence, confidence, rtol=1e-5)
    np.testing.assert_array_equal(sweep.eps, EPS)
    self.assertGreater(error[-1], error[0])  # the attack does something

  def test_eps_zero_gives_the_clean_error(self):
    params, x, y = problem(seed=1)
    sweep = sweeps.epsilon_sweep(loss_fn, probs_fn, params, x, y, [0.0, 0.2])
    error, confidence = advjax.error_and_confidence(probs_fn(params, x), y)
    self.assertEqual(sweep.error[0], error)
    np.testing.assert_allclose(sweep.confidence[0], confidence, rtol=1e-6)

  def test_confidence_is_nan_without_mistakes(self):
    params, x, _ = problem()
    y = jnp.argmax(probs_fn(params, x), axis=-1)
    sweep = sweeps.epsilon_sweep(loss_fn, probs_fn, params, x, y, [0.0])
    self.assertEqual(sweep.error[0], 0.0)
    self.assertTrue(np.isnan(sweep.confidence[0]))

  @parameterized.parameters(None, 4)
  def test_takes_the_input_gradient_once_per_batch(self, batch_size):
    params, x, y = problem()
    num_batches = 1 if batch_size is None else 3  # 10 examples in batches of 4
    for num_eps in (1, 16):
      counted, calls = counting_backward(loss_fn)
      jax.block_until_ready(
          sweeps.epsilon_sweep(
              counted, probs_fn, params, x, y, jnp.linspace(0, 0.5, num_eps), batch_size=batch_size
          )
      )
      jax.effects_barrier()
      self.assertLen(calls, num_batches)

  @parameterized.parameters("loop", "vmap")
  def test_the_gradient_counter_sees_repeated_gradients(self, how):
    # Guards the test above: K gradients, looped or vmapped, are counted K times.
    params, x, y = problem()
    counted, calls = counting_backward(loss_fn)
    grad_at = lambda eps: advjax.input_grad(counted, params, x + eps, y)
    if how == "loop":
      gradients = jax.jit(lambda eps_values: [grad_at(eps) for eps in eps_values])
    else:
      gradients = jax.jit(jax.vmap(grad_at))
    jax.block_until_ready(gradients(EPS))
    jax.effects_barrier()
    self.assertLen(calls, len(EPS))

  def test_split_model_runs_its_first_layer_once(self):
    params, x, y = problem()
    calls = []

    def counted_first(params, x):
      jax.debug.callback(lambda _: calls.append(1), x)
      return first_layer(params, x)

    split = sweeps.LinearFirst(counted_first, SPLIT_PROBS.rest)
    jax.block_until_ready(sweeps.epsilon_sweep(loss_fn, split, params, x, y, EPS))
    jax.effects_barrier()
    self.assertLen(calls, 1)
    calls.clear()
    jax.block_until_ready(
        sweeps.epsilon_sweep(loss_fn, lambda p, v: split(p, v), params, x, y, EPS)
    )
    jax.effects_barrier()
    self.assertLen(calls, len(EPS))

  def test_new_eps_values_do_not_retrace(self):
    params, x, y = problem()
    traces = []

    def traced_probs(params, x):
      traces.append(1)
      return probs_fn(params, x)

    first = sweeps.epsilon_sweep(loss_fn, traced_probs, params, x, y, EPS)
    second = sweeps.epsilon_sweep(loss_fn, traced_probs, params, x, y, EPS + 0.5)
    self.assertLen(traces, 1)
    self.assertFalse(np.array_equal(first.error, second.error))

  def test_works_under_jit(self):
    params, x, y = problem()
    sweep = jax.jit(functools.partial(sweeps.epsilon_sweep, loss_fn, probs_fn, batch_size=4))
    chex.assert_trees_all_close(
        sweep(params, x, y, EPS),
        sweeps.epsilon_sweep(loss_fn, probs_fn, params, x, y, EPS, batch_size=4),
    )

  @parameterized.named_parameters(
      ("negative", [0.1, -0.1]),
      ("nan", [0.1, np.nan]),
      ("inf", [np.inf]),
      ("scalar", 0.1),
      ("matrix", [[0.1, 0.2]]),
      ("empty", []),
  )
  def test_bad_eps_values_raise(self, eps_values):
    params, x, y = problem()
    with self.assertRaisesRegex(ValueError, "eps_values"):
      sweeps.epsilon_sweep(loss_fn, probs_fn, params, x, y, eps_values)

  @parameterized.named_parameters(("zero", 0), ("float", 2.5), ("bool", True))
  def test_bad_batch_size_raises(self, batch_size):
    params, x, y = problem()
    with self.assertRaisesRegex(ValueError, "batch_size"):
      sweeps.epsilon_sweep(loss_fn, probs_fn, params, x, y, EPS, batch_size=batch_size)

  def test_bad_inputs_raise(self):
    params, x, y = problem()
    with self.assertRaisesRegex(ValueError, "x must be a floating"):
      sweeps.epsilon_sweep(loss_fn, probs_fn, params, x.astype(jnp.int32), y, EPS)
    with self.assertRaisesRegex(ValueError, "x must have a batch axis"):
      sweeps.epsilon_sweep(loss_fn, probs_fn, params, x[0], y[:1], EPS)
    with self.assertRaisesRegex(ValueError, "same batch size"):
      sweeps.epsilon_sweep(loss_fn, probs_fn, params, x, y[:-1], EPS)
    with self.assertRaisesRegex(ValueError, "y must hold integer labels"):
      sweeps.epsilon_sweep(loss_fn, probs_fn, params, x, jax.nn.one_hot(y, 3), EPS)
    with self.assertRaisesRegex(ValueError, "clip"):
      sweeps.epsilon_sweep(loss_fn, probs_fn, params, x, y, EPS, clip=(1.0, 0.0))


class DirectionSweepTest(parameterized.TestCase):

  @parameterized.parameters("plain", "split")
  def test_equals_a_loop_of_the_model(self, model):
    params, x, y = problem()
    model_fn = apply_fn
    if model == "split":
      model_fn = sweeps.LinearFirst(first_layer, upper_layers)
    direction = jnp.sign(advjax.input_grad(loss_fn, params, x, y))
    eps_values = jnp.linspace(-1.0, 1.0, 7)
    logits = sweeps.direction_sweep(model_fn, params, x, direction, eps_values)
    expected = jnp.stack([apply_fn(params, x + eps * direction) for eps in eps_values])
    chex.assert_shape(logits, (7, 10, 3))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)

  def test_one_example_gives_logits_per_eps(self):
    params, x, _ = problem()
    logits = sweeps.direction_sweep(apply_fn, params, x[0], jnp.ones_like(x[0]), [-0.5, 0.0, 0.5])
    chex.assert_shape(logits, (3, 3))
    np.testing.assert_allclose(logits[1], apply_fn(params, x[0]), rtol=1e-6)

  def test_a_linear_model_gives_straight_lines(self):
    params, x, _ = problem()
    linear = lambda p, v: first_layer(p, v)
    logits = sweeps.direction_sweep(
        linear, params, x[:1], jnp.ones_like(x[:1]), jnp.linspace(-2.0, 2.0, 5)
    )
    np.testing.assert_allclose(jnp.diff(logits, 2, axis=0), 0.0, atol=1e-5)

  def test_bad_arguments_raise(self):
    params, x, _ = problem()
    with self.assertRaisesRegex(ValueError, "eps_values"):
      sweeps.direction_sweep(apply_fn, params, x, x, [0.1, np.nan])
    with self.assertRaisesRegex(ValueError, "eps_values"):
      sweeps.direction_sweep(apply_fn, params, x, x, 0.1)
    with self.assertRaisesRegex(ValueError, "direction"):
      sweeps.direction_sweep(apply_fn, params, x, x[0], [0.1])


if __name__ == "__main__":
  pytest.main([__file__])
