"""Rubbish-class examples: N(0, I) inputs that belong to no class (row R, section 9).

Draws 10,000 samples of ``N(0, I_784)`` (`advjax.rubbish_inputs`) and counts,
for each model, the fraction to which it gives some class a probability
above 0.5 (`advjax.rubbish_error_and_confidence`), the mean of that top
probability over them, and which classes these false positives go to:

- the maxout network of the shared runs, softmax outputs (paper: 98.35%
  error, confidence 92.8%; 45.3% of the false positives are 5s, none 8s);
- the same network with one sigmoid per class (68%, 87.9%);
- the softmax regression of M1 (59.8%, 70.8%);
- the RBF network of M8 (0%).

The histogram of the false positives' classes goes to
``OUT/figures/rubbish.png``; the sweep is the sigmoid maxout's FGSM error
against eps, the one model first trained here.

    python -m experiments.rubbish                  # quick preset
    python -m experiments.rubbish --preset paper
    python -m experiments.rubbish --data-dir ../shared/data/mnist --out results

Writes ``OUT/rubbish.json`` (layout in `experiments.shallow`).
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import jax
from matplotlib.figure import Figure
import numpy as np

import advjax
from advjax import data as data_lib
from advjax import evaluation
from experiments import numeric
from experiments import runner
from experiments import shallow
from experiments import training
from experiments import verdicts

THRESHOLD = 0.5
# The samples' key is folded away from the training seed's stream.
SAMPLES_STREAM = 9
CLASSES = 10
LABELS = {
    "maxout_softmax": "maxout, softmax",
    "maxout_sigmoid": "maxout, sigmoids",
    "softmax_regression": "softmax regression",
    "rbf_network": "RBF network",
}


def rubbish_scores(trained: training.Trained, x: np.ndarray) -> dict[str, Any]:
  """A model's error, confidence and false-positive classes on rubbish inputs.

  Args:
    trained: the model.
    x: inputs of no class.

  Returns:
    ``error`` (fraction of inputs with a class above 0.5), ``confidence``
    (the mean top probability over those, None without any) and
    ``false_positive_classes``: for each class, the fraction of those inputs
    it is the top class of (all None without any).
  """
  probs = np.asarray(evaluation.probabilities(trained.model, trained.params, x))
  error, confidence = advjax.rubbish_error_and_confidence(probs, THRESHOLD)
  claimed = np.max(probs, axis=-1) > THRESHOLD
  counts = np.bincount(np.argmax(probs[claimed], axis=-1), minlength=CLASSES)
  shares = counts / claimed.sum() if claimed.any() else [None] * CLASSES
  return {
      "error": float(error),
      "confidence": numeric.number(confidence),
      "false_positive_classes": [numeric.number(s) for s in shares],
  }


def measure(
    preset: shallow.Preset, data: data_lib.MNIST, seed: int, work: pathlib.Path
) -> shallow.Measured:
  """Every model's scores on one seed's rubbish inputs.

  Args:
    preset: the settings (``rubbish_samples`` inputs).
    data: MNIST, to train the models and for the sweep.
    seed: the training seed, and the samples' seed.
    work: the folder of the cached runs.

  Returns:
    ``{model: rubbish_scores(...)}`` for the models of `LABELS`, and the
    sigmoid maxout's sweep.
  """
  trained = {
      "maxout_softmax": shallow.maxout(preset, data, seed, work),
      "maxout_sigmoid": shallow.maxout(preset, data, seed, work, output="sigmoid"),
      "softmax_regression": shallow.softmax_regression(preset, data, seed, work),
      "rbf_network": shallow.rbf_network(preset, data, seed, work),
  }
  key = jax.random.fold_in(jax.random.key(seed), SAMPLES_STREAM)
  x = np.asarray(advjax.rubbish_inputs(key, preset.rubbish_samples))
  numbers = {name: rubbish_scores(model, x) for name, model in trained.items()}
  numbers["samples"] = preset.rubbish_samples
  sigmoid = trained["maxout_sigmoid"]
  return shallow.Measured(
      numbers, {"maxout (sigmoid outputs)": shallow.sweep(sigmoid, data.test, preset.eps)}
  )


def draw(inputs: None, measured: dict[str, Any], preset: shallow.Preset) -> Figure:
  """Bars: which classes each model's false positives go to."""
  del inputs, preset
  figure = Figure(figsize=(8, 3.6))
  ax = figure.subplots()
  width = 0.8 / len(LABELS)
  for i, (name, label) in enumerate(LABELS.items()):
    scores = measured[name]
    shares = [share or 0.0 for share in scores["false_positive_classes"]]
    ax.bar(
        np.arange(CLASSES) + (i - (len(LABELS) - 1) / 2) * width,
        shares,
        width,
        label=f"{label}: {numeric.percent(scores['error'])} of rubbish claimed",
    )
  ax.set_xticks(range(CLASSES))
  ax.set_xlabel("class given probability above 0.5")
  ax.set_ylabel("share of the false positives")
  ax.set_title(
      f"{measured['samples']:,} samples of N(0, I): classes of the false " "positives", fontsize=10
  )
  ax.legend(fontsize=8)
  return figure


