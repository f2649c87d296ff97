"""Training that survives the audit: robust objectives beside the paper's, at FGSM cost or more.

Beyond the paper. Its adversarial objective (eq. 6) trains a maxout that resists
the FGSM it saw and falls to PGD at the same eps (REPORT.md's audit). The field
has since found objectives that hold; this experiment trains them on MNIST and
scores every model with the same attacks:

- the CNN of Wong et al.'s MNIST code (`advjax.models.small_cnn`) at eps 0.3,
  inputs in [0, 1], Adam with a triangular learning rate peaking at 5e-3, batch
  100, trained with the paper's objective (alpha 0.5, clipped to the box), FGSM
  from a random start (step 1.25 eps), N-FGSM (noise 2 eps, step eps), PGD
  (K steps of 2.5 eps / K from a random start) and TRADES (beta, K steps);
- the paper's 240-unit maxout at eps 0.25 (mnist_maxout's quick recipe for
  fewer epochs) with the paper's objective and with FGSM from a random start;
- a study: FGSM from a random start over step sizes 0.5 eps .. 2 eps at eps
  0.3, all members one vmapped program (`advjax.loop.fit_members`), to find
  the step where training collapses (catastrophic overfitting).

Every run is watched for catastrophic overfitting (`advjax.loop.PGDWatch`):
after each epoch, PGD accuracy on a fixed batch of training images goes to
``metrics.jsonl``, and the best watched epoch is kept. Each model is then
scored: clean error on the whole test set, FGSM error at its eps on the whole
test set, and PGD-50 with 10 restarts (step 0.01) on a fixed subset of the test
set (the first ``preset.subset`` images; binomial standard errors are given).

    python -m experiments.robust_training --data-dir ../shared/data/mnist

Writes ``OUT/robust_training.json``, ``OUT/figures/robust_training_study.png``
and the checkpoints under ``OUT/robust_training_runs``.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, Sequence

import jax
from matplotlib.figure import Figure
import optax

from advjax import data as data_lib
from advjax import evaluation
from advjax import loop
from advjax import models
from advjax import objectives
from experiments import files
from experiments import maxout
from experiments import numeric
from experiments import robustness
from experiments import runner
from experiments import training

NAME = "robust_training"
BOX = (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Preset:
  """How long to train, how hard to attack, and on how many test images.

  Attributes:
    epochs: epochs of every CNN (Wong et al. train 10).
    learning_rate: peak of the CNNs' triangular Adam schedule.
    steps: PGD steps of the PGD and TRADES objectives.
    beta: TRADES' weight of the KL term.
    maxout_epochs: epochs of each 240-unit maxout (mnist_maxout's quick recipe).
    study_steps: the study's FGSM steps, as multiples of eps.
    subset: test images the PGD evaluation uses (the first ones).
    pgd_steps: PGD steps of the evaluation (of 0.01 each; 50, the tests' preset fewer).
    restarts: PGD restarts of the evaluation.
    study_restarts: the same for the study's members.
    watch: training images watched for catastrophic overfitting.
    eps: the CNNs' eps (MNIST's standard, 0.3).
    maxout_eps: the maxouts' eps (the paper's, 0.25).
    seeds: kept 1 (one model per method); a field so the shared flags apply.
    autoattack: AutoAttack's budget; it attacks the PGD evaluation's subset.
  """

  epochs: int
  learning_rate: float = 5e-3
  steps: int = 10
  beta: float = 1.0
  maxout_epochs: int = 20
  study_steps: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5, 2.0)
  subset: int = 1000
  pgd_steps: int = 50
  restarts: int = 10
  study_restarts: int = 3
  watch: int = 500
  eps: float = 0.3
  maxout_eps: float = 0.25
  seeds: int = 1
  autoattack: robustness.Budget = robustness.Budget()


FIELD = {
    "Wong et al. 2020 (FGSM, random start)": (98.50, 88.77, 82.93),
    "Madry et al. 2018 (PGD)": (98.53, 89.62, 88.50),
    "TRADES (Zhang et al. 2019)": (99.48, 95.60, 92.81),
}
"""The field's MNIST models at eps 0.3: clean / robust as reported / AutoAttack accuracy (%),
from AutoAttack's MNIST table (../shared/ROBUSTNESS.md); the report shows them beside ours."""

TARGETS = (
    ("FGSM, random start", "test_error", 0.975),
    ("FGSM, random start", "pgd_error", 0.85),
    ("PGD", "pgd_error", 0.88),
)
"""The quick preset's targets for the CNN at eps 0.3: (method, or the start of its name, the
error whose accuracy 1 - error is judged, the least accuracy); the report judges them."""

