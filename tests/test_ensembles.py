"""Tests of the stacked ensembles against Python loops over their members."""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import advjax
from advjax import ensembles

D, HIDDEN, CLASSES = 6, 5, 3


def init_fn(key):
  k1, k2 = jax.random.split(key)
  return {
      "w1": jax.random.normal(k1, (D, HIDDEN)),
      "b1": jnp.zeros(HIDDEN),
      "w2": jax.random.normal(k2, (HIDDEN, CLASSES)),
  }


def logits_fn(params, x, dropout_key=None):
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  if dropout_key is not None:
    keep = jax.random.bernoulli(dropout_key, 0.5, hidden.shape)
    hidden = jnp.where(keep, hidden / 0.5, 0.0)
  return hidden @ params["w2"]


def probs_fn(params, x):
  return jax.nn.softmax(logits_fn(params, x))


def cross_entropy(params, x, y, dropout_key=None):
  log_probs = jax.nn.log_softmax(logits_fn(params, x, dropout_key))
  return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], 1))


def data(seed=0, n=8):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=(n, D)), jnp.float32)
  y = jnp.asarray(rng.integers(0, CLASSES, size=n), jnp.int32)
  return x, y


def members(n=3):
  return [init_fn(key) for key in jax.random.split(jax.random.key(0), n)]


OPTIMIZER = optax.sgd(0.1, momentum=0.9)


def init_state(key):
  params = init_fn(key)
  return params, OPTIMIZER.init(params)


def train_step(state, batch, rng):
  params, opt_state = state
  x, y = batch
  loss, grads = jax.value_and_grad(cross_entropy)(params, x, y, rng)
  updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state), {"loss": loss}


class StackTest(parameterized.TestCase):

  def test_unstack_inverts_stack(self):
    params_list = members()
    stacked = ensembles.stack(params_list)
    chex.assert_shape(stacked["w1"], (3, D, HIDDEN))
    self.assertEqual(ensembles.ensemble_size(stacked), 3)
    chex.assert_trees_all_equal(ensembles.unstack(stacked), params_list)
    chex.assert_trees_all_equal(ensembles.member(stacked, -1), params_list[2])

  def test_member_takes_a_traced_index(self):
    stacked = ensembles.stack(members())
    pick = jax.jit(ensembles.member)
    chex.assert_trees_all_equal(pick(stacked, 1), members()[1])

  def test_init_ensemble_equals_stacked_inits(self):
    key = jax.random.key(1)
    stacked = ensembles.init_ensemble(init_fn, key, 4)
    expected = ensembles.stack([init_fn(k) for k in jax.random.split(key, 4)])
    chex.assert_trees_all_close(stacked, expected)
    self.assertFalse(np.allclose(stacked["w1"][0], stacked["w1"][1]))

  def test_stack_errors_name_the_argument(self):
    params = members(1)[0]
    with self.assertRaisesRegex(ValueError, "params_list must hold"):
      ensembles.stack([])
    with self.assertRaisesRegex(ValueError, "tree structure; member 1"):
      ensembles.stack([params, {"w1": params["w1"]}])
    with self.assertRaisesRegex(ValueError, r"\['b1'\] has shapes"):
      ensembles.stack([params, {**params, "b1": jnp.zeros(HIDDEN + 1)}])

  def test_size_and_member_errors(self):
    stacked = ensembles.stack(members())
    with self.assertRaisesRegex(ValueError, "stacked_params must have one leading"):
      ensembles.ensemble_size({**stacked, "b1": stacked["b1"][:2]})
    with self.assertRaisesRegex(ValueError, "stacked_params must have one leading"):
      ensembles.ensemble_size({**stacked, "b1": jnp.zeros(())})
    with self.assertRaisesRegex(ValueError, "without array leaves"):
      ensembles.ensemble_size({})
    with self.assertRaisesRegex(ValueError, "index must lie"):
      ensembles.member(stacked, 3)
    with self.assertRaisesRegex(ValueError, "n must be an int"):
      ensembles.init_ensemble(init_fn, jax.random.key(0), 0)


