"""How the training eps and alpha shape a maxout: two studies, each one vmapped program.

Beyond the paper, which fixes eps = 0.25 and alpha = 0.5 for its adversarial
training without a study. Two groups of maxout networks train on eq. (6):

- the eps group: training eps in {0, 0.05, ..., 0.3} at alpha 0.5;
- the alpha group: alpha in {0, 0.25, 0.5, 0.75, 1} at eps 0.25.

Every member of a group has the same seed and differs only in its setting;
a group trains as one population of `advjax.loop.fit_members`, the members'
eps and alpha being arrays of the one compiled program (`advjax.train.
split_objective`). Each member is then scored on the test set: clean error,
FGSM error at its own training eps and at the preset's attack eps (0.25),
and PGD error at that eps as `experiments.maxout.audit` runs it (random
start, 40 steps, best of 3 restarts, clipped to [0, 1]), and AutoAttack
standard at eps 0.1, 0.25 and 0.3 on the first 1,000 test images.

    python -m experiments.training_study --data-dir ../shared/data/mnist   # 41 min, 2 cores
                                                                            # before AutoAttack

Writes ``OUT/training_study.json`` (``groups``: per group its settings and
one score row per member), ``OUT/figures/training_study.png``, and the
members' checkpoints under ``OUT/training_study_runs``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Sequence

import jax
from matplotlib.figure import Figure

import advjax
from advjax import data as data_lib
from advjax import evaluation
from advjax import models
from advjax import objectives
from experiments import files
from experiments import maxout
from experiments import numeric
from experiments import robustness
from experiments import runner
from experiments import training

NAME = "training_study"
SCORES = ("test_error", "fgsm_error_own_eps", "fgsm_error", "pgd_error")


@dataclasses.dataclass(frozen=True)
class Preset:
  """The two groups, and how their members train.

  Attributes:
    training: the members' maxout and optimizer (`experiments.maxout.Preset`);
      its ``eps`` is the attack eps of the scores and the alpha group's
      training eps, its ``alpha`` the eps group's alpha.
    eps_values: the eps group's training eps, one member each.
    alpha_values: the alpha group's alpha, one member each.
    seed: the seed every member shares.
    eps: the attack eps (and the alpha group's training eps).
    alpha: the eps group's alpha.
    seeds: always 1: the members of a group differ in their setting only.
    autoattack_subset: test images AutoAttack attacks every member on (the
      first ones; 0 skips it).
    autoattack_eps: its radii: 0.1, the paper's 0.25 and MNIST's 0.3.
    autoattack: its budget.
  """

  training: maxout.Preset
  eps_values: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
  alpha_values: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
  seed: int = 0
  eps: float = 0.25
  alpha: float = 0.5
  seeds: int = 1
  autoattack_subset: int = 1000
  autoattack_eps: tuple[float, ...] = (0.1, 0.25, 0.3)
  autoattack: robustness.Budget = robustness.Budget()

  def groups(self) -> dict[str, objectives.Adversarial]:
    """Each group's objective, its settings one per member."""
    return {
        "eps": objectives.Adversarial(eps=list(self.eps_values), alpha=self.alpha),
        "alpha": objectives.Adversarial(eps=self.eps, alpha=list(self.alpha_values)),
    }


PRESETS = {
    # For 2 CPU cores, both groups (12 members): 41 minutes measured (2 Intel
    # Xeon cores; training 17 + 12, PGD scoring most of the rest). The
    # paper's 240 x 5 maxout, 12 epochs on all 60,000 images, momentum 0.7
    # from the start and a learning rate decayed from 0.1 by 1.0002 per update
    # (0.024 at the end); not tuned. Width matters here: at 120 units and 20
    # epochs the members trained at eps >= 0.2 never left the plateau of the
    # tiny initialisation (loss ln 10 throughout, chance-level predictions),
    # where eps <= 0.15 left it within 2 epochs; at 240 units, eps 0.2 leaves
    # it after about 600 updates.
    "quick": Preset(
        maxout.Preset(
            units=240,
            epochs=12,
            seeds=1,
            patience=None,
            retrain=True,
            lr_decay=1.0002,
            momentum=(0.7, 0.7),
        )
    ),
    # The paper's 240-unit maxout and protocol for every member: the recipe's
    # optimizer, early stopping on the clean validation error (patience 100),
    # retraining on all 60,000 for each member's chosen count. A GPU job.
    "paper": Preset(maxout.PRESETS["paper240"]),
    # Seconds, for the tests.
    "tiny": Preset(
        maxout.Preset(units=8, epochs=1, seeds=1, patience=None, retrain=True),
        eps_values=(0.0, 0.3),
        alpha_values=(0.5, 1.0),
        autoattack_subset=8,
        autoattack=robustness.TOKEN,
    ),
}


def train_group(
    name: str,
    objective: objectives.Adversarial,
    members: int,
    preset: Preset,
    data: data_lib.MNIST,
    work: pathlib.Path,
) -> list[training.Trained]:
  """Trains one group's members as one population; one `training.Trained` per member."""
  seeds = (preset.seed,) * members
  return maxout.train(f"{name}-group", objective, "error", preset.training, data, work, seeds=seeds)


def score_group(
    model: models.Classifier,
    trained: list[training.Trained],
    own_eps: Sequence[float],
    preset: Preset,
    test: Any,
) -> list[dict[str, Any]]:
  """Every member's clean, FGSM (own eps and the attack eps) and PGD test errors, and AutoAttack.

  AutoAttack runs member by member: one compiled program serves them all.
  """
  stacked = advjax.stack([t.params for t in trained])
  test = evaluation.device_split(test)
  at_own = evaluation.evaluate_members(model, stacked, test, eps=list(own_eps))
  at_attack = evaluation.evaluate_members(model, stacked, test, eps=preset.eps)
  rows = []
  for m, member in enumerate(trained):
    rows.append(
        {
            "test_error": float(at_attack["error"][m]),
            "fgsm_error_own_eps": float(at_own["fgsm_error"][m]),
            "fgsm_error": float(at_attack["fgsm_error"][m]),
            "pgd_error": maxout.pgd_error(
                model, member.params, test, preset.eps, jax.random.key(m)
            ),
            **robustness.preset_autoattack(
                model.scores, member.params, test, preset, jax.random.key(preset.seed)
            ),
            **member.summary,
            "train_loss": [row["loss"] for row in member.history],
        }
    )
  return rows


def draw(groups: dict[str, dict[str, Any]], eps: float) -> Figure:
  """Each score against the training eps (left) and against alpha (right)."""
  labels = {
      "test_error": "clean test error",
      "fgsm_error_own_eps": "FGSM error at the training eps",
      "fgsm_error": f"FGSM error at eps {eps:g}",
      "pgd_error": f"PGD error at eps {eps:g}",
  }
  figure = Figure(figsize=(11, 4), layout="constrained")
  for axes, (name, group) in zip(figure.subplots(1, 2), groups.items()):
    for key, label in labels.items():
      if name == "alpha" and key == "fgsm_error_own_eps":
        continue  # the same eps for every member: the next line
      axes.plot(
          group["values"], [100 * row[key] for row in group["members"]], marker="o", label=label
      )
    axes.set_xlabel(
        "training eps (alpha 0.5)" if name == "eps" else f"alpha (training eps {eps:g})"
    )
    axes.set_ylabel("test error (%)")
    axes.set_yscale("log")
    axes.legend(fontsize=8)
  figure.suptitle("Adversarially trained maxouts across training settings (test set)")
  return figure


def run(preset: Preset, data: data_lib.MNIST, out: pathlib.Path, args: Any) -> dict[str, Any]:
  """Trains and scores both groups; returns the results (without ``config``)."""
  del args
  model = models.maxout_mlp(units=preset.training.units)
  training_ = dataclasses.replace(preset.training, eps=preset.eps, alpha=preset.alpha)
  preset = dataclasses.replace(preset, training=training_)
  groups = {}
  for name, objective in preset.groups().items():
    values = preset.eps_values if name == "eps" else preset.alpha_values
    print(f"{name} group: {len(values)} members, {name} in {list(values)}", flush=True)
    trained = train_group(name, objective, len(values), preset, data, out / f"{NAME}_runs")
    own_eps = values if name == "eps" else [preset.eps] * len(values)
    groups[name] = {
        "values": list(values),
        "members": score_group(model, trained, own_eps, preset, data.test),
    }
    for value, row in zip(values, groups[name]["members"]):
      print(
          f"  {name} {value:g}: "
          + ", ".join(f"{key} {numeric.percent(row[key], 2)}" for key in SCORES)
          + robustness.accuracy_text(row.get("autoattack")),
          flush=True,
      )
  return {
      "groups": groups,
      "figures": {
          "scores against the training eps and alpha": files.save_figure(
              draw(groups, preset.eps), out, NAME
          )
      },
  }


EXPERIMENT = runner.Experiment(
    NAME,
    "Maxouts adversarially trained across eps and alpha, each study one vmapped program "
    "(beyond the paper).",
    PRESETS,
    run,
    alpha=True,
    prepare=runner.one_seed(f"experiments.{NAME}", "the members of a group share one seed"),
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs both studies; see `experiments.runner.main`."""
  return runner.main(EXPERIMENT, argv)


if __name__ == "__main__":
  main()
