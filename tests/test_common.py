"""Tests of the experiments' harness: atomic results, run folders, flags."""

import argparse
import json
import pathlib

import pytest

from experiments import cli
from experiments import files
from experiments import maxout


def test_a_write_that_dies_half_way_leaves_the_old_results_whole(tmp_path, monkeypatch):
  files.write_results(tmp_path, "x", {"old": True}, start=0.0)
  real = pathlib.Path.write_text

  def half_then_killed(self, text, *args, **kwargs):
    real(self, text[: len(text) // 2], *args, **kwargs)
    raise KeyboardInterrupt  # killed mid-write

  monkeypatch.setattr(pathlib.Path, "write_text", half_then_killed)
  with pytest.raises(KeyboardInterrupt):
    files.write_results(tmp_path, "x", {"new": True, "padding": "y" * 100}, start=0.0)
  monkeypatch.undo()
  assert json.loads((tmp_path / "x.json").read_text())["old"] is True
  assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_results_and_params_are_written_whole(tmp_path, monkeypatch):
  files.write_results(tmp_path, "x", {"a": 1}, start=0.0)
  assert json.loads((tmp_path / "x.json").read_text())["a"] == 1
  replaced = []
  real = files.os.replace
  monkeypatch.setattr(
      files.os,
      "replace",
      lambda src, dst: (replaced.append(pathlib.Path(dst).name), real(src, dst)),
  )
  files.write_results(tmp_path, "x", {"a": 2}, start=0.0)
  maxout.save_params(tmp_path / "pair.npz", {"clean": {"w": [1.0]}, "adversarial": {"w": [2.0]}})
  assert replaced == ["x.json", "pair.npz"]


def test_run_folders_differ_with_every_setting():
  base = {"run": {"eps": 0.25, "seeds": [0]}, "retrain": True}
  names = {
      files.run_folder(pathlib.Path("w"), "m", settings).name
      for settings in (
          base,
          {**base, "retrain": False},
          {"run": {"eps": 0.1, "seeds": [0]}, "retrain": True},
      )
  }
  assert len(names) == 3
  assert files.run_folder(pathlib.Path("w"), "m", base) == files.run_folder(
      pathlib.Path("w"), "m", json.loads(json.dumps(base))
  )


def test_settings_apply_the_flags_to_the_preset():
  args = argparse.Namespace(preset="quick", seeds=3, eps=0.1, alpha=0.3)
  preset = cli.settings("p", args, maxout.PRESETS)
  assert (preset.seeds, preset.eps, preset.alpha) == (3, 0.1, 0.3)
  assert preset.units == maxout.PRESETS["quick"].units