PRESETS = {
    # 2 CPU cores, about 25 minutes: a cut-down schedule. A compiled CNN step costs
    # ~36 ms on 2 cores (an FGSM epoch ~22 s, a PGD-5 epoch ~70 s), so 3 epochs
    # instead of Wong et al.'s 10, PGD and TRADES with 5 steps, the maxouts for 5
    # epochs, PGD-50 with 5 restarts on 500 test images (1 restart in the study).
    "quick": Preset(
        epochs=3,
        steps=5,
        maxout_epochs=5,
        study_steps=(0.5, 1.0, 1.25, 2.0),
        subset=500,
        restarts=5,
        study_restarts=1,
    ),
    # The recipe as published, for a GPU: 10 epochs, PGD-10 and TRADES with 10
    # steps, PGD-50 with 10 restarts on 1,000 test images.
    "full": Preset(epochs=10, maxout_epochs=20),
    # Seconds, for the tests.
    "tiny": Preset(
        epochs=1,
        steps=2,
        maxout_epochs=1,
        study_steps=(1.25, 2.0),  # 1.25: the main run's step, to compare
        subset=4,
        pgd_steps=5,
        restarts=1,
        study_restarts=1,
        watch=4,
        autoattack=robustness.TOKEN,
    ),
}


def cnn_methods(preset: Preset) -> dict[str, Any]:
  """The CNN's objectives, by name, at the preset's eps."""
  eps, steps = preset.eps, preset.steps
  return {
      "paper (eq. 6)": objectives.Adversarial(eps=eps, alpha=0.5, clip=BOX),
      "FGSM, random start": objectives.FGSMRandomStart(eps=eps, step=1.25 * eps, clip=BOX),
      "N-FGSM": objectives.NFGSM(eps=eps, noise=2 * eps, step=eps, clip=BOX),
      f"PGD-{steps}": objectives.PGDTraining(
          eps=eps, step=2.5 * eps / steps, num_steps=steps, clip=BOX
      ),
      "TRADES": objectives.TRADES(
          eps=eps, beta=preset.beta, step=2.5 * eps / steps, num_steps=steps, clip=BOX
      ),
  }


def maxout_methods(preset: Preset) -> dict[str, Any]:
  """The 240-unit maxout's objectives, by name, at the paper's eps."""
  eps = preset.maxout_eps
  return {
      "paper (eq. 6)": objectives.Adversarial(eps=eps, alpha=0.5),
      "FGSM, random start": objectives.FGSMRandomStart(eps=eps, step=1.25 * eps, clip=BOX),
  }


def triangle(epochs: int, steps_per_epoch: int, peak: float) -> optax.Schedule:
  """Wong et al.'s learning rate: 0 up to ``peak`` over 40% of training, then down to 0."""
  total = epochs * steps_per_epoch
  rise = max(1, int(0.4 * total))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, rise), optax.linear_schedule(peak, 0.0, total - rise)],
      [rise],
  )


def watcher(split: data_lib.Split, preset: Preset, eps: float) -> loop.PGDWatch:
  """PGD-10 on the first ``preset.watch`` training images, as the runs are watched."""
  return loop.PGDWatch(
      split.x[: preset.watch],
      split.y[: preset.watch],
      eps=eps,
      step=2.5 * eps / 10,
      num_steps=10,
      clip=BOX,
  )


def fit(
    name: str,
    model: models.Classifier,
    objective: Any,
    config: loop.TrainConfig,
    tx: optax.GradientTransformation | None,
    optimizer: dict[str, Any],
    data: data_lib.MNIST,
    work: pathlib.Path,
    watch: loop.PGDWatch,
    members: int = 1,
) -> list[loop.FitResult]:
  """Trains ``members`` models (one seed, settings per member) on all training images, watched."""
  trained = training.train(
      name,
      model,
      data.train_full,
      config,
      work,
      seeds=(0,) * members,
      objective=objective,
      tx=tx,
      watch=watch,
      identity={"optimizer": optimizer, "watch": loop.describe(watch)},
  )
  return [t.result for t in trained]


def standard_error(p: float | None, n: int) -> float | None:
  """The binomial standard error of a rate ``p`` measured on ``n`` examples."""
  return None if p is None else math.sqrt(p * (1 - p) / n)


