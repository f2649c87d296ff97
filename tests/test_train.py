"""Tests of advjax.train: objectives, the recipe's optimizer, the step and the compiled epoch."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import advjax
from advjax import loop
from advjax import models
from advjax import train
from tests.conftest import INIT
from tests.conftest import MODEL
from tests.conftest import TRAIN


def test_equal_recipe_settings_share_one_optimizer_and_its_compilation():
  assert train.recipe_sgd(3) is train.recipe_sgd(3)
  assert train.recipe_sgd(3) is not train.recipe_sgd(4)
  assert train.recipe_sgd(3, learning_rate=1) is not train.recipe_sgd(3, learning_rate=1.0)
  # Unhashable settings still build an optimizer, just not a shared one.
  assert train.recipe_sgd(3, momentum=[0.5, 0.7]) is train.recipe_sgd(3)
  assert train.recipe_sgd(3, learning_rate=jnp.array(0.1)) is not train.recipe_sgd(3)
  # So a TrainState's static optimizer matches across runs, and a second run
  # with the same settings reuses the first one's compiled epoch.
  config = loop.TrainConfig(epochs=1, batch_size=50)
  loop.fit(MODEL, TRAIN, config, progress=False)
  compiled = train.train_epoch._cache_size()
  loop.fit(MODEL, TRAIN, config, progress=False)
  assert train.train_epoch._cache_size() == compiled


def test_train_step_lowers_the_loss():
  state = train.create_train_state(MODEL, jax.random.key(0), TRAIN.x[:1], optax.sgd(0.5, 0.5))
  # Out of the recipe's tiny initialisation, where the first steps crawl.
  state = state.replace(params=jax.tree.map(lambda p: 100 * p, state.params))
  step = jax.jit(train.make_train_step(MODEL, train.Clean()))
  batch = (TRAIN.x, TRAIN.y)
  loss = jax.jit(MODEL.loss)
  before = loss(state.params, *batch)
  for i in range(30):
    state, _ = step(state, batch, jax.random.key(i))
  assert float(loss(state.params, *batch)) < 0.9 * float(before)
  assert int(state.step) == 30


def test_adversarial_gradient_mixes_clean_and_adversarial_gradients():
  params = jax.tree.map(lambda p: 100 * p, INIT(jax.random.key(0), TRAIN.x[:1]))
  x, y = jnp.asarray(TRAIN.x[:40]), jnp.asarray(TRAIN.y[:40])
  rng = jax.random.key(7)
  alpha, eps = 0.3, 0.2
  _, grads = jax.jit(train.loss_and_grads, static_argnums=0)(
      MODEL, train.Adversarial(eps, alpha), params, (x, y), rng
  )

  @jax.jit
  def separately(params):
    # With the step's dropout mask throughout.
    dropout_key, _ = jax.random.split(rng)
    loss_fn = MODEL.loss_fn(dropout_key)
    x_adv = x + eps * jnp.sign(jax.grad(loss_fn, argnums=1)(params, x, y))
    return jax.grad(loss_fn)(params, x, y), jax.grad(loss_fn)(params, x_adv, y)

  clean, adversarial = separately(params)
  expected = jax.tree.map(lambda c, a: alpha * c + (1 - alpha) * a, clean, adversarial)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # The adversarial term matters: the mix is far from the clean gradient.
  assert not np.allclose(jax.tree.leaves(grads)[-1], jax.tree.leaves(clean)[-1], rtol=0.05)


def test_noise_objective_takes_its_noise_as_a_function():
  params = INIT(jax.random.key(0), TRAIN.x[:1])
  x, y = jnp.asarray(TRAIN.x[:10]), jnp.asarray(TRAIN.y[:10])
  key = jax.random.key(3)
  for noise_fn in (advjax.sign_noise, advjax.uniform_noise):
    loss = train.Noise(noise_fn, eps=0.1, alpha=0.25)(MODEL.loss_fn(), key)
    noisy = noise_fn(key, x, 0.1)
    expected = 0.25 * MODEL.loss(params, x, y) + 0.75 * MODEL.loss(params, noisy, y)
    np.testing.assert_allclose(loss(params, x, y), expected, rtol=1e-6)


def test_max_norm_holds_after_every_step():
  state = train.create_train_state(MODEL, jax.random.key(0), TRAIN.x[:1], optax.sgd(50.0))
  step = jax.jit(train.make_train_step(MODEL, train.Adversarial(0.25)))
  on_bound = 0
  for i in range(5):
    state, _ = step(state, (TRAIN.x[:50], TRAIN.y[:50]), jax.random.key(i))
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
      if path[-1].key == "kernel":
        norms = np.linalg.norm(np.asarray(leaf), axis=0)
        assert norms.max() <= models.MAX_COL_NORM * (1 + 1e-5)
        on_bound += int(np.sum(norms > 0.999 * models.MAX_COL_NORM))
  assert on_bound > 0  # The constraint was active, not merely satisfied.


def hyperparams_after(tx, updates):
  params = {"w": jnp.zeros(3)}
  opt_state = tx.init(params)
  for _ in range(updates):
    _, opt_state = tx.update({"w": jnp.ones(3)}, opt_state, params)
  return opt_state.hyperparams


def test_recipe_schedule_decays_the_learning_rate_and_raises_the_momentum():
  hyper = hyperparams_after(train.recipe_sgd(steps_per_epoch=2, momentum_epochs=5), 10)
  # The values used by the last (10th) update: count 9.
  np.testing.assert_allclose(hyper["learning_rate"], 0.1 / 1.000004**9, rtol=1e-6)
  np.testing.assert_allclose(hyper["momentum"], 0.5 + 0.2 * 9 / 10, rtol=1e-6)
  floor = hyperparams_after(train.recipe_sgd(1, decay=10.0, min_learning_rate=1e-3), 5)
  np.testing.assert_allclose(floor["learning_rate"], 1e-3)


def test_a_decay_of_one_keeps_the_learning_rate_constant():
  hyper = hyperparams_after(train.recipe_sgd(steps_per_epoch=2, decay=1.0), 10)
  np.testing.assert_allclose(hyper["learning_rate"], 0.1)


@pytest.mark.parametrize("decay", [0.5, float("nan")])
def test_a_decay_below_one_is_refused(decay):
  with pytest.raises(ValueError, match="decay >= 1"):
    train.recipe_sgd(steps_per_epoch=2, decay=decay)


@jax.jit
def reference_step(state, batch, key, objective):
  """`train.make_train_step`, one compilation per kind of objective: its numbers are traced."""
  return train.make_train_step(MODEL, objective)(state, batch, key)


def per_step_epochs(objective, epochs, seed=0):
  """The reference: today's per-step loop, one jitted step and one host batch at a time."""
  tx = train.recipe_sgd(5)
  init_key, rng = jax.random.split(jax.random.key(seed))
  state = train.create_train_state(MODEL, init_key, jnp.asarray(TRAIN.x[:1]), tx)
  step = functools.partial(reference_step, objective=objective)
  losses = []
  for _ in range(epochs):
    rng, epoch_key = jax.random.split(rng)
    order = np.asarray(jax.random.permutation(jax.random.fold_in(epoch_key, 0), 100))
    total = 0.0
    for i in range(5):
      index = order[20 * i : 20 * (i + 1)]
      state, loss = step(
          state, (TRAIN.x[index], TRAIN.y[index]), jax.random.fold_in(epoch_key, i + 1)
      )
      total += float(loss)
    losses.append(total)
  return state, losses


