"""The run of every benchmark item: see the package docstring and `benchmarks.items`."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any, Callable, Sequence

from benchmarks import base
from benchmarks import harness
from benchmarks import items
from benchmarks import report

__all__ = ["run"]


def run(
    config: base.Config = base.FULL,
    out: str | pathlib.Path | None = None,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
    repeat: int = 1,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
  """Runs every item (or those of ``only``) and writes ``results.json`` and ``RESULTS.md``.

  Args:
    config: `FULL` or `QUICK` (or any sizes).
    out: output folder; None writes nothing.
    data_dir: folder of the MNIST IDX files, or None for synthetic images.
    log: receives one line per finished item.
    repeat: how many times to run the items, one after the other on the same
      fixture; every ratio is then the median of the runs', with its range
      (`benchmarks.base.combine`).
    only: ``results.json`` keys of the items to run (`benchmarks.items.keys`),
      or None for all; their sections replace the same keys of the device's
      last run in ``out``, each noting when it ran (`benchmarks.report.merge`).

  Returns:
    This run's entry of ``results.json``.
  """
  if repeat < 1:
    raise ValueError(f"repeat must be >= 1, got {repeat}.")
  chosen = _chosen(only)
  start = time.perf_counter()
  machine = harness.describe_machine()
  log(f"benchmarks ({config.name}) on {machine['device']}, load {machine['load_average']}")
  bench, data_text, model_text = base.prepare(config, data_dir)
  peak = harness.matmul_peak(config.peak_sizes, config.peak_repeats)
  log(
      "  float32 matmul peak: "
      + ", ".join(f"{name} {best['gflops']:.0f} GFLOP/s" for name, best in peak.items())
  )
  runs: dict[str, list[base.Section]] = {}
  for run_number in range(1, repeat + 1):
    if repeat > 1:
      log(f"  run {run_number} of {repeat}")
    for item in chosen:
      for key, section in zip(item.keys, item.sections(bench)):
        log(f"  {section.title}: {section.measured_text} (target {section.target})")
        runs.setdefault(key, []).append(section)
  sections = {key: base.combine(found) for key, found in runs.items()}
  if repeat > 1:
    log(f"  medians [min, max] of {repeat} runs:")
    for section in sections.values():
      log(f"  {section.title}: {section.measured_text} (target {section.target})")
  entry = {
      "machine": machine,
      "load_average_end": list(os.getloadavg()),
      "seconds": time.perf_counter() - start,
      "date": time.strftime("%Y-%m-%d", time.gmtime()),
      "only": None if only is None else list(only),
      "config": dataclasses.asdict(config),
      "repeat": repeat,
      "data": data_text,
      "model": model_text,
      "peers": {name: peer.describe() for name, peer in bench.peers.items()},
      "matmul_peak": peak,
      "benchmarks": {key: dataclasses.asdict(section) for key, section in sections.items()},
  }
  if out is not None:
    for path in report.write(entry, pathlib.Path(out)):
      log(f"wrote {path}")
  return entry


def _chosen(only: Sequence[str] | None) -> tuple[Any, ...]:
  """The items that measure the keys of ``only`` (all for None); an unknown key is an error."""
  if only is None:
    return items.ITEMS
  unknown = sorted(set(only) - set(items.keys()))
  if unknown or not only:
    named = f"unknown benchmark keys {unknown}" if unknown else "no benchmark key named"
    raise ValueError(f"{named}: choose from {', '.join(items.keys())}.")
  return tuple(item for item in items.ITEMS if set(item.keys) & set(only))
