"""What a training step minimises, and the compiled step and epoch that minimise it.

An objective turns a model's loss into the loss a step minimises: `Clean`,
`Adversarial` (eq. 6 of the paper), `Noise` (the controls of section 6), or
the robust training since (`FGSMRandomStart`, `NFGSM`, `PGDTraining`,
`TRADES`). They live in `advjax.objectives` and are re-exported here.
Objectives are pytrees whose leaves are their numeric settings (eps, alpha),
so a vmapped population of models can give every member its own.

`train_step` is one update of any optimizer followed by the model's weight
constraint, a pure function of ``(state, batch, rng)``. `train_epoch` runs a
whole epoch of it as one program: the training split stays on the device,
each member's shuffle is drawn there from its epoch key, and `jax.lax.scan`
walks the steps of every member at once (`jax.vmap`). `advjax.loop.fit`
drives it epoch by epoch.

Dropout and the adversarial example: a step draws one dropout mask and uses
it three times, for the input gradient that makes the FGSM example, for the
clean term and for the adversarial term of eq. (6). The attack thus sees the
same thinned network that the update trains. The mask is drawn once
(`advjax.models.Classifier.dropout_masks`) and read by every pass, so that
XLA, inside the compiled epoch's loop too, runs the attack's forward pass and
the clean term's as one.

Example:
  >>> model = models.maxout_mlp(units=8, pieces=2)
  >>> state = create_train_state(model, jax.random.key(0), x[:1], recipe_sgd(500))
  >>> step = jax.jit(make_train_step(model, Adversarial(eps=0.25)))
  >>> state, loss = step(state, (x, y), jax.random.key(1))
  >>> int(state.step)
  1
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import optax

from advjax import _trees
from advjax import sharding
from advjax._types import Array
from advjax._types import LossFn
from advjax._types import Params
from advjax.models import Classifier
from advjax.objectives import NFGSM
from advjax.objectives import TRADES
from advjax.objectives import Adversarial
from advjax.objectives import Clean
from advjax.objectives import FGSMRandomStart
from advjax.objectives import Noise
from advjax.objectives import PGDTraining

__all__ = [
    "Adversarial",
    "Batch",
    "Clean",
    "FGSMRandomStart",
    "NFGSM",
    "Noise",
    "Objective",
    "PGDTraining",
    "TRADES",
    "TrainState",
    "create_train_state",
    "epoch_order",
    "join_objective",
    "loss_and_grads",
    "make_train_step",
    "recipe_sgd",
    "split_objective",
    "train_epoch",
    "train_step",
    "vmaps_members",
]

Batch = tuple[Array, Array]
TrainState = train_state.TrainState
Objective = Callable[..., LossFn]
"""``objective(loss_fn, key, logits_fn=...) -> loss to minimise``; see `loss_and_grads`."""


# ---------------------------------------------------------------------------
# The optimizer of the maxout recipe, and the training state.
# ---------------------------------------------------------------------------


def recipe_sgd(
    steps_per_epoch: int,
    learning_rate: float = 0.1,
    decay: float = 1.000004,
    min_learning_rate: float = 1e-6,
    momentum: tuple[float, float] = (0.5, 0.7),
    momentum_epochs: int = 250,
) -> optax.GradientTransformation:
  """SGD with the maxout recipe's schedules (Goodfellow et al., 2013).

  The learning rate is divided by ``decay`` after every update, down to
  ``min_learning_rate``; a ``decay`` of 1 keeps it constant. The momentum
  rises linearly from ``momentum[0]`` to ``momentum[1]`` over
  ``momentum_epochs`` epochs, then stays. Both are functions of optax's
  update count, so they resume with the optimizer state.

  Equal settings give the same transformation object. A ``TrainState`` holds
  its optimizer as static data, so a jitted step or `train_epoch` compiled for
  one run is reused by the next run with the same settings (each `fit` would
  otherwise compile its epoch again).

  Args:
    steps_per_epoch: updates per epoch, to turn epochs into updates.
    learning_rate: initial learning rate.
    decay: per-update division factor of the learning rate, >= 1.
    min_learning_rate: floor of the learning rate.
    momentum: ``(initial, final)`` momentum.
    momentum_epochs: epochs over which the momentum rises.

  Returns:
    An optax transformation whose state records the current hyperparameters.

  Example:
    >>> tx = recipe_sgd(steps_per_epoch=500)
    >>> tx is recipe_sgd(steps_per_epoch=500)
    True
  """
  if steps_per_epoch < 1 or momentum_epochs < 1:
    raise ValueError(
        "steps_per_epoch and momentum_epochs must be >= 1, got "
        f"{steps_per_epoch} and {momentum_epochs}."
    )
  if not decay >= 1 or not 0 < min_learning_rate <= learning_rate:
    raise ValueError(
        f"need decay >= 1 and 0 < min_learning_rate <= learning_rate, got "
        f"decay={decay}, min_learning_rate={min_learning_rate}, "
        f"learning_rate={learning_rate}."
    )
  settings = (
      steps_per_epoch,
      learning_rate,
      decay,
      min_learning_rate,
      tuple(momentum),
      momentum_epochs,
  )
  try:
    hash(settings)
  except TypeError:  # an array among them: nothing to share
    return _recipe_sgd.__wrapped__(*settings)
  return _recipe_sgd(*settings)


# typed: an int and a float setting build different schedules (a constant int
# learning rate would be an int hyperparameter), so they are not shared.
@functools.lru_cache(maxsize=None, typed=True)
def _recipe_sgd(
    steps_per_epoch: int,
    learning_rate: float,
    decay: float,
    min_learning_rate: float,
    momentum: tuple[float, float],
    momentum_epochs: int,
) -> optax.GradientTransformation:
  if decay == 1:
    # optax's exponential_decay reads end_value as an upper bound for a rate
    # >= 1, so a rate of exactly 1 would sit at min_learning_rate throughout.
    schedule = optax.constant_schedule(learning_rate)
  else:
    schedule = optax.exponential_decay(
        learning_rate, transition_steps=1, decay_rate=1 / decay, end_value=min_learning_rate
    )
  momentum_schedule = optax.linear_schedule(
      momentum[0], momentum[1], transition_steps=momentum_epochs * steps_per_epoch
  )
  return optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=momentum_schedule)


def create_train_state(
    model: Classifier, key: Array, sample_x: Array, tx: optax.GradientTransformation
) -> TrainState:
  """Initialises parameters (within the model's constraint) and optimizer state.

  Args:
    model: the classifier.
    key: PRNG key for the initialisation.
    sample_x: inputs of the right feature shape, e.g. one example ``x[:1]``.
    tx: the optimizer.

  Returns:
    A Flax ``TrainState`` at step 0.

  Example:
    >>> state = create_train_state(model, jax.random.key(0), x[:1], recipe_sgd(500))
    >>> int(state.step)
    0
  """
  params = model.constrain(model.init(key, sample_x))
  state = TrainState.create(apply_fn=model.scores, params=params, tx=tx)
  # An array from the start, as after the first update: one compilation, and
  # a leaf orbax can save.
  return state.replace(step=jnp.zeros((), jnp.int32))


# ---------------------------------------------------------------------------
# The step.
# ---------------------------------------------------------------------------


def loss_and_grads(
    model: Classifier, objective: Objective, params: Params, batch: Batch, rng: Array
) -> tuple[Array, Params]:
  """The objective's value and parameter gradient on one batch, dropout on.

  The objective protocol: ``objective(loss_fn, key, logits_fn=logits_fn)``
  gets the model's loss and its scores ``logits_fn(params, x)``, both under
  this step's dropout mask, and the step's key for its own randomness (noise,
  random starts); it returns the loss to minimise. Objectives that need no
  scores (all but `TRADES`) ignore ``logits_fn``.

  Args:
    model: the classifier.
    objective: e.g. `Clean()`, `Adversarial(0.25)` or `Noise(sign_noise, 0.25)`.
    params: the parameters.
    batch: ``(x, y)``.
    rng: PRNG key of this step; split into the dropout mask's and the noise's.

  Returns:
    ``(loss, grads)``.
  """
  dropout_key, objective_key = jax.random.split(rng)
  x, y = batch
  masks = model.dropout_masks(params, x, dropout_key)  # one draw for every pass (models.Dropout)
  logits_fn = functools.partial(model.scores, dropout_key=dropout_key, dropout_masks=masks)
  loss_fn = objective(model.loss_fn(dropout_key, masks), objective_key, logits_fn=logits_fn)
  return jax.value_and_grad(loss_fn)(params, x, y)


def train_step(
    model: Classifier, objective: Objective, state: TrainState, batch: Batch, rng: Array
) -> tuple[TrainState, Array]:
  """One optimizer update on ``batch``, then the projection onto the model's constraint.

  Args:
    model: the classifier.
    objective: what to minimise; see `loss_and_grads`.
    state: the training state.
    batch: ``(x, y)``, the batch axis leading.
    rng: PRNG key of this step (dropout mask and noise).

  Returns:
    ``(state, loss)``: the updated state and the objective's value before it.
  """
  loss, grads = loss_and_grads(model, objective, state.params, batch, rng)
  state = state.apply_gradients(grads=grads)
  return state.replace(params=model.constrain(state.params)), loss


def make_train_step(
    model: Classifier, objective: Objective
) -> Callable[[TrainState, Batch, Array], tuple[TrainState, Array]]:
  """`train_step` for one model and objective, as ``step(state, batch, rng)``.

  A pure function for the caller to ``jax.jit``, ``jax.vmap`` over ensemble
  members (`advjax.ensemble_step`) or run data-parallel with shardings.

  Args:
    model: the classifier.
    objective: what to minimise; see `loss_and_grads`.

  Returns:
    ``step(state, batch, rng) -> (state, loss)``.

  Example:
    >>> step = jax.jit(make_train_step(model, Adversarial(eps=0.25)))
    >>> state, loss = step(state, (x, y), jax.random.key(1))
    >>> int(state.step)
    1
  """
  return functools.partial(train_step, model, objective)


# ---------------------------------------------------------------------------
# The epoch, as one program.
# ---------------------------------------------------------------------------


def epoch_order(key: Array, num_examples: int, batch_size: int) -> Array:
  """The batches of an epoch: a shuffle drawn from ``key``, as ``(steps, batch_size)``.

  The shuffle is ``permutation(fold_in(key, 0), num_examples)``; its last
  incomplete batch is dropped. Step ``i`` of the epoch uses the key
  ``fold_in(key, i + 1)``.

  Args:
    key: the epoch's PRNG key.
    num_examples: size of the training split.
    batch_size: examples per step.

  Returns:
    Indices into the split, int32 of shape ``(num_examples // batch_size, batch_size)``.
  """
  steps = num_examples // batch_size
  order = jax.random.permutation(jax.random.fold_in(key, 0), num_examples)
  return order[: steps * batch_size].reshape(steps, batch_size)


def vmaps_members() -> bool:
  """Whether `train_epoch` vmaps a population's step on the default backend.

  Yes on an accelerator; no on a CPU, where the members' steps run in turn
  (see `train_epoch`).
  """
  return jax.default_backend() != "cpu"


@functools.partial(
    jax.jit, static_argnames=("model", "static", "batch_size", "mesh", "vmap_members")
)
def train_epoch(
    model: Classifier,
    static: Any,
    dynamic: Any,
    states: TrainState,
    x: Array,
    y: Array,
    keys: Array,
    *,
    batch_size: int,
    mesh: Mesh | None = None,
    vmap_members: bool | None = None,
) -> tuple[TrainState, Array]:
  """One epoch of every member of a population, as one compiled program.

  Member ``m`` walks its own shuffle `epoch_order` ``(keys[m], ...)`` of the
  shared ``(x, y)``, step ``i`` with the key ``fold_in(keys[m], i + 1)``, under
  its own objective: it sees exactly what it would see trained alone.

  How the members share a step depends on the backend. On an accelerator,
  one step is ``jax.vmap``-ed over them: batched products, one kernel per
  layer for all members. On a CPU, each loop iteration runs the members' steps
  one after another, each on its own unbatched state: there XLA's batched
  products are slower than its plain ones, and the stacked carry made it copy
  the members' first-layer weights every step (`python -m
  benchmarks.hlo_copies`). Five members then took 0.87x the time of five runs
  alone, against 1.10x vmapped, and each member's numbers are its run alone's
  bit for bit (vmapped, they differ by the rounding of the batched products).

  Args:
    model: the classifier (static).
    static: the objectives' `advjax._trees.Static` part, from `split_objective` (static).
    dynamic: the objectives' numbers, each with a leading member axis (None
      for a static leaf), from `split_objective`.
    states: the members' training states, stacked along a leading member axis.
    x: the training inputs, on the device (replicated over ``mesh``).
    y: the training labels.
    keys: one epoch key per member, shape ``(members,)``.
    batch_size: examples per step.
    mesh: if given, every step's batch is split over its devices and the
      states stay replicated; XLA all-reduces the gradient.
    vmap_members: whether to vmap the step over the members (True) or run
      them in turn (False); None chooses by the backend (`vmaps_members`).

  Returns:
    ``(states, loss_sums)``: the new states, and each member's objective
    summed over the epoch's steps, shape ``(members,)``.
  """
  orders = jax.vmap(epoch_order, in_axes=(0, None, None))(keys, x.shape[0], batch_size)
  steps = jnp.arange(orders.shape[1])
  orders = orders.swapaxes(0, 1)  # (steps, members, batch_size)
  if vmap_members is None:
    vmap_members = vmaps_members()

  def member_step(state, dynamic_part, index, i, key):
    batch = (x[index], y[index])
    if mesh is not None:
      spec = PartitionSpec(sharding.DATA_AXIS)
      batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, spec))
    objective = join_objective(static, dynamic_part)
    return train_step(model, objective, state, batch, jax.random.fold_in(key, i + 1))

  if vmap_members and keys.shape[0] > 1:
    step = jax.vmap(member_step, in_axes=(0, 0, 0, None, 0))
    body = lambda carry, inputs: step(carry, dynamic, inputs[0], inputs[1], keys)
    states, losses = jax.lax.scan(body, states, (orders, steps))
  else:
    states, losses = _scan_in_turn(member_step, states, dynamic, keys, (orders, steps))
  outputs = states, losses.sum(axis=0)
  if mesh is not None:
    outputs = jax.lax.with_sharding_constraint(outputs, sharding.replicated(mesh))
  return outputs


def _scan_in_turn(
    member_step: Callable[..., Any], states: Any, dynamic: Any, keys: Array, xs: Any
) -> tuple[Any, Array]:
  """`train_epoch`'s scan with the members' steps one after another in each iteration.

  The carry is the list of the members' unbatched states, so that each is
  updated in place; the states come back stacked, the losses as
  ``(steps, members)``.
  """
  member = lambda tree, m: jax.tree.map(lambda a: a[m], tree)
  own = [member((dynamic, keys), m) for m in range(len(keys))]

  def body(carry, inputs):
    index, i = inputs
    made = [
        member_step(state, d, index[m], i, k) for m, (state, (d, k)) in enumerate(zip(carry, own))
    ]
    return [state for state, _ in made], jnp.stack([loss for _, loss in made])

  carry, losses = jax.lax.scan(body, [member(states, m) for m in range(len(keys))], xs)
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *carry), losses


def split_objective(objective: Objective, members: int) -> tuple[_trees.Static, list[Any]]:
  """Splits an objective into what fixes the program and its numbers, one per member.

  `advjax._trees.per_member`, then `advjax._trees.partition`: numbers and
  arrays (eps, alpha) become float32 arrays of shape ``(members,)``, a scalar
  shared by every member, a sequence of ``members`` values one each; anything
  else (functions, a plain callable objective) is static.

  Args:
    objective: the objective, a pytree such as `Adversarial(eps, alpha)`.
    members: the population's size.

  Returns:
    ``(static, dynamic)`` for `train_epoch` and `join_objective`: dynamic
    holds the arrays in the objective's leaf order, None for a static leaf.

  Raises:
    ValueError: a setting given as a list whose length is not ``members``.

  Example:
    >>> static, dynamic = split_objective(Adversarial(eps=[0.1, 0.25]), 2)
    >>> dynamic  # eps and alpha, one per member
    [Array([0.1 , 0.25], dtype=float32), Array([0.5, 0.5], dtype=float32)]
  """
  dynamic, static = _trees.partition(_trees.per_member(objective, members))
  return static, dynamic


def join_objective(static: _trees.Static, dynamic: list[Any]) -> Objective:
  """The objective that `split_objective` split, with ``dynamic``'s numbers."""
  return _trees.combine(dynamic, static)