def score(
    model: models.Classifier,
    params: Any,
    test: data_lib.Split,
    eps: float,
    preset: Preset,
    restarts: int,
) -> dict[str, Any]:
  """Clean and FGSM error on the test set; PGD (with restarts) and AutoAttack on a subset."""
  x_fgsm = evaluation.fgsm_examples(model, params, test.x, test.y, eps, clip=BOX)
  n = min(preset.subset, len(test.y))
  start = time.perf_counter()
  pgd = float(
      evaluation.pgd_error(
          model,
          params,
          test.x[:n],
          test.y[:n],
          eps,
          step_size=0.01,
          num_steps=preset.pgd_steps,
          restarts=restarts,
          key=jax.random.key(0),
          clip=BOX,
      )
  )
  pgd_seconds = time.perf_counter() - start
  autoattack = robustness.autoattack(
      model.scores,
      params,
      test,
      [eps],
      subset=preset.subset,
      budget=preset.autoattack,
      key=jax.random.key(0),
  )
  return {
      "test_error": evaluation.score(model, params, test.x, test.y)[0],
      "fgsm_error": evaluation.score(model, params, x_fgsm, test.y)[0],
      "pgd_error": pgd,
      "pgd_error_se": standard_error(pgd, n),
      "pgd_examples": n,
      "pgd_steps": preset.pgd_steps,
      "pgd_restarts": restarts,
      "pgd_seconds": pgd_seconds,
      "autoattack": autoattack,
  }


def watched(result: loop.FitResult) -> dict[str, Any]:
  """What the watch saw of one model: PGD accuracy per epoch, the collapse, the epoch kept."""
  return {
      "watch_pgd_accuracy": result.watch_accuracy,
      "collapse_epoch": result.collapse_epoch,
      "kept_epoch": 1
      + max(range(len(result.watch_accuracy)), key=result.watch_accuracy.__getitem__),
      "train_seconds": sum(row["seconds"] for row in result.history),
      "losses": [row["loss"] for row in result.history],
  }


def train_cnns(preset: Preset, data: data_lib.MNIST, work: pathlib.Path) -> list[dict[str, Any]]:
  """The CNN under every objective, one after the other, each scored at the preset's eps."""
  model = models.small_cnn()
  steps = len(data.train_full.y) // 100
  config = loop.TrainConfig(epochs=preset.epochs)
  schedule = {"adam_peak": preset.learning_rate, "schedule": "triangle 0.4", "steps": steps}
  watch = watcher(data.train_full, preset, preset.eps)
  rows = []
  for method, objective in cnn_methods(preset).items():
    tx = optax.adam(triangle(preset.epochs, steps, preset.learning_rate))
    (result,) = fit(f"cnn-{method}", model, objective, config, tx, schedule, data, work, watch)
    rows.append(
        {
            "model": "small CNN",
            "method": method,
            "eps": preset.eps,
            **watched(result),
            **score(model, result.params, data.test, preset.eps, preset, preset.restarts),
        }
    )
    print(f"  {row_text(rows[-1])}", flush=True)
  return rows


def train_maxouts(preset: Preset, data: data_lib.MNIST, work: pathlib.Path) -> list[dict[str, Any]]:
  """The paper's 240-unit maxout (mnist_maxout's quick recipe) under the paper's objective and
  under FGSM from a random start, at the paper's eps."""
  recipe = maxout.PRESETS["quick"]
  model = models.maxout_mlp(units=recipe.units)
  config = loop.TrainConfig(
      epochs=preset.maxout_epochs,
      learning_rate=recipe.learning_rate,
      lr_decay=recipe.lr_decay,
      momentum=recipe.momentum,
      momentum_epochs=recipe.momentum_epochs,
  )
  watch = watcher(data.train_full, preset, preset.maxout_eps)
  rows = []
  for method, objective in maxout_methods(preset).items():
    (result,) = fit(f"maxout-{method}", model, objective, config, None, {}, data, work, watch)
    rows.append(
        {
            "model": f"maxout {recipe.units}",
            "method": method,
            "eps": preset.maxout_eps,
            **watched(result),
            **score(model, result.params, data.test, preset.maxout_eps, preset, preset.restarts),
        }
    )
    print(f"  {row_text(rows[-1])}", flush=True)
  return rows


