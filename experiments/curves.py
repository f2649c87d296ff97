"""Error against eps: the grid every curve shares, the sweep that measures one, and its JSON.

A results file's ``sweep`` is one `sweep_entry` dictionary (``{"eps",
"error", "confidence"}`` lists), or a mapping from a model's label to one;
``experiments.epsilon_sweep`` draws them all on one plot.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

import advjax
from advjax import models
from experiments import numeric

__all__ = ["SWEEP_EPS", "sweep_grid", "sweep_entry", "at_eps", "mean_sweep", "sweep"]

SWEEP_EPS = tuple(round(0.025 * i, 3) for i in range(21))
"""The eps grid of every error-against-eps curve: steps of 0.025 up to 0.5."""


def sweep_grid(eps: float) -> tuple[float, ...]:
  """`SWEEP_EPS` with the run's own ``eps`` on it, so that the curve passes through it."""
  return tuple(sorted(set(SWEEP_EPS) | {float(eps)}))


def sweep_entry(result: Any) -> dict[str, list[Any]]:
  """An `advjax.SweepResult` as JSON: ``{"eps", "error", "confidence"}`` lists.

  A results file's ``sweep`` is one such dictionary, or a mapping from a
  model's label to one; ``experiments.epsilon_sweep`` draws them all.
  """
  # float32 epsilons, rounded back to the decimals they were given as.
  return {
      "eps": [round(float(e), 7) for e in result.eps],
      "error": [float(e) for e in result.error],
      "confidence": [numeric.number(float(c)) for c in result.confidence],
  }


def at_eps(sweep: dict[str, list[Any]], eps: float) -> tuple[float, float | None]:
  """``(error, confidence)`` of a `sweep_entry` at the grid value ``eps``."""
  grid = [float(e) for e in sweep["eps"]]
  index = min(range(len(grid)), key=lambda i: abs(grid[i] - eps))
  if not math.isclose(grid[index], eps, rel_tol=1e-6, abs_tol=1e-9):
    raise ValueError(f"eps {eps} is not on the sweep's grid {grid}.")
  return sweep["error"][index], sweep["confidence"][index]


def mean_sweep(entries: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
  """The mean of `sweep_entry` dictionaries of one grid (over seeds or members)."""
  return {
      "eps": entries[0]["eps"],
      **{
          key: [numeric.mean(values) for values in zip(*(e[key] for e in entries))]
          for key in ("error", "confidence")
      },
  }


def sweep(
    model: models.Classifier,
    params: Any,
    split: Any,
    eps_values: Sequence[float],
    *,
    probs_fn: Any = None,
    batch_size: int = 500,
) -> dict[str, list[Any]]:
  """FGSM error and confidence on the mistakes of ``model`` at each eps, as a `sweep_entry`.

  One `advjax.epsilon_sweep` over the split: the input gradient once per
  batch. Labels of +-1 (logistic regression) are scored as the classes 0/1
  of its probabilities and handed to the loss as +-1.

  Args:
    model: the classifier.
    params: its parameters.
    split: the examples (``x``, ``y``), usually the test set.
    eps_values: the epsilons, e.g. ``sweep_grid(0.25)``.
    probs_fn: the probabilities, or a `advjax.LinearFirst` split of them (the
      fast path of `advjax.models.maxout_linear_first`); None for
      ``model.probabilities``.
    batch_size: examples per batch.

  Returns:
    ``{"eps", "error", "confidence"}`` lists; a confidence is None where
    there is no mistake.

  Example:
    >>> sweep(model, params, data.test, sweep_grid(0.25))["error"][10]   # FGSM error at 0.25
  """
  labels = np.asarray(split.y)
  loss_fn = model.loss_fn()
  if labels.dtype.kind == "f":
    labels = (labels > 0).astype(np.int32)
    loss_fn = lambda params, x, y: model.loss(params, x, 2.0 * y - 1.0)
  result = advjax.epsilon_sweep(
      loss_fn,
      model.probabilities if probs_fn is None else probs_fn,
      params,
      split.x,
      labels,
      np.asarray(eps_values, np.float32),
      batch_size=batch_size,
  )
  return sweep_entry(result)
