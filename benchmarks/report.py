"""Writing results: ``results.json`` and the Markdown tables of ``RESULTS.md``.

Both files hold one entry per device kind (``cpu``, ``gpu``): a run replaces
its own device's entry and keeps the others, so a GPU run sits beside the CPU
one and each table names the device it was measured on. While no GPU run is
recorded, ``RESULTS.md`` says so and lists the targets a GPU run would judge.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Sequence

JSON_NAME = "results.json"
MARKDOWN_NAME = "RESULTS.md"


def write(entry: dict[str, Any], out: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """Merges one run's entry into ``out/results.json`` and rewrites ``out/RESULTS.md``.

  Args:
    entry: the run's results, with ``entry["machine"]["platform"]`` as its key.
    out: the output folder, created if missing.

  Returns:
    The paths of the JSON file and of the Markdown file.
  """
  out.mkdir(parents=True, exist_ok=True)
  json_path, markdown_path = out / JSON_NAME, out / MARKDOWN_NAME
  results = {}
  if json_path.exists():
    try:
      results = json.loads(json_path.read_text())
    except json.JSONDecodeError:
      results = {}  # A damaged file is replaced rather than blocking the run.
  platform = entry["machine"]["platform"]
  results[platform] = merge(results.get(platform), entry)
  json_path.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
  markdown_path.write_text(markdown(results))
  return json_path, markdown_path


def merge(last: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
  """A run of some items (``entry["only"]``) put into the device's last run, ``last``.

  The rerun sections replace theirs, each with a ``rerun`` record of the day,
  the machine, the command and the load it ran under (`rerun_note` writes it
  out); the rest, and the header, stay the last run's. A run of every item, or
  one with no earlier run to join, stands alone.
  """
  if not entry.get("only") or last is None:
    return entry
  rerun = {
      "date": entry["date"],
      "device": entry["machine"]["device"],
      "command": f"python -m benchmarks --only {' '.join(entry['only'])}"
      + _runs_flag(entry.get("repeat", 1)),
      "load_start": entry["machine"]["load_average"],
      "load_end": entry["load_average_end"],
  }
  sections = dict(last["benchmarks"])
  for key, section in entry["benchmarks"].items():
    sections[key] = dict(section, rerun=rerun)
  return dict(last, benchmarks=sections)


def rerun_note(rerun: dict[str, Any]) -> str:
  """The note under a rerun section's table: when, where and how it ran."""
  return (
      f"Rerun alone on {rerun['date']}, {rerun['device']} (`{rerun['command']}`): load average "
      f"{_load(rerun['load_start'])} at the start, {_load(rerun['load_end'])} at the end; the "
      "other items are the run above's."
  )


def _reruns(entry: dict[str, Any]) -> list[str]:
  """The header's line naming the items rerun alone since the run it describes, if any."""
  reruns: dict[tuple[str, str], list[str]] = {}
  for section in entry["benchmarks"].values():
    if section.get("rerun"):
      where = (section["rerun"]["device"], section["rerun"]["date"])
      reruns.setdefault(where, []).append(section["title"].split(".")[0])
  return [
      f"- rerun alone since, on {device}, {date}: items {', '.join(dict.fromkeys(numbers))} "
      "(each item's last note says how)"
      for (device, date), numbers in reruns.items()
  ]


def _runs_flag(repeat: int) -> str:
  return "" if repeat == 1 else f" --repeat {repeat}"


def markdown(results: dict[str, dict[str, Any]]) -> str:
  """The whole ``RESULTS.md``: one section per device, CPU first."""
  parts = [
      "# advjax benchmarks\n",
      "Written by `python -m benchmarks` (see `benchmarks/__init__.py` for what each "
      "item measures). Times are medians over repeats after compilation and "
      "warm-up; every ratio is taken between rows timed interleaved in one process. "
      "Memory is the working set of one call: XLA's buffer assignment for jitted "
      "JAX functions, inputs plus the allocation high-water mark for PyTorch "
      "(`benchmarks/harness.py`). GFLOP/s is the work of one call over its median "
      "time: XLA's count of the compiled program for JAX rows, the matrix products "
      "dispatched for PyTorch rows; beside it, its share of the machine's own float32 "
      "matmul peak, measured at the start of the run.\n",
  ]
  for platform in sorted(results, key=lambda p: (p != "cpu", p)):
    parts.append(device_section(results[platform]))
  if "gpu" not in results and results:
    parts.append(gpu_not_measured(results.get("cpu") or next(iter(results.values()))))
  return "\n".join(parts)