class EnsembleAttackTest(parameterized.TestCase):

  def test_probs_are_the_mean_over_members(self):
    x, _ = data()
    params_list = members()
    expected = sum(probs_fn(p, x) for p in params_list) / len(params_list)
    chex.assert_trees_all_close(
        ensembles.ensemble_probs(probs_fn, ensembles.stack(params_list), x), expected, rtol=1e-6
    )

  def test_fgsm_on_the_ensemble_is_fgsm_of_its_mean_probability_loss(self):
    x, y = data()
    params_list = members()

    def mean_prob_loss(params_list, x, y):
      probs = sum(probs_fn(p, x) for p in params_list) / len(params_list)
      return -jnp.mean(jnp.log(jnp.take_along_axis(probs, y[:, None], 1)))

    def attack(loss, params):
      return jax.jit(
          lambda p: (
              loss(p, x, y),
              advjax.input_grad(loss, p, x, y),
              advjax.fgsm(loss, p, x, y, 0.25),
          )
      )(params)

    value, grad, x_adv = attack(ensembles.ensemble_loss(probs_fn), ensembles.stack(params_list))
    expected_value, expected_grad, expected_x_adv = attack(mean_prob_loss, params_list)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(x_adv, expected_x_adv)

  def test_the_ensemble_and_a_member_are_attacked_differently(self):
    x, y = data()
    stacked = ensembles.stack(members())
    on_ensemble = advjax.fgsm(ensembles.ensemble_loss(probs_fn), stacked, x, y, 0.25)
    on_member = advjax.fgsm(cross_entropy, ensembles.member(stacked, 0), x, y, 0.25)
    self.assertFalse(np.array_equal(on_ensemble, on_member))

  def test_one_member_is_the_single_model(self):
    x, y = data()
    params = members(1)[0]
    stacked = ensembles.stack([params])
    chex.assert_trees_all_close(
        ensembles.ensemble_probs(probs_fn, stacked, x), probs_fn(params, x), rtol=1e-6
    )
    loss = ensembles.ensemble_loss(probs_fn)
    chex.assert_trees_all_close(loss(stacked, x, y), cross_entropy(params, x, y), rtol=1e-5)
    chex.assert_trees_all_equal(
        advjax.fgsm(loss, stacked, x, y, 0.25), advjax.fgsm(cross_entropy, params, x, y, 0.25)
    )

  def test_underflowed_probabilities_give_finite_gradients(self):
    x, y = data()
    stacked = ensembles.stack(members(2))
    stacked = {**stacked, "w2": stacked["w2"] * 1e4}  # softmax saturates to 0
    grad = advjax.input_grad(ensembles.ensemble_loss(probs_fn), stacked, x, y)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_loss_errors(self):
    x, y = data()
    loss = ensembles.ensemble_loss(probs_fn)
    stacked = ensembles.stack(members())
    with self.assertRaisesRegex(ValueError, "y must hold integer labels"):
      loss(stacked, x, jax.nn.one_hot(y, CLASSES))
    with self.assertRaisesRegex(ValueError, "same batch size"):
      loss(stacked, x, y[:-1])


class EnsembleStepTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_vmapped_step_equals_sequential_steps(self, shared_batch):
    n, num_steps = 3, 3
    states = ensembles.init_ensemble(init_state, jax.random.key(2), n)
    sequential = ensembles.unstack(states)
    step = jax.jit(ensembles.ensemble_step(train_step, shared_batch=shared_batch))
    reference_step = jax.jit(train_step)
    for t in range(num_steps):
      rngs = jax.random.split(jax.random.key(100 + t), n)
      batches = [data(seed=10 * t + (0 if shared_batch else i)) for i in range(n)]
      batch = batches[0] if shared_batch else ensembles.stack(batches)
      states, metrics = step(states, batch, rngs)
      outcomes = [reference_step(state, b, rng) for state, b, rng in zip(sequential, batches, rngs)]
      sequential = [state for state, _ in outcomes]
      chex.assert_trees_all_close(metrics, ensembles.stack([m for _, m in outcomes]), rtol=1e-5)
    chex.assert_trees_all_close(ensembles.unstack(states), sequential, rtol=1e-5, atol=1e-6)
    # Different seeds and dropout keys keep the members apart.
    self.assertFalse(np.allclose(states[0]["w1"][0], states[0]["w1"][1]))

  def test_one_member_step_is_the_single_step(self):
    state = init_state(jax.random.key(3))
    batch, rng = data(), jax.random.key(4)
    stacked, metrics = ensembles.ensemble_step(train_step)(
        ensembles.stack([state]), batch, rng[None]
    )
    expected_state, expected_metrics = train_step(state, batch, rng)
    chex.assert_trees_all_close(ensembles.member(stacked, 0), expected_state, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(ensembles.member(metrics, 0), expected_metrics, rtol=1e-5)

  def test_step_errors_name_the_argument(self):
    states = ensembles.init_ensemble(init_state, jax.random.key(2), 3)
    x, y = data()
    with self.assertRaisesRegex(ValueError, r"rngs must have one entry per member"):
      ensembles.ensemble_step(train_step)(states, (x, y), jax.random.split(jax.random.key(0), 2))
    with self.assertRaisesRegex(ValueError, r"batch must have one entry per member"):
      ensembles.ensemble_step(train_step, shared_batch=False)(
          states, ensembles.stack([(x, y)] * 2), jax.random.split(jax.random.key(0), 3)
      )


if __name__ == "__main__":
  pytest.main([__file__])
