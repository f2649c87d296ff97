"""The command line every experiment shares: its flags, and refusals in one line.

`parser` gives the flags (--preset, --seeds, --eps, --dataset, --data-dir,
--out), `settings` the preset with them applied, `check_out` refuses an
unusable output folder before any data loads, `load_data` brings the data,
and `one_line_errors` turns the errors a user can fix into one line and exit
status 1. Runs write under ``runs/`` (git-ignored) unless ``--out`` says
otherwise: the committed reference results in ``results/`` change only when
asked.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import math
import pathlib
import sys
import tempfile
from typing import Any, Iterable, Iterator

from advjax import data as data_lib
from advjax.checkpoint import CheckpointError

__all__ = [
    "DEFAULT_OUT",
    "parser",
    "settings",
    "positive",
    "fail",
    "check_out",
    "load_data",
    "one_line_errors",
]

DEFAULT_OUT = pathlib.Path("runs")


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


def positive(prog: str, name: str, value: int | None) -> int | None:
  """Checks an optional count flag (``--seeds``, ``--epochs``...) is >= 1."""
  if value is not None and value < 1:
    fail(prog, f"--{name} must be >= 1, got {value}")
  return value


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
