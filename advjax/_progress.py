"""How a training run shows its finished epochs: a bar on a terminal, lines in a log, or nothing.

A run picks one `Progress` object when it starts (`choose`) and hands it
each epoch's `EpochSummary`; the loop never asks where its output goes.
"""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple, Protocol

import numpy as np
import tqdm


class EpochSummary(NamedTuple):
  """What a finished epoch shows, the same for every kind of output.

  Attributes:
    desc: the run's label.
    epoch: the epoch just finished.
    epochs: the most epochs the run trains.
    members: how many members trained this epoch.
    loss: the mean training loss of the members whose loss is finite (NaN if none).
    valid: their validation error, ``"1.00%"`` or a range ``"1.00%-2.00%"``; "" without validation.
    collapsed: the members whose watched PGD accuracy collapsed this epoch, ``"0, 2"``; or "".
    diverged: the members whose loss stopped being finite, ``"member 1 (seed 1)"``; or "".
    seconds: the population's epoch time.
  """

  desc: str
  epoch: int
  epochs: int
  members: int
  loss: float
  valid: str
  collapsed: str
  diverged: str
  seconds: float


def summarize(
    desc: str,
    epoch: int,
    epochs: int,
    rows: list[dict[str, Any]],
    settings: list[str],
    seconds: float,
) -> EpochSummary:
  """The summary of an epoch from its ``metrics.jsonl`` rows (one per member trained)."""
  finite = [row["loss"] for row in rows if row["loss"] is not None]
  errors = [row["valid_error"] for row in rows if row.get("valid_error") is not None]
  valid = ""
  if errors:
    low, high = min(errors), max(errors)
    valid = f"{low:.2%}" if low == high else f"{low:.2%}-{high:.2%}"
  return EpochSummary(
      desc=desc,
      epoch=epoch,
      epochs=epochs,
      members=len(rows),
      loss=float(np.mean(finite)) if finite else math.nan,
      valid=valid,
      collapsed=", ".join(str(row["member"]) for row in rows if row.get("watch_collapse")),
      diverged="; ".join(
          f"member {row['member']} ({settings[row['member']]})"
          for row in rows
          if row["loss"] is None
      ),
      seconds=seconds,
  )


class Progress(Protocol):
  """The output of a run: told when it starts, after each epoch, and when it ends."""

  def start(self, desc: str, epochs: int, done: int, resumed_from: str | None) -> None:
    """A run of ``epochs`` begins, ``done`` of them restored from the folder ``resumed_from``."""
    ...

  def epoch(self, summary: EpochSummary) -> None:
    """An epoch finished."""
    ...

  def close(self) -> None:
    """The run ended, finished or not."""
    ...


class NoProgress:
  """Shows nothing."""

  def start(self, desc: str, epochs: int, done: int, resumed_from: str | None) -> None:
    del desc, epochs, done, resumed_from

  def epoch(self, summary: EpochSummary) -> None:
    del summary

  def close(self) -> None:
    pass


class ProgressLines:
  """One plain line per epoch on standard output, for a log file."""

  def start(self, desc: str, epochs: int, done: int, resumed_from: str | None) -> None:
    del epochs
    if done:
      print(f"{desc}: resuming after epoch {done} from {resumed_from}", flush=True)

  def epoch(self, summary: EpochSummary) -> None:
    s = summary
    members = f" ({s.members} members)" if s.members > 1 else ""
    valid = f" valid error {s.valid}" if s.valid else ""
    collapsed = f" PGD accuracy collapsed (member {s.collapsed})" if s.collapsed else ""
    diverged = f" diverged: {s.diverged}" if s.diverged else ""
    print(
        f"{s.desc}: epoch {s.epoch}/{s.epochs}{members} loss {s.loss:.4f}{valid}{collapsed} "
        f"{s.seconds:.1f} s{diverged}",
        flush=True,
    )

  def close(self) -> None:
    pass


class ProgressBar:
  """A tqdm bar over the epochs, on a terminal; divergences printed above it."""

  def __init__(self) -> None:
    self._bar: Any = None

  def start(self, desc: str, epochs: int, done: int, resumed_from: str | None) -> None:
    if done:
      print(f"{desc}: resuming after epoch {done} from {resumed_from}", flush=True)
    self._bar = tqdm.tqdm(total=epochs, initial=done, desc=desc, unit="epoch", dynamic_ncols=True)

  def epoch(self, summary: EpochSummary) -> None:
    s = summary
    self._bar.set_postfix(
        loss=f"{s.loss:.4f}", valid_err=s.valid or "-", collapsed=s.collapsed or "-"
    )
    self._bar.update(1)
    if s.diverged:
      self._bar.write(f"{s.desc}: epoch {s.epoch} diverged: {s.diverged}")

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None


def choose(progress: bool | None | Progress, writer: bool = True) -> Progress:
  """The output a run's ``progress=`` argument asks for.

  Args:
    progress: a `Progress`; or True for a bar, False for nothing, None for a
      bar on a terminal and otherwise plain lines.
    writer: whether this process writes (only the first of several hosts does).

  Returns:
    The `Progress` to give the run.
  """
  if not writer or progress is False:
    return NoProgress()
  if progress is None:
    return ProgressBar() if sys.stdout.isatty() else ProgressLines()
  return ProgressBar() if progress is True else progress
