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

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import optax
import tqdm

from advjax import evaluation
from advjax import sharding
from advjax import train as train_lib
from advjax._types import Array
from advjax._types import Params
from advjax.checkpoint import RunCheckpointer
from advjax.checkpoint import RunInUseError
from advjax.models import Classifier

__all__ = [
    "EarlyStopping",
    "FitResult",
    "PGDWatch",
    "TrainConfig",
    "describe",
    "fingerprint",
    "fit",
    "fit_and_retrain",
    "fit_members",
]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Settings of one training run; the optimizer's defaults are the maxout recipe's.

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
      the `advjax.train.recipe_sgd` schedule, used unless `fit` is given
      another optimizer.
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

  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    """The `advjax.train.recipe_sgd` transformation these settings describe."""
    return train_lib.recipe_sgd(
        steps_per_epoch,
        self.learning_rate,
        self.lr_decay,
        self.min_learning_rate,
        self.momentum,
        self.momentum_epochs,
    )


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


@dataclasses.dataclass(frozen=True)
class PGDWatch:
  """Watches for catastrophic overfitting: PGD accuracy on fixed training images each epoch.

  Single-step adversarial training (FGSM, even from a random start with too
  large a step) can collapse within an epoch: PGD accuracy falls to about 0%
  while FGSM accuracy stays high (Wong et al. 2020). Passed to `fit` or
  `fit_members` as ``watch=``, this scores every member after each epoch with
  `advjax.evaluation.pgd_error` (one random start from ``seed``'s key, the
  same every epoch) on ``(x, y)``, one compiled call for the population;
  ~500-1000 training images suffice. Each member then:

  - records ``watch_pgd_accuracy`` in its history and ``metrics.jsonl``;
  - keeps the parameters of its epoch with the highest watched accuracy (the
    earliest on a tie) as its result, instead of its last or its best
    validation epoch; validation early stopping (``config.patience``) still
    decides when the member stops, and ``FitResult.best_epoch`` stays the
    validation's;
  - reports ``collapse_epoch``: the first epoch whose accuracy fell below
    ``drop`` times the best of the epochs before it and below ``floor``.

  Attributes:
    x: training inputs to attack, shape ``(n, features)``.
    y: their labels.
    eps: radius of the attack's L-infinity ball.
    step: size of each sign step.
    num_steps: PGD steps.
    clip: the ``(lo, hi)`` box of the inputs.
    floor: a collapse needs an accuracy below this.
    drop: ... and below this fraction of the best accuracy before it.
    seed: seeds the random start.

  Example:
    >>> watch = PGDWatch(data.train.x[:50], data.train.y[:50], eps=0.1, step=0.05, num_steps=3)
    >>> result = fit(model, data.train, config, objective=train.Adversarial(0.1), watch=watch)
    train: epoch 1/1 loss ... s
    >>> len(result.watch_accuracy), result.collapse_epoch
    (1, None)
  """

  x: Any
  y: Any
  eps: float
  step: float
  num_steps: int
  clip: tuple[float, float] = (0.0, 1.0)
  floor: float = 0.2
  drop: float = 0.5
  seed: int = 0

  def __post_init__(self) -> None:
    if np.shape(self.x)[0] != np.shape(self.y)[0] or np.shape(self.y)[0] < 1:
      raise ValueError(
          f"watch x and y must hold the same number (>= 1) of examples, got shapes "
          f"{np.shape(self.x)} and {np.shape(self.y)}."
      )
    if not isinstance(self.num_steps, int) or self.num_steps < 1:
      raise ValueError(f"num_steps must be an int >= 1, got {self.num_steps!r}.")
    if not 0 <= self.floor <= 1 or not 0 <= self.drop <= 1:
      raise ValueError(f"floor and drop must lie in [0, 1], got {self.floor!r} and {self.drop!r}.")

  def accuracies(self, model: Classifier, params: Params) -> np.ndarray:
    """Each member's PGD accuracy on the watched images, shape ``(members,)``."""
    errors = _watch_errors(
        model,
        params,
        jnp.asarray(self.x),
        jnp.asarray(self.y),
        self.eps,
        self.step,
        jax.random.key(self.seed),
        num_steps=self.num_steps,
        clip=tuple(self.clip),
    )
    return 1 - np.asarray(errors)

  def collapsed(self, history: Sequence[float]) -> bool:
    """Whether the last of ``history``'s accuracies is a collapse from the ones before."""
    *before, last = history
    return bool(before) and last < self.floor and last < self.drop * max(before)


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "clip"))
def _watch_errors(
    model: Classifier,
    params: Params,
    x: Array,
    y: Array,
    eps: Any,
    step: Any,
    key: Array,
    *,
    num_steps: int,
    clip: tuple[float, float],
) -> Array:
  """`advjax.evaluation.pgd_error` of every member, as one program."""
  error = lambda p: evaluation.pgd_error(
      model,
      p,
      x,
      y,
      eps,
      step_size=step,
      num_steps=num_steps,
      restarts=1,
      key=key,
      clip=clip,
      batch_size=x.shape[0],
  )
  return jax.vmap(error)(params)


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
    progress: bool | None = None,
    desc: str = "train",
    mesh: Mesh | None = None,
    member_epochs: Sequence[int] | None = None,
    watch: PGDWatch | None = None,
) -> list[FitResult]:
  """Trains one model per seed at once, each exactly as `fit` would train it alone.

  The members' states are stacked and every epoch is one compiled program
  (`advjax.train.train_epoch`): member ``m`` has its own initialisation,
  shuffles and dropout masks from ``seeds[m]``, and shares the data. Each
  keeps its own early stopping, best epoch and best parameters; the
  population trains until every member has stopped or ended. After an
  interruption, the same call on the same ``workdir`` resumes from the last
  finished epoch, bit-identical to an uninterrupted run.

  Args:
    model: the classifier.
    train: training split with ``x`` (N, D) float32 and ``y`` (N,).
    config: the settings; ``config.seed`` is replaced by ``seeds``.
    seeds: one seed per member.
    objective: `advjax.train.Clean()`, `Adversarial(...)`, `Noise(...)`, or any
      objective; a numeric setting may hold one value per member (an eps
      study), see `advjax.train.split_objective`.
    valid: validation split; needed for early stopping.
    tx: an optax optimizer instead of the recipe's SGD. Its settings are not
      part of the run's fingerprint: change them in a fresh ``workdir``.
    workdir: the run folder for checkpoints and metrics; None keeps nothing.
    progress: True shows a progress bar, False nothing; None a bar on a
      terminal and otherwise one plain line per epoch.
    desc: label of the progress output.
    mesh: train data-parallel on this `advjax.sharding.data_mesh`: each batch
      split over its devices (``batch_size`` must divide evenly), the states
      and the training split replicated. Checkpoints do not depend on it: a
      run resumes on any number of devices.
    member_epochs: each member's own epoch count (at most ``config.epochs``);
      its result is its parameters when it reaches it, while the population
      trains on for the others. None gives every member ``config.epochs``.
    watch: a `PGDWatch` for catastrophic overfitting: each member's PGD
      accuracy on its images after every epoch, its best epoch's parameters
      kept, its collapse reported. Not part of the run's fingerprint: change
      it in a fresh ``workdir``.

  Returns:
    One `FitResult` per member, in the order of ``seeds``.

  Raises:
    ValueError: bad settings: early stopping without ``valid``, validation
      without ``config.eval_eps``, fewer training examples than one batch, a
      batch that does not split over the mesh, bad seeds or member epochs.
    advjax.checkpoint.RunMismatchError: ``workdir`` holds another run.
    advjax.checkpoint.RunInUseError: another live process trains in ``workdir``.
    advjax.checkpoint.SaveError: an epoch could not be saved (a full disk).

  Example:
    >>> results = fit_members(model, data.train, config, seeds=range(3),
    ...                       objective=train.Adversarial(eps=0.25), valid=data.valid)
    train: epoch 1/1 (3 members) loss ... valid error ... s
    >>> stacked = advjax.stack([r.params for r in results])
    >>> advjax.ensemble_size(stacked)
    3
  """
  seeds = tuple(seeds)
  if not seeds or not all(isinstance(s, (int, np.integer)) for s in seeds):
    raise ValueError(f"seeds must be one or more ints, got {seeds!r}.")
  seeds = tuple(int(s) for s in seeds)
  members = len(seeds)
  epochs = (config.epochs,) * members if member_epochs is None else tuple(member_epochs)
  if len(epochs) != members or not all(
      isinstance(e, int) and 0 <= e <= config.epochs for e in epochs
  ):
    raise ValueError(
        f"member_epochs must hold one int in 0..{config.epochs} per "
        f"seed ({members}), got {member_epochs!r}."
    )
  _check_settings(train, config, valid, mesh)
  writer = jax.process_index() == 0
  # How finished epochs are shown: a bar, plain lines (a log file), or not.
  report = None
  if writer and progress is not False:
    report = "bar" if progress or sys.stdout.isatty() else "lines"
  static, dynamic = train_lib.split_objective(objective, members)
  steps_per_epoch = len(train.y) // config.batch_size

  place = (
      (lambda tree: jax.device_put(tree))
      if mesh is None
      else (lambda tree: sharding.replicate(tree, mesh))
  )
  x, y = place((np.asarray(train.x), np.asarray(train.y)))
  dynamic = place(dynamic)
  seed_keys = jax.vmap(jax.random.split)(jax.vmap(jax.random.key)(jnp.asarray(seeds)))
  tx = tx or config.optimizer(steps_per_epoch)
  states = jax.vmap(lambda key: train_lib.create_train_state(model, key, x[:1], tx))(
      seed_keys[:, 0]
  )
  # Everything that changes from epoch to epoch and must survive a crash;
  # "kept" holds each member's result so far (its best or its last epoch).
  arrays = place(
      {
          "params": states.params,
          "opt_state": states.opt_state,
          "step": states.step,
          "rng": jax.random.key_data(seed_keys[:, 1]),
          "kept": states.params,
      }
  )
  record = {
      "epoch": 0,
      "members": [
          {"seed": seed, "best_epoch": 0, "best_value": None, "history": []} for seed in seeds
      ],
  }

  checkpointer = metrics_path = lock = None
  if workdir is not None:
    workdir = pathlib.Path(workdir)
    lock = _lock(workdir) if writer else None
    checkpointer = RunCheckpointer(
        workdir / "checkpoints",
        fingerprint(
            model,
            objective,
            config,
            seeds=seeds,
            train=train,
            valid=valid,
            tx=tx,
            member_epochs=epochs,
        ),
    )
    restored = checkpointer.restore_latest(arrays)
    if restored is not None:
      arrays, record = restored
      if report and record["epoch"]:
        print(f"{desc}: resuming after epoch {record['epoch']} from {workdir}", flush=True)
    if writer:
      metrics_path = workdir / "metrics.jsonl"
      _write_metrics(metrics_path, record)

  if valid is not None:
    # Every host scores the whole split on one of its devices: cheap next to
    # training, and all hosts reach the same early-stopping decisions.
    valid = evaluation.device_split(valid)
  stopping = [
      EarlyStopping(config.patience, m["best_epoch"], m["best_value"]) for m in record["members"]
  ]

  def active(member: int, epoch: int) -> bool:
    diverged = record["members"][member].get("diverged")
    return epoch < epochs[member] and not stopping[member].stopped(epoch) and diverged is None

  settings = [_member_setting(objective, seeds, m) for m in range(members)]

  states = states.replace(
      params=arrays["params"], opt_state=arrays["opt_state"], step=arrays["step"]
  )
  rngs = jax.random.wrap_key_data(arrays["rng"])
  bar = tqdm.tqdm(
      total=config.epochs,
      initial=record["epoch"],
      desc=desc,
      unit="epoch",
      disable=report != "bar",
      dynamic_ncols=True,
  )
  try:
    while any(active(m, record["epoch"]) for m in range(members)):
      start = time.perf_counter()
      training = [m for m in range(members) if active(m, record["epoch"])]
      split = jax.vmap(jax.random.split)(rngs)
      rngs, epoch_keys = split[:, 0], split[:, 1]
      states, loss_sums = train_lib.train_epoch(
          model, static, dynamic, states, x, y, epoch_keys, batch_size=config.batch_size, mesh=mesh
      )
      losses = np.asarray(sharding.local_copy(loss_sums)) / steps_per_epoch
      epoch = record["epoch"] + 1
      scores = None
      if valid is not None:
        scores = evaluation.evaluate_members(
            model,
            sharding.local_copy(states.params),
            valid,
            eps=config.eval_eps,
            batch_size=config.eval_batch_size,
        )
      watched = np.empty(0)
      if watch is not None:
        watched = watch.accuracies(model, sharding.local_copy(states.params))
      seconds = time.perf_counter() - start
      keep = np.zeros(members, bool)
      rows = []
      for m in training:
        row = {"epoch": epoch, "loss": _json_number(losses[m])}
        if row["loss"] is None:
          row["diverged"] = True
          record["members"][m]["diverged"] = epoch
        if scores is not None:
          row.update({f"valid_{name}": _json_number(values[m]) for name, values in scores.items()})
          stopping[m] = stopping[m].update(epoch, float(scores[config.monitor][m]))
          record["members"][m].update(
              best_epoch=stopping[m].best_epoch, best_value=stopping[m].best_value
          )
        keep[m] = row["loss"] is not None and (
            config.patience is None or stopping[m].best_epoch == epoch
        )
        if watch is not None:
          watched_best = _watch_member(watch, record["members"][m], epoch, float(watched[m]), row)
          keep[m] = watched_best and row["loss"] is not None
        row["seconds"] = seconds
        record["members"][m]["history"].append(row)
        rows.append({"member": m, "seed": seeds[m], **row})
      arrays = {
          "params": states.params,
          "opt_state": states.opt_state,
          "step": states.step,
          "rng": jax.random.key_data(rngs),
          "kept": _keep(place(keep), states.params, arrays["kept"]),
      }
      record["epoch"] = epoch
      if checkpointer is not None:
        checkpointer.save(epoch, arrays, record)
      if metrics_path is not None:
        with metrics_path.open("a") as f:
          f.writelines(json.dumps(row) + "\n" for row in rows)
      _report(bar, report, desc, epoch, config.epochs, rows, settings, seconds)
  finally:
    bar.close()
    if checkpointer is not None:
      checkpointer.close()
    if lock is not None:
      lock.unlink(missing_ok=True)

  return [
      FitResult(
          params=jax.tree.map(lambda leaf, m=m: leaf[m], arrays["kept"]),
          history=info["history"],
          best_epoch=info["best_epoch"],
          best_value=info["best_value"],
          watch_accuracy=_watched(info["history"]),
          collapse_epoch=info.get("collapse_epoch"),
          diverged=info.get("diverged"),
          setting=settings[m],
      )
      for m, info in enumerate(record["members"])
  ]