def gpu_not_measured(entry: dict[str, Any]) -> str:
  """The GPU section while no GPU run is recorded: the targets such a run would judge."""
  return (
      "\n".join(
          [
              "## GPU: not measured\n",
              "No GPU run is recorded. `python -m benchmarks` on a machine with a GPU measures "
              "every item there and writes this section under the GPU's name. The targets it "
              "would judge:\n",
              _table(
                  ["item", "GPU target"],
                  [
                      [section["title"], section.get("gpu_target") or section["target"]]
                      for section in entry["benchmarks"].values()
                  ],
              ),
          ]
      )
      + "\n"
  )


def device_section(entry: dict[str, Any]) -> str:
  """The Markdown of one device's run: context, targets, then one table per item."""
  machine = entry["machine"]
  load_start, load_end = machine["load_average"], entry["load_average_end"]
  lines = [
      f"## {machine['platform'].upper()}: {machine['device']}\n",
      f"- run: `{entry['config']['name']}`, {_runs(entry.get('repeat', 1))}"
      f"{entry['seconds']:.0f} s in all; load average "
      f"(1/5/15 min) {_load(load_start)} at the start, {_load(load_end)} at the end",
      f"- software: Python {machine['python']}, JAX {machine['jax']}",
      "- peers: " + "; ".join(f"{name} {text}" for name, text in entry["peers"].items()),
      f"- data: {entry['data']}",
      f"- model: {entry['model']}",
      f"- float32 matmul peak: {_peak(entry.get('matmul_peak'))}",
      *_reruns(entry),
      "",
      "### Targets\n",
      _table(
          ["item", "target", "measured", "met"],
          [
              [
                  section["title"],
                  section["target"],
                  section["measured_text"],
                  {True: "yes", False: "**no**", None: "n/a"}[section["met"]],
              ]
              for section in entry["benchmarks"].values()
          ],
      ),
  ]
  peak = (entry.get("matmul_peak") or {}).get("jax", {}).get("gflops")
  for section in entry["benchmarks"].values():
    lines.append(f"\n### {section['title']}\n")
    lines.append(
        _table(
            [
                "implementation",
                "median",
                "ratio",
                "throughput",
                "GFLOP/s (of peak)",
                "peak memory",
                "note",
            ],
            [
                [
                    row["name"],
                    _seconds(row["seconds"]),
                    _ratio(row["ratio"], row.get("ratio_min"), row.get("ratio_max")),
                    _throughput(row["throughput"]),
                    _gflops(row.get("gflops"), peak),
                    _bytes(row["peak_bytes"]),
                    row["note"]
                    if row["status"] == "ok"
                    else f"{row['status']}. {row['note']}".strip(),
                ]
                for row in section["rows"]
            ],
        )
    )
    lines.append(f"\nratio: {section['ratio_meaning']}.")
    lines.extend(f"{note}" for note in section["notes"])
    if section.get("rerun"):
      lines.append(rerun_note(section["rerun"]))
  return "\n".join(lines) + "\n"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  escape = lambda cell: str(cell).replace("|", "\\|").replace("\n", " ")
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def _load(values: Sequence[float]) -> str:
  return "/".join(f"{value:.2f}" for value in values)


def _seconds(value: float | None) -> str:
  if value is None:
    return "-"
  return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.2f} s"


def _ratio(value: float | None, low: float | None = None, high: float | None = None) -> str:
  """``1.29x``, or over repeated runs the median and range: ``1.29x [1.28, 1.51]``."""
  if value is None:
    return "-"
  return f"{value:.2f}x" + ("" if low is None or high is None else f" [{low:.2f}, {high:.2f}]")


def _runs(repeat: int) -> str:
  if repeat == 1:
    return ""
  return (
      f"{repeat} runs of every item (figures: median [min, max] over the runs; "
      "notes and cross-checks: the last run's), "
  )


def _peak(peak: dict[str, dict[str, float]] | None) -> str:
  if not peak:
    return "not measured"
  names = {"jax": "jitted JAX (the rows' reference)", "numpy": "NumPy"}
  return "; ".join(
      f"{names.get(name, name)} {best['gflops']:.0f} GFLOP/s "
      f"({best['size']}x{best['size']} by {best['size']}x{best['size']})"
      for name, best in peak.items()
  )


def _gflops(value: float | None, peak: float | None) -> str:
  if value is None:
    return "-"
  return f"{value:.1f}" + (f" ({value / peak:.0%})" if peak else "")


def _throughput(value: float | None) -> str:
  return "-" if value is None else f"{value:,.0f} img/s"


def _bytes(value: int | None) -> str:
  if value is None:
    return "-"
  exponent = min(int(math.log(max(value, 1), 1024)), 3)
  return f"{value / 1024 ** exponent:.1f} {['B', 'KiB', 'MiB', 'GiB'][exponent]}"
