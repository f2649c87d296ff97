"""What the shallow-model experiments share: presets, cached models, sweeps, seeds, verdicts.

The experiments ``softmax_regression``, ``logistic_regression``,
``rbf_network`` and ``rubbish`` use overlapping models: the rubbish-class
experiment scores the softmax regression and the RBF network of M1 and M8, the
transfer numbers of section 8 need a maxout network beside them. Each model is
trained once per preset and seed by `train_cached`, which checkpoints it under
``OUT/shallow_runs/<model>-seed<k>-<digest>``: the first experiment that needs
it trains it, the others (and any rerun) restore it from there.

An experiment is then a `measure` function (one seed in, numbers and sweeps
out), a `rows` function (the numbers beside the paper's), and optionally a
figure; `main` does the flags, the data, the seeds and the JSON. Every
experiment writes ``OUT/<name>.json`` with the keys

- ``config``: the preset's settings (eps among them), the dataset, clipping,
  the sweep's epsilons;
- ``measured``: the numbers, averaged over seeds;
- ``per_seed``: the numbers of each seed;
- ``sweep``: ``{model: {"eps", "error", "confidence"}}``, FGSM error and mean
  confidence on the mistakes against eps on the test set, averaged over seeds;
- ``rows``: `experiments.common.paper_row` dictionaries (MNIST runs only);
- ``figures``: PNG paths relative to OUT (``figures/<name>.png``);
- ``seconds``: the run's wall time.

Choices shared by all four: FGSM with the preset's eps (0.25) and no clipping, sign(0) = 0,
attacks on the evaluation loss (dropout off); models train on the first 50,000
training images, and the paper preset stops early on the last 10,000.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np
import optax

import advjax
from advjax import data as data_lib
from advjax import evaluation
from advjax import loop
from advjax import models
from advjax import train
from advjax.attacks import LossFn
from experiments import common

SWEEP_BATCH = 1000
# Recipe SGD (learning rate 0.1) leaves the RBF network at 48% clean error
# after 5 epochs: its centres and widths crawl. Adam at 0.01 reaches 13%.
RBF_LEARNING_RATE = 0.01

Params = Any


@dataclasses.dataclass(frozen=True)
class Preset:
  """How much to train, shared by the four shallow-model experiments.

  Attributes:
    seeds: number of seeds, 0..seeds-1; the numbers are averaged over them.
    maxout_units: maxout units per layer (5 pieces, 2 layers, dropout).
    maxout_epochs: (most) epochs of the maxout networks.
    linear_epochs: (most) epochs of softmax and logistic regression.
    rbf_epochs: (most) epochs of the RBF network.
    l1_epochs: epochs of the maxout networks trained with L1 weight decay.
    patience: early stopping on the clean validation error (the last 10,000
      training images), or None to train every epoch and keep the last.
    rubbish_samples: number of N(0, I) inputs of the rubbish-class experiment.
    eps: FGSM eps of the attacks and of the validation scores (0.25).
  """

  seeds: int
  maxout_units: int
  maxout_epochs: int
  linear_epochs: int
  rbf_epochs: int
  l1_epochs: int
  patience: int | None
  rubbish_samples: int
  eps: float = 0.25


PRESETS = {
    # About 5 minutes of CPU time for all four experiments on 2 cores (9
    # minutes of wall time on a busy machine): fixed epochs, no early
    # stopping. 10 maxout epochs reach 1.9% test error, 20 softmax
    # regression epochs 7.6%, 10 RBF epochs 13%.
    "quick": Preset(
        seeds=1,
        maxout_units=240,
        maxout_epochs=10,
        linear_epochs=20,
        rbf_epochs=10,
        l1_epochs=5,
        patience=None,
        rubbish_samples=10_000,
    ),
    # The maxout of M3 (240 units) with the recipe's early stopping (patience
    # 100); the same patience for the shallow models, whose training the
    # paper does not describe.
    "paper": Preset(
        seeds=1,
        maxout_units=240,
        maxout_epochs=1000,
        linear_epochs=1000,
        rbf_epochs=1000,
        l1_epochs=100,
        patience=100,
        rubbish_samples=10_000,
    ),
    # Seconds: for tests and smoke runs, meaningless numbers.
    "tiny": Preset(
        seeds=1,
        maxout_units=8,
        maxout_epochs=1,
        linear_epochs=1,
        rbf_epochs=1,
        l1_epochs=1,
        patience=None,
        rubbish_samples=200,
    ),
}


class Trained(NamedTuple):
  """A classifier, its trained parameters and its training history.

  Attributes:
    model: the classifier.
    params: the parameters `advjax.train.fit` returned.
    history: its per-epoch rows (``loss``, and ``valid_*`` scores when it
      validated).
  """

  model: models.Classifier
  params: Params
  history: list[dict[str, Any]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class L1:
  """Objective: the model's loss plus L1 weight decay ``coefficient * sum |W|``.

  The sum runs over every layer's ``kernel`` (output layer included), not the
  biases, as pylearn2's ``L1WeightDecay`` that the paper used. A pytree whose
  leaf is the coefficient, like the library's objectives, so that it is part
  of the run's fingerprint.

  Attributes:
    coefficient: the weight of the penalty, >= 0.

  Example:
    >>> loop.fit(models.maxout_mlp(), data.train, config, objective=L1(0.0025))
  """

  coefficient: Any

  def __post_init__(self) -> None:
    if isinstance(self.coefficient, (int, float)) and not self.coefficient >= 0:
      raise ValueError(f"coefficient must be >= 0, got {self.coefficient!r}.")

  def __call__(self, loss_fn: LossFn, key: jax.Array, logits_fn: Any = None) -> LossFn:
    del key, logits_fn
    return lambda params, x, y: (loss_fn(params, x, y) + self.coefficient * l1_norm(params))


def l1_norm(params: Params) -> jax.Array:
  """``sum |W|`` over every ``kernel`` leaf of a Flax parameter pytree.

  Args:
    params: the parameters.

  Returns:
    A scalar.

  Example:
    >>> l1_norm({"Dense_0": {"kernel": -jnp.ones((2, 3)), "bias": jnp.ones(3)}})
    Array(6., dtype=float32)
  """
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(
      jnp.sum(jnp.abs(leaf)) for path, leaf in leaves if getattr(path[-1], "key", None) == "kernel"
  )


# ---------------------------------------------------------------------------
# Models, trained once and restored after.
# ---------------------------------------------------------------------------


def train_cached(
    name: str,
    model: models.Classifier,
    split: data_lib.Split,
    config: loop.TrainConfig,
    work: pathlib.Path,
    *,
    valid: data_lib.Split | None = None,
    objective: train.Objective = train.Clean(),
    adam: float | None = None,
) -> Trained:
  """Trains ``model``, or restores it when an earlier run left it in ``work``.

  The run folder is `common.run_folder` ``(work, name, ...)``: its digest
  covers everything that shapes the run (model, objective, settings, seed,
  optimizer, data), so other settings get their own folder instead of a
  mismatch.

  Args:
    name: the model's folder prefix, e.g. ``"maxout"``.
    model: the classifier.
    split: training data.
    config: the trainer's settings.
    work: the folder holding the run folders.
    valid: validation data: needed with ``config.patience``; otherwise only
      its per-epoch scores are recorded in the history.
    objective: what to minimise.
    adam: learning rate of Adam, or None for the recipe's SGD.

  Returns:
    The model, the final parameters (the best epoch's with early stopping)
    and the per-epoch history.

  Example:
    >>> trained = train_cached("softmax", models.softmax_regression(), data.train,
    ...                        loop.TrainConfig(epochs=20), out / "shallow_runs")
  """
  tx = None if adam is None else optax.adam(adam)
  workdir = common.run_folder(
      work,
      name,
      {
          "run": loop.fingerprint(
              model, objective, config, seeds=[config.seed], train=split, valid=valid, tx=tx
          ),
          "adam": adam,
      },
  )
  print(f"{name}: training or restoring in {workdir}", flush=True)
  result = loop.fit(
      model, split, config, objective=objective, valid=valid, tx=tx, workdir=workdir, desc=name
  )
  return Trained(model, result.params, result.history)


def config(preset: Preset, epochs: int, seed: int) -> loop.TrainConfig:
  """The trainer's settings: recipe SGD, the preset's early stopping and eps.

  Args:
    preset: the settings.
    epochs: the most epochs.
    seed: the training seed.

  Returns:
    A `advjax.loop.TrainConfig`.
  """
  return loop.TrainConfig(epochs=epochs, seed=seed, patience=preset.patience, eval_eps=preset.eps)


def validation(preset: Preset, split: data_lib.Split) -> data_lib.Split | None:
  """``split`` when the preset stops early, else None.

  Validation costs a clean and an FGSM pass per epoch: paid only when it
  selects the epoch.
  """
  return None if preset.patience is None else split


def softmax_regression(
    preset: Preset, data: data_lib.MNIST, seed: int, work: pathlib.Path
) -> Trained:
  """The shallow softmax regression of M1, recipe SGD, zero initialisation.

  Args:
    preset: the settings.
    data: MNIST; trains on ``data.train``.
    seed: the training seed.
    work: the folder of the cached runs.

  Returns:
    The trained (or restored) model.

  Example:
    >>> softmax = softmax_regression(PRESETS["quick"], data, 0, out / "shallow_runs")
  """
  return train_cached(
      "softmax_regression",
      models.softmax_regression(),
      data.train,
      config(preset, preset.linear_epochs, seed),
      work,
      valid=validation(preset, data.valid),
  )


def rbf_network(preset: Preset, data: data_lib.MNIST, seed: int, work: pathlib.Path) -> Trained:
  """The shallow RBF network of M8 (per-class ``exp(q_k)``), trained with Adam.

  Args:
    preset: the settings.
    data: MNIST; trains on ``data.train``.
    seed: the training seed.
    work: the folder of the cached runs.

  Returns:
    The trained (or restored) model.

  Example:
    >>> rbf = rbf_network(PRESETS["quick"], data, 0, out / "shallow_runs")
  """
  return train_cached(
      "rbf_network",
      models.rbf_network(),
      data.train,
      config(preset, preset.rbf_epochs, seed),
      work,
      valid=validation(preset, data.valid),
      adam=RBF_LEARNING_RATE,
  )


def maxout(
    preset: Preset,
    data: data_lib.MNIST,
    seed: int,
    work: pathlib.Path,
    output: Literal["softmax", "sigmoid"] = "softmax",
) -> Trained:
  """The maxout network of M3 (recipe SGD, dropout, max-norm), softmax or sigmoid outputs.

  Args:
    preset: the settings.
    data: MNIST; trains on ``data.train``.
    seed: the training seed.
    work: the folder of the cached runs.
    output: ``"softmax"``, or ``"sigmoid"`` (one sigmoid per class, for the
      rubbish-class experiment).

  Returns:
    The trained (or restored) model.

  Example:
    >>> net = maxout(PRESETS["quick"], data, 0, out / "shallow_runs")
  """
  return train_cached(
      f"maxout_{output}",
      models.maxout_mlp(units=preset.maxout_units, output=output),
      data.train,
      config(preset, preset.maxout_epochs, seed),
      work,
      valid=validation(preset, data.valid),
  )


# ---------------------------------------------------------------------------
# Measurements.
# ---------------------------------------------------------------------------


def sweep(trained: Trained, split: data_lib.Split, eps: float) -> dict[str, list[float | None]]:
  """FGSM error and confidence on the mistakes at every eps of `common.sweep_grid`.

  One `advjax.epsilon_sweep` over the split (the input gradient is taken once
  per batch). Labels of +-1 (logistic regression) are scored as the classes
  0/1 of its probabilities and handed to the loss as +-1.

  Args:
    trained: the model and its parameters.
    split: the examples, usually the test set.
    eps: the run's eps, added to the grid.

  Returns:
    ``{"eps", "error", "confidence"}``, lists of floats; a confidence is None
    where there is no mistake.

  Example:
    >>> sweep(softmax, data.test, 0.25)["error"][10]   # the FGSM error at eps 0.25
  """
  model = trained.model
  labels = np.asarray(split.y)
  loss_fn = model.loss_fn()
  if labels.dtype.kind == "f":
    labels = (labels > 0).astype(np.int32)
    loss_fn = lambda params, x, y: model.loss(params, x, 2.0 * y - 1.0)
  result = advjax.epsilon_sweep(
      loss_fn,
      model.probabilities,
      trained.params,
      split.x,
      labels,
      np.asarray(common.sweep_grid(eps), np.float32),
      batch_size=SWEEP_BATCH,
  )
  return common.sweep_entry(result)


def predictions(trained: Trained, x: np.ndarray) -> np.ndarray:
  """The predicted classes (argmax of the probabilities) on ``x``, no dropout."""
  return np.argmax(evaluation.probabilities(trained.model, trained.params, x), axis=-1)


def fraction(mask: np.ndarray, within: np.ndarray | None = None) -> float | None:
  """The fraction of ``within`` (everything when None) where ``mask`` holds; None if empty.

  Example:
    >>> fraction(np.array([True, False, True]), np.array([True, True, False]))
    0.5
  """
  if within is not None:
    mask = mask[within]
  return float(np.mean(mask)) if mask.size else None


# ---------------------------------------------------------------------------
# Seeds, verdicts, figures, and the command line.
# ---------------------------------------------------------------------------


class Measured(NamedTuple):
  """What one seed of an experiment measured.

  Attributes:
    numbers: JSON-ready numbers (floats, None, lists and dicts of them).
    sweep: ``{model: sweep(...)}``.
    figure_inputs: whatever the experiment's ``draw`` needs (seed 0's is drawn).
  """

  numbers: dict[str, Any]
  sweep: dict[str, dict[str, list[float | None]]]
  figure_inputs: Any = None


def mean_over_seeds(values: Sequence[Any]) -> Any:
  """Averages parallel JSON-ready results: numbers, lists element-wise, dicts key-wise.

  None stands for "not measured" (a confidence without mistakes) and is left
  out of the mean. A value equal across all seeds is kept as it is (an int
  stays an int).

  Args:
    values: one result per seed, all with the same structure.

  Returns:
    A result of that structure.

  Example:
    >>> mean_over_seeds([{"a": [1.0, None]}, {"a": [3.0, None]}])
    {'a': [2.0, None]}
  """
  first = values[0]
  if all(v == first for v in values[1:]):
    # Equal across seeds (a sample count, an unmeasured None): kept as it is.
    return first
  if isinstance(first, dict):
    return {key: mean_over_seeds([v[key] for v in values]) for key in first}
  if isinstance(first, list):
    return [mean_over_seeds(parts) for parts in zip(*values, strict=True)]
  if first is None or isinstance(first, (int, float)):
    return common.mean(values)
  return first


def row(
    key: str,
    measured: float | None,
    tolerance: float,
    claim: Callable[[float], bool],
    note: str = "",
) -> dict[str, Any]:
  """The `common.compare` row of the paper's ``key``, its claim tested on ``measured``.

  The verdict is "reproduced" within ``tolerance`` (absolute, as a fraction)
  of the paper's value; otherwise "same direction" when the paper's
  qualitative ``claim`` holds for the measured value, else "not reproduced".
  Unmeasured (None) is "not reproduced".

  Args:
    key: the paper's number in `experiments.paper.FIGURES`, e.g. ``"M1.fgsm_error"``.
    measured: ours, a fraction or None.
    tolerance: the largest absolute difference that counts as reproduced.
    claim: ``measured -> bool``, the qualitative claim behind the number.
    note: the claim in words, and anything else the reader needs.

  Returns:
    A row for ``rows``.

  Example:
    >>> row("M1.fgsm_error", 0.998, 0.05, lambda e: e > 0.5)["verdict"]
    'reproduced'
  """
  return common.compare(key, measured, tolerance, measured is not None and claim(measured), note)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One shallow-model experiment, for `main`.

  Attributes:
    name: the module and results name, e.g. ``"softmax_regression"``.
    description: one sentence for ``--help``.
    measure: ``(preset, data, seed, work) -> Measured`` for one seed.
    rows: ``(measured numbers averaged over seeds) -> [row, ...]``.
    draw: optional ``(seed 0's figure_inputs, averaged numbers, preset) ->
      Figure``, saved as ``OUT/figures/<name>.png``.
  """

  name: str
  description: str
  measure: Callable[[Preset, data_lib.MNIST, int, pathlib.Path], Measured]
  rows: Callable[[dict[str, Any]], list[dict[str, Any]]]
  draw: Callable[[Any, dict[str, Any], Preset], Figure] | None = None


