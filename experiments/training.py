"""How every experiment trains a model: in a run folder named after the run, resumed from there.

`train` is the one trainer of the experiments, for every model (maxout,
softmax and logistic regression, RBF network, CNN): the seeds train as one
population (`advjax.loop.fit_members`), or under the paper's protocol
(`advjax.loop.fit_and_retrain`: early stopping, then retraining on all the
training images), in ``work/<name>-<digest>``, the digest of everything the
run depends on (`experiments.files.run_folder`). An interrupted run resumes
from its last finished epoch; a finished one is restored, so that the
experiments sharing a model train it once.
"""

from __future__ import annotations

import pathlib
from typing import Any, NamedTuple, Sequence

from jax.sharding import Mesh
import optax

from advjax import data as data_lib
from advjax import loop
from advjax import models
from advjax import objectives
from advjax import sharding
from experiments import files

__all__ = ["Trained", "train"]


class Trained(NamedTuple):
  """One seed's model as `train` gives it.

  Attributes:
    model: the classifier.
    params: the final parameters (the best epoch's with early stopping), on
      one device of this host.
    history: the per-epoch rows (``loss``, ``seconds``, ``valid_*`` scores
      when it validated), every phase in turn.
    summary: ``seed``, ``best_epoch`` (None without early stopping),
      ``epochs_trained`` (all phases), ``train_seconds`` (of the whole
      population, all phases, all invocations) and ``diverged`` (the epoch
      whose training loss was not finite, or None).
    curve: the selection run's validation scores per epoch (``epoch``,
      ``valid_error``, ``valid_fgsm_error``), empty without validation.
    result: the last phase's `advjax.loop.FitResult` (watched accuracies...).
  """

  model: models.Classifier
  params: Any
  history: list[dict[str, Any]]
  summary: dict[str, Any]
  curve: dict[str, list[Any]]
  result: loop.FitResult


def train(
    name: str,
    model: models.Classifier,
    split: data_lib.Split,
    config: loop.TrainConfig,
    work: pathlib.Path,
    *,
    valid: data_lib.Split | None = None,
    retrain: data_lib.MNIST | None = None,
    seeds: Sequence[int] | None = None,
    objective: Any = None,
    tx: optax.GradientTransformation | None = None,
    mesh: Mesh | None = None,
    watch: loop.PGDWatch | None = None,
    identity: dict[str, Any] | None = None,
) -> list[Trained]:
  """Trains one ``model`` per seed as one population, or restores it from ``work``.

  Args:
    name: names the run folder, e.g. ``"clean"`` or ``"softmax_regression"``.
    model: the classifier.
    split: the training data.
    config: the loop's settings.
    work: the folder of the run folders.
    valid: scored after every epoch: needed with ``config.patience``,
      otherwise only recorded in the history.
    retrain: the paper's protocol on this data: select each seed's epoch on
      ``retrain.train`` and ``retrain.valid`` (then ``split`` and ``valid``),
      then retrain on ``retrain.train_full`` for that many epochs.
    seeds: the seeds (``(config.seed,)`` when None); equal seeds make a study
      whose members differ in the objective's settings.
    objective: what the models minimise; None for `advjax.objectives.Clean`.
    tx: an optimizer instead of the recipe's SGD.
    mesh: train data-parallel on this mesh; None for one device. The run
      folder does not depend on it: a run resumes on another device count.
    watch: a `advjax.loop.PGDWatch` of catastrophic overfitting.
    identity: what else names the run (settings of ``tx`` that its
      fingerprint cannot see...), part of the folder's digest.

  Returns:
    One `Trained` per seed.

  Example:
    >>> (softmax,) = train("softmax", models.softmax_regression(), data.train,
    ...                    loop.TrainConfig(epochs=20, eval_eps=0.25), out / "shallow_runs")
  """
  seeds = (config.seed,) if seeds is None else tuple(seeds)
  objective = objectives.Clean() if objective is None else objective
  fingerprint = loop.fingerprint(
      model, objective, config, seeds=seeds, train=split, valid=valid, tx=tx
  )
  workdir = files.run_folder(work, name, {"run": fingerprint, **(identity or {})})
  label = _label(name, seeds)
  print(f"training {label} (or restoring it) in {workdir}", flush=True)
  options = dict(seeds=seeds, objective=objective, tx=tx, workdir=workdir, desc=label, mesh=mesh)
  if retrain is not None:
    selection, final = loop.fit_and_retrain(model, retrain, config, **options)
  else:
    final = selection = loop.fit_members(model, split, config, valid=valid, watch=watch, **options)
  return [
      _trained(model, seed, chosen, result, retrain is not None, valid is not None)
      for seed, chosen, result in zip(seeds, selection, final)
  ]


def _label(name: str, seeds: tuple[int, ...]) -> str:
  """How the progress lines name a population: its seeds, or a study's members."""
  if len(seeds) > 1 and len(set(seeds)) == 1:  # a study: its members differ in settings
    return f"{name}, {len(seeds)} members of seed {seeds[0]}"
  return f"{name}, seed{'s' if len(seeds) > 1 else ''} " + ", ".join(map(str, seeds))


def _trained(
    model: models.Classifier,
    seed: int,
    chosen: loop.FitResult,
    result: loop.FitResult,
    retrained: bool,
    validated: bool,
) -> Trained:
  """One seed's `Trained` from its selection run (``chosen``) and its final one."""
  history = (chosen.history + result.history) if retrained else result.history
  curve = {
      key: [row.get(key) for row in chosen.history]
      for key in ("epoch", "valid_error", "valid_fgsm_error")
  }
  summary = {
      "seed": seed,
      "best_epoch": chosen.best_epoch or None,
      "epochs_trained": len(history),
      "train_seconds": sum(row["seconds"] for row in history),
      "diverged": result.diverged or chosen.diverged,
  }
  # Scored on one device: the test set is small next to training.
  params = sharding.local_copy(result.params)
  return Trained(model, params, history, summary, curve if validated else {}, result)