def fit(
    model: Classifier,
    train: Any,
    config: TrainConfig,
    *,
    objective: train_lib.Objective = train_lib.Clean(),
    valid: Any | None = None,
    tx: optax.GradientTransformation | None = None,
    workdir: str | os.PathLike | None = None,
    progress: bool | None = None,
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
    progress: bool | None = None,
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
    ...     model, data, TrainConfig(2, eval_eps=0.25, patience=1),
    ...     seeds=range(3), objective=train.Adversarial(0.25))
    train (select): epoch 1/2 (3 members) loss ... s
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
  selection = fit_members(
      model,
      data.train,
      config,
      seeds=seeds,
      objective=objective,
      valid=data.valid,
      tx=tx,
      workdir=select_dir,
      progress=progress,
      desc=f"{desc} (select)",
      mesh=mesh,
  )
  chosen = [result.best_epoch for result in selection]
  retrain_config = dataclasses.replace(config, epochs=max(chosen), patience=None)
  final = fit_members(
      model,
      data.train_full,
      retrain_config,
      seeds=seeds,
      objective=objective,
      tx=tx,
      workdir=retrain_dir,
      progress=progress,
      desc=f"{desc} (retrain)",
      mesh=mesh,
      member_epochs=chosen,
  )
  return selection, final


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


