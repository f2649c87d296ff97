"""Tests of the experiments' one runner and its harness: flags, refusals, results files.

A fake experiment (no training) runs through `experiments.runner.main`, so
that what every experiment's command line does is checked once, in seconds.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import cli
from experiments import files
from experiments import maxout
from experiments import runner
from experiments import verdicts
from tests.conftest import write_idx

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Preset:
  size: int
  seeds: int = 1
  eps: float = 0.25
  alpha: float = 0.5


def measure(preset, data, out, args):
  del out, args
  return {"measured": {"examples": len(data.test.y), "size": preset.size}, "config": {"x": 1}}


def rows(results):
  return [verdicts.row("M1.fgsm_error", 0.98, 0.05, lambda error: error > 0.5, "a note")]


def refuse_large(args, preset):
  del args
  if preset.size > 9:
    cli.fail("experiments.fake", f"size must be <= 9, got {preset.size}")
  return preset


FAKE = runner.Experiment(
    "fake",
    "A fake experiment.",
    {"tiny": Preset(3), "large": Preset(10)},
    measure,
    rows=rows,
    alpha=True,
    prepare=refuse_large,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
  folder = tmp_path_factory.mktemp("mnist")
  write_idx(folder)
  return folder


def test_the_runner_records_the_settings_judges_the_rows_and_prints_the_table(
    data_dir, tmp_path, capsys
):
  out = tmp_path / "out"
  returned = runner.main(FAKE, ["--data-dir", str(data_dir), "--out", str(out), "--eps", "0.1"])
  written = json.loads((out / "fake.json").read_text())
  assert list(written) == ["measured", "config", "rows", "seconds"]
  assert {**written, "seconds": None} == json.loads(json.dumps({**returned, "seconds": None}))
  assert written["measured"] == {"examples": 30, "size": 3}
  assert written["config"] == {
      "preset": "tiny",
      "size": 3,
      "seeds": 1,
      "eps": 0.1,
      "alpha": 0.5,
      "dataset": "mnist",
      "clip": None,
      "data_dir": str(data_dir),
      "x": 1,
  }
  # The paper's 99.9% and ours, 98%, within 5 points.
  assert [(r["id"], r["verdict"]) for r in written["rows"]] == [("M1", "reproduced")]
  printed = capsys.readouterr().out
  assert "MNIST test set, preset tiny, 1 seed(s), FGSM eps 0.1" in printed
  assert "98.0%  reproduced" in printed


def test_another_dataset_is_named_and_not_judged_by_the_papers_numbers(data_dir, tmp_path, capsys):
  flags = ["--dataset", "fashion_mnist", "--data-dir", str(data_dir), "--out", str(tmp_path)]
  results = runner.main(FAKE, flags)
  printed = capsys.readouterr().out
  assert "Fashion-MNIST test set" in printed and "99.9%" not in printed
  assert results["config"]["dataset"] == "fashion_mnist" and results["rows"] == []


def test_output_goes_to_runs_unless_told(data_dir, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  runner.main(FAKE, ["--data-dir", str(data_dir)])
  assert (tmp_path / "runs" / "fake.json").exists()
  assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--eps", "-0.1"], "--eps must be a finite number >= 0, got -0.1"),
        (["--eps", "nan"], "--eps must be a finite number >= 0"),
        (["--alpha", "1.5"], "--alpha must lie in [0, 1], got 1.5"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--preset", "large"], "size must be <= 9, got 10"),
        (["--out", "a-file"], "--out a-file: cannot write there"),
        (["--out", "/proc/advjax"], "--out /proc/advjax: cannot write there"),
    ],
)
def test_bad_flags_are_one_line_before_the_data_loads(tmp_path, monkeypatch, flags, message):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "a-file").write_text("not a folder")
  loaded = []
  monkeypatch.setattr(cli.data_lib, "load_mnist", lambda *args, **kwargs: loaded.append(1))
  with pytest.raises(SystemExit) as exit_info:
    runner.main(FAKE, flags)
  text = str(exit_info.value)
  assert "\n" not in text and text.startswith("experiments.fake: error: ") and message in text
  assert not loaded


def test_a_missing_data_folder_is_one_line(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(SystemExit) as exit_info:
    runner.main(FAKE, ["--data-dir", str(missing), "--out", str(tmp_path)])
  message = str(exit_info.value.code)
  assert "\n" not in message and str(missing) in message and "--data-dir" in message
  assert not (tmp_path / "fake.json").exists()


def test_the_command_line_gives_a_corrupt_idx_file_as_one_line(tmp_path):
  data_dir = tmp_path / "mnist"
  write_idx(data_dir)
  labels = data_dir / "t10k-labels-idx1-ubyte.gz"
  labels.write_bytes(labels.read_bytes()[:20])
  process = subprocess.run(
      [sys.executable, "-m", "experiments.softmax_regression", "--data-dir", str(data_dir)]
      + ["--out", str(tmp_path)],
      cwd=REPO,
      env={**os.environ, "PYTHONPATH": str(REPO)},
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert process.returncode != 0
  assert "Traceback" not in process.stderr
  lines = process.stderr.strip().splitlines()
  assert len(lines) == 1 and "t10k-labels-idx1-ubyte.gz" in lines[0]


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


def test_verdicts_follow_the_tolerance_then_the_claim():
  # The paper's 99.9%, a tolerance of 5 points and the claim "above half".
  found = [
      verdicts.row("M1.fgsm_error", measured, 0.05, lambda v: v > 0.5)["verdict"]
      for measured in (0.98, 0.6, 0.3, None)
  ]
  assert found == ["reproduced", "same direction", "not reproduced", "not reproduced"]
  assert verdicts.judge(0.85, 0.894, 0.10, False) == "reproduced"
  assert verdicts.judge(0.60, 0.894, 0.10, True) == "same direction"
  assert verdicts.judge(0.89, 0.894, 0.10, True, trained=False) == "not reproduced"
  with pytest.raises(ValueError, match="verdict must be one of"):
    verdicts.paper_row(verdicts.paper.FIGURES["M1.fgsm_error"], 0.5, "maybe")  # type: ignore


def test_an_experiment_of_one_seed_refuses_more(tmp_path):
  single = dataclasses.replace(FAKE, prepare=runner.one_seed("experiments.fake", "one pair"))
  with pytest.raises(SystemExit, match="^experiments.fake: error: --seeds must be 1: one pair$"):
    runner.main(single, ["--seeds", "2", "--out", str(tmp_path)])
