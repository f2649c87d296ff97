"""The robust training objectives against hand-written references, and how they compose.

Each reference below is the paper's algorithm written out with `jax.grad` on
the input, a sign and clips, without advjax's attacks: the objective must give
the same value and the same parameter gradient on a small model, for the same
PRNG key.
"""

import functools

from absl.testing import parameterized
import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import advjax

D, CLASSES, N = 6, 3, 8
BOX = (0.0, 1.0)


def logits_fn(params, x):
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def cross_entropy(logits, y):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def loss_fn(params, x, y):
  return cross_entropy(logits_fn(params, x), y)


def problem(seed=0):
  rng = np.random.default_rng(seed)
  params = {
      "w1": rng.normal(size=(D, 5)),
      "b1": rng.normal(size=5),
      "w2": 2 * rng.normal(size=(5, CLASSES)),
  }
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  x = jnp.asarray(rng.uniform(size=(N, D)), jnp.float32)
  y = jnp.asarray(rng.integers(0, CLASSES, size=N), jnp.int32)
  return params, x, y


KEY = jax.random.key(7)

# ---------------------------------------------------------------------------
# References, written from the papers' pseudo-code.
# ---------------------------------------------------------------------------


def sign_grad(fn, x):
  return jnp.sign(jax.grad(fn)(x))


def reference_pgd_point(loss, params, x, y, eps, step, num_steps, key):
  """Madry et al. / Wong et al.: uniform start, sign steps, ball and box after each."""
  project = lambda v: jnp.clip(jnp.clip(v, x - eps, x + eps), *BOX)
  x_adv = project(x + eps * jax.random.uniform(key, x.shape, minval=-1, maxval=1))
  for _ in range(num_steps):
    x_adv = project(x_adv + step * sign_grad(lambda v: loss(params, v, y), x_adv))
  return x_adv


def reference_nfgsm_point(loss, params, x, y, noise, step, key):
  """de Jorge et al.: uniform noise of width ``noise``, one step, box only."""
  x_noisy = x + noise * jax.random.uniform(key, x.shape, minval=-1, maxval=1)
  return jnp.clip(x_noisy + step * sign_grad(lambda v: loss(params, v, y), x_noisy), *BOX)


def kl(p_logits, q_logits):
  p = jax.nn.softmax(p_logits)
  return jnp.sum(p * (jax.nn.log_softmax(p_logits) - jax.nn.log_softmax(q_logits))) / N


def reference_trades(params, x, y, eps, beta, step, num_steps, key):
  """Zhang et al.'s trades.py: PGD on the KL from x + 0.001 N(0, I), then CE + beta KL."""
  target = jax.lax.stop_gradient(logits_fn(params, x))
  x_adv = x + 0.001 * jax.random.normal(key, x.shape)
  for _ in range(num_steps):
    x_adv = x_adv + step * sign_grad(lambda v: kl(target, logits_fn(params, v)), x_adv)
    x_adv = jnp.clip(jnp.clip(x_adv, x - eps, x + eps), *BOX)
  x_adv = jax.lax.stop_gradient(x_adv)
  logits = logits_fn(params, x)
  return cross_entropy(logits, y) + beta * kl(logits, logits_fn(params, x_adv))