@jax.jit
def _keep(mask: Array, params: Params, kept: Params) -> Params:
  """Each member's ``params`` where ``mask`` holds, else what ``kept`` holds."""
  return jax.tree.map(
      lambda p, k: jnp.where(mask.reshape((-1,) + (1,) * (p.ndim - 1)), p, k), params, kept
  )


def _watch_member(
    watch: PGDWatch, info: dict[str, Any], epoch: int, accuracy: float, row: dict[str, Any]
) -> bool:
  """Records a member's watched accuracy; whether this epoch is its best so far (to keep)."""
  history = _watched(info["history"]) + [accuracy]
  row["watch_pgd_accuracy"] = accuracy
  if info.get("collapse_epoch") is None and watch.collapsed(history):
    info["collapse_epoch"] = epoch
    row["watch_collapse"] = True
  return accuracy > max(history[:-1], default=-1.0)


def _watched(history: list[dict[str, Any]]) -> list[float]:
  """The watched PGD accuracies of a member's history, epoch by epoch."""
  return [row["watch_pgd_accuracy"] for row in history if "watch_pgd_accuracy" in row]


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


def describe(value: Any) -> Any:
  """A JSON description of a setting, stable from run to run.

  Dataclasses and named tuples become their type's name and fields, functions
  ``module.qualname``, arrays lists; what JSON holds as it is stays. Used to
  fingerprint runs, so it never includes memory addresses.

  Example:
    >>> describe(train.Noise(advjax.sign_noise, eps=0.25))
    {'type': 'Noise', 'noise_fn': 'advjax.objectives.sign_noise', 'eps': 0.25, 'alpha': 0.5}
  """
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {
        "type": type(value).__qualname__,
        **{f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)},
    }
  fields = getattr(value, "_fields", None)  # a named tuple's
  if isinstance(value, tuple) and fields is not None:
    return {
        "type": type(value).__qualname__,
        **{name: describe(getattr(value, name)) for name in fields},
    }
  if isinstance(value, (list, tuple)):
    return [describe(v) for v in value]
  if isinstance(value, dict):
    return {str(k): describe(v) for k, v in value.items()}
  if callable(value) and hasattr(value, "__qualname__"):
    return f"{value.__module__}.{value.__qualname__}"
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    return np.asarray(value).tolist()
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def fingerprint(
    model: Classifier,
    objective: train_lib.Objective,
    config: TrainConfig,
    *,
    seeds: Sequence[int],
    train: Any,
    valid: Any | None = None,
    tx: optax.GradientTransformation | None = None,
    member_epochs: Sequence[int] | None = None,
) -> dict[str, Any]:
  """What must match for a checkpoint folder to belong to a run of `fit_members`.

  The model, the objective and its settings, the config, the seeds and
  epochs, the optimizer (the recipe's, or "custom") and the data (sizes and
  a SHA-256 of the images and labels: 0.09 s for MNIST's 50,000 training
  images, next to seconds for one epoch), as JSON. Experiments name their run folders
  after its digest, so that other settings never meet these checkpoints.

  Example:
    >>> run = fingerprint(model, train.Adversarial(0.25), config, seeds=[0], train=data.train)
    >>> run["objective"], run["train"]["examples"]
    ({'type': 'Adversarial', 'eps': 0.25, 'alpha': 0.5, 'clip': None}, 200)
  """

  def data(split):
    if split is None:
      return None
    digest = hashlib.sha256()
    for array in (split.x, split.y):
      array = np.ascontiguousarray(np.asarray(array))
      digest.update(f"{array.dtype.str}{array.shape}".encode())
      digest.update(array.data)
    return {"examples": len(split.y), "sha256": digest.hexdigest()}

  seeds = [int(seed) for seed in seeds]
  return {
      "model": f"{model.module!r} head={model.head.name} " f"max_col_norm={model.max_col_norm}",
      "objective": describe(objective),
      "config": describe(config),
      "seeds": seeds,
      "member_epochs": [config.epochs] * len(seeds)
      if member_epochs is None
      else list(member_epochs),
      "optimizer": "recipe_sgd" if tx is None else "custom",
      "train": data(train),
      "valid": data(valid),
  }


