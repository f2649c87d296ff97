"""Shallow softmax regression under FGSM: row M1 of the paper (section 4).

Trains softmax regression on MNIST (or restores it from
``OUT/shallow_runs``) and scores it on the 10,000 test images: clean error,
error under FGSM (the preset's eps, 0.25; no clipping) and mean confidence on those
mistakes, and the FGSM error against eps.

    python -m experiments.softmax_regression                  # quick preset, ~30 s
    python -m experiments.softmax_regression --preset paper   # early stopping
    python -m experiments.softmax_regression --data-dir ../shared/data/mnist --out results

Writes ``OUT/softmax_regression.json`` (layout in `experiments.shallow`).
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

from advjax import data as data_lib
from advjax import evaluation
from experiments import numeric
from experiments import runner
from experiments import shallow
from experiments import verdicts

MODEL = "softmax regression"


def measure(
    preset: shallow.Preset, data: data_lib.MNIST, seed: int, work: pathlib.Path
) -> shallow.Measured:
  """Clean and FGSM scores of one seed's softmax regression on the test set.

  Args:
    preset: the settings.
    data: MNIST.
    seed: the training seed.
    work: the folder of the cached runs.

  Returns:
    ``test_error``, ``test_confidence``, ``fgsm_error``, ``fgsm_confidence``
    and the sweep.
  """
  softmax = shallow.softmax_regression(preset, data, seed, work)
  scores = evaluation.evaluate(softmax.model, softmax.params, data.test, eps=preset.eps)
  numbers = {
      "test_error": scores["error"],
      "test_confidence": scores["confidence"],
      "fgsm_error": scores["fgsm_error"],
      "fgsm_confidence": scores["fgsm_confidence"],
  }
  return shallow.Measured(
      {k: numeric.number(v) for k, v in numbers.items()},
      {MODEL: shallow.sweep(softmax, data.test, preset.eps)},
  )


def rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
  """Row M1: the FGSM error and the confidence on its mistakes."""
  return [
      verdicts.row(
          "M1.fgsm_error",
          measured["fgsm_error"],
          0.05,
          lambda error: error >= 0.5,
          "claim: a linear model is fooled on most inputs",
      ),
      verdicts.row(
          "M1.fgsm_confidence",
          measured["fgsm_confidence"],
          0.1,
          lambda confidence: confidence > 0.5,
          "claim: it is fooled with high confidence (over 50%)",
      ),
  ]


EXPERIMENT = shallow.experiment(
    "softmax_regression",
    "Shallow softmax regression on MNIST under FGSM (row M1 of the paper).",
    measure,
    rows,
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the experiment; see `experiments.runner.main`."""
  return runner.main(EXPERIMENT, argv)


if __name__ == "__main__":
  main()
