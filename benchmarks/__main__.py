"""``python -m benchmarks [--quick] [--repeat N] [--only KEY ...] [--out DIR] [--data-dir DIR]``.

The full run (37 minutes on 2 CPU cores, half of it items 12 and 13) writes
``benchmarks/results.json`` and ``benchmarks/RESULTS.md``; ``--quick`` runs
tiny sizes in seconds, as a smoke test, and writes into a temporary folder
unless ``--out`` says otherwise, so that it never overwrites the committed
results. ``--repeat N`` runs every item N times and reports each ratio's median
and range over the runs. ``--only KEY ...`` runs the items of those
``results.json`` keys (``autoattack`` is item 12, ``epoch`` item 8) and puts
their sections into the last run's results, each noting the day and load it
ran under.

The data folder is ``--data-dir``, else ``$ADVJAX_DATA_DIR``; with neither, the
items run on random images of MNIST's shape. An empty folder name, or a folder
that cannot be read, is an error (one line, exit status 1), as in `advjax.data`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

# `python -m` has already run benchmarks/__init__.py, which sets the environment
# that JAX and PyTorch read when they load.
from advjax import data as advjax_data
from benchmarks import base
from benchmarks import items
from benchmarks import suite


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
  parser.add_argument(
      "--quick",
      action="store_true",
      help="tiny sizes and few repeats: a smoke run of a few seconds",
  )
  parser.add_argument(
      "--out",
      type=pathlib.Path,
      default=None,
      help="output folder (default: benchmarks/, or a temporary " "folder with --quick)",
  )
  parser.add_argument(
      "--data-dir",
      default=None,
      help="folder of the four MNIST IDX files (default: "
      f"${advjax_data.DATA_DIR_ENV}; without either, random images "
      "of MNIST's shape)",
  )
  parser.add_argument(
      "--repeat",
      type=int,
      default=1,
      metavar="N",
      help="run the items N times; each ratio is the median of the runs, with its range",
  )
  parser.add_argument(
      "--only",
      nargs="+",
      choices=items.keys(),
      default=None,
      metavar="KEY",
      help="run only the items of these results.json keys: " + ", ".join(items.keys()),
  )
  args = parser.parse_args(argv)
  if args.repeat < 1:
    parser.error(f"--repeat must be >= 1, got {args.repeat}")
  data_dir, origin = args.data_dir, "--data-dir"
  if data_dir is None:
    data_dir, origin = os.environ.get(advjax_data.DATA_DIR_ENV), advjax_data.DATA_DIR_ENV
  if data_dir is not None and not data_dir.strip():
    parser.exit(
        1,
        f"{parser.prog}: error: {origin} is empty text {data_dir!r}: give a "
        "folder of the four MNIST IDX files ('.' is the current folder), or "
        "neither it nor --data-dir for random images\n",
    )
  out = args.out
  if out is None:
    out = (
        pathlib.Path(tempfile.mkdtemp(prefix="advjax-benchmarks-"))
        if args.quick
        else pathlib.Path(__file__).resolve().parent
    )
  try:
    suite.run(
        base.QUICK if args.quick else base.FULL, out, data_dir, repeat=args.repeat, only=args.only
    )
  except advjax_data.DataError as error:
    parser.exit(1, f"{parser.prog}: error: {error}\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