class ReferenceTest(chex.TestCase):

  @parameterized.parameters(1, 3)
  def test_pgd_loss_is_the_loss_at_the_reference_pgd_point(self, num_steps):
    params, x, y = problem()
    objective = advjax.pgd_loss(loss_fn, KEY, 0.3, 0.1, num_steps, clip=BOX)
    x_adv = reference_pgd_point(loss_fn, params, x, y, 0.3, 0.1, num_steps, KEY)
    expected = jax.value_and_grad(loss_fn)(params, x_adv, y)
    chex.assert_trees_all_close(
        jax.value_and_grad(objective)(params, x, y), expected, rtol=1e-5, atol=1e-6
    )
    self.assertGreater(float(expected[0]), float(loss_fn(params, x, y)))

  def test_random_start_fgsm_is_one_pgd_step_of_its_own_size(self):
    params, x, y = problem()
    objective = advjax.random_start_fgsm_loss(loss_fn, KEY, 0.3, 0.375, clip=BOX)
    x_adv = reference_pgd_point(loss_fn, params, x, y, 0.3, 0.375, 1, KEY)
    chex.assert_trees_all_close(
        jax.value_and_grad(objective)(params, x, y),
        jax.value_and_grad(loss_fn)(params, x_adv, y),
        rtol=1e-5,
        atol=1e-6,
    )

  def test_nfgsm_matches_the_reference_and_leaves_the_eps_ball(self):
    params, x, y = problem()
    x_adv = jax.jit(reference_nfgsm_point, static_argnums=0)(loss_fn, params, x, y, 0.6, 0.3, KEY)
    self.assertGreater(float(jnp.max(jnp.abs(x_adv - x))), 0.3 + 0.1)  # not projected
    expected = jax.value_and_grad(loss_fn)(params, x_adv, y)
    defaults = advjax.nfgsm_loss(loss_fn, KEY, 0.3, clip=BOX)  # noise 2 eps, step eps
    explicit = advjax.nfgsm_loss(loss_fn, KEY, 1.0, noise=0.6, step=0.3, clip=BOX)
    for objective in (defaults, explicit):
      chex.assert_trees_all_close(
          jax.value_and_grad(objective)(params, x, y), expected, rtol=1e-5, atol=1e-6
      )

  def test_trades_matches_the_reference(self):
    params, x, y = problem()
    objective = advjax.trades_loss(loss_fn, logits_fn, KEY, 0.3, 6.0, 0.1, 3, clip=BOX)
    reference = jax.jit(jax.value_and_grad(reference_trades), static_argnums=6)
    expected = reference(params, x, y, 0.3, 6.0, 0.1, 3, KEY)
    chex.assert_trees_all_close(
        jax.value_and_grad(objective)(params, x, y), expected, rtol=1e-5, atol=1e-6
    )
    self.assertGreater(float(expected[0]), float(loss_fn(params, x, y)) + 0.01)  # KL > 0


# ---------------------------------------------------------------------------
# Composition, as for adversarial_loss.
# ---------------------------------------------------------------------------


def build(name, loss, eps, *, has_aux=False, logits=logits_fn):
  """One objective with ``eps`` (and the step and beta derived from it) traced or not."""
  return {
      "fgsm_rs": lambda: advjax.random_start_fgsm_loss(
          loss, KEY, eps, 1.25 * eps, clip=BOX, has_aux=has_aux
      ),
      "nfgsm": lambda: advjax.nfgsm_loss(loss, KEY, eps, clip=BOX, has_aux=has_aux),
      "pgd": lambda: advjax.pgd_loss(loss, KEY, eps, eps / 3, 3, clip=BOX, has_aux=has_aux),
      "trades": lambda: advjax.trades_loss(
          loss, logits, KEY, eps, 20 * eps, eps / 3, 3, clip=BOX, has_aux=has_aux
      ),
  }[name]()


NAMES = ("fgsm_rs", "nfgsm", "pgd", "trades")


