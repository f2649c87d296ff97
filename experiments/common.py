"""What every experiment script shares: its command line, data, output and paper rows.

An experiment is a thin script: it parses `parser`'s flags, loads MNIST with
`load_data`, trains through `advjax.train`, and hands a results dictionary to
`write_results`. Each results file carries ``rows``: one `paper_row` per
number of ../shared/PAPER.md's table that it measures, which
``python -m experiments.report`` gathers into REPORT.md.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from typing import Any, Iterable, Literal, Sequence

from advjax import data as data_lib

Verdict = Literal["reproduced", "same direction", "not reproduced", "out of scope"]
VERDICTS = ("reproduced", "same direction", "not reproduced", "out of scope")

# An MNIST model with a larger clean test error has not learnt its task.
LEARNT_ERROR = 0.10


def parser(prog: str, description: str, presets: Iterable[str]) -> argparse.ArgumentParser:
  """The flags every experiment takes: --preset, --seeds, --data-dir, --out.

  Args:
    prog: the module, e.g. ``"experiments.softmax_regression"``.
    description: one sentence on what the experiment measures.
    presets: the preset names; the first is the default.

  Returns:
    An ``argparse.ArgumentParser`` to which the script may add its own flags.
  """
  presets = list(presets)
  result = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
  result.add_argument("--preset", choices=presets, default=presets[0],
                      help=f"settings to run (default: {presets[0]})")
  result.add_argument("--seeds", type=int, help="number of seeds, 0..N-1")
  result.add_argument("--data-dir", help="folder of the four MNIST IDX files "
                      "(default: $ADVJAX_DATA_DIR, else tensorflow-datasets)")
  result.add_argument("--out", default="results", type=pathlib.Path,
                      help="output folder for the results JSON (default: results)")
  return result


def fail(prog: str, message: Any) -> None:
  """Exits with status 1 and one line naming the experiment and what went wrong."""
  sys.exit(f"{prog}: error: {message}")


def load_data(prog: str, data_dir: str | None) -> data_lib.MNIST:
  """MNIST from ``data_dir`` (or its fallbacks), or a one-line error and exit 1."""
  try:
    return data_lib.load_mnist(data_dir)
  except data_lib.DataError as error:
    fail(prog, error)


def positive(prog: str, name: str, value: int | None) -> int | None:
  """Checks an optional count flag (``--seeds``, ``--epochs``...) is >= 1."""
  if value is not None and value < 1:
    fail(prog, f"--{name} must be >= 1, got {value}")
  return value


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


def paper_row(row_id: str, metric: str, paper: str, measured: float | None,
              verdict: Verdict, note: str = "") -> dict[str, Any]:
  """One number of PAPER.md's table beside ours, for REPORT.md.

  Args:
    row_id: the row of PAPER.md's table, e.g. ``"M1"``.
    metric: what is measured, e.g. ``"FGSM error"``.
    paper: the paper's figure as the paper states it, e.g. ``"99.9%"``.
    measured: our figure as a fraction (None when not measured).
    verdict: one of `VERDICTS`.
    note: why the verdict, when it is not plain.

  Returns:
    A JSON-ready dictionary.
  """
  if verdict not in VERDICTS:
    raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}.")
  return {"id": row_id, "metric": metric, "paper": paper,
          "measured": number(measured), "verdict": verdict, "note": note}


def judge(measured: float | None, paper: float, tolerance: float,
          same_direction: bool, *, trained: bool = True) -> Verdict:
  """The verdict on one number: within ``tolerance`` of the paper, else its direction.

  Args:
    measured: our figure (a fraction), or None when it could not be measured.
    paper: the paper's figure, in the same unit.
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
  if abs(measured - paper) <= tolerance:
    return "reproduced"
  return "same direction" if same_direction else "not reproduced"


def learnt(test_error: float | None) -> bool:
  """Whether an MNIST classifier learnt its task: clean test error at most 10%."""
  return test_error is not None and test_error <= LEARNT_ERROR


def format_rows(rows: list[dict[str, Any]], title: str) -> str:
  """An experiment's `paper_row`s as a plain-text table, ours beside the paper's.

  Args:
    rows: the rows; a row's ``display`` (a number that is no percentage, such as
      an R^2) is shown instead of its measured fraction.
    title: the first line: preset, seeds and attack settings.
  """
  width = max(len(r["metric"]) for r in rows) + 2
  lines = [title, f"{'row':5}{'metric':{width}}{'paper':>11}{'ours':>9}  verdict"]
  lines += [f"{r['id']:5}{r['metric']:{width}}{r['paper']:>11}"
            f"{r.get('display') or percent(r['measured']):>9}  {r['verdict']}"
            for r in rows]
  return "\n".join(lines)


def write_results(out: pathlib.Path, name: str, results: dict[str, Any],
                  start: float) -> pathlib.Path:
  """Writes ``out/name.json`` with the run's duration; returns the path.

  Args:
    out: output folder, created if needed.
    name: the experiment's name, e.g. ``"softmax_regression"``.
    results: JSON-ready results, with ``config`` and ``rows``.
    start: ``time.perf_counter()`` at the start of the run.
  """
  results = {**results, "seconds": time.perf_counter() - start}
  out.mkdir(parents=True, exist_ok=True)
  path = out / f"{name}.json"
  path.write_text(json.dumps(results, indent=2) + "\n")
  print(f"wrote {path} in {results['seconds']:.0f} s")
  return path
