"""The harness every experiment script shares: flags, data, run folders, verdicts and output.

An experiment is a thin script: `parser` gives its flags, `settings` its
preset with the flags applied (eps, alpha and seeds are preset fields,
passed down explicitly), `check_out` refuses an unusable output folder
before any data loads, `load_data` brings the data, `run_folder` names
every training run after everything it depends on, and `write_results`
writes ``OUT/<name>.json`` atomically. Each results file carries ``rows``:
one `paper_row` per number of the paper (`experiments.paper`) that it
measures, which ``python -m experiments.report`` gathers into a report.
Runs write under ``runs/`` (git-ignored) unless ``--out`` says otherwise:
the committed reference results in ``results/`` change only when asked.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Literal, NamedTuple, Sequence

from advjax import data as data_lib
from advjax import loop
from advjax.checkpoint import CheckpointError
from experiments import paper

Verdict = Literal["reproduced", "same direction", "not reproduced", "out of scope"]
VERDICTS = ("reproduced", "same direction", "not reproduced", "out of scope")
DEFAULT_OUT = pathlib.Path("runs")

# An MNIST model with a larger clean test error has not learnt its task.
LEARNT_ERROR = 0.10


def parser(
    prog: str, description: str, presets: Iterable[str], *, alpha: bool = False
) -> argparse.ArgumentParser:
  """The flags every experiment takes: --preset, --seeds, --eps, --dataset, --data-dir, --out.

  Args:
    prog: the module, e.g. ``"experiments.softmax_regression"``.
    description: one sentence on what the experiment measures.
    presets: the preset names; the first is the default.
    alpha: also take --alpha, for experiments that train on eq. (6).

  Returns:
    An ``argparse.ArgumentParser`` to which the script may add its own flags.
  """
  presets = list(presets)
  result = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
  result.add_argument(
      "--preset",
      choices=presets,
      default=presets[0],
      help=f"settings to run (default: {presets[0]})",
  )
  result.add_argument("--seeds", type=int, help="number of seeds, 0..N-1")
  result.add_argument(
      "--eps", type=float, help="FGSM eps of the attacks (default: the preset's, 0.25)"
  )
  if alpha:
    result.add_argument(
        "--alpha",
        type=float,
        help="weight of the clean term of the training objective " "(default: the preset's, 0.5)",
    )
  result.add_argument(
      "--dataset",
      choices=data_lib.KNOWN_DATASETS,
      default="mnist",
      help="the data (default: mnist); the paper's numbers stand " "beside MNIST runs only",
  )
  result.add_argument(
      "--data-dir",
      help="folder of the four IDX files (default: "
      f"${data_lib.DATA_DIR_ENV}, else a download through "
      "tensorflow-datasets' download manager)",
  )
  result.add_argument(
      "--out",
      default=DEFAULT_OUT,
      type=pathlib.Path,
      help=f"output folder (default: {DEFAULT_OUT}/; the committed "
      "reference results are in results/)",
  )
  return result


def settings(prog: str, args: argparse.Namespace, presets: dict[str, Any]) -> Any:
  """The chosen preset with ``--seeds``, ``--eps`` and ``--alpha`` applied and checked.

  Args:
    prog: the module, for errors.
    args: the parsed flags.
    presets: the experiment's presets (dataclasses with the fields the flags set).

  Returns:
    The preset.
  """
  preset = presets[args.preset]
  changes = {}
  if args.seeds is not None:
    changes["seeds"] = positive(prog, "seeds", args.seeds)
  if args.eps is not None:
    if not (math.isfinite(args.eps) and args.eps >= 0):
      fail(prog, f"--eps must be a finite number >= 0, got {args.eps}")
    changes["eps"] = args.eps
  if getattr(args, "alpha", None) is not None:
    if not 0 <= args.alpha <= 1:
      fail(prog, f"--alpha must lie in [0, 1], got {args.alpha}")
    changes["alpha"] = args.alpha
  return dataclasses.replace(preset, **changes)


class Run(NamedTuple):
  """One invocation of an experiment: its flags, its settings and its data.

  Attributes:
    prog: the module, e.g. ``"experiments.noise_controls"``.
    args: the parsed flags.
    preset: the preset with the flags applied (`settings`).
    data: the data the flags name.
    start: ``time.perf_counter()`` when the invocation began.
  """

  prog: str
  args: argparse.Namespace
  preset: Any
  data: data_lib.MNIST
  start: float


def setup(
    prog: str, flags: argparse.ArgumentParser, presets: dict[str, Any], argv: Sequence[str] | None
) -> Run:
  """Parses the flags, applies them to the preset, checks ``--out``, then loads the data.

  Every refusal is one line and exit status 1, and bad flags or a bad
  ``--out`` are found before any data loads.

  Args:
    prog: the module, for errors.
    flags: the experiment's `parser`.
    presets: its presets.
    argv: the command line (``sys.argv[1:]`` when None).

  Returns:
    The `Run`.

  Example:
    >>> run = setup(PROG, parser(PROG, "...", PRESETS), PRESETS, argv)
  """
  start = time.perf_counter()
  args = flags.parse_args(argv)
  preset = settings(prog, args, presets)
  check_out(prog, args.out)
  return Run(prog, args, preset, load_data(prog, args.data_dir, args.dataset), start)


@contextlib.contextmanager
def one_line_errors(prog: str, *errors: type[Exception]) -> Iterator[None]:
  """Turns a checkpoint error (or one of ``errors``), or a full disk, into one line and exit 1."""
  try:
    yield
  except (CheckpointError, *errors) as error:
    fail(prog, error)
  except OSError as error:
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    fail(
        prog,
        f"{error.filename or 'writing'}: {error.strerror}: free space and rerun; "
        "finished epochs are kept and the run resumes after them",
    )


def finish(run: Run, name: str, results: dict[str, Any], **config: Any) -> dict[str, Any]:
  """Records the run's settings in ``results``, prints its rows and writes ``OUT/<name>.json``.

  Args:
    run: the invocation.
    name: the results' name.
    results: what the experiment measured, with its ``rows``.
    **config: settings beyond the preset's to record (the sweep's epsilons...).

  Returns:
    The results as written.
  """
  args, preset = run.args, run.preset
  results["config"] = {
      "preset": args.preset,
      **dataclasses.asdict(preset),
      "dataset": args.dataset,
      "clip": None,
      "data_dir": args.data_dir,
      **config,
  }
  print(
      format_rows(
          results["rows"], title(args.dataset, args.preset, getattr(preset, "seeds", 1), preset.eps)
      )
  )
  with one_line_errors(run.prog):
    write_results(args.out, name, results, run.start)
  return results


def fail(prog: str, message: Any) -> None:
  """Exits with status 1 and one line naming the experiment and what went wrong."""
  sys.exit(f"{prog}: error: {message}")


def check_out(prog: str, out: pathlib.Path) -> None:
  """Makes sure ``out`` is a folder this process can write into, or exits with one line."""
  try:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):
      pass
  except OSError as error:
    fail(prog, f"--out {out}: cannot write there ({error.strerror or error})")


def load_data(prog: str, data_dir: str | None, dataset: str = "mnist") -> data_lib.MNIST:
  """The dataset from ``data_dir`` (or its fallbacks), or a one-line error and exit 1."""
  try:
    return data_lib.load_mnist(data_dir, name=dataset)
  except data_lib.DataError as error:
    fail(prog, error)


def positive(prog: str, name: str, value: int | None) -> int | None:
  """Checks an optional count flag (``--seeds``, ``--epochs``...) is >= 1."""
  if value is not None and value < 1:
    fail(prog, f"--{name} must be >= 1, got {value}")
  return value


def run_folder(work: pathlib.Path, name: str, fingerprint: dict[str, Any]) -> pathlib.Path:
  """The folder of one training run: ``work/<name>-<digest of everything it depends on>``.

  ``fingerprint`` is what `advjax.loop.fingerprint` gives (model, objective,
  settings, seeds, data, optimizer), plus whatever else the experiment
  changes; any change of any of them names another folder, so that a run
  never restores another run's checkpoints.

  Example:
    >>> run_folder(pathlib.Path("runs/x"), "clean", {"seed": 0}).name
    'clean-...'
  """
  text = json.dumps(loop.describe(fingerprint), sort_keys=True)
  return work / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


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
      "confidence": [number(float(c)) for c in result.confidence],
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
          key: [mean(values) for values in zip(*(e[key] for e in entries))]
          for key in ("error", "confidence")
      },
  }


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
      "measured": number(measured),
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


def compare(
    key: str,
    measured: float | None,
    tolerance: float,
    claim: bool,
    note: str,
    *,
    trained: bool = True,
) -> dict[str, Any]:
  """The `paper_row` of ``paper.FIGURES[key]``, judged by `judge`.

  Args:
    key: the paper's number, e.g. ``"M3.fgsm_error"``.
    measured: ours, a fraction or None.
    tolerance: the largest absolute difference that counts as reproduced.
    claim: whether ours shows the paper's qualitative claim.
    note: the claim in words, and what else the reader needs.
    trained: whether the model learnt its task (see `judge`).

  Returns:
    A row for ``rows``.
  """
  figure = paper.FIGURES[key]
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


def format_rows(rows: list[dict[str, Any]], title: str) -> str:
  """An experiment's `paper_row`s as a plain-text table, ours beside the paper's.

  Args:
    rows: the rows; a row's ``display`` (a number that is no percentage, such as
      an R^2) is shown instead of its measured fraction.
    title: the first line: data, preset, seeds and attack settings.
  """
  if not rows:
    return f"{title}\n(no number of the paper's table: beyond the paper, or not MNIST)"
  width = max(len(r["metric"]) for r in rows) + 2
  lines = [title, f"{'row':5}{'metric':{width}}{'paper':>11}{'ours':>9}  verdict"]
  lines += [
      f"{r['id']:5}{r['metric']:{width}}{r['paper']:>11}"
      f"{r.get('display') or percent(r['measured']):>9}  {r['verdict']}"
      for r in rows
  ]
  return "\n".join(lines)


def title(dataset: str, preset_name: str, seeds: int, eps: float) -> str:
  """The first line of an experiment's printed table: what was run on what."""
  name = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}.get(dataset, dataset)
  return f"{name} test set, preset {preset_name}, {seeds} seed(s), FGSM eps {eps:g}, " "no clipping"


