"""The training loop: epochs, validation, early stopping, checkpoints, and the paper's protocol.

`fit_members` trains a population of models at once: one member per seed,
their states stacked and every epoch one compiled program
(`advjax.train.train_epoch`) over the training split held on the device.
After each epoch it scores every member on the validation split in one
compiled call (`advjax.evaluation.evaluate_members`), updates each member's
`EarlyStopping`, checkpoints, and appends to ``metrics.jsonl``; with a
`PGDWatch` it also scores every member's PGD accuracy on fixed training
images, to catch catastrophic overfitting. `fit` is the
population of one; `fit_and_retrain` is the paper's protocol: early stopping
on the last 10,000 training images, then retraining on all 60,000.

`fit_members` reads top-down over the pieces below it (checks, population
init, restore-or-start, the epoch loop, one epoch's record, the results).
Behind the same names, private modules hold the rest: the run folder (its
fingerprint, lock, checkpoints and ``metrics.jsonl``) in ``_run_folder``,
the progress output in ``_progress``, `PGDWatch` in ``_watch``.

Example:
  >>> config = TrainConfig(epochs=2, eval_eps=0.25, patience=10)
  >>> result = fit(model, data.train, config,
  ...              objective=train.Adversarial(eps=0.25), valid=data.valid,
  ...              workdir="runs/adversarial")
  train: epoch 1/2 loss ... valid error ... s
  train: epoch 2/2 loss ... valid error ... s
  >>> len(result.history), result.best_epoch in (1, 2)
  (2, True)
  >>> test_scores = evaluation.evaluate(model, result.params, data.test, eps=0.25)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import pathlib
import time
from typing import Any, Callable, Iterator, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import optax

from advjax import _progress
from advjax import _watch
from advjax import evaluation
from advjax import sharding
from advjax import train as train_lib
from advjax._progress import NoProgress
from advjax._progress import Progress
from advjax._progress import ProgressBar
from advjax._progress import ProgressLines
from advjax._run_folder import NoFolder
from advjax._run_folder import RunFolder
from advjax._run_folder import describe
from advjax._run_folder import fingerprint
from advjax._types import Array
from advjax._types import Params
from advjax._watch import PGDWatch
from advjax.models import Classifier

__all__ = [
    "EarlyStopping",
    "FitResult",
    "NoProgress",
    "PGDWatch",
    "Progress",
    "ProgressBar",
    "ProgressLines",
    "RECIPE_FIELDS",
    "TrainConfig",
    "describe",
    "fingerprint",
    "fit",
    "fit_and_retrain",
    "fit_members",
]

# The fields of `TrainConfig` that describe the recipe's SGD, not the loop.
RECIPE_FIELDS = ("learning_rate", "lr_decay", "min_learning_rate", "momentum", "momentum_epochs")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Settings of one training run: the loop's, then the recipe optimizer's.

  Two groups of settings. The loop's (``epochs`` to ``eval_batch_size``) hold
  for any optimizer. The recipe's (`RECIPE_FIELDS`: ``learning_rate`` to
  ``momentum_epochs``, defaults the maxout recipe's) describe the
  `advjax.train.recipe_sgd` that `fit` uses when it is given no ``tx=``; with
  a ``tx=`` they must stay at their defaults (`optimizer` says so).

  Attributes:
    epochs: the most epochs to train.
    eval_eps: FGSM epsilon of the validation scores; needed with a validation
      split (the paper uses 0.25 on MNIST).
    batch_size: examples per update; an epoch's last incomplete batch is dropped.
    seed: seeds initialisation, shuffling, dropout and noise of `fit`; the
      same seed gives bit-identical parameters. `fit_members` takes one per
      member instead.
    patience: early stopping: stop once ``monitor`` has not improved on the
      validation set for this many epochs, and return the best epoch's
      parameters. None trains all ``epochs`` and returns the last parameters.
    monitor: the validation score that selects the epoch: ``"error"`` (clean)
      or ``"fgsm_error"`` (adversarial).
    eval_batch_size: examples per evaluation batch (a memory knob only).
    learning_rate, lr_decay, min_learning_rate, momentum, momentum_epochs:
      the `advjax.train.recipe_sgd` schedule.
  """

  epochs: int
  eval_eps: float | None = None
  batch_size: int = 100
  seed: int = 0
  patience: int | None = None
  monitor: Literal["error", "fgsm_error"] = "error"
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
        raise ValueError(
            f"{name} must be a non-negative int (batch sizes >= 1), " f"got {value!r}."
        )
    if self.patience is not None and self.patience < 1:
      raise ValueError(f"patience must be >= 1 or None, got {self.patience!r}.")
    if self.monitor not in ("error", "fgsm_error"):
      raise ValueError(f"monitor must be 'error' or 'fgsm_error', got {self.monitor!r}.")
    if self.eval_eps is not None and not (math.isfinite(self.eval_eps) and self.eval_eps >= 0):
      raise ValueError(f"eval_eps must be a finite number >= 0, got {self.eval_eps!r}.")

  def optimizer(
      self, steps_per_epoch: int, tx: optax.GradientTransformation | None = None
  ) -> optax.GradientTransformation:
    """``tx``, or else the `advjax.train.recipe_sgd` transformation these settings describe.

    Raises:
      ValueError: ``tx`` beside recipe settings other than their defaults,
        which it would silently replace.

    Example:
      >>> TrainConfig(epochs=1, learning_rate=0.5).optimizer(10, optax.adam(1e-3))
      Traceback (most recent call last):
      ...
      ValueError: tx= replaces the recipe's SGD, so TrainConfig's learning_rate would be ...
    """
    if tx is None:
      return train_lib.recipe_sgd(
          steps_per_epoch,
          self.learning_rate,
          self.lr_decay,
          self.min_learning_rate,
          self.momentum,
          self.momentum_epochs,
      )
    defaults = {f.name: f.default for f in dataclasses.fields(self)}
    changed = [name for name in RECIPE_FIELDS if getattr(self, name) != defaults[name]]
    if changed:
      raise ValueError(
          f"tx= replaces the recipe's SGD, so TrainConfig's {', '.join(changed)} would be "
          "ignored: set one or the other."
      )
    return tx


