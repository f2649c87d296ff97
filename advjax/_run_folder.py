"""A run's folder: what identifies the run, its lock, its checkpoints and its ``metrics.jsonl``.

`fingerprint` is what must match for a folder's checkpoints to belong to a
run; `RunFolder` holds the folder for one process (the lock, the
`advjax.checkpoint.RunCheckpointer`, the metrics file) and `NoFolder` stands
in when a run keeps nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import TYPE_CHECKING, Any, Sequence

import jax
import numpy as np
import optax

from advjax.checkpoint import RunCheckpointer
from advjax.checkpoint import RunInUseError
from advjax.models import Classifier

if TYPE_CHECKING:
  from advjax.loop import TrainConfig
  from advjax.train import Objective


def describe(value: Any) -> Any:
  """A JSON description of a setting, stable from run to run.

  Dataclasses and named tuples become their type's name and fields, functions
  ``module.qualname``, arrays lists; what JSON holds as it is stays. Used to
  fingerprint runs, so it never includes memory addresses.

  Example:
    >>> describe(train.Noise(advjax.sign_noise, eps=0.25))
    {'type': 'Noise', 'noise_fn': 'advjax.objectives.sign_noise', 'eps': 0.25, 'alpha': 0.5}
  """
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {
        "type": type(value).__qualname__,
        **{f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)},
    }
  fields = getattr(value, "_fields", None)  # a named tuple's
  if isinstance(value, tuple) and fields is not None:
    return {
        "type": type(value).__qualname__,
        **{name: describe(getattr(value, name)) for name in fields},
    }
  if isinstance(value, (list, tuple)):
    return [describe(v) for v in value]
  if isinstance(value, dict):
    return {str(k): describe(v) for k, v in value.items()}
  if callable(value) and hasattr(value, "__qualname__"):
    return f"{value.__module__}.{value.__qualname__}"
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    return np.asarray(value).tolist()
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def fingerprint(
    model: Classifier,
    objective: Objective,
    config: TrainConfig,
    *,
    seeds: Sequence[int],
    train: Any,
    valid: Any | None = None,
    tx: optax.GradientTransformation | None = None,
    member_epochs: Sequence[int] | None = None,
) -> dict[str, Any]:
  """What must match for a checkpoint folder to belong to a run of `advjax.loop.fit_members`.

  The model, the objective and its settings, the config, the seeds and
  epochs, the optimizer (the recipe's, or "custom") and the data (sizes and
  a SHA-256 of the images and labels: 0.09 s for MNIST's 50,000 training
  images, next to seconds for one epoch), as JSON. Experiments name their run folders
  after its digest, so that other settings never meet these checkpoints.

  Example:
    >>> run = fingerprint(model, train.Adversarial(0.25), config, seeds=[0], train=data.train)
    >>> run["objective"], run["train"]["examples"]
    ({'type': 'Adversarial', 'eps': 0.25, 'alpha': 0.5, 'clip': None}, 200)
  """

  def data(split):
    if split is None:
      return None
    digest = hashlib.sha256()
    for array in (split.x, split.y):
      array = np.ascontiguousarray(np.asarray(array))
      digest.update(f"{array.dtype.str}{array.shape}".encode())
      digest.update(array.data)
    return {"examples": len(split.y), "sha256": digest.hexdigest()}

  seeds = [int(seed) for seed in seeds]
  return {
      "model": f"{model.module!r} head={model.head.name} " f"max_col_norm={model.max_col_norm}",
      "objective": describe(objective),
      "config": describe(config),
      "seeds": seeds,
      "member_epochs": [config.epochs] * len(seeds)
      if member_epochs is None
      else list(member_epochs),
      "optimizer": "recipe_sgd" if tx is None else "custom",
      "train": data(train),
      "valid": data(valid),
  }


def lock(workdir: pathlib.Path) -> pathlib.Path:
  """Takes ``workdir/lock`` for this process (its PID inside); returns its path.

  Refuses a folder whose lock names a live process; takes over the lock of
  a process that is gone (killed before it could remove it).
  """
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "lock"
  mine = workdir / f".lock.{os.getpid()}"
  mine.write_text(f"{os.getpid()}\n")
  try:
    while True:
      try:
        os.link(mine, path)  # atomic: the lock appears with its PID in it
        return path
      except FileExistsError:
        pass
      try:
        pid = int(path.read_text())
      except (OSError, ValueError):
        pid = None
      if pid is not None and pid != os.getpid() and alive(pid):
        raise RunInUseError(
            f"{workdir} is in use by process {pid} (lock file {path}): wait for it to "
            "finish or stop it, or choose another folder"
        )
      path.unlink(missing_ok=True)
  finally:
    mine.unlink()


def alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def write_metrics(path: pathlib.Path, record: dict[str, Any]) -> None:
  """Rewrites the JSON-lines file atomically to match the checkpointed history."""
  rows = sorted(
      (
          {"member": m, "seed": info["seed"], **row}
          for m, info in enumerate(record["members"])
          for row in info["history"]
      ),
      key=lambda row: (row["epoch"], row["member"]),
  )
  tmp = path.with_suffix(".tmp")
  tmp.parent.mkdir(parents=True, exist_ok=True)
  tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
  os.replace(tmp, path)


class RunFolder:
  """The folder of a run, held by this process until `close`.

  Args:
    workdir: the folder (created if missing).
    fingerprint: the run's `fingerprint`.
    writer: whether this process writes the lock and ``metrics.jsonl`` (the
      first host; every host writes its share of the checkpoints).

  Raises:
    advjax.checkpoint.RunInUseError: another live process holds the folder.
  """

  def __init__(self, workdir: str | os.PathLike, fingerprint: dict[str, Any], writer: bool):
    self.path = pathlib.Path(workdir)
    self._lock = lock(self.path) if writer else None
    self._checkpointer = RunCheckpointer(self.path / "checkpoints", fingerprint)
    self._metrics = self.path / "metrics.jsonl" if writer else None

  def restore(self, arrays: Any, record: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The last finished epoch's arrays and record, or the given ones in a new folder.

    ``metrics.jsonl`` is rewritten to match: lines written after the last
    checkpoint (by a process killed before it could save) are dropped.
    """
    restored = self._checkpointer.restore_latest(arrays)
    if restored is not None:
      arrays, record = restored
    if self._metrics is not None:
      write_metrics(self._metrics, record)
    return arrays, record

  def save(self, epoch: int, arrays: Any, record: dict[str, Any], rows: list[dict]) -> None:
    """Checkpoints a finished epoch, then appends its ``metrics.jsonl`` rows."""
    self._checkpointer.save(epoch, arrays, record)
    if self._metrics is not None:
      with self._metrics.open("a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)

  def close(self) -> None:
    """Waits for the checkpoints and releases the lock."""
    self._checkpointer.close()
    if self._lock is not None:
      self._lock.unlink(missing_ok=True)


class NoFolder:
  """A run that keeps nothing: restores nothing, saves nothing."""

  path = None

  def restore(self, arrays: Any, record: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    return arrays, record

  def save(self, epoch: int, arrays: Any, record: dict[str, Any], rows: list[dict]) -> None:
    del epoch, arrays, record, rows

  def close(self) -> None:
    pass