def _claim_on_classes(
    shares: list[float | None], pick: Callable[[np.ndarray], int], cls: int
) -> Callable[[float], bool]:
  """A claim that class ``cls`` is the one ``pick`` (argmax or argmin) selects."""
  return lambda value: pick(np.array([s or 0.0 for s in shares])) == cls


def rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
  """Row R."""
  softmax_net, sigmoid_net = measured["maxout_softmax"], measured["maxout_sigmoid"]
  regression, rbf = measured["softmax_regression"], measured["rbf_network"]
  shares = softmax_net["false_positive_classes"]
  high = "claim: confidently wrong (above 50%)"
  others = [m["error"] for m in (softmax_net, sigmoid_net, regression)]
  return [
      verdicts.row(
          "R.maxout_softmax.error",
          softmax_net["error"],
          0.05,
          lambda error: error >= 0.5,
          "claim: most rubbish is given a class",
      ),
      verdicts.row(
          "R.maxout_softmax.confidence", softmax_net["confidence"], 0.1, lambda c: c > 0.5, high
      ),
      verdicts.row(
          "R.maxout_softmax.fives",
          shares[5],
          0.1,
          _claim_on_classes(shares, np.argmax, 5),
          "claim: 5 is the most common class",
      ),
      verdicts.row(
          "R.maxout_softmax.eights",
          shares[8],
          0.01,
          _claim_on_classes(shares, np.argmin, 8),
          "claim: 8 is the rarest class",
      ),
      verdicts.row(
          "R.maxout_sigmoid.error",
          sigmoid_net["error"],
          0.1,
          lambda error: error < softmax_net["error"],
          "claim: below the softmax maxout's error",
      ),
      verdicts.row(
          "R.maxout_sigmoid.confidence", sigmoid_net["confidence"], 0.1, lambda c: c > 0.5, high
      ),
      verdicts.row(
          "R.softmax_regression.error",
          regression["error"],
          0.1,
          lambda error: error > 0.25,
          "claim: a linear model gives rubbish a class often (over 25%)",
      ),
      verdicts.row(
          "R.softmax_regression.confidence", regression["confidence"], 0.1, lambda c: c > 0.5, high
      ),
      verdicts.row(
          "R.rbf.error",
          rbf["error"],
          0.05,
          lambda error: error < min(others),
          "claim: the RBF network claims less rubbish than every other model",
      ),
  ]


EXPERIMENT = shallow.experiment(
    "rubbish",
    "Rubbish-class inputs N(0, I): how often maxout (softmax and sigmoid outputs), "
    "softmax regression and the RBF network give them a class (row R).",
    measure,
    rows,
    draw,
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the experiment; see `experiments.runner.main`."""
  return runner.main(EXPERIMENT, argv)


if __name__ == "__main__":
  main()