def _lock(workdir: pathlib.Path) -> pathlib.Path:
  """Takes ``workdir/lock`` for this process (its PID inside); returns its path.

  Refuses a folder whose lock names a live process; takes over the lock of
  a process that is gone (killed before it could remove it).
  """
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "lock"
  mine = workdir / f".lock.{os.getpid()}"
  mine.write_text(f"{os.getpid()}\n")
  try:
    while True:
      try:
        os.link(mine, path)  # atomic: the lock appears with its PID in it
        return path
      except FileExistsError:
        pass
      try:
        pid = int(path.read_text())
      except (OSError, ValueError):
        pid = None
      if pid is not None and pid != os.getpid() and _alive(pid):
        raise RunInUseError(
            f"{workdir} is in use by process {pid} (lock file {path}): wait for it to "
            "finish or stop it, or choose another folder"
        )
      path.unlink(missing_ok=True)
  finally:
    mine.unlink()


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def _write_metrics(path: pathlib.Path, record: dict[str, Any]) -> None:
  """Rewrites the JSON-lines file atomically to match the checkpointed history."""
  rows = sorted(
      (
          {"member": m, "seed": info["seed"], **row}
          for m, info in enumerate(record["members"])
          for row in info["history"]
      ),
      key=lambda row: (row["epoch"], row["member"]),
  )
  tmp = path.with_suffix(".tmp")
  tmp.parent.mkdir(parents=True, exist_ok=True)
  tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
  os.replace(tmp, path)


