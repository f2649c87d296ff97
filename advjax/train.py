"""Training of the paper's models: one jitted step for any objective, and a resumable loop.

Read top to bottom:

1. objectives: what a step minimises (`Clean`, `Adversarial`, `Noise`);
2. the optimizer of the maxout recipe (`recipe_sgd`);
3. `create_train_state` and `train_step`, a pure function of
   ``(state, batch, rng)``;
4. `evaluate`: clean error, FGSM error and confidence on the mistakes;
5. `fit`: epochs with validation, early stopping, per-epoch checkpoints and
   metrics; `fit_and_retrain`: the paper's selection on 50,000 images then
   retraining on all 60,000.

Dropout and the adversarial example: a training step draws one dropout mask
and uses it three times, for the input gradient that makes the FGSM example,
for the clean term and for the adversarial term of eq. (6). The attack thus
sees the same thinned network that the update trains, and both terms differ
only in their inputs.

Example:
  >>> model = models.maxout_mlp()
  >>> config = TrainConfig(epochs=50)
  >>> result = fit(model, data.train, config, objective=Adversarial(0.25),
  ...              valid=data.valid, workdir="runs/adversarial")
  >>> evaluate(model, result.params, data.test)["fgsm_error"]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import sys
import time
import zlib
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax.training import train_state
from jax.sharding import Mesh

from advjax import metrics
from advjax import objectives
from advjax import sharding
from advjax.attacks import Clip, LossFn, fgsm
from advjax.checkpoint import RunCheckpointer
from advjax.models import Classifier, Params

Array = jax.Array
Batch = tuple[Array, Array]


# ---------------------------------------------------------------------------
# 1. Objectives: (model loss with its dropout mask, PRNG key) -> loss to minimise.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clean:
  """Plain training on the model's loss.

  Example:
    >>> fit(model, data.train, config, objective=Clean())
  """

  def __call__(self, loss_fn: LossFn, key: Array) -> LossFn:
    del key
    return loss_fn


@dataclasses.dataclass(frozen=True)
class Adversarial:
  """The adversarial objective of eq. (6), `advjax.adversarial_loss`.

  Attributes:
    eps: FGSM step (0.25 on MNIST).
    alpha: weight of the clean term (0.5).
    clip: optional ``(lo, hi)`` box for the adversarial inputs (None in the paper).

  Example:
    >>> fit(model, data.train, config, objective=Adversarial(eps=0.25))
  """

  eps: float = 0.25
  alpha: float = 0.5
  clip: tuple[float, float] | None = None

  def __call__(self, loss_fn: LossFn, key: Array) -> LossFn:
    del key
    return objectives.adversarial_loss(loss_fn, self.eps, self.alpha, clip=self.clip)


@dataclasses.dataclass(frozen=True)
class Noise:
  """The noise controls of section 6, `advjax.noise_loss`.

  Attributes:
    kind: ``"sign"`` (``eps * s``, ``s`` uniform in {-1, +1}) or ``"uniform"``
      (``U(-eps, eps)``).
    eps: noise size.
    alpha: weight of the clean term.

  Example:
    >>> fit(model, data.train, config, objective=Noise("sign", eps=0.25))
  """

  kind: Literal["sign", "uniform"]
  eps: float = 0.25
  alpha: float = 0.5

  def __post_init__(self) -> None:
    if self.kind not in ("sign", "uniform"):
      raise ValueError(f"kind must be 'sign' or 'uniform', got {self.kind!r}.")

  def __call__(self, loss_fn: LossFn, key: Array) -> LossFn:
    noise = objectives.sign_noise if self.kind == "sign" else objectives.uniform_noise
    return objectives.noise_loss(loss_fn, noise, key, self.eps, self.alpha)


Objective = Callable[[LossFn, Array], LossFn]


# ---------------------------------------------------------------------------
# 2. The optimizer and the run's settings.
# ---------------------------------------------------------------------------


def recipe_sgd(steps_per_epoch: int, learning_rate: float = 0.1,
               decay: float = 1.000004, min_learning_rate: float = 1e-6,
               momentum: tuple[float, float] = (0.5, 0.7),
               momentum_epochs: int = 250) -> optax.GradientTransformation:
  """SGD with the maxout recipe's schedules (Goodfellow et al., 2013).

  The learning rate is divided by ``decay`` after every update, down to
  ``min_learning_rate``; the momentum rises linearly from ``momentum[0]`` to
  ``momentum[1]`` over ``momentum_epochs`` epochs, then stays. Both are
  functions of optax's update count, so they resume with the optimizer state.

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
  """
  if steps_per_epoch < 1 or momentum_epochs < 1:
    raise ValueError("steps_per_epoch and momentum_epochs must be >= 1, got "
                     f"{steps_per_epoch} and {momentum_epochs}.")
  if decay < 1 or not 0 < min_learning_rate <= learning_rate:
    raise ValueError(
        f"need decay >= 1 and 0 < min_learning_rate <= learning_rate, got "
        f"decay={decay}, min_learning_rate={min_learning_rate}, "
        f"learning_rate={learning_rate}.")
  schedule = optax.exponential_decay(
      learning_rate, transition_steps=1, decay_rate=1 / decay,
      end_value=min_learning_rate)
  momentum_schedule = optax.linear_schedule(
      momentum[0], momentum[1], transition_steps=momentum_epochs * steps_per_epoch)
  return optax.inject_hyperparams(optax.sgd)(
      learning_rate=schedule, momentum=momentum_schedule)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Settings of one training run; the defaults are the maxout recipe's.

  Attributes:
    epochs: the most epochs to train.
    batch_size: examples per update; an epoch's last incomplete batch is dropped.
    seed: seeds initialisation, shuffling, dropout and noise; the same seed
      gives bit-identical parameters.
    patience: early stopping: stop once ``monitor`` has not improved on the
      validation set for this many epochs, and return the best epoch's
      parameters. None trains all ``epochs`` and returns the last parameters.
    monitor: the validation metric that selects the epoch: ``"error"`` (clean)
      or ``"fgsm_error"`` (adversarial).
    eval_eps: FGSM epsilon of the validation metrics.
    eval_batch_size: examples per evaluation batch (a memory knob only).
    learning_rate, lr_decay, min_learning_rate, momentum, momentum_epochs:
      the `recipe_sgd` schedule, used unless `fit` is given another optimizer.
  """

  epochs: int
  batch_size: int = 100
  seed: int = 0
  patience: int | None = None
  monitor: Literal["error", "fgsm_error"] = "error"
  eval_eps: float = 0.25
  eval_batch_size: int = 1000
  learning_rate: float = 0.1
  lr_decay: float = 1.000004
  min_learning_rate: float = 1e-6
  momentum: tuple[float, float] = (0.5, 0.7)
  momentum_epochs: int = 250

  def __post_init__(self) -> None:
    for name in ("epochs", "batch_size", "eval_batch_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < (0 if name == "epochs" else 1):
        raise ValueError(f"{name} must be a non-negative int (batch sizes >= 1), "
                         f"got {value!r}.")
    if self.patience is not None and self.patience < 1:
      raise ValueError(f"patience must be >= 1 or None, got {self.patience!r}.")
    if self.monitor not in ("error", "fgsm_error"):
      raise ValueError(f"monitor must be 'error' or 'fgsm_error', got {self.monitor!r}.")

  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    """The `recipe_sgd` transformation these settings describe."""
    return recipe_sgd(steps_per_epoch, self.learning_rate, self.lr_decay,
                      self.min_learning_rate, self.momentum, self.momentum_epochs)


# ---------------------------------------------------------------------------
# 3. State and step.
# ---------------------------------------------------------------------------


def create_train_state(model: Classifier, key: Array, sample_x: Array,
                       tx: optax.GradientTransformation) -> train_state.TrainState:
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
  """
  params = model.constrain(model.init(key, sample_x))
  state = train_state.TrainState.create(apply_fn=model.scores, params=params, tx=tx)
  # An array from the start, as after the first update: one compilation, and
  # a leaf orbax can save.
  return state.replace(step=jnp.zeros((), jnp.int32))


def loss_and_grads(model: Classifier, objective: Objective, params: Params,
                   batch: Batch, rng: Array) -> tuple[Array, Params]:
  """The objective's value and parameter gradient on one batch, dropout on.

  Args:
    model: the classifier.
    objective: e.g. `Clean()`, `Adversarial(0.25)` or `Noise("sign")`.
    params: the parameters.
    batch: ``(x, y)``.
    rng: PRNG key of this step; split into the dropout mask's and the noise's.

  Returns:
    ``(loss, grads)``.
  """
  dropout_key, objective_key = jax.random.split(rng)
  loss_fn = objective(model.loss_fn(dropout_key), objective_key)
  x, y = batch
  return jax.value_and_grad(loss_fn)(params, x, y)


@functools.cache
def make_train_step(model: Classifier, objective: Objective = Clean(), *,
                    mesh: Mesh | None = None) -> Callable[
    [train_state.TrainState, Batch, Array], tuple[train_state.TrainState, Array]]:
  """Builds the jitted ``train_step(state, batch, rng) -> (state, loss)``.

  One update of the optimizer, then the projection onto the model's
  constraint (the maxout column norms). The step is a pure function of its
  arguments, with the batch axis leading, so it can be vmapped over ensemble
  members or, given a ``mesh``, run data-parallel: the batch split over the
  mesh's devices, the state replicated, and the gradient's mean over the
  whole batch all-reduced by XLA. The update is the single-device update up
  to the order of floating-point sums. Steps are cached per (model,
  objective, mesh), so that the runs of one model (selection then
  retraining, several seeds) share one compilation.

  Args:
    model: the classifier.
    objective: what to minimise; see `loss_and_grads`.
    mesh: optional `advjax.sharding.data_mesh`; the batch given to the step
      should then be placed with `advjax.sharding.shard_batch`.

  Returns:
    The jitted step.

  Example:
    >>> step = make_train_step(model, Adversarial(eps=0.25))
    >>> state, loss = step(state, (x, y), jax.random.key(1))
  """

  def train_step(state: train_state.TrainState, batch: Batch,
                 rng: Array) -> tuple[train_state.TrainState, Array]:
    loss, grads = loss_and_grads(model, objective, state.params, batch, rng)
    state = state.apply_gradients(grads=grads)
    return state.replace(params=model.constrain(state.params)), loss

  if mesh is None:
    return jax.jit(train_step)
  replicated = sharding.replicated(mesh)
  return jax.jit(train_step,
                 in_shardings=(replicated, sharding.split_leading(mesh), replicated),
                 out_shardings=(replicated, replicated))


# ---------------------------------------------------------------------------
# 4. Evaluation.
# ---------------------------------------------------------------------------


def _map_batches(fn: Callable[..., Any], arrays: tuple[np.ndarray, ...],
                 batch_size: int) -> Any:
  """Applies ``fn`` to fixed-size batches and concatenates the results.

  The last batch is padded by repeating its final row, so ``fn`` compiles
  for one shape only; the padded rows are dropped from the result. ``fn``
  must treat examples independently.
  """
  n = len(arrays[0])
  if n == 0:
    raise ValueError("cannot evaluate on an empty split.")
  outputs = []
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    pad = batch_size - len(chunk[0])
    if pad:
      chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
    outputs.append(jax.tree.map(lambda o: np.asarray(o)[:batch_size - pad],
                                fn(*chunk)))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


# The model and the clip box are static: they fix the computation, not its data.
@functools.partial(jax.jit, static_argnums=0)
def _probabilities_batch(model: Classifier, params: Params, x: Array) -> Array:
  return model.probabilities(params, x)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _fgsm_batch(model: Classifier, params: Params, x: Array, y: Array, eps: Array,
                clip: Clip) -> Array:
  return fgsm(model.loss_fn(), params, x, y, eps, clip=clip)


def probabilities(model: Classifier, params: Params, x: np.ndarray, *,
                  batch_size: int = 1000) -> np.ndarray:
  """The model's class probabilities on many inputs, batched and jitted, no dropout.

  Args:
    model: the classifier.
    params: its parameters.
    x: inputs, shape ``(n, features)``.
    batch_size: examples per batch.

  Returns:
    A NumPy array of shape ``(n, classes)``.

  Example:
    >>> probs = probabilities(model, params, data.test.x)
  """
  return _map_batches(lambda xb: _probabilities_batch(model, params, xb),
                      (np.asarray(x),), batch_size)


def fgsm_examples(model: Classifier, params: Params, x: np.ndarray, y: np.ndarray,
                  eps: float = 0.25, *, clip: Clip = None,
                  batch_size: int = 1000) -> np.ndarray:
  """FGSM examples against the model's evaluation loss (no dropout), batched.

  Args:
    model: the classifier attacked.
    params: its parameters.
    x: clean inputs, shape ``(n, features)``.
    y: their labels.
    eps: the FGSM step.
    clip: optional ``(lo, hi)`` box; the paper's numbers use none.
    batch_size: examples per batch; the sign of the gradient does not depend on it.

  Returns:
    A NumPy array shaped like ``x``.

  Example:
    >>> x_adv = fgsm_examples(model, params, data.test.x, data.test.y)
  """
  clip = None if clip is None else tuple(clip)
  eps = jnp.asarray(eps, jnp.float32)
  return _map_batches(lambda xb, yb: _fgsm_batch(model, params, xb, yb, eps, clip),
                      (np.asarray(x), np.asarray(y)), batch_size)


def score(model: Classifier, params: Params, x: np.ndarray, y: np.ndarray, *,
          batch_size: int = 1000) -> tuple[float, float]:
  """Error and confidence on the mistakes (`advjax.error_and_confidence`) on ``(x, y)``.

  Args:
    model: the classifier.
    params: its parameters.
    x: inputs.
    y: labels (for logistic regression, +-1 is mapped to classes 0/1).
    batch_size: examples per batch.

  Returns:
    ``(error, confidence)`` as floats; confidence is NaN without mistakes.

  Example:
    >>> error, _ = score(robust, robust_params, x_adv_from_other_model, y)
  """
  labels = np.asarray(y)
  if labels.dtype.kind == "f":
    labels = (labels > 0).astype(np.int32)
  error, confidence = metrics.error_and_confidence(
      probabilities(model, params, x, batch_size=batch_size), labels)
  return float(error), float(confidence)


def evaluate(model: Classifier, params: Params, split: Any, *, eps: float = 0.25,
             clip: Clip = None, batch_size: int = 1000) -> dict[str, float]:
  """The paper's scores of a model on a split: clean, and under FGSM.

  Args:
    model: the classifier.
    params: its parameters.
    split: anything with ``x`` and ``y`` (an `advjax.data.Split`).
    eps: FGSM epsilon (0.25 on MNIST).
    clip: optional box for the FGSM examples (None in the paper).
    batch_size: examples per batch.

  Returns:
    ``{"error", "confidence", "fgsm_error", "fgsm_confidence"}``: error rates
    and mean confidence on the mistakes, as floats (NaN without mistakes).

  Example:
    >>> evaluate(model, params, data.test)["fgsm_error"]   # 0.894 in the paper
  """
  error, confidence = score(model, params, split.x, split.y, batch_size=batch_size)
  x_adv = fgsm_examples(model, params, split.x, split.y, eps, clip=clip,
                        batch_size=batch_size)
  fgsm_error, fgsm_confidence = score(model, params, x_adv, split.y,
                                      batch_size=batch_size)
  return {"error": error, "confidence": confidence,
          "fgsm_error": fgsm_error, "fgsm_confidence": fgsm_confidence}


# ---------------------------------------------------------------------------
# 5. The training loop.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class FitResult:
  """What `fit` returns.

  Attributes:
    params: the final parameters: the best epoch's with early stopping, else
      the last epoch's.
    history: one dict per epoch: ``epoch``, ``loss`` (mean training objective),
      ``seconds``, and with validation ``valid_error``, ``valid_confidence``,
      ``valid_fgsm_error``, ``valid_fgsm_confidence`` (a confidence is None
      when there is no mistake, so that every line is standard JSON).
    best_epoch: the epoch with the best validation ``monitor`` (0 without
      validation).
    best_value: that value (None without validation).
  """

  params: Params
  history: list[dict[str, float | None]]
  best_epoch: int
  best_value: float | None


def _fingerprint(model: Classifier, objective: Objective, config: TrainConfig,
                 train: Any, valid: Any | None, tx: optax.GradientTransformation | None
                 ) -> dict[str, Any]:
  """What must match for a checkpoint folder to belong to this run."""

  def data(split):
    if split is None:
      return None
    labels = np.ascontiguousarray(split.y)
    return {"examples": len(labels), "labels_crc32": zlib.crc32(labels.tobytes())}

  return {"model": f"{model.module!r} head={model.head.name} "
                   f"max_col_norm={model.max_col_norm}",
          "objective": repr(objective) if dataclasses.is_dataclass(objective)
                       else getattr(objective, "__qualname__", repr(objective)),
          "config": dataclasses.asdict(config),
          "optimizer": "recipe_sgd" if tx is None else "custom",
          "train": data(train), "valid": data(valid)}


def _write_metrics(path: pathlib.Path, history: list[dict[str, float]]) -> None:
  """Rewrites the JSON-lines file atomically to match the checkpointed history."""
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
  os.replace(tmp, path)


def _train_epoch(train_step: Callable[..., Any], state: train_state.TrainState,
                 train: Any, batch_size: int, key: Array, mesh: Mesh | None
                 ) -> tuple[train_state.TrainState, float]:
  """One pass over a fresh shuffle of ``train``; returns the state and the mean loss.

  The shuffle and the dropout keys depend on ``key`` alone, not on the mesh:
  any number of devices sees the same batches and masks.
  """
  steps = len(train.y) // batch_size
  order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), len(train.y)))
  total = jnp.zeros(())
  for i in range(steps):
    index = order[i * batch_size:(i + 1) * batch_size]
    batch = (train.x[index], train.y[index])
    if mesh is not None:
      batch = sharding.shard_batch(batch, mesh)
    state, loss = train_step(state, batch, jax.random.fold_in(key, i + 1))
    # Summed on the device: no host round trip per step.
    total = total + loss
  return state, float(total) / steps


def fit(model: Classifier, train: Any, config: TrainConfig, *,
        objective: Objective = Clean(), valid: Any | None = None,
        tx: optax.GradientTransformation | None = None,
        workdir: str | os.PathLike | None = None, progress: bool | None = None,
        desc: str = "train", mesh: Mesh | None = None) -> FitResult:
  """Trains ``model`` on ``train``, validating each epoch; resumable from ``workdir``.

  Each epoch shuffles the training set, takes ``len(train) // batch_size``
  steps, evaluates on ``valid`` (clean and FGSM error), updates the early
  stopping state, then saves a checkpoint and appends the epoch's metrics to
  ``workdir/metrics.jsonl``. Run again with the same arguments after an
  interruption, it restores the last finished epoch (parameters, optimizer
  state, PRNG state, early-stopping state, history) and goes on from there:
  the result is bit-identical to an uninterrupted run.

  Args:
    model: the classifier.
    train: training split with ``x`` (N, D) float32 and ``y`` (N,).
    config: the settings.
    objective: `Clean()`, `Adversarial(...)`, `Noise(...)`, or any
      ``(loss_fn, key) -> loss_fn``.
    valid: validation split; needed for early stopping.
    tx: an optax optimizer instead of the recipe's SGD. Its settings are not
      part of the run's fingerprint: change them in a fresh ``workdir``.
    workdir: the run folder for checkpoints and metrics; None keeps nothing.
    progress: show a tqdm bar; None shows it when stdout is a terminal.
    desc: label of the progress bar.
    mesh: train data-parallel on this `advjax.sharding.data_mesh`: each batch
      split over its devices (``batch_size`` must divide evenly), the state
      replicated. Checkpoints do not depend on it: a run resumes on any
      number of devices.

  Returns:
    A `FitResult`.

  Raises:
    ValueError: early stopping without ``valid``, fewer training examples
      than one batch, or a batch that does not split over the mesh.
    advjax.checkpoint.RunMismatchError: ``workdir`` holds another run.

  Example:
    >>> result = fit(models.maxout_mlp(), data.train, TrainConfig(epochs=5),
    ...              valid=data.valid, workdir="runs/maxout")
  """
  if config.patience is not None and valid is None:
    raise ValueError("early stopping (patience) needs a validation split: pass valid=.")
  steps_per_epoch = len(train.y) // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"the training split has {len(train.y)} examples, fewer than "
                     f"one batch of {config.batch_size}.")
  if mesh is not None and config.batch_size % mesh.size:
    raise ValueError(f"batch_size {config.batch_size} must split evenly over the "
                     f"{mesh.size} devices of the mesh.")
  if progress is None:
    progress = sys.stdout.isatty()

  init_key, rng = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(model, init_key, jnp.asarray(train.x[:1]),
                             tx or config.optimizer(steps_per_epoch))
  # Everything that changes from epoch to epoch and must survive a crash.
  arrays = {"params": state.params, "opt_state": state.opt_state,
            "step": state.step, "rng": jax.random.key_data(rng),
            "best_params": state.params}
  if mesh is not None:
    # Global arrays from the start: with several hosts, orbax saves only
    # arrays that span the mesh, and a restore lands them on this mesh
    # whatever the device count of the run that wrote them.
    arrays = sharding.replicate(arrays, mesh)
  record = {"epoch": 0, "best_epoch": 0, "best_value": None, "history": []}

  checkpointer = metrics_path = None
  if workdir is not None:
    workdir = pathlib.Path(workdir)
    checkpointer = RunCheckpointer(
        workdir / "checkpoints",
        _fingerprint(model, objective, config, train, valid, tx))
    restored = checkpointer.restore_latest(arrays)
    if restored is not None:
      arrays, record = restored
    # One writer of the metrics file, however many hosts train.
    if jax.process_index() == 0:
      metrics_path = workdir / "metrics.jsonl"
      _write_metrics(metrics_path, record["history"])
  state = state.replace(params=arrays["params"], opt_state=arrays["opt_state"],
                        step=arrays["step"])
  rng = jax.random.wrap_key_data(arrays["rng"])

  def stopped() -> bool:
    return (config.patience is not None
            and record["epoch"] - record["best_epoch"] >= config.patience)

  train_step = make_train_step(model, objective, mesh=mesh)
  bar = tqdm.tqdm(total=config.epochs, initial=record["epoch"], desc=desc,
                  unit="epoch", disable=not progress, dynamic_ncols=True)
  try:
    while record["epoch"] < config.epochs and not stopped():
      start = time.perf_counter()
      rng, epoch_key = jax.random.split(rng)
      state, loss = _train_epoch(train_step, state, train, config.batch_size, epoch_key,
                                 mesh)
      epoch = record["epoch"] + 1
      row = {"epoch": epoch, "loss": loss}
      if valid is not None:
        # Every host scores the whole split on one of its devices: cheap next
        # to training, and all hosts reach the same early-stopping decision.
        scores = evaluate(model, sharding.local_copy(state.params), valid, eps=config.eval_eps,
                          batch_size=config.eval_batch_size)
        row.update({f"valid_{name}": None if math.isnan(value) else value
                    for name, value in scores.items()})
        best = record["best_value"]
        if best is None or scores[config.monitor] < best:
          record["best_epoch"], record["best_value"] = epoch, scores[config.monitor]
          arrays["best_params"] = state.params
      row["seconds"] = time.perf_counter() - start
      record["epoch"] = epoch
      record["history"].append(row)
      arrays.update(params=state.params, opt_state=state.opt_state,
                    step=state.step, rng=jax.random.key_data(rng))
      if checkpointer is not None:
        checkpointer.save(epoch, arrays, record)
      if metrics_path is not None:
        with metrics_path.open("a") as f:
          f.write(json.dumps(row) + "\n")
      bar.set_postfix(loss=f"{loss:.4f}", valid_err=(
          "-" if valid is None else f"{row['valid_error']:.2%}"))
      bar.update(1)
  finally:
    bar.close()
    if checkpointer is not None:
      checkpointer.close()

  early_stopping = config.patience is not None
  return FitResult(
      params=arrays["best_params"] if early_stopping else state.params,
      history=record["history"], best_epoch=record["best_epoch"],
      best_value=record["best_value"])


def fit_and_retrain(model: Classifier, data: Any, config: TrainConfig, *,
                    objective: Objective = Clean(),
                    tx: optax.GradientTransformation | None = None,
                    workdir: str | os.PathLike | None = None,
                    progress: bool | None = None, desc: str = "train",
                    mesh: Mesh | None = None) -> tuple[FitResult, FitResult]:
  """The paper's protocol: early stopping on ``data.valid``, then retraining on all data.

  First `fit` on ``data.train`` with validation on ``data.valid`` (which needs
  ``config.patience``), which picks the best epoch; then a fresh run with the
  same seed on ``data.train_full`` (train and valid together: 60,000 MNIST
  images) for exactly that many epochs. Both phases checkpoint into their own
  subfolder of ``workdir`` (``select``, ``retrain``) and resume independently.

  Args:
    model: the classifier.
    data: an `advjax.data.MNIST` (``train``, ``valid``, ``train_full``).
    config: the settings of the selection phase.
    objective: what to minimise in both phases.
    tx: an optax optimizer instead of the recipe's SGD.
    workdir: the run folder, or None.
    progress: show progress bars; None shows them on a terminal.
    desc: label of the progress bars.
    mesh: train data-parallel on this mesh (see `fit`).

  Returns:
    ``(selection, final)``: the selection run, whose ``best_epoch`` fixed the
    length of the retraining, and the retrained model's result.

  Example:
    >>> selection, final = fit_and_retrain(model, data, TrainConfig(1000, patience=100),
    ...                                    objective=Adversarial(0.25), workdir="runs/m5")
  """
  if config.patience is None:
    raise ValueError("fit_and_retrain selects the epoch by early stopping: set patience.")
  select_dir = retrain_dir = None
  if workdir is not None:
    select_dir, retrain_dir = (pathlib.Path(workdir) / n for n in ("select", "retrain"))
  selection = fit(model, data.train, config, objective=objective, valid=data.valid,
                  tx=tx, workdir=select_dir, progress=progress,
                  desc=f"{desc} (select)", mesh=mesh)
  retrain_config = dataclasses.replace(config, epochs=selection.best_epoch,
                                       patience=None)
  final = fit(model, data.train_full, retrain_config, objective=objective, tx=tx,
              workdir=retrain_dir, progress=progress, desc=f"{desc} (retrain)",
              mesh=mesh)
  return selection, final
