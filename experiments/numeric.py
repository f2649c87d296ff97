"""Numbers as the results files hold them: JSON floats, means over seeds, percentages."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["number", "mean", "percent", "fraction", "mean_over_seeds"]


def number(value: float | None) -> float | None:
  """A float for JSON: NaN (a confidence with no mistake to average) becomes None."""
  if value is None or math.isnan(value):
    return None
  return float(value)


def mean(values: Sequence[float | None]) -> float | None:
  """Mean over the values that are not None; None when there is none."""
  kept = [v for v in values if v is not None]
  return sum(kept) / len(kept) if kept else None


def percent(value: float | None, digits: int = 1) -> str:
  """A fraction as a percentage for tables; ``-`` for None."""
  return "-" if value is None else f"{100 * value:.{digits}f}%"


def fraction(mask: np.ndarray, within: np.ndarray | None = None) -> float | None:
  """The fraction of ``within`` (everything when None) where ``mask`` holds; None if empty.

  Example:
    >>> fraction(np.array([True, False, True]), np.array([True, True, False]))
    0.5
  """
  if within is not None:
    mask = mask[within]
  return float(np.mean(mask)) if mask.size else None


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
    return mean(values)
  return first