def compiled_epochs(objective, epochs, seeds, vmap_members=None):
  tx = train.recipe_sgd(5)
  keys = jax.vmap(jax.random.split)(jax.vmap(jax.random.key)(jnp.asarray(seeds)))
  x, y = jnp.asarray(TRAIN.x), jnp.asarray(TRAIN.y)
  states = jax.vmap(lambda k: train.create_train_state(MODEL, k, x[:1], tx))(keys[:, 0])
  static, dynamic = train.split_objective(objective, len(seeds))
  rngs, losses = keys[:, 1], []
  for _ in range(epochs):
    split = jax.vmap(jax.random.split)(rngs)
    rngs = split[:, 0]
    states, loss_sums = train.train_epoch(
        MODEL, static, dynamic, states, x, y, split[:, 1], batch_size=20, vmap_members=vmap_members
    )
    losses.append(np.asarray(loss_sums))
  return states, np.stack(losses, axis=1)


@pytest.mark.parametrize(
    "objective",
    [train.Clean(), train.Adversarial(0.25), train.Noise(advjax.sign_noise, 0.1)],
    ids=["clean", "adversarial", "noise"],
)
def test_the_compiled_epoch_equals_the_per_step_loop(objective):
  states, losses = compiled_epochs(objective, 3, seeds=[0])
  state, expected_losses = per_step_epochs(objective, 3)
  chex.assert_trees_all_close(
      jax.tree.map(lambda leaf: leaf[0], states.params), state.params, rtol=1e-5, atol=1e-7
  )
  np.testing.assert_allclose(losses[0], expected_losses, rtol=1e-5)
  assert int(states.step[0]) == 15