def step_study(preset: Preset, data: data_lib.MNIST, work: pathlib.Path) -> dict[str, Any]:
  """FGSM from a random start over step sizes at eps 0.3, one vmapped population, watched."""
  model = models.small_cnn()
  eps = preset.eps
  steps = len(data.train_full.y) // 100
  config = loop.TrainConfig(epochs=preset.epochs)
  tx = optax.adam(triangle(preset.epochs, steps, preset.learning_rate))
  objective = objectives.FGSMRandomStart(
      eps=eps, step=[round(m * eps, 6) for m in preset.study_steps], clip=BOX
  )
  schedule = {"adam_peak": preset.learning_rate, "schedule": "triangle 0.4", "steps": steps}
  results = fit(
      "cnn-fgsm-rs-steps",
      model,
      objective,
      config,
      tx,
      schedule,
      data,
      work,
      watcher(data.train_full, preset, eps),
      members=len(preset.study_steps),
  )
  members = []
  for multiple, result in zip(preset.study_steps, results):
    members.append(
        {
            "step_over_eps": multiple,
            "step": multiple * eps,
            **watched(result),
            **score(model, result.params, data.test, eps, preset, preset.study_restarts),
        }
    )
    print(
        f"  step {multiple:g} eps: collapse at epoch {members[-1]['collapse_epoch']}, "
        f"{row_text(members[-1])}",
        flush=True,
    )
  collapsed = [m["step_over_eps"] for m in members if m["collapse_epoch"] is not None]
  return {"eps": eps, "members": members, "collapse_from": min(collapsed, default=None)}


def row_text(row: dict[str, Any]) -> str:
  """One model's scores in a line."""
  return (
      f"{row.get('method', '')}: clean {numeric.percent(row['test_error'], 2)}, "
      f"FGSM {numeric.percent(row['fgsm_error'])}, PGD-{row['pgd_steps']} "
      f"{numeric.percent(row['pgd_error'])} "
      f"(+-{numeric.percent(row['pgd_error_se'])} on {row['pgd_examples']}), "
      f"train {row['train_seconds']:.0f} s"
  )


def study_figure(study: dict[str, Any]) -> Figure:
  """PGD accuracy against the FGSM step: at the end of training, and per epoch as watched."""
  figure = Figure(figsize=(10, 4))
  final, curves = figure.subplots(1, 2)
  members = study["members"]
  steps = [m["step_over_eps"] for m in members]
  final.plot(
      steps,
      [1 - m["pgd_error"] for m in members],
      "o-",
      label=f"PGD-{members[0]['pgd_steps']}, test subset",
  )
  final.plot(steps, [1 - m["fgsm_error"] for m in members], "s--", label="FGSM, test set")
  final.set_xlabel("FGSM step / eps (random start)")
  final.set_ylabel("accuracy")
  final.set_ylim(0, 1)
  final.set_title(f"eps {study['eps']:g}: the kept epoch")
  final.legend()
  for m in members:
    accuracy = m["watch_pgd_accuracy"]
    curves.plot(
        range(1, len(accuracy) + 1), accuracy, marker=".", label=f"{m['step_over_eps']:g} eps"
    )
  curves.set_xlabel("epoch")
  curves.set_ylabel("PGD-10 accuracy, watched training batch")
  curves.set_ylim(0, 1)
  curves.set_title("catastrophic overfitting, as watched")
  curves.legend(title="step", fontsize="small")
  return figure


def run(preset: Preset, data: data_lib.MNIST, out: pathlib.Path, args: Any) -> dict[str, Any]:
  """Trains and scores every model, then the study; returns the results (without ``config``)."""
  del args
  work = out / f"{NAME}_runs"
  models_ = train_cnns(preset, data, work) + train_maxouts(preset, data, work)
  study = step_study(preset, data, work)
  figure = files.save_figure(study_figure(study), out, f"{NAME}_study")
  return {
      "models": models_,
      "study": study,
      "figures": [figure],
      "field": FIELD,
      "config": {"clip": list(BOX)},
  }


def table(results: dict[str, Any]) -> str:
  """Every model's scores, a line each, above the (empty) table of the paper's rows."""
  lines = [f"{row['model']}, {row_text(row)}" for row in results["models"]]
  return "\n".join([*lines, runner.rows_table(results)])


EXPERIMENT = runner.Experiment(
    NAME,
    "Robust training beside the paper's objective: FGSM from a random start, N-FGSM, "
    "PGD and TRADES, scored with PGD-50 and watched for catastrophic overfitting.",
    PRESETS,
    run,
    table=table,
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the experiment; see `experiments.runner.main`."""
  return runner.main(EXPERIMENT, argv)


if __name__ == "__main__":
  main()
