"""AutoAttack (Croce & Hein, ICML 2020), "standard" L-infinity version, and its flags.

`autoattack` runs APGD with the cross-entropy, targeted APGD with the DLR loss
(9 target classes), targeted FAB (9 target classes) and the Square attack
(5,000 queries) in turn; each attack's point is kept only for the examples
still robust before it, so every example is credited to the first attack that
broke it. Everything stays jittable with fixed shapes: each attack runs on
the still robust examples only, gathered in fixed chunks (`attack_robust`),
so its cost follows their number as the reference's does.

`autoattack_curve` runs it at many epsilons in one program (and
`autoattack_report` over stacked ensemble members too); `masking_flags`
reads AutoAttack's warnings of gradient masking out of a curve as data.
`autoattack_report` is the whole evaluation as one jitted call returning JSON.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax._types import Array
from advjax._types import Clip
from advjax._types import LogitsFn
from advjax.apgd import apgd
from advjax.apgd import cross_entropy
from advjax.apgd import dlr_loss
from advjax.apgd import targeted_dlr_loss
from advjax.fab import fab_targeted
from advjax.square import square

__all__ = [
    "ATTACKS",
    "AutoAttackResult",
    "attack_robust",
    "autoattack",
    "autoattack_curve",
    "autoattack_report",
    "masking_flags",
    "standard_attacks",
]


# The attacks in the order they run; `AutoAttackResult.broken_by` counts from 1.
ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


class AutoAttackResult(NamedTuple):
  """Per-example outcome of `autoattack` (with a leading epsilon axis from `autoattack_curve`).

  Attributes:
    robust: ``(batch,)`` bool: correctly classified and no attack broke it.
    x_adv: the adversarial inputs (``x`` itself where no attack succeeded).
    broken_by: ``(batch,)`` int32: -1 robust, 0 misclassified before any
      attack, ``i + 1`` broken first by ``ATTACKS[i]``.
    zero_gradient: ``(batch,)`` bool: the DLR loss's input gradient at ``x``
      is exactly zero (AutoAttack's warning that gradient attacks may fail).
  """

  robust: Array
  x_adv: Array
  broken_by: Array
  zero_gradient: Array


# An attack as `attack_robust` takes it: ``(x, y, target, eps, key) -> x_adv``.
AttackFn = Callable[[Array, Array, Array, Array, Array], Array]


def attack_robust(
    attack: AttackFn,
    logits_fn: LogitsFn,
    params: Any,
    x: Array,
    y: Array,
    eps: Any,
    robust: Array,
    *,
    target: Array,
    key: Array,
    batch_size: int = 128,
) -> tuple[Array, Array]:
  """Runs ``attack`` on the examples still ``robust`` only, ``batch_size`` at a time.

  The robust examples are sorted to the front and gathered in fixed chunks
  inside a ``jax.lax.while_loop`` that stops after the last of them: the cost
  follows their number, the shapes stay fixed (``jit`` and ``vmap`` work;
  under ``vmap`` the loop runs as long as the longest member needs). From a
  ``batch_size`` of 64, what is left after the full chunks goes in chunks of
  an eighth, so that a few robust examples do not pay for a whole chunk.

  Args:
    attack: ``(x, y, target, eps, key) -> x_adv`` on one chunk; ``eps`` comes
      as one value per example of the chunk, ``key`` folded with the chunk's
      index.
    logits_fn: ``(params, x) -> (batch, classes)`` logits, to score the chunk.
    params: the model parameters, any pytree.
    x: the clean inputs.
    y: ``(batch,)`` integer labels.
    eps: a scalar, or ``(batch,)`` values.
    robust: ``(batch,)`` bool: the examples to attack.
    target: ``(batch,)`` labels handed to ``attack`` (``y`` when it takes none).
    key: PRNG key.
    batch_size: examples per chunk.

  Returns:
    ``(broken, x_adv)``: the robust examples the attack misclassified, and
    their adversarial inputs (``x`` elsewhere).

  Example:
    >>> fgsm = lambda x, y, target, eps, key: advjax.fgsm(loss_fn, params, x, y, eps)
    >>> broken, x_adv = attack_robust(fgsm, model.scores, params, x, y, 0.3, y >= 0, target=y,
    ...                               key=key, batch_size=3)
    >>> broken.shape, x_adv.shape
    ((8,), (8, 784))
  """
  # NumPy inputs (a data split's arrays) must be JAX arrays to take traced indices.
  x, y, target = jnp.asarray(x), jnp.asarray(y), jnp.asarray(target)
  batch = x.shape[0]
  chunk = min(batch_size, batch)
  eps_rows = jnp.broadcast_to(jnp.asarray(eps), (batch,))
  order = jnp.argsort(~robust, stable=True)  # robust ones first
  order = jnp.concatenate([order, jnp.zeros(chunk, order.dtype)])  # no slice runs off the end
  count = jnp.sum(robust)

  run = functools.partial(
      _attack_chunks,
      lambda rows, key: attack(x[rows], y[rows], target[rows], eps_rows[rows], key),
      lambda found, rows: jnp.argmax(logits_fn(params, found), axis=1) != y[rows],
      order,
      key,
  )
  state = (jnp.zeros(batch, bool), x)
  if chunk < 64:
    return run(count, state, chunk, 0, 0)
  # A chunk costs its full size however few of its rows are left: the last
  # robust examples go in chunks of an eighth (6 left of 1,000 at a large eps
  # cost 16 rows, not 128).
  full = count // chunk
  state = run(full * chunk, state, chunk, 0, 0)
  return run(count, state, chunk // 8, full * chunk, full)


def _attack_chunks(
    attack: Callable[[Array, Array], Array],
    misclassified: Callable[[Array, Array], Array],
    order: Array,
    key: Array,
    stop: Array,
    state: tuple[Array, Array],
    size: int,
    start: Any,
    index: Any,
) -> tuple[Array, Array]:
  """Attacks the examples ``order[start:stop]``, ``size`` at a time; chunk j's key is folded
  with ``index + j``. ``attack(rows, key)`` and ``misclassified(found, rows)`` take row indices."""
  batch = state[0].shape[0]

  def body(carry):
    j, broken, x_adv = carry
    at = start + j * size
    rows = jax.lax.dynamic_slice(order, (at,), (size,))
    found = attack(rows, jax.random.fold_in(key, index + j))
    wrong = (at + jnp.arange(size) < stop) & misclassified(found, rows)
    into = jnp.where(wrong, rows, batch)  # out of range: dropped
    return j + 1, broken.at[into].set(True, mode="drop"), x_adv.at[into].set(found, mode="drop")

  loop = jax.lax.while_loop(lambda carry: start + carry[0] * size < stop, body, (0, *state))
  return loop[1], loop[2]


def autoattack(
    logits_fn: LogitsFn,
    params: Any,
    x: Array,
    y: Array,
    eps: Any,
    *,
    key: Array,
    num_steps: int = 100,
    num_targets: int = 9,
    fab_steps: int = 100,
    num_queries: int = 5000,
    image_shape: tuple[int, int, int] | None = None,
    clip: Clip = (0.0, 1.0),
    batch_size: int = 128,
) -> AutoAttackResult:
  """AutoAttack's standard L-infinity evaluation of one batch at one ``eps``.

  APGD-CE (``num_steps``), APGD-T with the DLR loss and FAB-T
  (``fab_steps``), each against the ``num_targets`` classes ranked 2nd,
  3rd, ... by the clean logits, then Square (``num_queries``). The defaults
  are the reference's standard version.

  Args:
    logits_fn: ``(params, x) -> (batch, classes)`` logits; each example's
      logits depend on that example only.
    params: the model parameters, any pytree.
    x: the clean inputs, inside ``clip``.
    y: ``(batch,)`` integer labels.
    eps: radius of the L-infinity ball: a scalar, or ``(batch,)`` values.
    key: PRNG key for the random starts and Square's proposals.
    num_steps: APGD iterations per run.
    num_targets: target classes of APGD-T and FAB-T, at most ``classes - 1``.
    fab_steps: FAB iterations per target.
    num_queries: Square's query budget.
    image_shape: ``(height, width, channels)`` of one example for Square,
      when ``x.shape[1:]`` is not that (see `advjax.square`).
    clip: ``(lo, hi)`` box of valid inputs.
    batch_size: how many of the still robust examples an attack takes at a
      time (`attack_robust`; a time and memory knob: the results depend on
      it only through the random draws).

  Returns:
    An `AutoAttackResult`.

  Example:
    >>> attack = jax.jit(lambda p: advjax.autoattack(
    ...     model.scores, p, x, y, 0.1, key=key, num_steps=5, num_targets=2, fab_steps=5,
    ...     num_queries=10, image_shape=(28, 28, 1)))  # one program, not op by op
    >>> result = attack(params)
    >>> result.robust.shape, bool(jnp.all(jnp.abs(result.x_adv - x) <= 0.1))
    ((8,), True)
  """
  classes = jax.eval_shape(logits_fn, params, x).shape[1]
  if not isinstance(num_targets, int) or not 0 <= num_targets < classes:
    raise ValueError(f"num_targets must be an int in [0, {classes - 1}], got {num_targets!r}.")
  attacks = standard_attacks(
      logits_fn,
      params,
      num_steps=num_steps,
      fab_steps=fab_steps,
      num_queries=num_queries,
      image_shape=image_shape,
      clip=clip,
  )
  logits = logits_fn(params, x)
  ranked = jnp.argsort(logits, axis=1)
  robust = jnp.argmax(logits, axis=1) == y
  state = (robust, x, jnp.where(robust, -1, 0).astype(jnp.int32))
  run = functools.partial(_run_attack, logits_fn, params, x, y, eps, batch_size)
  targeted = functools.partial(_against_targets, run, ranked, num_targets, key)
  state = run(state, 1, attacks["apgd-ce"], y, jax.random.fold_in(key, 0))
  state = targeted(state, 2, attacks["apgd-t"])
  state = targeted(state, 3, attacks["fab-t"])
  state = run(state, 4, attacks["square"], y, jax.random.fold_in(key, 1))
  grad = jax.grad(lambda point: jnp.sum(dlr_loss(logits_fn(params, point), y)))(x)
  zero_gradient = jnp.all(grad.reshape(grad.shape[0], -1) == 0, axis=1)
  return AutoAttackResult(*state, zero_gradient)


_State = tuple[Array, Array, Array]  # robust, best inputs so far, broken_by


def _against_targets(
    run: Callable[..., _State],
    ranked: Array,
    num_targets: int,
    key: Array,
    state: _State,
    code: int,
    attack: AttackFn,
) -> _State:
  """``run``s a targeted attack against the classes ranked 2nd, 3rd, ... by the clean logits."""

  def one(state, rank):
    target = jnp.take(ranked, ranked.shape[1] - 2 - rank, axis=1)
    return run(state, code, attack, target, jax.random.fold_in(key, 2 + rank)), None

  return jax.lax.scan(one, state, jnp.arange(num_targets))[0]


def _run_attack(
    logits_fn: LogitsFn,
    params: Any,
    x: Array,
    y: Array,
    eps: Any,
    batch_size: int,
    state: _State,
    code: int,
    attack: AttackFn,
    target: Array,
    key: Array,
) -> _State:
  """Runs ``attack`` on the examples still robust; marks those it breaks with ``code``."""
  robust, x_best, broken_by = state
  broken, x_adv = attack_robust(
      attack, logits_fn, params, x, y, eps, robust, target=target, key=key, batch_size=batch_size
  )
  rows = broken.reshape(broken.shape + (1,) * (x.ndim - 1))
  return robust & ~broken, jnp.where(rows, x_adv, x_best), jnp.where(broken, code, broken_by)


def standard_attacks(
    logits_fn: LogitsFn,
    params: Any,
    *,
    num_steps: int = 100,
    fab_steps: int = 100,
    num_queries: int = 5000,
    image_shape: tuple[int, int, int] | None = None,
    clip: Clip = (0.0, 1.0),
) -> dict[str, AttackFn]:
  """AutoAttack standard's four attacks, by their names in `ATTACKS`.

  Each is ``(x, y, target, eps, key) -> x_adv``, the form `attack_robust`
  takes: APGD-CE and Square ignore ``target``, FAB-T ignores ``key``. The
  defaults are the reference's standard version; the arguments are
  `autoattack`'s.

  Args:
    logits_fn: ``(params, x) -> (batch, classes)`` logits.
    params: the model parameters, any pytree.
    num_steps: APGD iterations per run.
    fab_steps: FAB iterations per target.
    num_queries: Square's query budget.
    image_shape: ``(height, width, channels)`` of one example for Square.
    clip: ``(lo, hi)`` box of valid inputs.

  Returns:
    A dict from ``"apgd-ce"``, ``"apgd-t"``, ``"fab-t"`` and ``"square"`` to
    the attack.

  Example:
    >>> attacks = advjax.standard_attacks(model.scores, params, num_steps=5)
    >>> x_adv = attacks["apgd-ce"](x, y, y, 0.1, key)
    >>> list(attacks) == list(advjax.ATTACKS), bool(jnp.all(jnp.abs(x_adv - x) <= 0.1 + 1e-6))
    (True, True)
  """

  def apgd_ce(x, y, _, eps, key):
    return apgd(
        logits_fn,
        params,
        x,
        y,
        eps,
        objective=cross_entropy,
        key=key,
        num_steps=num_steps,
        clip=clip,
    )

  def apgd_t(x, y, target, eps, key):
    objective = functools.partial(targeted_dlr_loss, target=target)
    return apgd(
        logits_fn, params, x, y, eps, objective=objective, key=key, num_steps=num_steps, clip=clip
    )

  def fab_t(x, y, target, eps, _):
    return fab_targeted(logits_fn, params, x, y, eps, target=target, num_steps=fab_steps, clip=clip)

  def square_attack(x, y, _, eps, key):
    return square(
        logits_fn,
        params,
        x,
        y,
        eps,
        key=key,
        num_queries=num_queries,
        image_shape=image_shape,
        clip=clip,
    )

  return dict(zip(ATTACKS, (apgd_ce, apgd_t, fab_t, square_attack)))


def autoattack_curve(
    logits_fn: LogitsFn, params: Any, x: Array, y: Array, eps_values: Array, **settings: Any
) -> AutoAttackResult:
  """`autoattack` at every value of ``eps_values`` in one program.

  The epsilons run one after another (``jax.lax.map``), not vmapped: a
  vmapped while loop runs every epsilon for as long as the one with the most
  robust points needs, so the small radii, where most points stay robust,
  would set the cost of all. Every epsilon uses the same ``key``, so the
  result equals separate calls.

  Args:
    logits_fn: ``(params, x) -> (batch, classes)`` logits.
    params: the model parameters, any pytree.
    x: the clean inputs.
    y: ``(batch,)`` integer labels.
    eps_values: ``(K,)`` radii.
    **settings: `autoattack`'s keyword arguments (``key`` among them).

  Returns:
    An `AutoAttackResult` whose fields have a leading axis of ``K``.

  Example:
    >>> curve = jax.jit(lambda p, e: advjax.autoattack_curve(
    ...     model.scores, p, x, y, e, key=key, num_steps=5, num_targets=1, fab_steps=5,
    ...     num_queries=10, image_shape=(28, 28, 1)))(params, jnp.array([0.0, 0.1]))
    >>> curve.robust.shape
    (2, 8)
  """

  def one(eps):
    return autoattack(logits_fn, params, x, y, eps, **settings)

  return jax.lax.map(one, jnp.asarray(eps_values))


def masking_flags(result: AutoAttackResult, eps_values: Any) -> dict[str, Any]:
  """AutoAttack's gradient-masking warnings for a curve, as JSON-ready data.

  Args:
    result: `autoattack_curve`'s result (leading axis over ``eps_values``).
    eps_values: the ``(K,)`` radii, increasing.

  Returns:
    A dict: ``square_broke`` (per epsilon, points the black-box Square broke
    after every white-box attack failed), ``zero_gradients`` (points whose
    DLR gradient is zero), ``non_monotone`` (robust accuracy rose somewhere
    as epsilon grew), and ``any`` (one of them fired).

  Example:
    >>> fake = advjax.AutoAttackResult(jnp.array([[True], [True]]), None,
    ...                                jnp.array([[-1], [4]]), jnp.array([[False], [False]]))
    >>> masking_flags(fake, [0.1, 0.2])["square_broke"]
    [0, 1]
  """
  robust_accuracy = np.mean(np.asarray(result.robust), axis=-1)
  square_broke = np.sum(np.asarray(result.broken_by) == 1 + ATTACKS.index("square"), axis=-1)
  zero_gradients = int(np.max(np.sum(np.asarray(result.zero_gradient), axis=-1)))
  order = np.argsort(np.asarray(eps_values))
  non_monotone = bool(np.any(np.diff(robust_accuracy[..., order], axis=-1) > 0))
  flags = {
      "square_broke": square_broke.tolist(),
      "zero_gradients": zero_gradients,
      "non_monotone": non_monotone,
  }
  flags["any"] = bool(np.any(square_broke > 0) or zero_gradients > 0 or non_monotone)
  return flags


def autoattack_report(
    logits_fn: LogitsFn,
    params: Any,
    x: Array,
    y: Array,
    eps_values: Any,
    *,
    stacked: bool = False,
    **settings: Any,
) -> dict[str, Any]:
  """The robustness curve of a model (or of each stacked member) as one jitted call.

  Args:
    logits_fn: ``(params, x) -> (batch, classes)`` logits.
    params: the model parameters; with ``stacked``, members stacked on a
      leading axis (`advjax.stack`).
    x: the clean inputs.
    y: ``(batch,)`` integer labels.
    eps_values: the radii, increasing.
    stacked: evaluate every member of ``params``, one after another in the
      one program (``jax.lax.map``, for the reason `autoattack_curve` gives).
    **settings: `autoattack`'s keyword arguments (``key`` among them).

  Returns:
    A JSON-ready dict: ``eps``, ``n``, ``robust_accuracy`` and its binomial
    ``standard_error`` (per epsilon, or per member and epsilon), ``broken_by``
    (counts per attack name, per epsilon), and ``flags`` (`masking_flags`).

  Example:
    >>> report = advjax.autoattack_report(model.scores, params, x, y, [0.0, 0.1], key=key,
    ...     num_steps=5, num_targets=1, fab_steps=5, num_queries=10, image_shape=(28, 28, 1))
    >>> sorted(report)
    ['broken_by', 'eps', 'flags', 'n', 'robust_accuracy', 'standard_error']
  """
  eps_values = jnp.asarray(eps_values, jnp.float32)
  result = _curves(
      logits_fn, params, jnp.asarray(x), jnp.asarray(y), eps_values, stacked, **settings
  )
  robust_accuracy = np.mean(np.asarray(result.robust), axis=-1)
  broken_by = np.asarray(result.broken_by)
  n = x.shape[0]
  return {
      "eps": np.asarray(eps_values).tolist(),
      "n": n,
      "robust_accuracy": robust_accuracy.tolist(),
      "standard_error": np.sqrt(robust_accuracy * (1 - robust_accuracy) / n).tolist(),
      "broken_by": {
          name: np.sum(broken_by == code, axis=-1).tolist()
          for code, name in enumerate(("clean",) + ATTACKS)
      },
      "flags": masking_flags(result, eps_values),
  }


# `autoattack`'s settings other than its key: static arguments of `_curves`.
_SETTINGS = tuple(
    name
    for name, parameter in inspect.signature(autoattack).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY and name != "key"
)


@functools.partial(jax.jit, static_argnums=(0, 5), static_argnames=_SETTINGS)
def _curves(
    logits_fn: LogitsFn,
    params: Any,
    x: Array,
    y: Array,
    eps_values: Array,
    stacked: bool,
    **settings: Any,
) -> AutoAttackResult:
  """`autoattack_curve`, of each stacked member in turn (``jax.lax.map``) with ``stacked``.

  Jitted with the model's ``logits_fn`` and the settings static, so that a
  second evaluation of the same model (another checkpoint, another member)
  reuses the compiled program.
  """

  def curve(params):
    return autoattack_curve(logits_fn, params, x, y, eps_values, **settings)

  return jax.lax.map(curve, params) if stacked else curve(params)