def atomic_write(path: pathlib.Path, write: Callable[[pathlib.Path], Any]) -> None:
  """Calls ``write(temporary path)`` beside ``path``, then renames it into place.

  A reader never sees a half-written file, and an interrupted write leaves
  the previous one whole. The file gets the mode of any new file (0644 under
  umask 022), not the owner-only 0600 of a temporary one.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
  os.close(handle)
  tmp = pathlib.Path(tmp)
  umask = os.umask(0)
  os.umask(umask)
  try:
    write(tmp)
    tmp.chmod(0o666 & ~umask)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def write_results(
    out: pathlib.Path, name: str, results: dict[str, Any], start: float
) -> pathlib.Path:
  """Writes ``out/name.json`` atomically with the run's duration; returns the path.

  Args:
    out: output folder, created if needed.
    name: the results' name, e.g. ``"softmax_regression"``.
    results: JSON-ready results, with ``config`` and ``rows``.
    start: ``time.perf_counter()`` at the start of the run.
  """
  results = {**results, "seconds": time.perf_counter() - start}
  path = out / f"{name}.json"
  atomic_write(path, lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n"))
  print(f"wrote {path} in {results['seconds']:.0f} s")
  return path


def save_figure(figure: Any, out: pathlib.Path, name: str) -> str:
  """Writes ``out/figures/<name>.png`` atomically; returns that path relative to ``out``."""
  relative = pathlib.Path("figures") / f"{name}.png"
  atomic_write(
      out / relative, lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
  )
  return relative.as_posix()