class EarlyStopping(NamedTuple):
  """The best epoch so far of a validation score (lower is better), and when to stop.

  Attributes:
    patience: stop once this many epochs pass without improvement; None never stops.
    best_epoch: the epoch of the best score (0 before any).
    best_value: the best score, or None before any.

  Example:
    >>> stopping = EarlyStopping(patience=2).update(1, 0.5).update(2, 0.6)
    >>> stopping.best_epoch, stopping.stopped(3)
    (1, True)
  """

  patience: int | None = None
  best_epoch: int = 0
  best_value: float | None = None

  def update(self, epoch: int, value: float) -> EarlyStopping:
    """Records ``value`` as epoch ``epoch``'s score; a tie or a NaN is no improvement."""
    if not math.isnan(value) and (self.best_value is None or value < self.best_value):
      return self._replace(best_epoch=epoch, best_value=value)
    return self

  def stopped(self, epoch: int) -> bool:
    """Whether training should stop after ``epoch`` finished epochs."""
    return self.patience is not None and epoch - self.best_epoch >= self.patience


@dataclasses.dataclass
class FitResult:
  """What training gave one model.

  Attributes:
    params: the final parameters: the best epoch's with early stopping, else
      those of the model's last epoch.
    history: one dict per epoch: ``epoch``, ``loss`` (mean training objective),
      ``seconds`` (of the whole population's epoch), and with validation
      ``valid_error``, ``valid_confidence``, ``valid_fgsm_error``,
      ``valid_fgsm_confidence`` (a confidence is None when there is no mistake,
      so that every line is standard JSON).
    best_epoch: the epoch with the best validation ``monitor`` (0 without validation).
    best_value: that value (None without validation).
    watch_accuracy: with a `PGDWatch`, the watched PGD accuracy of each epoch.
    collapse_epoch: with a `PGDWatch`, the first epoch where that accuracy
      collapsed (see `PGDWatch`); None if it never did.
    diverged: the epoch whose training loss was not finite, after which the
      model trained no further; None if it never diverged. ``params`` are then
      those of its last finite epoch (its initial ones if that is epoch 1).
    setting: how the member differs from the others (its seed, and its own
      objective settings in a study), for messages.
  """

  params: Params
  history: list[dict[str, float | None]]
  best_epoch: int
  best_value: float | None
  watch_accuracy: list[float] = dataclasses.field(default_factory=list)
  collapse_epoch: int | None = None
  diverged: int | None = None
  setting: str = ""


