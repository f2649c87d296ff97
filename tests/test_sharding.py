"""Sharded computation gives the results of unsharded computation (4 forced CPU devices)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import loop
from advjax import sharding
from advjax import train
from tests.conftest import CONFIG
from tests.conftest import MODEL
from tests.conftest import TRAIN
from tests.conftest import Crash
from tests.conftest import crash_on_epoch
from tests.conftest import mlp_loss
from tests.conftest import mlp_problem


def mlp_probs(params, x):
  return jax.nn.softmax(jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"])


@pytest.fixture(autouse=True)
def four_devices():
  if jax.device_count() < 4:
    pytest.skip("needs 4 devices (conftest.py forces 4 CPU devices)")


def test_shard_batch_splits_the_leading_axis():
  mesh = sharding.data_mesh(4)
  x = jnp.arange(40.0).reshape(8, 5)
  sharded = sharding.shard_batch(x, mesh)
  assert len(sharded.addressable_shards) == 4
  for shard in sharded.addressable_shards:
    chex.assert_shape(shard.data, (2, 5))
  np.testing.assert_array_equal(sharded, x)


def test_shard_batch_rejects_uneven_split():
  with pytest.raises(ValueError, match="divisible by 4"):
    sharding.shard_batch(jnp.zeros((6, 2)), sharding.data_mesh(4))


@pytest.mark.parametrize("num_devices", [0, 5, 2.0])
def test_data_mesh_rejects_bad_device_count(num_devices):
  with pytest.raises(ValueError, match="num_devices"):
    sharding.data_mesh(num_devices)


def test_sharded_epsilon_sweep_matches_unsharded():
  mesh = sharding.data_mesh(4)
  params, x, y = mlp_problem(n=40)
  eps = jnp.linspace(0.0, 0.5, 8)
  expected = advjax.epsilon_sweep(mlp_loss, mlp_probs, params, x, y, eps)
  got = advjax.epsilon_sweep(
      mlp_loss, mlp_probs, sharding.replicate(params, mesh), x, y, sharding.shard_batch(eps, mesh)
  )
  assert got.error.sharding.spec == sharding.split_leading(mesh).spec
  chex.assert_trees_all_close(got, expected, rtol=1e-5)


def test_sharded_ensemble_matches_unsharded():
  mesh = sharding.data_mesh(4)
  stacked = advjax.stack([mlp_problem(seed)[0] for seed in range(4)])
  _, x, y = mlp_problem(n=16)
  on_mesh = sharding.shard_batch(stacked, mesh)
  attack = jax.jit(lambda p: advjax.fgsm(advjax.ensemble_loss(mlp_probs), p, x, y, 0.1))
  chex.assert_trees_all_close(attack(on_mesh), attack(stacked), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(
      advjax.ensemble_probs(mlp_probs, on_mesh, x),
      advjax.ensemble_probs(mlp_probs, stacked, x),
      rtol=1e-5,
  )


@pytest.mark.parametrize("vmap_members", [True, False], ids=["vmapped", "in turn"])
def test_sharded_epochs_match_single_device(vmap_members):
  tx = train.recipe_sgd(steps_per_epoch=5)
  keys = jax.vmap(jax.random.split)(jax.vmap(jax.random.key)(jnp.arange(2)))
  static, dynamic = train.split_objective(train.Adversarial(0.25), 2)
  epochs = {}
  for name, mesh in (("single", None), ("sharded", sharding.data_mesh(4))):
    states = jax.vmap(lambda k: train.create_train_state(MODEL, k, TRAIN.x[:1], tx))(keys[:, 0])
    data = (jnp.asarray(TRAIN.x), jnp.asarray(TRAIN.y))
    if mesh is not None:
      states, data, dynamic = sharding.replicate((states, data, dynamic), mesh)
    for epoch in range(2):
      states, losses = train.train_epoch(
          MODEL,
          static,
          dynamic,
          states,
          *data,
          jax.vmap(jax.random.fold_in, (0, None))(keys[:, 1], epoch),
          batch_size=20,
          mesh=mesh,
          vmap_members=vmap_members,
      )
    epochs[name] = states.params, losses
  chex.assert_trees_all_close(epochs["sharded"], epochs["single"], rtol=1e-5, atol=1e-6)
  leaf = jax.tree.leaves(epochs["sharded"][0])[0]
  assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4


def test_sharded_fit_matches_and_resumes_on_another_device_count(tmp_path, monkeypatch):
  # The sharded FGSM inside the epoch is test_sharded_epochs_match_single_device's;
  # here the loop: the clean objective, and no validation.
  config = dataclasses.replace(CONFIG, epochs=2)
  single = loop.fit(MODEL, TRAIN, config)
  # Killed during epoch 2 on 4 devices; the same run then resumes on 2.
  with monkeypatch.context() as patch:
    crash_on_epoch(patch, 2)
    with pytest.raises(Crash):
      loop.fit(MODEL, TRAIN, config, workdir=tmp_path, mesh=sharding.data_mesh(4))
  resumed = loop.fit(MODEL, TRAIN, config, workdir=tmp_path, mesh=sharding.data_mesh(2))
  assert [row["epoch"] for row in resumed.history] == [1, 2]
  chex.assert_trees_all_close(resumed.params, single.params, rtol=1e-4, atol=1e-6)
  for row_single, row_resumed in zip(single.history, resumed.history):
    np.testing.assert_allclose(row_resumed["loss"], row_single["loss"], rtol=1e-4)


def test_fit_rejects_a_batch_that_does_not_split():
  with pytest.raises(ValueError, match="split evenly"):
    loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, batch_size=21), mesh=sharding.data_mesh(4))
