"""Tests for advjax.checkpoint: round trips, damaged checkpoints and run identity.

Each damage test saves epochs 1 and 2, damages epoch 2 on disk the way a full
disk, a bad sector or a stray ``rm`` would, and checks that restoring falls
back to epoch 1's exact arrays with a one-line warning on stderr.
"""

from __future__ import annotations

import pathlib
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from advjax import checkpoint
from advjax.checkpoint import CheckpointError
from advjax.checkpoint import RunCheckpointer
from advjax.checkpoint import RunMismatchError

FINGERPRINT = {"model": "tiny", "seed": 0, "sizes": (3, 4)}


def arrays_of(epoch: int) -> dict[str, jnp.ndarray]:
  """Distinct arrays per epoch; the weights fill a data file of ~200 kB."""
  rng = np.random.default_rng(epoch)
  return {
      "w": jnp.asarray(rng.normal(size=(100, 500)).astype(np.float32)),
      "step": jnp.asarray(epoch, jnp.int32),
  }


def save_epochs(folder: pathlib.Path, *epochs: int, fingerprint=FINGERPRINT) -> None:
  ckpt = RunCheckpointer(folder, fingerprint)
  for epoch in epochs:
    ckpt.save(epoch, arrays_of(epoch), {"epoch": epoch})
  ckpt.close()


def restore(folder: pathlib.Path, fingerprint=FINGERPRINT):
  ckpt = RunCheckpointer(folder, fingerprint)
  try:
    return ckpt.restore_latest(arrays_of(0))
  finally:
    ckpt.close()


def assert_arrays_equal(got, want) -> None:
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)


def data_file(step_dir: pathlib.Path) -> pathlib.Path:
  """The largest file of a checkpoint's arrays: the one holding the weights."""
  files = [p for p in (step_dir / "arrays").rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def truncate(step_dir: pathlib.Path) -> None:
  path = data_file(step_dir)
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte_at(fraction: float):
  def flip(step_dir: pathlib.Path) -> None:
    path = data_file(step_dir)
    content = bytearray(path.read_bytes())
    content[int(len(content) * fraction)] ^= 0xFF
    path.write_bytes(bytes(content))

  return flip


def delete_arrays(step_dir: pathlib.Path) -> None:
  shutil.rmtree(step_dir / "arrays")


def empty(relative: str):
  def empty_file(step_dir: pathlib.Path) -> None:
    (step_dir / relative).write_bytes(b"")

  return empty_file


DAMAGES = {
    "truncated-data-file": truncate,
    # Orbax decodes most flipped bytes without complaint: only the checksum
    # tells the numbers apart.
    "flipped-byte-early": flip_byte_at(0.1),
    "flipped-byte-middle": flip_byte_at(0.5),
    "flipped-byte-late": flip_byte_at(0.9),
    "deleted-arrays-folder": delete_arrays,
    "emptied-record": empty("record/metadata"),
    "emptied-arrays-metadata": empty("arrays/_METADATA"),
}


def test_round_trip_returns_the_latest_epoch(tmp_path):
  save_epochs(tmp_path, 1, 2)

  arrays, record = restore(tmp_path)

  assert_arrays_equal(arrays, arrays_of(2))
  assert record["epoch"] == 2
  assert record["fingerprint"] == {"model": "tiny", "seed": 0, "sizes": [3, 4]}
  # The checksum is the checkpointer's bookkeeping, not the caller's.
  assert "arrays_sha256" not in record


def test_a_fresh_folder_restores_nothing(tmp_path):
  assert restore(tmp_path / "new") is None


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, damage):
  save_epochs(tmp_path, 1, 2)
  damage(tmp_path / "2")
  capsys.readouterr()

  arrays, record = restore(tmp_path)

  assert record["epoch"] == 1
  assert_arrays_equal(arrays, arrays_of(1))
  err = capsys.readouterr().err
  assert err.count("\n") == 1, err
  for needle in (str(tmp_path), "skipped damaged checkpoint epoch 2", "resuming from epoch 1"):
    assert needle in err, f"{needle!r} not in {err!r}"


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_no_sound_checkpoint_is_one_line_saying_how_to_start_afresh(tmp_path, damage):
  save_epochs(tmp_path, 1, 2)
  damage(tmp_path / "1")
  damage(tmp_path / "2")

  with pytest.raises(CheckpointError) as err:
    restore(tmp_path)

  message = str(err.value)
  assert "\n" not in message
  for needle in (str(tmp_path), "epoch 2", "epoch 1", "delete the folder"):
    assert needle in message, f"{needle!r} not in {message!r}"


def test_the_epoch_after_a_fallback_is_saved_and_restored(tmp_path, capsys):
  save_epochs(tmp_path, 1, 2)
  flip_byte_at(0.5)(tmp_path / "2")
  ckpt = RunCheckpointer(tmp_path, FINGERPRINT)
  arrays, record = ckpt.restore_latest(arrays_of(0))
  assert record["epoch"] == 1

  # Orbax would decline to save an epoch that is not after its latest one:
  # the damaged epoch 2 must make way for the new one.
  ckpt.save(2, arrays_of(22), {"epoch": 2})
  ckpt.close()
  capsys.readouterr()

  arrays, record = restore(tmp_path)
  assert record["epoch"] == 2
  assert_arrays_equal(arrays, arrays_of(22))
  assert capsys.readouterr().err == ""


def test_saving_before_a_sound_later_epoch_is_refused(tmp_path):
  save_epochs(tmp_path, 1, 2)
  ckpt = RunCheckpointer(tmp_path, FINGERPRINT)
  with pytest.raises(ValueError, match="cannot save epoch 2: .* already holds epoch 2"):
    ckpt.save(2, arrays_of(2), {"epoch": 2})
  ckpt.close()


def test_another_runs_folder_still_raises_mismatch(tmp_path):
  save_epochs(tmp_path, 1, 2)
  with pytest.raises(RunMismatchError, match="other settings"):
    restore(tmp_path, {**FINGERPRINT, "seed": 1})


def test_mismatch_behind_a_damaged_checkpoint_is_not_taken_for_damage(tmp_path):
  save_epochs(tmp_path, 1, 2)
  empty("record/metadata")(tmp_path / "2")
  with pytest.raises(RunMismatchError, match="delete the folder"):
    restore(tmp_path, {**FINGERPRINT, "seed": 1})


def test_checkpoint_errors_are_value_errors():
  assert issubclass(RunMismatchError, CheckpointError)
  assert issubclass(CheckpointError, ValueError)


def test_arrays_sha256_sees_values_dtypes_and_names():
  base = {"a": np.zeros(3, np.float32), "b": np.arange(2)}
  same = {"a": jnp.zeros(3, jnp.float32), "b": np.arange(2)}
  assert checkpoint.arrays_sha256(base) == checkpoint.arrays_sha256(same)
  changed = [
      {"a": np.array([0, 0, 1e-30], np.float32), "b": np.arange(2)},
      {"a": np.zeros(3, np.float16), "b": np.arange(2)},
      {"c": np.zeros(3, np.float32), "b": np.arange(2)},
  ]
  for other in changed:
    assert checkpoint.arrays_sha256(other) != checkpoint.arrays_sha256(base)
