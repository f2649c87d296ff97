"""What the experiments write: run folders, results files and figures, each written atomically.

`run_folder` names every training run after everything it depends on,
`write_results` writes ``OUT/<name>.json`` and `save_figure`
``OUT/figures/<name>.png``; both through `atomic_write`, so that a reader
never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Callable

from advjax import loop

__all__ = ["run_folder", "atomic_write", "write_results", "save_figure"]


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
