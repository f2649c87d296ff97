"""AutoAttack's parts against closed forms, a linear program and their own definitions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import advjax

CLASSES = 4
SIDE = 4  # images of 4 x 4 x 1
SETTINGS = dict(num_steps=20, num_targets=CLASSES - 1, fab_steps=10, num_queries=50)


def linear_logits(params, x):
  return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def linear_problem(seed=0, n=64):
  """A linear classifier and inputs in [0.3, 0.7], where a ball of radius <= 0.3 fits the box."""
  rng = np.random.default_rng(seed)
  params = {
      "w": jnp.asarray(rng.normal(size=(SIDE * SIDE, CLASSES)), jnp.float32),
      "b": jnp.asarray(rng.normal(size=CLASSES), jnp.float32),
  }
  x = jnp.asarray(rng.uniform(0.3, 0.7, size=(n, SIDE, SIDE, 1)), jnp.float32)
  y = jnp.argmax(linear_logits(params, x), axis=1)
  return params, x, y


def exact_linear_robust(params, x, y, eps):
  """Each point's L-inf distance to the boundary: ``min_j (z_y - z_j) / ||w_y - w_j||_1``.

  Exact while the ball stays inside the box.
  """
  w = np.asarray(params["w"], np.float64)
  z = np.asarray(x, np.float64).reshape(len(x), -1) @ w + np.asarray(params["b"], np.float64)
  y = np.asarray(y)
  gaps = z[np.arange(len(y)), y][:, None] - z
  norms = np.abs(w[:, y].T[:, :, None] - w[None]).sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    distance = np.where(np.arange(CLASSES)[None] == y[:, None], np.inf, gaps / norms)
  return distance.min(axis=1)


def in_ball_and_box(x_adv, x, eps):
  return bool(jnp.all(jnp.abs(x_adv - x) <= eps) & jnp.all((x_adv >= 0) & (x_adv <= 1)))


# --- losses -------------------------------------------------------------------------------


def test_dlr_matches_its_definition_and_ignores_shift_and_scale():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(32, 6)).astype(np.float32)
  y = rng.integers(0, 6, 32)
  target = (y + 1 + rng.integers(0, 5, 32)) % 6
  ordered = -np.sort(-z, axis=1)
  rows = np.arange(32)
  best_other = np.max(np.where(np.arange(6) == y[:, None], -np.inf, z), axis=1)
  want = -(z[rows, y] - best_other) / (ordered[:, 0] - ordered[:, 2])
  want_t = -(z[rows, y] - z[rows, target]) / (ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2)
  np.testing.assert_allclose(advjax.dlr_loss(z, y), want, rtol=1e-5)
  np.testing.assert_allclose(advjax.targeted_dlr_loss(z, y, target), want_t, rtol=1e-5)
  moved = 3.7 * z - 11.0
  np.testing.assert_allclose(advjax.dlr_loss(moved, y), want, rtol=1e-4)
  np.testing.assert_allclose(advjax.targeted_dlr_loss(moved, y, target), want_t, rtol=1e-4)
  np.testing.assert_array_equal(advjax.dlr_loss(z, y) > 0, np.argmax(z, axis=1) != y)


def test_margin_and_cross_entropy_match_their_definitions():
  z = jnp.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
  y = jnp.array([0, 2])
  np.testing.assert_allclose(advjax.margin(z, y), [1.5, -2.0])
  np.testing.assert_allclose(
      advjax.cross_entropy(z, y), -np.log(np.exp(z[[0, 1], y]) / np.exp(z).sum(1)), rtol=1e-6
  )


# --- the schedules --------------------------------------------------------------------------


def test_square_fraction_follows_the_reference_thresholds():
  def reference(it, p_init=0.8):  # square.py's p_selection, without rescaling
    for bound, divisor in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32)):
      if it > bound:
        return p_init / divisor
    for bound, divisor in ((500, 16), (200, 8), (50, 4), (10, 2)):
      if it > bound:
        return p_init / divisor
    return p_init

  queries = np.arange(0, 10001, 7)
  got = jax.vmap(lambda q: advjax.square_fraction(q, 0.8))(queries)
  np.testing.assert_allclose(got, [reference(q) for q in queries], rtol=1e-6)
  rescaled = jax.vmap(lambda q: advjax.square_fraction(q, 0.8, num_queries=5000))(queries[:700])
  np.testing.assert_allclose(rescaled, [reference(2 * q) for q in queries[:700]], rtol=1e-6)


def test_apgd_checkpoints_follow_the_paper_for_100_steps():
  # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
  first, minimum, decrement = advjax.apgd_checkpoints(100)
  checks, interval, at = [], first, 0
  while at + interval <= 100:
    at += interval
    checks.append(at)
    interval = max(interval - decrement, minimum)
  p, paper = [0.0, 0.22], [22]
  while True:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    if p[-1] > 1:
      break
    paper.append(round(100 * p[-1]))
  assert checks == paper


# --- FAB's projection ----------------------------------------------------------------------


def linf_projection_lp(t, w, b):
  """Least max-norm ``d`` with ``w.(t + d) = b`` and ``0 <= t + d <= 1``, by linear programming."""
  n = len(t)
  cost = np.zeros(n + 1)
  cost[-1] = 1
  bounds_rows = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
  result = optimize.linprog(
      cost,
      A_ub=bounds_rows,
      b_ub=np.zeros(2 * n),
      A_eq=np.append(w, 0)[None],
      b_eq=[b - w @ t],
      bounds=[(-ti, 1 - ti) for ti in t] + [(0, None)],
  )
  return result.x[-1] if result.success else None


def test_halfspace_projection_is_the_least_linf_move():
  rng = np.random.default_rng(1)
  t = rng.uniform(size=(40, 12))
  w = rng.normal(size=(40, 12))
  b = np.sum(w * t, axis=1) + rng.normal(scale=1.5, size=40)
  d = np.asarray(
      advjax.project_onto_halfspace_linf(*(jnp.asarray(a, jnp.float32) for a in (t, w, b))),
      np.float64,
  )
  reachable = 0
  for row in range(40):
    best = linf_projection_lp(t[row], w[row], b[row])
    if best is None:  # the box forbids the hyperplane: FAB takes the corner nearest to it
      corner = np.where((w[row] > 0) == (b[row] > w[row] @ t[row]), 1.0, 0.0)
      np.testing.assert_allclose(t[row] + d[row], corner, atol=1e-6)
      continue
    reachable += 1
    assert np.all(t[row] + d[row] >= -1e-6) and np.all(t[row] + d[row] <= 1 + 1e-6)
    np.testing.assert_allclose(w[row] @ (t[row] + d[row]), b[row], atol=1e-4)
    np.testing.assert_allclose(np.abs(d[row]).max(), best, atol=1e-5)
  assert reachable >= 20


# --- the attacks on a linear model, whose exact robust accuracy is known -------------------


@functools.cache
def linear_autoattack():
  """`autoattack` on `linear_logits`, compiled once for every radius."""
  return jax.jit(
      lambda p, x, y, eps: advjax.autoattack(
          linear_logits, p, x, y, eps, key=jax.random.key(0), **SETTINGS
      )
  )


@pytest.mark.parametrize("eps", [0.03, 0.06])
def test_autoattack_reaches_the_exact_robust_accuracy_of_a_linear_model(eps):
  params, x, y = linear_problem()
  distance = exact_linear_robust(params, x, y, eps)
  clear = np.abs(distance - eps) > 1e-3  # points on the fence could go either way in float32
  truth = distance > eps
  assert 0.2 < truth.mean() < 0.9
  result = linear_autoattack()(params, x, y, eps)
  np.testing.assert_array_equal(np.asarray(result.robust)[clear], truth[clear])
  assert clear.mean() > 0.9
  assert in_ball_and_box(result.x_adv, x, eps)
  broken = ~truth
  assert np.all(np.asarray(jnp.argmax(linear_logits(params, result.x_adv), 1) != y)[broken])
  assert np.all(np.asarray(result.broken_by)[truth] == -1)


def test_each_attack_is_sound_and_targeted_ones_reach_the_truth():
  eps = 0.1
  params, x, y = linear_problem(seed=2)
  truth = exact_linear_robust(params, x, y, eps) > eps
  ranked = jnp.argsort(linear_logits(params, x), axis=1)
  key = jax.random.key(3)

  def robust(x_adv):
    assert in_ball_and_box(x_adv, x, eps)
    return np.asarray(jnp.argmax(linear_logits(params, x_adv), 1) == y)

  ce = robust(
      advjax.apgd(linear_logits, params, x, y, eps, objective=advjax.cross_entropy, key=key)
  )
  assert np.all(ce >= truth)  # no attack beats the exact answer
  apgd_t = jax.jit(
      lambda target: advjax.apgd(
          linear_logits,
          params,
          x,
          y,
          eps,
          objective=functools.partial(advjax.targeted_dlr_loss, target=target),
          key=key,
          num_steps=50,
      )
  )
  fab_t = jax.jit(
      lambda target: advjax.fab_targeted(
          linear_logits, params, x, y, eps, target=target, num_steps=10
      )
  )
  w = np.asarray(params["w"])
  z = np.asarray(linear_logits(params, x))
  rows = np.arange(len(y))
  per_target = []
  for rank in range(CLASSES - 1):
    target = ranked[:, -2 - rank]
    per_target.append(robust(apgd_t(target)))
    # FAB solves the linearised problem exactly: it finds every point breakable toward target.
    need = (z[rows, y] - z[rows, target]) / np.abs(w[:, y] - w[:, target]).sum(0)
    np.testing.assert_array_equal(robust(fab_t(target)), need > eps)
  apgd_t = np.all(per_target, axis=0)
  np.testing.assert_array_equal(apgd_t, truth)
  sq = robust(
      advjax.square(linear_logits, params, x, y, eps, key=key, num_queries=300, clip=(0.0, 1.0))
  )
  assert np.all(sq >= truth) and sq.mean() < 1.0


def test_restarts_keep_each_examples_worst_case():
  eps = 0.05
  params, x, y = linear_problem(seed=0)
  objective = advjax.cross_entropy
  run = lambda key, restarts: advjax.apgd(
      linear_logits,
      params,
      x,
      y,
      eps,
      objective=objective,
      key=key,
      num_steps=3,
      num_restarts=restarts,
  )
  key = jax.random.key(5)
  once, twice = run(key, 1), run(key, 2)
  loss = lambda point: np.asarray(objective(linear_logits(params, point), y))
  wrong = lambda point: np.asarray(jnp.argmax(linear_logits(params, point), 1) != y)
  # The second run starts elsewhere: what the first broke stays broken, and
  # where neither breaks a point the higher loss of the two is kept.
  assert np.all(wrong(twice) >= wrong(once))
  neither = ~wrong(twice)
  assert np.all(loss(twice)[neither] >= loss(once)[neither])
  assert np.any(loss(twice)[neither] > loss(once)[neither])


def test_square_stays_in_the_ball_and_the_box():
  params, x, y = linear_problem(seed=6)
  x = x.at[:, 0].set(0.0).at[:, 1].set(1.0)  # pixels on the box's faces
  eps = jnp.linspace(0.01, 0.4, x.shape[0])  # one radius per example
  x_adv = advjax.square(linear_logits, params, x, y, eps, key=jax.random.key(0), num_queries=40)
  assert bool(jnp.all(jnp.abs(x_adv - x) <= eps[:, None, None, None]))
  assert bool(jnp.all((x_adv >= 0) & (x_adv <= 1)))
  flat = x_adv.reshape(len(x), -1)
  # Square moves a pixel only by +-eps from x (or onto the box's face).
  moved = jnp.abs(flat - x.reshape(len(x), -1))
  on_face = (flat == 0) | (flat == 1)
  assert bool(jnp.all(jnp.isclose(moved, eps[:, None]) | on_face | (moved == 0)))


def test_square_narrows_to_the_unbroken_examples_and_writes_each_back():
  params, x, y = linear_problem(seed=7)
  distance = exact_linear_robust(params, x, y, None)
  # A quarter of the examples get half their distance to the boundary (unbreakable), the rest
  # three times it: once most are broken, the search gathers the rest into narrower batches.
  keep = (np.arange(len(y)) % 4 == 0) & (distance > 0.005)
  eps = jnp.asarray(np.where(keep, 0.5 * distance, np.minimum(3 * distance, 0.3)), jnp.float32)
  x_adv = advjax.square(linear_logits, params, x, y, eps, key=jax.random.key(1), num_queries=300)
  assert bool(jnp.all(jnp.abs(x_adv - x) <= eps[:, None, None, None]))  # each in its own ball
  wrong = np.asarray(jnp.argmax(linear_logits(params, x_adv), 1) != y)
  assert not wrong[keep].any()
  assert wrong[~keep].mean() > 0.9, wrong[~keep].mean()


# --- many epsilons, many members -------------------------------------------------------------


def test_curve_equals_separate_calls_and_members_equal_separate_models():
  # One compiled program for both members at every radius, against the
  # separate calls of `linear_autoattack` (compiled once for the whole file).
  params, x, y = linear_problem()
  members = [params, jax.tree.map(lambda a: -a, params)]
  eps_values = [0.03, 0.06, 0.2]
  curves = jax.jit(
      jax.vmap(
          lambda p: advjax.autoattack_curve(
              linear_logits, p, x, y, jnp.array(eps_values), key=jax.random.key(0), **SETTINGS
          )
      )
  )
  together = curves(advjax.stack(members))
  for m, member in enumerate(members):
    for k, eps in enumerate(eps_values):
      alone = linear_autoattack()(member, x, y, eps)
      np.testing.assert_array_equal(together.robust[m, k], alone.robust)
      np.testing.assert_array_equal(together.broken_by[m, k], alone.broken_by)
      np.testing.assert_allclose(together.x_adv[m, k], alone.x_adv, atol=1e-6)


# --- gradient-masking flags ------------------------------------------------------------------


def test_flags_fire_on_zero_gradients_and_non_monotone_curves():
  params, x, y = linear_problem()
  # Constant logits: no gradient anywhere (and `linear_autoattack`'s program).
  flat = {"w": jnp.zeros_like(params["w"]), "b": params["b"]}
  eps_values = [0.0, 0.3]
  result = jax.tree.map(
      lambda *a: jnp.stack(a), *(linear_autoattack()(flat, x, y, eps) for eps in eps_values)
  )
  flags = advjax.masking_flags(result, eps_values)
  assert flags["zero_gradients"] == len(y) and flags["any"] and not flags["non_monotone"]
  fake = advjax.AutoAttackResult(
      jnp.array([[True, False], [True, True]]), None, jnp.full((2, 2), -1), jnp.zeros((2, 2), bool)
  )
  assert advjax.masking_flags(fake, [0.1, 0.2])["non_monotone"]
  assert not advjax.masking_flags(fake, [0.2, 0.1])["non_monotone"]


def test_numpy_inputs_give_what_jax_arrays_give():
  # A data split holds NumPy arrays; `attack_robust` indexes them with traced rows.
  params, x, y = linear_problem()
  fgsm = lambda x, y, target, eps, key: advjax.fgsm(
      lambda p, x, y: advjax.cross_entropy(linear_logits(p, x), y).mean(), params, x, y, eps
  )
  run = lambda x, y: advjax.attack_robust(
      fgsm, linear_logits, params, x, y, 0.05, y >= 0, target=y, key=jax.random.key(0)
  )
  from_numpy = run(np.asarray(x), np.asarray(y))
  jax.tree.map(np.testing.assert_array_equal, from_numpy, run(x, y))
  assert 0 < int(np.sum(from_numpy[0])) < len(y)  # some broken, some not


@pytest.mark.parametrize("batch_size, robust_count", [(64, 150), (64, 128), (64, 5), (16, 37)])
def test_attack_robust_attacks_every_robust_example_and_no_other(batch_size, robust_count):
  """Full chunks, then chunks of an eighth (from 64): every robust row is attacked, no other.

  The stand-in attack moves feature 0 to 1 and adds 1 to feature 2; the logits
  make a row misclassified iff feature 0 > 0.5; feature 1 names the row.
  """
  n = 200
  x = jnp.zeros((n, 3)).at[:, 1].set(jnp.arange(n, dtype=jnp.float32))
  robust = (
      jnp.zeros(n, bool).at[jax.random.permutation(jax.random.key(0), n)[:robust_count]].set(True)
  )
  logits = lambda params, x: jnp.stack([0.5 - x[:, 0], x[:, 0] - 0.5], axis=1)
  attack = lambda x, y, target, eps, key: x.at[:, 0].set(1.0).at[:, 2].add(1.0)
  y = jnp.zeros(n, jnp.int32)
  broken, x_adv = jax.jit(
      lambda r: advjax.attack_robust(
          attack,
          logits,
          None,
          x,
          y,
          0.1,
          r,
          target=y,
          key=jax.random.key(1),
          batch_size=batch_size,
      )
  )(robust)
  np.testing.assert_array_equal(broken, robust)
  # Each robust row comes back attacked, in its own place; the others are x.
  expected = np.where(np.asarray(robust)[:, None], np.asarray(x) + [1.0, 0.0, 1.0], np.asarray(x))
  np.testing.assert_array_equal(x_adv, expected)
