"""advjax's AutoAttack parts against torchattacks 3.5.1 on the same weights (real MNIST).

A small ReLU network trained for a few hundred steps, its weights copied into
PyTorch; on 200 test images, each attack with the same (shortened) settings
on both sides. advjax's robust accuracy must be at most torchattacks' plus
two points (four images: the two draw different random numbers).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import advjax
from advjax import data

torch = pytest.importorskip("torch")
torchattacks = pytest.importorskip("torchattacks")

N = 200
SLACK = 0.02
TARGETS = 3


def logits_fn(params, x):
  hidden = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return hidden @ params["w2"] + params["b2"]


@pytest.fixture(scope="module")
def problem():
  folder = os.environ.get(data.DATA_DIR_ENV)
  if not folder:
    pytest.skip(f"set {data.DATA_DIR_ENV} to a folder holding the MNIST IDX files")
  mnist = data.load_mnist(folder)
  rng = np.random.default_rng(0)
  params = {
      "w1": jnp.asarray(rng.normal(scale=0.05, size=(784, 64)), jnp.float32),
      "b1": jnp.zeros(64),
      "w2": jnp.asarray(rng.normal(scale=0.1, size=(64, 10)), jnp.float32),
      "b2": jnp.zeros(10),
  }
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, state, x, y):
    loss = lambda p: jnp.mean(advjax.cross_entropy(logits_fn(p, x), y))
    updates, state = tx.update(jax.grad(loss)(params), state)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for i in range(300):
    batch = slice(128 * i, 128 * (i + 1))
    params, state = step(params, state, mnist.train.x[batch], mnist.train.y[batch])
  net = torch.nn.Sequential(
      torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
  ).eval()
  with torch.no_grad():
    for layer, name in ((net[1], "1"), (net[3], "2")):
      layer.weight.copy_(torch.from_numpy(np.asarray(params["w" + name]).T.copy()))
      layer.bias.copy_(torch.from_numpy(np.asarray(params["b" + name]).copy()))
  return params, net, mnist.test.x[:N].reshape(N, 28, 28, 1), mnist.test.y[:N]


def torch_robust_accuracy(net, attack, x, y):
  images = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())
  labels = torch.from_numpy(y.astype(np.int64))
  with torch.no_grad():
    return float((net(attack(images, labels)).argmax(1) == labels).float().mean())


def robust_accuracy(params, x_adv, y):
  return float(jnp.mean(jnp.argmax(logits_fn(params, x_adv), 1) == y))


def targeted(attack, params, x, y):
  """Robust accuracy after ``attack(target)`` against the classes ranked 2nd, 3rd, ..."""
  ranked = np.argsort(np.asarray(logits_fn(params, x)), axis=1)
  run = jax.jit(attack)
  robust = np.ones(len(y), bool)
  for rank in range(TARGETS):
    x_adv = run(jnp.asarray(ranked[:, -2 - rank]))
    robust &= np.asarray(jnp.argmax(logits_fn(params, x_adv), 1) == y)
  return float(robust.mean())


@pytest.mark.parametrize("eps", [0.03, 0.06])
def test_each_attack_at_least_as_strong_as_torchattacks(problem, eps):
  params, net, x, y = problem
  key = jax.random.key(0)
  ours = {
      "apgd-ce": robust_accuracy(
          params,
          advjax.apgd(
              logits_fn, params, x, y, eps, objective=advjax.cross_entropy, key=key, num_steps=10
          ),
          y,
      ),
      "apgd-t": targeted(
          lambda target: advjax.apgd(
              logits_fn,
              params,
              x,
              y,
              eps,
              objective=functools.partial(advjax.targeted_dlr_loss, target=target),
              key=key,
              num_steps=10,
          ),
          params,
          x,
          y,
      ),
      "fab-t": targeted(
          lambda target: advjax.fab_targeted(
              logits_fn, params, x, y, eps, target=target, num_steps=10
          ),
          params,
          x,
          y,
      ),
      "square": robust_accuracy(
          params, advjax.square(logits_fn, params, x, y, eps, key=key, num_queries=200), y
      ),
  }
  apgdt = torchattacks.APGDT(net, eps=eps, steps=10, n_classes=10, seed=0)
  apgdt.n_target_classes = TARGETS
  fab = torchattacks.FAB(net, eps=eps, steps=10, multi_targeted=True, n_classes=10, seed=0)
  fab.n_target_classes = TARGETS
  theirs = {
      "apgd-ce": torchattacks.APGD(net, eps=eps, steps=10, loss="ce", seed=0),
      "apgd-t": apgdt,
      "fab-t": fab,
      "square": torchattacks.Square(net, eps=eps, n_queries=200, resc_schedule=False, seed=0),
  }
  clean = robust_accuracy(params, x, y)
  assert clean > 0.85
  for name, attack in theirs.items():
    reference = torch_robust_accuracy(net, attack, x, y)
    assert reference < clean, name  # the comparison means something
    assert ours[name] <= reference + SLACK, (name, ours[name], reference)