def _report(
    bar: Any,
    mode: str | None,
    desc: str,
    epoch: int,
    epochs: int,
    rows: list[dict[str, Any]],
    settings: list[str],
    seconds: float,
) -> None:
  """Shows a finished epoch: on the progress bar, or as one plain line."""
  finite = [row["loss"] for row in rows if row["loss"] is not None]
  loss = float(np.mean(finite)) if finite else math.nan
  diverged = "; ".join(
      f"member {row['member']} ({settings[row['member']]})" for row in rows if row["loss"] is None
  )
  diverged = f" diverged: {diverged}" if diverged else ""
  errors = [row["valid_error"] for row in rows if row.get("valid_error") is not None]
  valid = ""
  if errors:
    low, high = min(errors), max(errors)
    valid = f"{low:.2%}" if low == high else f"{low:.2%}-{high:.2%}"
  collapsed = ", ".join(str(row["member"]) for row in rows if row.get("watch_collapse"))
  note = f" PGD accuracy collapsed (member {collapsed})" if collapsed else ""
  if mode == "bar":
    bar.set_postfix(loss=f"{loss:.4f}", valid_err=valid or "-", collapsed=collapsed or "-")
    bar.update(1)
    if diverged:
      bar.write(f"{desc}: epoch {epoch}{diverged}")
  elif mode == "lines":
    members = f" ({len(rows)} members)" if len(rows) > 1 else ""
    shown = f" valid error {valid}" if valid else ""
    print(
        f"{desc}: epoch {epoch}/{epochs}{members} loss {loss:.4f}{shown}{note} "
        f"{seconds:.1f} s{diverged}",
        flush=True,
    )
