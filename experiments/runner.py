"""The one runner of every experiment: flags, data, errors, the results file and the table.

An experiment is a module that declares its presets and an `Experiment`:
its name, its ``run(preset, data, out, args) -> results``, and, when it
measures numbers of the paper, its ``rows(results)``. Its ``main`` is
``runner.main(EXPERIMENT, argv)``, which gives every experiment the same
command line (`experiments.cli.parser`), refuses bad flags, a bad ``--out``
or bad data in one line before anything trains, runs it, records the
settings as ``config``, judges its ``rows`` (MNIST runs only), prints its
table and writes ``OUT/<name>.json`` with the run's ``seconds``.

``python -m experiments.report`` reads every results file's ``rows``; a new
experiment's numbers reach the report's summary once `experiments.paper.ROWS`
names its results file.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import jax

from advjax import data as data_lib
from experiments import cli
from experiments import files
from experiments import numeric
from experiments import verdicts

__all__ = ["Experiment", "main", "one_seed", "rows_table", "title"]

Results = dict[str, Any]


def _no_rows(results: Results) -> list[dict[str, Any]]:
  """An experiment beyond the paper: no number of its table to judge."""
  del results
  return []


def _no_flags(flags: argparse.ArgumentParser) -> None:
  del flags


def _keep(args: argparse.Namespace, preset: Any) -> Any:
  del args
  return preset


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One experiment, as `main` runs it.

  Attributes:
    name: the module, its results file's name and its run folders' prefix,
      e.g. ``"noise_controls"``.
    description: one sentence for ``--help``.
    presets: name -> preset, a frozen dataclass with at least ``eps`` and
      ``seeds``; the first is the default.
    run: ``(preset, data, out, args) -> results``: trains, measures and draws
      (figures under ``out``). A ``config`` key in the results holds the
      settings to record beyond the preset's; the runner adds the rest.
    rows: ``results -> [verdicts.row, ...]``: the paper's numbers it
      measures, judged; called with ``config`` in the results, MNIST only.
    alpha: whether it takes ``--alpha`` (it trains on eq. (6)).
    flags: adds the experiment's own flags to the parser.
    prepare: ``(args, preset) -> preset``: applies (or refuses, with
      `experiments.cli.fail`) the experiment's own flags before the data loads.
    errors: exception types beyond the checkpoint's that end the run in one line.
    results_name: ``preset name -> results name``; the experiment's name when None.
    table: ``results -> text``, the table printed at the end.
  """

  name: str
  description: str
  presets: Mapping[str, Any]
  run: Callable[[Any, data_lib.MNIST, pathlib.Path, argparse.Namespace], Results]
  rows: Callable[[Results], list[dict[str, Any]]] = _no_rows
  alpha: bool = False
  flags: Callable[[argparse.ArgumentParser], None] = _no_flags
  prepare: Callable[[argparse.Namespace, Any], Any] = _keep
  errors: tuple[type[Exception], ...] = ()
  results_name: Callable[[str], str] | None = None
  table: Callable[[Results], str] | None = None

  @property
  def prog(self) -> str:
    """The module, as errors and ``--help`` name it."""
    return f"experiments.{self.name}"


def main(experiment: Experiment, argv: Sequence[str] | None = None) -> Results:
  """Runs ``experiment`` from the command line and writes ``OUT/<results name>.json``.

  Every refusal is one line and exit status 1, and bad flags or a bad
  ``--out`` are found before any data loads.

  Args:
    experiment: what to run.
    argv: the flags (``sys.argv[1:]`` when None): `experiments.cli.parser`'s
      and the experiment's own.

  Returns:
    The results as written.

  Example:
    >>> main(noise_controls.EXPERIMENT, ["--preset", "tiny", "--out", "/tmp/results"])
  """
  start = time.perf_counter()
  prog = experiment.prog
  flags = cli.parser(prog, experiment.description, experiment.presets, alpha=experiment.alpha)
  experiment.flags(flags)
  args = flags.parse_args(argv)
  preset = cli.settings(prog, args, dict(experiment.presets))
  cli.check_out(prog, args.out)
  preset = experiment.prepare(args, preset)
  data = cli.load_data(prog, args.data_dir, args.dataset)
  with cli.one_line_errors(prog, *experiment.errors):
    results = experiment.run(preset, data, args.out, args)
  extra = results.pop("config", {})
  results["config"] = {
      "preset": args.preset,
      **dataclasses.asdict(preset),
      "dataset": args.dataset,
      "clip": None,
      "data_dir": args.data_dir,
      **extra,
  }
  results["rows"] = experiment.rows(results) if verdicts.comparable(args.dataset) else []
  # Every host of a multi-host run computes the same results; one writes them.
  if jax.process_index() == 0:
    print((experiment.table or rows_table)(results))
    name = (
        experiment.name if experiment.results_name is None else experiment.results_name(args.preset)
    )
    with cli.one_line_errors(prog):
      files.write_results(args.out, name, results, start)
  return results


def rows_table(results: Results) -> str:
  """A results file's ``rows`` as a plain-text table, ours beside the paper's.

  A row's ``display`` (a number that is no percentage, such as an R^2) is
  shown instead of its measured fraction. The first line is the `title`.
  """
  config, rows = results["config"], results["rows"]
  heading = title(config["dataset"], config["preset"], config.get("seeds", 1), config["eps"])
  if not rows:
    return f"{heading}\n(no number of the paper's table: beyond the paper, or not MNIST)"
  width = max(len(r["metric"]) for r in rows) + 2
  lines = [heading, f"{'row':5}{'metric':{width}}{'paper':>11}{'ours':>9}  verdict"]
  lines += [
      f"{r['id']:5}{r['metric']:{width}}{r['paper']:>11}"
      f"{r.get('display') or numeric.percent(r['measured']):>9}  {r['verdict']}"
      for r in rows
  ]
  return "\n".join(lines)


def title(dataset: str, preset_name: str, seeds: int, eps: float) -> str:
  """The first line of an experiment's printed table: what was run on what."""
  name = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}.get(dataset, dataset)
  return f"{name} test set, preset {preset_name}, {seeds} seed(s), FGSM eps {eps:g}, no clipping"


def one_seed(prog: str, why: str) -> Callable[[argparse.Namespace, Any], Any]:
  """An `Experiment.prepare` that refuses ``--seeds`` other than 1, saying ``why``.

  Example:
    >>> prepare = one_seed("experiments.epsilon_sweep", "the figures use one pair of maxouts")
  """

  def prepare(args: argparse.Namespace, preset: Any) -> Any:
    del args
    if preset.seeds != 1:
      cli.fail(prog, f"--seeds must be 1: {why}")
    return preset

  return prepare