def main(experiment: Experiment, argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs an experiment from the command line and writes ``OUT/<name>.json``.

  Args:
    experiment: what to run.
    argv: the flags (``sys.argv[1:]`` when None): those of `common.parser`.

  Returns:
    The results as written.

  Example:
    >>> main(EXPERIMENT, ["--preset", "tiny", "--out", "/tmp/results"])
  """
  prog = f"experiments.{experiment.name}"
  run = common.setup(prog, common.parser(prog, experiment.description, PRESETS), PRESETS, argv)
  preset, out = run.preset, run.args.out
  work = out / "shallow_runs"
  with common.one_line_errors(prog):
    per_seed = [experiment.measure(preset, run.data, seed, work) for seed in range(preset.seeds)]
  measured = mean_over_seeds([m.numbers for m in per_seed])
  figures = []
  if experiment.draw is not None:
    figures.append(
        common.save_figure(
            experiment.draw(per_seed[0].figure_inputs, measured, preset), out, experiment.name
        )
    )
  results = {
      "measured": measured,
      "per_seed": [{"seed": seed, **m.numbers} for seed, m in enumerate(per_seed)],
      "sweep": mean_over_seeds([m.sweep for m in per_seed]),
      "rows": (experiment.rows(measured) if common.comparable(run.args.dataset) else []),
      "figures": figures,
  }
  return common.finish(
      run, experiment.name, results, sweep_eps=list(common.sweep_grid(preset.eps)), work=str(work)
  )