class ComposeTest(chex.TestCase):

  @parameterized.parameters(*NAMES)
  def test_jit_and_vmap_over_eps_equal_one_call_per_eps(self, name):
    params, x, y = problem()
    grad_at = lambda eps: jax.grad(build(name, loss_fn, eps))(params, x, y)
    eps_values = jnp.array([0.05, 0.3])
    batched = jax.jit(jax.vmap(grad_at))(eps_values)
    for k, eps in enumerate([0.05, 0.3]):
      chex.assert_trees_all_close(
          jax.tree.map(lambda g, k=k: g[k], batched), grad_at(eps), rtol=1e-5, atol=1e-7
      )

  @parameterized.parameters(*NAMES)
  def test_has_aux_returns_the_value_and_the_aux_of_the_loss(self, name):
    params, x, y = problem()
    with_aux = lambda p, v, labels: (loss_fn(p, v, labels), logits_fn(p, v))
    (value, aux), grads = jax.value_and_grad(
        build(name, with_aux, 0.3, has_aux=True), has_aux=True
    )(params, x, y)
    chex.assert_trees_all_close(
        (value, grads), jax.value_and_grad(build(name, loss_fn, 0.3))(params, x, y), rtol=1e-6
    )
    # TRADES reports its clean pass; the others their one (adversarial) pass.
    if name == "trades":
      chex.assert_trees_all_close(aux, logits_fn(params, x), rtol=1e-6)
    else:
      chex.assert_trees_all_close(cross_entropy(aux, y), value, rtol=1e-6)

  @parameterized.parameters("pgd", "trades")  # the others take the same paths
  def test_takes_a_whole_equinox_model(self, name):
    model = eqx.nn.MLP(D, CLASSES, 5, 1, activation=jnp.tanh, key=jax.random.key(0))
    _, x, y = problem()
    eqx_logits = lambda m, v: jax.vmap(m)(v)
    eqx_loss = lambda m, v, labels: cross_entropy(eqx_logits(m, v), labels)
    value, grads = eqx.filter_value_and_grad(build(name, eqx_loss, 0.3, logits=eqx_logits))(
        model, x, y
    )
    # The same network as a dict of arrays, through the dict-params path.
    layers = model.layers
    params = {"w1": layers[0].weight.T, "b1": layers[0].bias, "w2": layers[1].weight.T}
    as_dict = lambda p, v: logits_fn(p, v) + layers[1].bias
    dict_loss = lambda p, v, labels: cross_entropy(as_dict(p, v), labels)
    expected_value, expected = jax.value_and_grad(build(name, dict_loss, 0.3, logits=as_dict))(
        params, x, y
    )
    chex.assert_trees_all_close(value, expected_value, rtol=1e-5)
    chex.assert_trees_all_close(grads.layers[0].weight, expected["w1"].T, rtol=1e-4, atol=1e-6)

  @parameterized.parameters("nfgsm", "trades")  # fgsm_rs and pgd draw their start as nfgsm
  def test_grad_under_shard_map_sums_the_shards(self, name):
    params, x, y = problem()  # 8 examples, 2 on each of 4 devices
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("batch",))
    spec = jax.sharding.PartitionSpec
    shard_grad = jax.jit(lambda p, v, labels: jax.grad(build(name, loss_fn, 0.3))(p, v, labels))
    grads = jax.jit(
        jax.shard_map(
            shard_grad,  # the gradient of replicated params is summed over the devices
            mesh=mesh,
            in_specs=(spec(), spec("batch"), spec("batch")),
            out_specs=spec(),
        )
    )(params, x, y)
    # Each device draws its start from the same key for its own two examples.
    expected = functools.reduce(
        lambda a, b: jax.tree.map(jnp.add, a, b),
        [shard_grad(params, x[i : i + 2], y[i : i + 2]) for i in range(0, N, 2)],
    )
    chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(*NAMES)
  def test_the_adversarial_point_is_a_constant_so_eps_has_no_gradient(self, name):
    params, x, y = problem()
    grad = jax.grad(lambda eps: build(name, loss_fn, eps)(params, x, y))(0.3)
    if name == "trades":  # beta = 20 eps: the KL term itself
      kl_term = (build(name, loss_fn, 0.3)(params, x, y) - loss_fn(params, x, y)) / 0.3
      chex.assert_trees_all_close(grad, kl_term, rtol=1e-4)
    else:
      self.assertEqual(float(grad), 0.0)


class ValidationTest(parameterized.TestCase):

  def test_bad_settings_are_named(self):
    with self.assertRaisesRegex(ValueError, r"step must be >= 0, got -0\.1"):
      advjax.pgd_loss(loss_fn, KEY, 0.3, -0.1, 3)
    with self.assertRaisesRegex(ValueError, r"num_steps must be an int >= 1, got 0"):
      advjax.trades_loss(loss_fn, logits_fn, KEY, 0.3, 6.0, 0.1, 0)
    with self.assertRaisesRegex(ValueError, r"beta must be >= 0, got -1"):
      advjax.trades_loss(loss_fn, logits_fn, KEY, 0.3, -1, 0.1, 3)
    with self.assertRaisesRegex(ValueError, r"noise must be >= 0, got -0\.2"):
      advjax.nfgsm_loss(loss_fn, KEY, 0.3, noise=-0.2)
    with self.assertRaisesRegex(ValueError, "TRADES needs the model's logits"):
      advjax.objectives.TRADES(0.3, 6.0, 0.1, 3)(loss_fn, KEY)
    with self.assertRaisesRegex(ValueError, "random_start=True or start="):
      params, x, y = problem()
      advjax.pgd(
          loss_fn,
          params,
          x,
          y,
          0.3,
          step_size=0.1,
          num_steps=1,
          random_start=True,
          key=KEY,
          start=x,
      )
