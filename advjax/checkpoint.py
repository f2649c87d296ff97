"""Per-epoch checkpoints of a training run, with orbax-checkpoint.

A run folder holds one finished checkpoint per epoch (the last two kept): a
pytree of arrays (parameters, optimizer state, PRNG state) beside a JSON
record (epoch, early-stopping state, metrics history, and the run's
fingerprint). Orbax writes each checkpoint into a temporary folder and renames
it when complete, so a process killed at any moment (even ``kill -9``) leaves
the last finished epoch readable and nothing half-written that counts.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import orbax.checkpoint as ocp


class RunMismatchError(ValueError):
  """The folder holds checkpoints of a run with other settings than this one."""


class RunCheckpointer:
  """Saves and restores the epochs of one run in ``folder``.

  Args:
    folder: the run's checkpoint folder, created if needed.
    fingerprint: JSON-serialisable description of the run (model, objective,
      settings, data). Restoring from a folder whose checkpoints carry another
      fingerprint raises `RunMismatchError` instead of silently mixing runs.

  Example:
    >>> ckpt = RunCheckpointer("runs/clean/checkpoints", {"seed": 0})
    >>> ckpt.save(1, {"params": params}, {"epoch": 1})
    >>> tree, record = ckpt.restore_latest({"params": params})
  """

  def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any]):
    self.folder = pathlib.Path(folder).absolute()
    # A JSON round trip makes tuples lists, as they come back from disk.
    self.fingerprint = json.loads(json.dumps(fingerprint))
    options = ocp.CheckpointManagerOptions(
        # Two, so that the previous epoch survives while the next is written.
        max_to_keep=2,
        # Synchronous: an epoch counts as finished only once it is on disk.
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.folder, options=options, item_names=("arrays", "record"))

  def save(self, epoch: int, arrays: Any, record: dict[str, Any]) -> None:
    """Writes the checkpoint of a finished epoch.

    Args:
      epoch: the number of finished epochs, >= 1.
      arrays: pytree of arrays (params, optimizer state, PRNG key data).
      record: JSON-serialisable bookkeeping; the fingerprint is added to it.
    """
    record = {**record, "fingerprint": self.fingerprint}
    self._manager.save(epoch, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(arrays),
        record=ocp.args.JsonSave(record)))
    self._manager.wait_until_finished()

  def restore_latest(self, like: Any) -> tuple[Any, dict[str, Any]] | None:
    """Restores the last finished epoch, or returns None when there is none.

    Args:
      like: a pytree with the structure, shapes and dtypes of the saved arrays.

    Returns:
      ``(arrays, record)``, or None for a fresh folder.

    Raises:
      RunMismatchError: the checkpoints belong to a run with another fingerprint.
    """
    epoch = self._manager.latest_step()
    if epoch is None:
      return None
    record = self._manager.restore(epoch, args=ocp.args.Composite(
        record=ocp.args.JsonRestore()))["record"]
    if record.get("fingerprint") != self.fingerprint:
      raise RunMismatchError(
          f"{self.folder} holds checkpoints of a run with other settings or data; "
          "delete the folder or choose another one to start afresh")
    arrays = self._manager.restore(epoch, args=ocp.args.Composite(
        arrays=ocp.args.StandardRestore(like)))["arrays"]
    return arrays, record

  def close(self) -> None:
    """Releases orbax's resources."""
    self._manager.close()