def fit_members(
    model: Classifier,
    train: Any,
    config: TrainConfig,
    *,
    seeds: Sequence[int],
    objective: train_lib.Objective = train_lib.Clean(),
    valid: Any | None = None,
    tx: optax.GradientTransformation | None = None,
    workdir: str | os.PathLike | None = None,
    progress: bool | None | Progress = None,
    desc: str = "train",
    mesh: Mesh | None = None,
    member_epochs: Sequence[int] | None = None,
    watch: PGDWatch | None = None,
) -> list[FitResult]:
  """Trains one model per seed at once, each exactly as `fit` would train it alone.

  Every epoch is one compiled program over the stacked states
  (`advjax.train.train_epoch`; on a CPU each member's numbers are its run
  alone's bit for bit, on an accelerator up to batched products' rounding).
  Member ``m`` has its own initialisation, shuffles and dropout from
  ``seeds[m]``, its own early stopping and best parameters. The same call on
  the same ``workdir`` resumes after an interruption, bit-identical to an
  uninterrupted run.

  Args:
    model: the classifier.
    train: training split with ``x`` (N, D) float32 and ``y`` (N,).
    config: the settings; ``config.seed`` is replaced by ``seeds``.
    seeds: one seed per member.
    objective: what to minimise; a numeric setting may hold one value per
      member (an eps study), see `advjax.train.split_objective`.
    valid: validation split; needed for early stopping.
    tx: an optax optimizer instead of the recipe's SGD; ``config``'s recipe
      settings must then keep their defaults. Not in the run's fingerprint.
    workdir: the run folder for checkpoints and metrics; None keeps nothing.
    progress: a `Progress` (`ProgressBar`, `ProgressLines`, `NoProgress`), or
      True (a bar), False (nothing), None (a bar on a terminal, else lines).
    desc: label of the progress output.
    mesh: train data-parallel on this `advjax.sharding.data_mesh` (each batch
      split evenly over its devices). A run resumes on any number of devices.
    member_epochs: each member's own epoch count (at most ``config.epochs``;
      None for ``config.epochs``); the population trains on for the others.
    watch: a `PGDWatch` for catastrophic overfitting. Not in the fingerprint.

  Returns:
    One `FitResult` per member, in the order of ``seeds``.

  Raises:
    ValueError: bad settings (named in one line).
    advjax.checkpoint.CheckpointError: ``workdir`` holds another run
      (`RunMismatchError`), is in use by a live process (`RunInUseError`),
      or an epoch could not be saved (`SaveError`: a full disk).

  Example:
    >>> results = fit_members(model, data.train, config, seeds=range(3),
    ...                       objective=train.Adversarial(eps=0.25), valid=data.valid)
    train: epoch 1/1 (3 members) loss ... valid error ... s
    >>> advjax.ensemble_size(advjax.stack([r.params for r in results]))
    3
  """
  seeds, epochs = _check_members(seeds, member_epochs, config)
  _check_settings(train, config, valid, mesh)
  run = _Run.build(model, train, config, objective, len(seeds), valid, watch, mesh)
  tx = config.optimizer(len(train.y) // config.batch_size, tx)
  states, arrays = _init_population(model, tx, seeds, run.x[:1], run.place)
  writer = jax.process_index() == 0
  folder = _open_folder(workdir, writer, model, objective, config, seeds, train, valid, tx, epochs)
  display = _progress.choose(progress, writer)
  settings = [_member_setting(objective, seeds, m) for m in range(len(seeds))]
  with contextlib.closing(folder), contextlib.closing(display):  # closes the display first
    restored, record = folder.restore(arrays, _fresh_record(seeds))
    display.start(desc, config.epochs, record["epoch"], str(folder.path))
    arrays = restored
    for arrays, rows, seconds in _train_epochs(run, states, restored, record, epochs):
      folder.save(record["epoch"], arrays, record, rows)
      summary = _progress.summarize(desc, record["epoch"], config.epochs, rows, settings, seconds)
      display.epoch(summary)
  return _results(arrays["kept"], record, settings)


def fit(
    model: Classifier,
    train: Any,
    config: TrainConfig,
    *,
    objective: train_lib.Objective = train_lib.Clean(),
    valid: Any | None = None,
    tx: optax.GradientTransformation | None = None,
    workdir: str | os.PathLike | None = None,
    progress: bool | None | Progress = None,
    desc: str = "train",
    mesh: Mesh | None = None,
    watch: PGDWatch | None = None,
) -> FitResult:
  """Trains ``model`` on ``train`` with ``config.seed``, validating each epoch; resumable.

  Each epoch shuffles the training set on the device, takes
  ``len(train) // batch_size`` steps in one compiled program, scores the
  model on ``valid`` (clean and FGSM error), updates the early stopping,
  then saves a checkpoint and appends the epoch's metrics to
  ``workdir/metrics.jsonl``. Run again with the same arguments after an
  interruption, it restores the last finished epoch (parameters, optimizer,
  PRNG and early-stopping state, history) and goes on: the result is
  bit-identical to an uninterrupted run. See `fit_members` for the arguments.

  Returns:
    A `FitResult`.

  Example:
    >>> config = TrainConfig(epochs=1, eval_eps=0.25)
    >>> objective = train.Adversarial(eps=0.25)
    >>> result = fit(model, data.train, config, objective=objective, valid=data.valid,
    ...              workdir="runs/maxout")
    train: epoch 1/1 loss ... valid error ... s
    >>> again = fit(model, data.train, config, objective=objective, valid=data.valid,
    ...             workdir="runs/maxout")  # finished: nothing to do
    train: resuming after epoch 1 from runs/maxout
    >>> again.history == result.history
    True
  """
  return fit_members(
      model,
      train,
      config,
      seeds=(config.seed,),
      objective=objective,
      valid=valid,
      tx=tx,
      workdir=workdir,
      progress=progress,
      desc=desc,
      mesh=mesh,
      watch=watch,
  )[0]


def fit_and_retrain(
    model: Classifier,
    data: Any,
    config: TrainConfig,
    *,
    seeds: Sequence[int] | None = None,
    objective: train_lib.Objective = train_lib.Clean(),
    tx: optax.GradientTransformation | None = None,
    workdir: str | os.PathLike | None = None,
    progress: bool | None | Progress = None,
    desc: str = "train",
    mesh: Mesh | None = None,
) -> tuple[list[FitResult], list[FitResult]]:
  """The paper's protocol: early stopping on ``data.valid``, then retraining on all data.

  First `fit_members` on ``data.train`` with validation on ``data.valid``
  (which needs ``config.patience``) picks each seed's best epoch; then a
  fresh run of the same seeds on ``data.train_full`` (train and valid
  together: 60,000 MNIST images) trains as long as the longest of them, and
  keeps each seed's parameters when it reaches its own count. Both phases
  checkpoint into their own subfolder of ``workdir`` (``select``,
  ``retrain``) and resume independently.

  Args:
    model: the classifier.
    data: an `advjax.data.MNIST` (``train``, ``valid``, ``train_full``).
    config: the settings of the selection phase.
    seeds: the seeds, trained as one population; None for ``(config.seed,)``.
    objective: what to minimise in both phases.
    tx: an optax optimizer instead of the recipe's SGD.
    workdir: the run folder, or None.
    progress: see `fit_members`.
    desc: label of the progress output.
    mesh: train data-parallel on this mesh (see `fit_members`).

  Returns:
    ``(selection, final)``, one `FitResult` per seed each: the selection run,
    whose ``best_epoch`` fixed the length of the retraining, and the
    retrained model's result.

  Example:
    >>> selection, final = fit_and_retrain(
    ...     model, data, TrainConfig(2, eval_eps=0.25, patience=1), seeds=[0],
    ...     objective=train.Adversarial(0.25))
    train (select): epoch 1/2 loss ... s
    ...
    >>> [len(r.history) for r in final] == [r.best_epoch for r in selection]
    True
  """
  if config.patience is None:
    raise ValueError("fit_and_retrain selects the epoch by early stopping: set patience.")
  seeds = (config.seed,) if seeds is None else tuple(seeds)
  select_dir = retrain_dir = None
  if workdir is not None:
    select_dir, retrain_dir = (pathlib.Path(workdir) / n for n in ("select", "retrain"))
  # The two phases differ only in their data, settings, folder and epochs.
  phase = functools.partial(
      fit_members, model, seeds=seeds, objective=objective, tx=tx, progress=progress, mesh=mesh
  )
  selection = phase(
      data.train, config, valid=data.valid, workdir=select_dir, desc=f"{desc} (select)"
  )
  chosen = [result.best_epoch for result in selection]
  retrain_config = dataclasses.replace(config, epochs=max(chosen), patience=None)
  final = phase(
      data.train_full,
      retrain_config,
      workdir=retrain_dir,
      desc=f"{desc} (retrain)",
      member_epochs=chosen,
  )
  return selection, final


# ---------------------------------------------------------------------------
# The pieces of `fit_members`, in the order it uses them.
# ---------------------------------------------------------------------------


def _check_members(
    seeds: Sequence[int], member_epochs: Sequence[int] | None, config: TrainConfig
) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The seeds as ints and each member's epoch count, checked."""
  seeds = tuple(seeds)
  if not seeds or not all(isinstance(s, (int, np.integer)) for s in seeds):
    raise ValueError(f"seeds must be one or more ints, got {seeds!r}.")
  epochs = (config.epochs,) * len(seeds) if member_epochs is None else tuple(member_epochs)
  if len(epochs) != len(seeds) or not all(
      isinstance(e, int) and 0 <= e <= config.epochs for e in epochs
  ):
    raise ValueError(
        f"member_epochs must hold one int in 0..{config.epochs} per "
        f"seed ({len(seeds)}), got {member_epochs!r}."
    )
  return tuple(int(s) for s in seeds), epochs


def _check_settings(train: Any, config: TrainConfig, valid: Any | None, mesh: Mesh | None) -> None:
  if config.patience is not None and valid is None:
    raise ValueError("early stopping (patience) needs a validation split: pass valid=.")
  if valid is not None and config.eval_eps is None:
    raise ValueError("validation scores the FGSM error too: set TrainConfig.eval_eps.")
  if len(train.y) < config.batch_size:
    raise ValueError(
        f"the training split has {len(train.y)} examples, fewer than "
        f"one batch of {config.batch_size}."
    )
  if mesh is not None and config.batch_size % mesh.size:
    raise ValueError(
        f"batch_size {config.batch_size} must split evenly over the "
        f"{mesh.size} devices of the mesh."
    )


def _placer(mesh: Mesh | None) -> Callable[[Any], Any]:
  """Puts a pytree on the device, or replicates it over ``mesh``'s devices."""
  if mesh is None:
    return jax.device_put
  return lambda tree: sharding.replicate(tree, mesh)


class _Run(NamedTuple):
  """What stays the same from epoch to epoch while a population trains."""

  model: Classifier
  config: TrainConfig
  static: Any
  dynamic: Any
  x: Array
  y: Array
  valid: Any | None
  watch: PGDWatch | None
  mesh: Mesh | None
  place: Callable[[Any], Any]

  @classmethod
  def build(
      cls,
      model: Classifier,
      train: Any,
      config: TrainConfig,
      objective: train_lib.Objective,
      members: int,
      valid: Any | None,
      watch: PGDWatch | None,
      mesh: Mesh | None,
  ) -> _Run:
    """The training split and the objective's per-member settings placed on the devices."""
    place = _placer(mesh)
    static, dynamic = train_lib.split_objective(objective, members)
    x, y = place((np.asarray(train.x), np.asarray(train.y)))
    # Every host scores the whole split on one of its devices: cheap next to
    # training, and all hosts reach the same early-stopping decisions.
    valid = None if valid is None else evaluation.device_split(valid)
    return cls(model, config, static, place(dynamic), x, y, valid, watch, mesh, place)


def _init_population(
    model: Classifier,
    tx: optax.GradientTransformation,
    seeds: Sequence[int],
    example: Array,
    place: Callable[[Any], Any],
) -> tuple[train_lib.TrainState, dict[str, Any]]:
  """Each member's initial state from its seed, and the `_arrays` a checkpoint holds.

  One compiled program: run op by op under `vmap`, every initialiser (a
  truncated normal per kernel shape, say) compiles on its own, on every call,
  which cost seconds per fit. The values are the same bits either way.
  """

  def init(seeds: Array, example: Array) -> tuple[train_lib.TrainState, Array]:
    keys = jax.vmap(jax.random.split)(jax.vmap(jax.random.key)(seeds))
    states = jax.vmap(lambda key: train_lib.create_train_state(model, key, example, tx))(keys[:, 0])
    return states, keys[:, 1]

  states, rngs = jax.jit(init)(jnp.asarray(seeds), example)
  return states, place(_arrays(states, rngs, states.params))


def _arrays(states: train_lib.TrainState, rngs: Array, kept: Params) -> dict[str, Any]:
  """Everything that changes from epoch to epoch and must survive a crash.

  ``"kept"`` holds each member's result so far (its best or its last epoch).
  """
  return {
      "params": states.params,
      "opt_state": states.opt_state,
      "step": states.step,
      "rng": jax.random.key_data(rngs),
      "kept": kept,
  }


def _open_folder(workdir, writer, model, objective, config, seeds, train, valid, tx, epochs):
  """The run folder at ``workdir``, named by the run's fingerprint; `NoFolder` for None."""
  if workdir is None:
    return NoFolder()
  # Of the resolved tx ("optimizer": "custom" always): old run folders resume.
  run_id = fingerprint(
      model, objective, config, seeds=seeds, train=train, valid=valid, tx=tx, member_epochs=epochs
  )
  return RunFolder(workdir, run_id, writer)


def _fresh_record(seeds: Sequence[int]) -> dict[str, Any]:
  """The JSON record of a run before its first epoch: per member its seed, best epoch, history."""
  return {
      "epoch": 0,
      "members": [
          {"seed": seed, "best_epoch": 0, "best_value": None, "history": []} for seed in seeds
      ],
  }


def _stopping(config: TrainConfig, member: dict[str, Any]) -> EarlyStopping:
  """A member's early stopping, as its record holds it."""
  return EarlyStopping(config.patience, member["best_epoch"], member["best_value"])


def _training(record: dict[str, Any], epochs: Sequence[int], patience: int | None) -> list[int]:
  """The members that train the next epoch: not at their epoch count, stopped or diverged."""
  epoch = record["epoch"]
  return [
      m
      for m, member in enumerate(record["members"])
      if epoch < epochs[m]
      and not EarlyStopping(patience, member["best_epoch"]).stopped(epoch)
      and member.get("diverged") is None
  ]


def _train_epochs(
    run: _Run,
    states: train_lib.TrainState,
    arrays: dict[str, Any],
    record: dict[str, Any],
    epochs: Sequence[int],
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], float]]:
  """Trains from the restored ``arrays`` while a member trains; updates ``record``.

  Yields:
    After each epoch: its `_arrays` to checkpoint, its ``metrics.jsonl``
    rows, and its seconds.
  """
  config = run.config
  states = states.replace(
      params=arrays["params"], opt_state=arrays["opt_state"], step=arrays["step"]
  )
  rngs = jax.random.wrap_key_data(arrays["rng"])
  steps_per_epoch = len(run.y) // config.batch_size
  while training := _training(record, epochs, config.patience):
    start = time.perf_counter()
    split = jax.vmap(jax.random.split)(rngs)
    rngs, epoch_keys = split[:, 0], split[:, 1]
    states, loss_sums = train_lib.train_epoch(
        run.model,
        run.static,
        run.dynamic,
        states,
        run.x,
        run.y,
        epoch_keys,
        batch_size=config.batch_size,
        mesh=run.mesh,
    )
    losses = np.asarray(sharding.local_copy(loss_sums)) / steps_per_epoch
    scores, watched = _score(run, sharding.local_copy(states.params))
    seconds = time.perf_counter() - start
    rows, keep = _record_epoch(
        record, training, losses, scores, watched, seconds, config, run.watch
    )
    arrays = _arrays(states, rngs, _keep(run.place(keep), states.params, arrays["kept"]))
    yield arrays, rows, seconds


