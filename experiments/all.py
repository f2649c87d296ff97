"""Runs every experiment of the paper, then writes the report.

    python -m experiments.all --data-dir ../shared/data/mnist            # quick presets
    python -m experiments.all --preset paper --data-dir ...              # a GPU job
    python -m experiments.all --out results --report REPORT.md ...       # the committed ones

Each experiment runs as its own ``python -m experiments.<name>`` process, in
the order of `EXPERIMENTS`: mnist_maxout first, whose parameters the
epsilon sweep reuses, and the epsilon sweep last, since it draws the error
curves that the others wrote. A failed experiment is reported and the rest
go on; the report then says "not run" for its rows. Re-running resumes: the
experiments reload their finished checkpoints.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import subprocess
import sys
import time
from typing import Sequence

from experiments import cli
from experiments import report

EXPERIMENTS = (
    "mnist_maxout",
    "softmax_regression",
    "logistic_regression",
    "rbf_network",
    "rubbish",
    "noise_controls",
    "ensemble",
    "training_study",
    "epsilon_sweep",
)


def run_experiment(name: str, flags: Sequence[str]) -> tuple[int, float]:
  """Runs ``python -m experiments.<name> <flags>``; returns its exit status and seconds."""
  start = time.perf_counter()
  print(f"=== experiments.{name} {' '.join(flags)}", flush=True)
  status = subprocess.run([sys.executable, "-m", f"experiments.{name}", *flags]).returncode
  return status, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the experiments and the report; exit status 1 if any experiment failed."""
  parser = argparse.ArgumentParser(
      prog="python -m experiments.all",
      description="Runs every experiment of the paper, then the report.",
  )
  parser.add_argument(
      "--preset",
      choices=("quick", "paper"),
      default="quick",
      help="preset of every experiment (default: quick, 2 CPU cores "
      "within an hour; paper: a GPU job)",
  )
  parser.add_argument("--data-dir", help="folder of the four MNIST IDX files")
  parser.add_argument(
      "--out",
      default=cli.DEFAULT_OUT,
      type=pathlib.Path,
      help=f"results folder (default: {cli.DEFAULT_OUT}; the committed "
      "reference results are in results)",
  )
  parser.add_argument(
      "--report", type=pathlib.Path, help="report to write (default: OUT/REPORT.md)"
  )
  args = parser.parse_args(argv)
  cli.check_out("experiments.all", args.out)
  report_path = args.report or args.out / "REPORT.md"
  flags = ["--preset", args.preset, "--out", str(args.out)]
  if args.data_dir:
    flags += ["--data-dir", args.data_dir]

  start = time.perf_counter()
  outcomes = {}
  for name in EXPERIMENTS:
    if importlib.util.find_spec(f"experiments.{name}") is None:
      print(f"=== experiments.{name}: no such module, skipped", flush=True)
      outcomes[name] = (None, 0.0)
      continue
    outcomes[name] = run_experiment(name, flags)
  try:
    report.main(["--out", str(args.out), "--report", str(report_path)])
  except SystemExit as exit_:  # the report's one-line error is already printed
    outcomes["report"] = (1 if exit_.code else 0, 0.0)
    if exit_.code and not isinstance(exit_.code, int):
      print(exit_.code, file=sys.stderr)

  print(f"{'experiment':22}{'status':>8}{'seconds':>10}")
  for name, (status, seconds) in outcomes.items():
    shown = "skipped" if status is None else "ok" if status == 0 else f"exit {status}"
    print(f"{name:22}{shown:>8}{seconds:>10.0f}")
  print(f"{'all':22}{'':>8}{time.perf_counter() - start:>10.0f}")
  failed = [name for name, (status, _) in outcomes.items() if status]
  if failed:
    sys.exit(f"experiments.all: error: failed: {', '.join(failed)}")


if __name__ == "__main__":
  main()
