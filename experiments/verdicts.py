"""The verdict on a number of the paper: our figure beside it, judged by one rule.

Every experiment that measures a number of the paper's table
(`experiments.paper.FIGURES`) gives it as a `row`: reproduced within a
tolerance of the paper's value; else "same direction" when the paper's
qualitative claim holds for ours; else, or when the model did not learn its
task, "not reproduced". ``python -m experiments.report`` gathers the rows.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

from experiments import numeric
from experiments import paper

__all__ = [
    "Verdict",
    "VERDICTS",
    "LEARNT_ERROR",
    "paper_row",
    "judge",
    "row",
    "learnt",
    "comparable",
]

Verdict = Literal["reproduced", "same direction", "not reproduced", "out of scope"]


VERDICTS = ("reproduced", "same direction", "not reproduced", "out of scope")


LEARNT_ERROR = 0.10


def paper_row(
    figure: paper.Figure, measured: float | None, verdict: Verdict, note: str = ""
) -> dict[str, Any]:
  """One number of the paper's table beside ours, for the report.

  Args:
    figure: the paper's number (`experiments.paper.FIGURES`).
    measured: our figure as a fraction (None when not measured).
    verdict: one of `VERDICTS`.
    note: why the verdict, when it is not plain.

  Returns:
    A JSON-ready dictionary.
  """
  if verdict not in VERDICTS:
    raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}.")
  return {
      "id": figure.row,
      "metric": figure.metric,
      "paper": figure.printed,
      "measured": numeric.number(measured),
      "verdict": verdict,
      "note": note,
  }


def judge(
    measured: float | None,
    paper_value: float,
    tolerance: float,
    same_direction: bool,
    *,
    trained: bool = True,
) -> Verdict:
  """The verdict on one number: within ``tolerance`` of the paper, else its direction.

  Args:
    measured: our figure (a fraction), or None when it could not be measured.
    paper_value: the paper's figure, in the same unit.
    tolerance: the largest absolute difference that still counts as reproduced.
    same_direction: whether ours shows the paper's effect, if not its size.
    trained: whether the model learnt its task at all; an untrained model is
      fooled by anything, which says nothing of the paper's claim.

  Returns:
    ``"reproduced"``, ``"same direction"`` or ``"not reproduced"``.

  Example:
    >>> judge(0.87, 0.894, 0.10, True)
    'reproduced'
  """
  if measured is None or not trained:
    return "not reproduced"
  if abs(measured - paper_value) <= tolerance:
    return "reproduced"
  return "same direction" if same_direction else "not reproduced"


def row(
    key: str,
    measured: float | None,
    tolerance: float,
    claim: bool | Callable[[float], bool],
    note: str = "",
    *,
    trained: bool = True,
) -> dict[str, Any]:
  """The `paper_row` of ``paper.FIGURES[key]``, judged by `judge`.

  Args:
    key: the paper's number, e.g. ``"M3.fgsm_error"``.
    measured: ours, a fraction or None (unmeasured: "not reproduced").
    tolerance: the largest absolute difference that counts as reproduced.
    claim: whether ours shows the paper's qualitative claim, or the claim as
      ``measured -> bool`` (asked only of a measured value).
    note: the claim in words, and what else the reader needs.
    trained: whether the model learnt its task (see `judge`).

  Returns:
    A row for a results file's ``rows``.

  Example:
    >>> row("M1.fgsm_error", 0.6, 0.05, lambda error: error > 0.5)["verdict"]
    'same direction'
  """
  figure = paper.FIGURES[key]
  if callable(claim):
    claim = measured is not None and claim(measured)
  verdict = judge(measured, figure.value, tolerance, claim, trained=trained)
  return paper_row(
      figure, measured, verdict, f"within {100 * tolerance:g} points counts as reproduced; {note}"
  )


def learnt(test_error: float | None) -> bool:
  """Whether an MNIST classifier learnt its task: clean test error at most 10%."""
  return test_error is not None and test_error <= LEARNT_ERROR


def comparable(dataset: str) -> bool:
  """Whether a run on ``dataset`` stands beside the paper's numbers (MNIST only)."""
  return dataset == paper.DATASET
