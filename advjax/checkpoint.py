"""Per-epoch checkpoints of a training run, with orbax-checkpoint.

A run folder holds one finished checkpoint per epoch (the last two kept): a
pytree of arrays (parameters, optimizer state, PRNG state) beside a JSON
record (epoch, early-stopping state, metrics history, the run's fingerprint
and a SHA-256 of the arrays). Orbax writes each checkpoint into a temporary
folder and renames it when complete, so a process killed at any moment (even
``kill -9``) leaves the last finished epoch readable and nothing half-written
that counts.

A checkpoint damaged later (a truncated or altered data file, a deleted
``arrays/`` folder, an emptied metadata file) is skipped: restoring walks back
to the newest checkpoint that restores and matches its SHA-256, and says on
stderr, in one line, what it skipped; the run's next save replaces the
skipped ones. A flipped byte that orbax decodes without complaint changes the
arrays' SHA-256, so it never restores as other numbers. When no checkpoint
restores, `CheckpointError` says so in one line.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import pathlib
import sys
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
    "CheckpointError",
    "RunCheckpointer",
    "RunInUseError",
    "RunMismatchError",
    "SaveError",
    "arrays_sha256",
]

# The record's key for the SHA-256 of the arrays saved beside it.
_CHECKSUM_KEY = "arrays_sha256"
# How much of an orbax or tensorstore error a one-line message quotes.
_REASON_CHARS = 160
_AFRESH = "delete the folder or choose another one to start afresh"


class CheckpointError(ValueError):
  """The run folder cannot be resumed: none of its checkpoints restores.

  The message is one line: the folder, why each checkpoint failed, and how to
  start afresh.
  """


class RunMismatchError(CheckpointError):
  """The folder holds checkpoints of a run with other settings than this one."""


class RunInUseError(CheckpointError):
  """Another live process is training in the run folder."""


class SaveError(CheckpointError):
  """A finished epoch could not be written (a full disk, say); the earlier ones are kept."""


def _host_value(leaf: Any) -> np.ndarray:
  """The whole value of one array as NumPy, on every host (replicated arrays cost no traffic)."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    if leaf.is_fully_replicated:
      return np.asarray(leaf.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return np.asarray(leaf)


def arrays_sha256(arrays: Any) -> str:
  """Returns the SHA-256 of a pytree of arrays: each leaf's path, dtype, shape and bytes.

  Args:
    arrays: a pytree of NumPy or JAX arrays; arrays that span several hosts
      are gathered (a replicated one is read from this host's copy).

  Returns:
    The hex digest; equal for equal trees whatever device or host holds them.

  Example:
    >>> arrays_sha256({"w": np.zeros(3, np.float32)})[:12]
    'db2e2ab495f1'
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(arrays)[0]:
    value = np.ascontiguousarray(_host_value(leaf))
    digest.update(f"{jax.tree_util.keystr(path)} {value.dtype} {value.shape}\n".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _reason(exc: BaseException) -> str:
  """An exception as one short line: orbax and tensorstore errors run to many lines."""
  text = " ".join(f"{type(exc).__name__}: {exc}".split())
  return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _os_reason(exc: BaseException) -> str:
  """The operating system's words (``No space left on device``) if an OSError lies under ``exc``."""
  cause: BaseException | None = exc
  while cause is not None:
    if isinstance(cause, OSError) and cause.strerror:
      return cause.strerror
    cause = cause.__cause__ or cause.__context__
  return _reason(exc)


def _collect_quietly() -> None:
  """Collects what a failed orbax restore left behind, without its noise.

  When one array fails to read, orbax's other read coroutines are abandoned;
  garbage-collected later, each prints an "Exception ignored" traceback of
  dozens of lines. Collecting them now, with that report switched off, keeps
  the skipped checkpoint to the one-line warning.
  """
  hook = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: None
  try:
    gc.collect()
  finally:
    sys.unraisablehook = hook


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
    >>> record["epoch"], record["fingerprint"]
    (1, {'seed': 0})
    >>> ckpt.close()
  """

  def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any]):
    self.folder = pathlib.Path(folder).absolute()
    # A JSON round trip makes tuples lists, as they come back from disk.
    self.fingerprint = json.loads(json.dumps(fingerprint))
    # Damaged epochs that `restore_latest` skipped: the next save of such an
    # epoch (or an earlier one) deletes them, never sooner.
    self._damaged: set[int] = set()
    options = ocp.CheckpointManagerOptions(
        # Two, so that the previous epoch survives while the next is written.
        max_to_keep=2,
        # Synchronous: an epoch counts as finished only once it is on disk.
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(
        self.folder, options=options, item_names=("arrays", "record")
    )

  def save(self, epoch: int, arrays: Any, record: dict[str, Any]) -> None:
    """Writes the checkpoint of a finished epoch.

    Damaged checkpoints of this epoch or later, skipped by `restore_latest`,
    are deleted first, so that the new one is the latest.

    Args:
      epoch: the number of finished epochs, >= 1.
      arrays: pytree of arrays (params, optimizer state, PRNG key data).
      record: JSON-serialisable bookkeeping; the fingerprint and the arrays'
        SHA-256 are added to it.

    Raises:
      ValueError: the folder already holds a sound checkpoint of ``epoch`` or
        a later one (orbax would silently not save).
      SaveError: writing failed (a full disk...); the earlier epochs are kept.
    """
    for step in sorted(self._manager.all_steps()):
      if step < epoch:
        continue
      if step not in self._damaged:
        raise ValueError(f"cannot save epoch {epoch}: {self.folder} already holds epoch {step}")
      self._manager.delete(step)
      self._damaged.discard(step)
    record = {**record, "fingerprint": self.fingerprint, _CHECKSUM_KEY: arrays_sha256(arrays)}
    try:
      self._manager.save(
          epoch,
          args=ocp.args.Composite(
              arrays=ocp.args.StandardSave(arrays), record=ocp.args.JsonSave(record)
          ),
      )
      self._manager.wait_until_finished()
    except Exception as exc:  # orbax and tensorstore wrap OS errors in their own types
      raise SaveError(
          f"cannot save epoch {epoch} in {self.folder} ({_os_reason(exc)}): free space or fix "
          f"the folder, then rerun to resume after epoch {epoch - 1}"
      ) from exc

  def _restore_record(self, epoch: int) -> dict[str, Any]:
    record = self._manager.restore(epoch, args=ocp.args.Composite(record=ocp.args.JsonRestore()))[
        "record"
    ]
    if not isinstance(record, dict):
      raise ValueError(f"the record is a JSON {type(record).__name__}, not an object")
    return record

  def _restore_arrays(self, epoch: int, like: Any, checksum: str | None) -> Any:
    arrays = self._manager.restore(
        epoch, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(like))
    )["arrays"]
    # Records written before checksums were kept have none to check.
    if checksum is not None and arrays_sha256(arrays) != checksum:
      raise ValueError("the arrays restored differ from the SHA-256 saved with them")
    return arrays

  def restore_latest(self, like: Any) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest sound epoch, or returns None when there is none.

    A checkpoint that fails to restore, or whose arrays do not match the
    SHA-256 saved with them, is skipped for the one before it; one line on
    stderr names the epochs skipped and why.

    Args:
      like: a pytree with the structure, shapes and dtypes of the saved arrays.

    Returns:
      ``(arrays, record)``, or None for a fresh folder.

    Raises:
      RunMismatchError: the newest readable record belongs to a run with
        another fingerprint.
      CheckpointError: the folder holds checkpoints but none restores.

    Example:
      >>> print(RunCheckpointer("runs/new", {"seed": 0}).restore_latest({"params": params}))
      None
    """
    skipped: list[str] = []
    for epoch in sorted(self._manager.all_steps(), reverse=True):
      try:
        record = self._restore_record(epoch)
      except Exception as exc:  # noqa: BLE001 - any failure means damage.
        skipped.append(f"epoch {epoch} ({_reason(exc)})")
        continue
      if record.get("fingerprint") != self.fingerprint:
        raise RunMismatchError(
            f"{self.folder} holds checkpoints of a run with other settings or data; " f"{_AFRESH}"
        )
      try:
        arrays = self._restore_arrays(epoch, like, record.pop(_CHECKSUM_KEY, None))
      except Exception as exc:  # noqa: BLE001 - orbax and tensorstore raise many types.
        skipped.append(f"epoch {epoch} ({_reason(exc)})")
      else:
        self._damaged = {step for step in self._manager.all_steps() if step > epoch}
        if skipped and jax.process_index() == 0:
          print(
              f"advjax: warning: {self.folder}: skipped damaged checkpoint "
              f"{'; '.join(skipped)}; resuming from epoch {epoch}",
              file=sys.stderr,
          )
        return arrays, record
      # Outside the except clause, so that the error and its frames are garbage.
      _collect_quietly()
    if skipped:
      raise CheckpointError(
          f"{self.folder}: no checkpoint restores: {'; '.join(skipped)}; {_AFRESH}"
      )
    return None

  def close(self) -> None:
    """Releases orbax's resources."""
    self._manager.close()
