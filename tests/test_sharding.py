"""Sharded computation gives the results of unsharded computation (4 forced CPU devices)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import sharding
from tests.test_attacks import mlp_loss, mlp_problem


def mlp_probs(params, x):
  return jax.nn.softmax(jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"])


@pytest.fixture(autouse=True)
def four_devices():
  if jax.device_count() < 4:
    pytest.skip("needs 4 devices (tests/conftest.py forces 4 CPU devices)")


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
  got = advjax.epsilon_sweep(mlp_loss, mlp_probs, sharding.replicate(params, mesh),
                             x, y, sharding.shard_batch(eps, mesh))
  assert got.error.sharding.spec == sharding.split_leading(mesh).spec
  chex.assert_trees_all_close(got, expected, rtol=1e-5)


def test_sharded_ensemble_matches_unsharded():
  mesh = sharding.data_mesh(4)
  stacked = advjax.stack([mlp_problem(seed)[0] for seed in range(4)])
  _, x, y = mlp_problem(n=16)
  on_mesh = sharding.shard_batch(stacked, mesh)
  attack = jax.jit(lambda p: advjax.fgsm(advjax.ensemble_loss(mlp_probs), p, x, y, 0.1))
  chex.assert_trees_all_close(attack(on_mesh), attack(stacked), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(advjax.ensemble_probs(mlp_probs, on_mesh, x),
                              advjax.ensemble_probs(mlp_probs, stacked, x), rtol=1e-5)
