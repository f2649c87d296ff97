"""The shallow RBF network under FGSM (row M8), and transfer from a maxout network (row T).

Row M8 (section 7): the RBF network of `advjax.models.rbf_network` (one
unit ``exp(q_k(x))`` per class, trained with Adam) is scored on the 10,000
test images under FGSM (eps 0.25, no clipping): its error, its mean
confidence on those mistakes, and its mean confidence on the clean test
examples (the largest ``exp(q_k)`` of each, averaged over all of them).

Row T (section 8): FGSM examples are made on the test set against the
maxout network of the shared runs, then classified by it, by the softmax
regression of M1 and by the RBF network. "A predicts B's class" means their
predicted classes (argmax) are equal. Read from the paper's wording:

- on the maxout's mistakes (the FGSM examples it misclassifies), how often
  softmax regression predicts the maxout's class (paper: 54.6%) and how often
  the RBF network does (16.0%);
- "where both models being compared make a mistake": on the examples that
  the maxout and the other model both misclassify, the same agreement (84.6%
  for softmax regression, 54.3% for the RBF network);
- "the RBF network can predict softmax regression's class 53.6% of the time",
  read by the same rule: on the examples (made on the maxout) that softmax
  regression and the RBF network both misclassify, how often the RBF network
  predicts softmax regression's class.

    python -m experiments.rbf_network                  # quick preset
    python -m experiments.rbf_network --preset paper
    python -m experiments.rbf_network --data-dir ../shared/data/mnist --out results

Writes ``OUT/rbf_network.json`` (layout in `experiments.shallow`).
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import numpy as np

from advjax import data as data_lib
from advjax import evaluation
from experiments import numeric
from experiments import runner
from experiments import shallow
from experiments import verdicts

MODEL = "RBF network"


def transfer_agreement(
    labels: np.ndarray, maxout: np.ndarray, softmax: np.ndarray, rbf: np.ndarray
) -> dict[str, float | None]:
  """Section 8's agreement numbers from the three models' predicted classes.

  Args:
    labels: the true classes of the examples.
    maxout: the maxout network's predictions on the FGSM examples made on it.
    softmax: softmax regression's predictions on the same examples.
    rbf: the RBF network's predictions on them.

  Returns:
    The error of each model on the examples (``maxout_error``,
    ``softmax_error``, ``rbf_error``) and the agreements of the module's
    docstring, each a fraction (None over an empty set):
    ``softmax_agrees_on_maxout_mistakes``, ``rbf_agrees_on_maxout_mistakes``,
    ``softmax_agrees_where_both_wrong``, ``rbf_agrees_where_both_wrong``,
    ``rbf_agrees_with_softmax_where_both_wrong``.

  Example:
    >>> transfer_agreement(np.array([0, 0]), np.array([1, 2]), np.array([1, 0]),
    ...                    np.array([3, 3]))["softmax_agrees_on_maxout_mistakes"]
    0.5
  """
  maxout_wrong, softmax_wrong, rbf_wrong = (p != labels for p in (maxout, softmax, rbf))
  return {
      "maxout_error": numeric.fraction(maxout_wrong),
      "softmax_error": numeric.fraction(softmax_wrong),
      "rbf_error": numeric.fraction(rbf_wrong),
      "softmax_agrees_on_maxout_mistakes": numeric.fraction(softmax == maxout, maxout_wrong),
      "rbf_agrees_on_maxout_mistakes": numeric.fraction(rbf == maxout, maxout_wrong),
      "softmax_agrees_where_both_wrong": numeric.fraction(
          softmax == maxout, maxout_wrong & softmax_wrong
      ),
      "rbf_agrees_where_both_wrong": numeric.fraction(rbf == maxout, maxout_wrong & rbf_wrong),
      "rbf_agrees_with_softmax_where_both_wrong": numeric.fraction(
          rbf == softmax, softmax_wrong & rbf_wrong
      ),
  }


def measure(
    preset: shallow.Preset, data: data_lib.MNIST, seed: int, work: pathlib.Path
) -> shallow.Measured:
  """The RBF network's scores and the transfer agreements, for one seed.

  Args:
    preset: the settings.
    data: MNIST.
    seed: the training seed of all three models.
    work: the folder of the cached runs.

  Returns:
    The numbers (``test_error``, ``clean_confidence``, ``fgsm_error``,
    ``fgsm_confidence``, ``transfer``) and the RBF network's sweep.
  """
  test = data.test
  rbf = shallow.rbf_network(preset, data, seed, work)
  softmax = shallow.softmax_regression(preset, data, seed, work)
  maxout = shallow.maxout(preset, data, seed, work)
  scores = evaluation.evaluate(rbf.model, rbf.params, test, eps=preset.eps)
  clean_probs = evaluation.probabilities(rbf.model, rbf.params, test.x)
  x_adv = evaluation.fgsm_examples(maxout.model, maxout.params, test.x, test.y, preset.eps)
  numbers = {
      "test_error": scores["error"],
      "clean_confidence": float(np.mean(np.max(clean_probs, axis=-1))),
      "fgsm_error": scores["fgsm_error"],
      "fgsm_confidence": numeric.number(scores["fgsm_confidence"]),
      "transfer": transfer_agreement(
          test.y, *(shallow.predictions(m, x_adv) for m in (maxout, softmax, rbf))
      ),
  }
  return shallow.Measured(numbers, {MODEL: shallow.sweep(rbf, test, preset.eps)})


def _compare(other: float | None, above: bool) -> Callable[[float], bool]:
  """A claim that the measured value lies above (or below) ``other``; False if unmeasured."""
  return lambda value: other is not None and (value > other if above else value < other)


def rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
  """Rows M8 and T."""
  transfer = measured["transfer"]
  softmax_mistakes = transfer["softmax_agrees_on_maxout_mistakes"]
  rbf_mistakes = transfer["rbf_agrees_on_maxout_mistakes"]
  softmax_both = transfer["softmax_agrees_where_both_wrong"]
  rbf_both = transfer["rbf_agrees_where_both_wrong"]
  mistakes_confidence = measured["fgsm_confidence"]
  less_linear = "claim: the RBF network follows the maxout less than softmax regression"
  return [
      verdicts.row(
          "M8.fgsm_error",
          measured["fgsm_error"],
          0.1,
          lambda error: error < 0.9,
          "claim: fooled clearly less often than the linear models' ~99%",
      ),
      verdicts.row(
          "M8.fgsm_confidence",
          mistakes_confidence,
          0.02,
          lambda confidence: confidence <= 0.1,
          "claim: fooled only with low confidence (at most 10%)",
      ),
      verdicts.row(
          "M8.clean_confidence",
          measured["clean_confidence"],
          0.1,
          lambda c: mistakes_confidence is not None and c > 5 * mistakes_confidence,
          "claim: far more confident on clean inputs than on its FGSM "
          "mistakes (5 times at least)",
      ),
      verdicts.row(
          "T.softmax_on_maxout_mistakes",
          softmax_mistakes,
          0.1,
          _compare(rbf_mistakes, True),
          less_linear,
      ),
      verdicts.row(
          "T.rbf_on_maxout_mistakes",
          rbf_mistakes,
          0.1,
          _compare(softmax_mistakes, False),
          less_linear,
      ),
      verdicts.row(
          "T.softmax_where_both_wrong", softmax_both, 0.1, _compare(rbf_both, True), less_linear
      ),
      verdicts.row(
          "T.rbf_where_both_wrong", rbf_both, 0.1, _compare(softmax_both, False), less_linear
      ),
      verdicts.row(
          "T.rbf_with_softmax",
          transfer["rbf_agrees_with_softmax_where_both_wrong"],
          0.1,
          lambda agreement: agreement > 2 / 9,
          "claim: the RBF network has a strong linear component (agreement "
          "above twice the 1/9 of unrelated wrong guesses)",
      ),
  ]


EXPERIMENT = shallow.experiment(
    "rbf_network",
    "The shallow RBF network on MNIST under FGSM (row M8), and the transfer of FGSM "
    "examples from a maxout network to it and to softmax regression (row T).",
    measure,
    rows,
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the experiment; see `experiments.runner.main`."""
  return runner.main(EXPERIMENT, argv)


if __name__ == "__main__":
  main()