def _score(run: _Run, params: Params) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
  """Every member's validation scores and watched PGD accuracy (None without them)."""
  scores = None
  if run.valid is not None:
    scores = evaluation.evaluate_members(
        run.model,
        params,
        run.valid,
        eps=run.config.eval_eps,
        batch_size=run.config.eval_batch_size,
    )
  watched = None if run.watch is None else run.watch.accuracies(run.model, params)
  return scores, watched


def _record_epoch(
    record: dict[str, Any],
    training: list[int],
    losses: np.ndarray,
    scores: dict[str, np.ndarray] | None,
    watched: np.ndarray | None,
    seconds: float,
    config: TrainConfig,
    watch: PGDWatch | None,
) -> tuple[list[dict[str, Any]], np.ndarray]:
  """Adds the next epoch to the record of each member that trained it.

  Its history row, its best epoch, a divergence, its watched accuracy.

  Returns:
    The epoch's ``metrics.jsonl`` rows, and which members keep this epoch's
    parameters as their result.
  """
  epoch = record["epoch"] + 1
  keep = np.zeros(len(record["members"]), bool)
  rows = []
  for m in training:
    member = record["members"][m]
    row = {"epoch": epoch, "loss": _json_number(losses[m])}
    if row["loss"] is None:
      row["diverged"] = True
      member["diverged"] = epoch
    stopping = _stopping(config, member)
    if scores is not None:
      row.update({f"valid_{name}": _json_number(values[m]) for name, values in scores.items()})
      stopping = stopping.update(epoch, float(scores[config.monitor][m]))
      member.update(best_epoch=stopping.best_epoch, best_value=stopping.best_value)
    keep[m] = row["loss"] is not None and (config.patience is None or stopping.best_epoch == epoch)
    if watched is not None and watch is not None:
      keep[m] = (
          _watch.record(watch, member, epoch, float(watched[m]), row) and row["loss"] is not None
      )
    row["seconds"] = seconds
    member["history"].append(row)
    rows.append({"member": m, "seed": member["seed"], **row})
  record["epoch"] = epoch
  return rows, keep