@pytest.mark.parametrize(
    "vmap_members",
    [True, pytest.param(False, marks=pytest.mark.xla_defaults)],
    ids=["vmapped", "in turn"],
)
def test_members_equal_each_member_alone(vmap_members):
  seeds = [0, 1, 2]
  states, losses = compiled_epochs(train.Adversarial(0.25), 2, seeds, vmap_members)
  for m, seed in enumerate(seeds):
    alone, alone_losses = per_step_epochs(train.Adversarial(0.25), 2, seed=seed)
    member = jax.tree.map(lambda leaf, m=m: leaf[m], states.params)
    if vmap_members:  # batched products round differently
      chex.assert_trees_all_close(member, alone.params, rtol=1e-5, atol=1e-7)
    else:  # the same unbatched step: the same bits
      chex.assert_trees_all_equal(member, alone.params)
    np.testing.assert_allclose(losses[m], alone_losses, rtol=1e-5)  # summed in another order
  assert not np.allclose(states.params["output"]["kernel"][0], states.params["output"]["kernel"][1])


def test_each_member_can_have_its_own_eps_and_alpha():
  objective = train.Adversarial(eps=[0.0, 0.25, 0.1], alpha=[0.5, 0.5, 1.0])
  states, _ = compiled_epochs(objective, 1, seeds=[4, 4, 4])
  clean, _ = per_step_epochs(train.Clean(), 1, seed=4)
  adversarial, _ = per_step_epochs(train.Adversarial(0.25), 1, seed=4)
  member = lambda m: jax.tree.map(lambda leaf: leaf[m], states.params)
  # eps 0 and alpha 1 both train the clean loss.
  chex.assert_trees_all_close(member(0), clean.params, rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(member(2), clean.params, rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(member(1), adversarial.params, rtol=1e-5, atol=1e-7)


def test_split_objective_shares_scalars_and_refuses_the_wrong_member_count():
  static, dynamic = train.split_objective(train.Adversarial(0.25, alpha=[0.1, 0.2]), 2)
  np.testing.assert_allclose(dynamic[0], [0.25, 0.25])
  np.testing.assert_allclose(dynamic[1], [0.1, 0.2])
  joined = train.join_objective(static, [0.3, 0.4])
  assert joined == train.Adversarial(0.3, 0.4)
  with pytest.raises(ValueError, match="one per member"):
    train.split_objective(train.Adversarial([0.1, 0.2, 0.3]), 2)
  # A plain function is an objective too: all static.
  plain = lambda loss_fn, key: loss_fn
  static, dynamic = train.split_objective(plain, 3)
  assert dynamic == [None] and train.join_objective(static, dynamic) is plain


def test_trades_takes_one_beta_per_member_and_the_models_scores():
  population = train.TRADES(eps=0.3, beta=[1.0, 6.0], step=0.1, num_steps=2)
  alone = [train.TRADES(0.3, 1.0, 0.1, 2), train.TRADES(0.3, 6.0, 0.1, 2)]
  # The trainer hands TRADES the model's scores (logits_fn); its members barely
  # differ: the maxout's tiny initial scores make the KL ~0.
  states, _ = compiled_epochs(population, 1, seeds=[4, 4])
  for m, objective in enumerate(alone):
    expected, _ = per_step_epochs(objective, 1, seed=4)
    chex.assert_trees_all_close(
        jax.tree.map(lambda leaf, m=m: leaf[m], states.params),
        expected.params,
        rtol=1e-5,
        atol=1e-7,
    )