@jax.jit
def _keep(mask: Array, params: Params, kept: Params) -> Params:
  """Each member's ``params`` where ``mask`` holds, else what ``kept`` holds."""
  return jax.tree.map(
      lambda p, k: jnp.where(mask.reshape((-1,) + (1,) * (p.ndim - 1)), p, k), params, kept
  )


def _results(kept: Params, record: dict[str, Any], settings: list[str]) -> list[FitResult]:
  """One `FitResult` per member, from the kept parameters and the record."""
  return [
      FitResult(
          params=jax.tree.map(lambda leaf, m=m: leaf[m], kept),
          history=member["history"],
          best_epoch=member["best_epoch"],
          best_value=member["best_value"],
          watch_accuracy=_watch.watched(member["history"]),
          collapse_epoch=member.get("collapse_epoch"),
          diverged=member.get("diverged"),
          setting=settings[m],
      )
      for m, member in enumerate(record["members"])
  ]


def _json_number(value: float) -> float | None:
  return float(value) if math.isfinite(value) else None


def _member_setting(objective: Any, seeds: Sequence[int], member: int) -> str:
  """``"seed 3, eps=0.25"``: the member's seed and its own objective settings."""
  parts = [f"seed {seeds[member]}"]
  described = describe(objective)
  if isinstance(described, dict):
    for name, value in described.items():
      if isinstance(value, list) and len(value) == len(seeds):
        parts.append(f"{name}={value[member]}")
  return ", ".join(parts)
