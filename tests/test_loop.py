"""Tests of advjax.loop: seeds, early stopping, retraining, checkpoints and resume."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import chex
import numpy as np
import optax
import pytest

import advjax
from advjax import checkpoint
from advjax import loop
from advjax import train
from tests.conftest import CONFIG
from tests.conftest import MODEL
from tests.conftest import TRAIN
from tests.conftest import VALID
from tests.conftest import Crash
from tests.conftest import Split
from tests.conftest import assert_trees_equal
from tests.conftest import crash_on_epoch
from tests.conftest import without_time

REPO = pathlib.Path(__file__).resolve().parents[1]
# The objective of most tests here: one compiled epoch per population size for the module.
OBJECTIVE = train.Adversarial(0.25)


def assert_histories_close(a, b):
  """Equal epochs and scores; losses within float32 summation-order differences."""
  assert [row.keys() for row in a] == [row.keys() for row in b]
  for row_a, row_b in zip(without_time(a), without_time(b)):
    assert row_a == pytest.approx(row_b, rel=1e-6)


def test_same_seed_gives_bit_identical_parameters():
  a = loop.fit(MODEL, TRAIN, CONFIG, objective=OBJECTIVE)
  b = loop.fit(MODEL, TRAIN, CONFIG, objective=OBJECTIVE)
  c = loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, seed=1), objective=OBJECTIVE)
  assert_trees_equal(a.params, b.params)
  assert not np.array_equal(a.params["output"]["kernel"], c.params["output"]["kernel"])


def test_members_equal_separate_runs_with_their_histories():
  config = dataclasses.replace(CONFIG, patience=2, epochs=4)
  members = loop.fit_members(MODEL, TRAIN, config, seeds=[3, 5], objective=OBJECTIVE, valid=VALID)
  for seed, result in zip([3, 5], members):
    alone = loop.fit(
        MODEL,
        TRAIN,
        dataclasses.replace(config, seed=seed),
        objective=OBJECTIVE,
        valid=VALID,
    )
    assert_trees_equal(result.params, alone.params)
    assert_histories_close(result.history, alone.history)
    assert (result.best_epoch, result.best_value) == (alone.best_epoch, alone.best_value)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, monkeypatch):
  objective = train.Noise(advjax.sign_noise, 0.1)  # Uses its PRNG key too.
  config = dataclasses.replace(CONFIG, patience=5)
  straight = loop.fit(
      MODEL, TRAIN, config, objective=objective, valid=VALID, workdir=tmp_path / "straight"
  )
  with monkeypatch.context() as patch:
    crash_on_epoch(patch, 3)
    with pytest.raises(Crash):
      loop.fit(MODEL, TRAIN, config, objective=objective, valid=VALID, workdir=tmp_path / "crashed")
  metrics = tmp_path / "crashed" / "metrics.jsonl"
  assert len(metrics.read_text().splitlines()) == 2
  # A line written after the last checkpoint must not survive the resume.
  with metrics.open("a") as f:
    f.write('{"epoch": 3, "loss": 0.0}\n')
  with monkeypatch.context() as patch:
    trained = crash_on_epoch(patch, 0)
    resumed = loop.fit(
        MODEL, TRAIN, config, objective=objective, valid=VALID, workdir=tmp_path / "crashed"
    )
  assert len(trained) == 1  # Only epoch 3 was left to train.
  assert_trees_equal(straight.params, resumed.params)
  assert without_time(straight.history) == without_time(resumed.history)
  assert (straight.best_epoch, straight.best_value) == (resumed.best_epoch, resumed.best_value)
  lines = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert without_time(lines) == [
      {"member": 0, "seed": 0, **row} for row in without_time(straight.history)
  ]
  # A finished run resumes as finished: no epoch is trained again.
  with monkeypatch.context() as patch:
    trained = crash_on_epoch(patch, 1)
    again = loop.fit(
        MODEL, TRAIN, config, objective=objective, valid=VALID, workdir=tmp_path / "crashed"
    )
  assert not trained
  assert_trees_equal(again.params, straight.params)


def test_resume_refuses_a_folder_of_another_run(tmp_path):
  loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, epochs=1), workdir=tmp_path)
  with pytest.raises(checkpoint.RunMismatchError, match="other settings"):
    loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, epochs=1, seed=3), workdir=tmp_path)
  with pytest.raises(checkpoint.RunMismatchError, match="other settings"):
    loop.fit(
        MODEL,
        TRAIN,
        dataclasses.replace(CONFIG, epochs=1),
        workdir=tmp_path,
        objective=train.Adversarial(0.1),
    )


def scripted_scores(monkeypatch, errors):
  """Replaces the validation scores by scripted errors, one list per epoch (or a number)."""
  values = iter(errors)

  def fake(model, stacked_params, split, **kwargs):
    value = np.atleast_1d(np.asarray(next(values), np.float64))
    return {
        "error": value,
        "confidence": np.full_like(value, 0.5),
        "fgsm_error": 1 - value,
        "fgsm_confidence": np.full_like(value, 0.5),
    }

  monkeypatch.setattr(loop.evaluation, "evaluate_members", fake)


def test_early_stopping_returns_the_best_epoch(monkeypatch):
  config = dataclasses.replace(CONFIG, epochs=10, patience=2)
  scripted_scores(monkeypatch, [0.5, 0.3, 0.4, 0.3, 0.1])
  result = loop.fit(MODEL, TRAIN, config, objective=OBJECTIVE, valid=VALID)
  # Epoch 2 is best; epochs 3 and 4 do not beat it (a tie is no improvement).
  assert result.best_epoch == 2 and result.best_value == 0.3
  assert len(result.history) == 4
  two_epochs = loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, epochs=2), objective=OBJECTIVE)
  assert_trees_equal(result.params, two_epochs.params)


def test_early_stopping_on_the_adversarial_error(monkeypatch):
  config = dataclasses.replace(CONFIG, epochs=3, patience=5, monitor="fgsm_error")
  scripted_scores(monkeypatch, [0.5, 0.3, 0.6])  # fgsm_error: 0.5, 0.7, 0.4
  assert loop.fit(MODEL, TRAIN, config, valid=VALID).best_epoch == 3


def test_each_member_stops_on_its_own(monkeypatch):
  config = dataclasses.replace(CONFIG, epochs=6, patience=2)
  # Member 0 is best at epoch 1 and stops after 3; member 1 improves until 4.
  scripted_scores(
      monkeypatch, [[0.2, 0.9], [0.3, 0.8], [0.3, 0.7], [0.5, 0.6], [0.5, 0.6], [0.5, 0.6]]
  )
  first, second = loop.fit_members(
      MODEL, TRAIN, config, seeds=[0, 1], objective=OBJECTIVE, valid=VALID
  )
  assert (first.best_epoch, len(first.history)) == (1, 3)
  assert (second.best_epoch, len(second.history)) == (4, 6)
  alone = {
      epochs: loop.fit(
          MODEL,
          TRAIN,
          dataclasses.replace(config, epochs=epochs, patience=None, seed=seed),
          objective=OBJECTIVE,
      )
      for seed, epochs in ((0, 1), (1, 4))
  }
  assert_trees_equal(first.params, alone[1].params)
  assert_trees_equal(second.params, alone[4].params)


def test_fit_and_retrain_retrains_each_seed_for_its_best_epoch_count(monkeypatch, tmp_path):
  # Train and valid split TRAIN, so that retraining on their union shares
  # the compiled epochs of the other tests.
  train_full = TRAIN
  data = type(
      "Data",
      (),
      {
          "train": Split(TRAIN.x[:60], TRAIN.y[:60]),
          "valid": Split(TRAIN.x[60:], TRAIN.y[60:]),
          "train_full": train_full,
      },
  )
  scripted_scores(monkeypatch, [[0.5, 0.5], [0.2, 0.4], [0.4, 0.3], [0.4, 0.4], [0.4, 0.4]])
  config = dataclasses.replace(CONFIG, epochs=10, patience=2)
  selection, final = loop.fit_and_retrain(
      MODEL, data, config, seeds=[0, 7], objective=OBJECTIVE, workdir=tmp_path
  )
  assert [r.best_epoch for r in selection] == [2, 3]
  assert [[row["epoch"] for row in r.history] for r in final] == [[1, 2], [1, 2, 3]]
  assert "valid_error" not in final[0].history[0]
  assert (tmp_path / "retrain" / "metrics.jsonl").exists()
  for result, seed, epochs in zip(final, [0, 7], [2, 3]):
    direct = loop.fit(
        MODEL,
        train_full,
        dataclasses.replace(CONFIG, epochs=epochs, seed=seed),
        objective=OBJECTIVE,
    )
    # Bit for bit under XLA's defaults (test_train: a member in turn is its run alone);
    # an epoch more or less, or another seed, would differ by far more.
    chex.assert_trees_all_close(result.params, direct.params, rtol=1e-5, atol=1e-7)


def test_fit_rejects_bad_settings():
  with pytest.raises(ValueError, match="validation split"):
    loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, patience=3))
  with pytest.raises(ValueError, match="eval_eps"):
    loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, eval_eps=None), valid=VALID)
  with pytest.raises(ValueError, match="fewer than one batch"):
    loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, batch_size=1000))
  with pytest.raises(ValueError, match="monitor"):
    loop.TrainConfig(epochs=1, monitor="loss")
  with pytest.raises(ValueError, match="eval_eps"):
    loop.TrainConfig(epochs=1, eval_eps=-0.1)
  with pytest.raises(ValueError, match="seeds"):
    loop.fit_members(MODEL, TRAIN, CONFIG, seeds=[])
  with pytest.raises(ValueError, match="member_epochs"):
    loop.fit_members(MODEL, TRAIN, CONFIG, seeds=[0, 1], member_epochs=[1, 4])
  # An optimizer of one's own beside recipe settings it would silently replace.
  with pytest.raises(
      ValueError, match="^tx= replaces .* momentum, momentum_epochs would be ignored"
  ):
    loop.fit(
        MODEL,
        TRAIN,
        dataclasses.replace(CONFIG, momentum=(0.9, 0.9), momentum_epochs=3),
        tx=optax.sgd(0.1),
    )


def test_a_progress_object_is_told_the_start_each_epoch_and_the_end(monkeypatch):
  class Recorder:

    def __init__(self):
      self.calls = []

    def start(self, desc, epochs, done, resumed_from):
      self.calls.append(("start", desc, epochs, done))

    def epoch(self, summary):
      self.calls.append(("epoch", summary.epoch, summary.epochs, summary.members))

    def close(self):
      self.calls.append(("close",))

  recorder = Recorder()
  loop.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, epochs=2), progress=recorder, desc="run")
  assert recorder.calls == [
      ("start", "run", 2, 0),
      ("epoch", 1, 2, 1),
      ("epoch", 2, 2, 1),
      ("close",),
  ]
  # A crash still ends the output (a bar is closed, not left on the terminal).
  recorder.calls.clear()
  crash_on_epoch(monkeypatch, 1)
  with pytest.raises(Crash):
    loop.fit(MODEL, TRAIN, CONFIG, progress=recorder)
  assert recorder.calls == [("start", "train", 3, 0), ("close",)]


def test_without_a_terminal_every_epoch_is_one_line_and_a_resume_says_so(tmp_path, capsys):
  config = dataclasses.replace(CONFIG, epochs=2)
  loop.fit(
      MODEL,
      TRAIN,
      dataclasses.replace(config, epochs=1),
      valid=VALID,
      workdir=tmp_path / "other",
      desc="clean",
  )
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1 and lines[0].startswith("clean: epoch 1/1 loss ")
  assert "valid error" in lines[0] and lines[0].endswith(" s")
  loop.fit(
      MODEL, TRAIN, dataclasses.replace(config, epochs=1), workdir=tmp_path / "run", desc="clean"
  )
  capsys.readouterr()
  # The same call again finds the run finished after its one epoch.
  loop.fit(
      MODEL, TRAIN, dataclasses.replace(config, epochs=1), workdir=tmp_path / "run", desc="clean"
  )
  out = capsys.readouterr().out
  assert f"clean: resuming after epoch 1 from {tmp_path / 'run'}" in out
  loop.fit(MODEL, TRAIN, config, progress=False)
  assert capsys.readouterr().out == ""


def test_early_stopping_value_type():
  stopping = loop.EarlyStopping(patience=2)
  assert not stopping.stopped(0)
  stopping = stopping.update(1, 0.5).update(2, 0.5).update(3, float("nan"))
  assert (stopping.best_epoch, stopping.best_value) == (1, 0.5)
  assert stopping.stopped(3) and not loop.EarlyStopping().update(1, 0.1).stopped(100)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    import dataclasses
    import time
    from advjax import loop, train
    from tests.conftest import CONFIG, MODEL, TRAIN
    # Slow epochs leave the test time to kill the run part way.
    epoch = train.train_epoch
    train.train_epoch = lambda *a, **k: (time.sleep(0.2), epoch(*a, **k))[1]
    config = dataclasses.replace(CONFIG, epochs=int(sys.argv[2]))
    loop.fit(MODEL, TRAIN, config, objective=train.Adversarial(0.25), workdir=sys.argv[1])
""")


def test_kill_9_then_rerun_resumes_to_the_same_result(tmp_path):
  epochs = 8
  script = tmp_path / "run.py"
  script.write_text(KILL_SCRIPT.format(repo=str(REPO)))
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  workdir = tmp_path / "run"
  process = subprocess.Popen(
      [sys.executable, str(script), str(workdir), str(epochs)],
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  metrics = workdir / "metrics.jsonl"
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline and process.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  before = metrics.read_text().splitlines()
  assert 2 <= len(before) < epochs, "the run should have died part way"
  config = dataclasses.replace(CONFIG, epochs=epochs)
  resumed = loop.fit(MODEL, TRAIN, config, objective=OBJECTIVE, workdir=workdir)
  straight = loop.fit(MODEL, TRAIN, config, objective=OBJECTIVE)
  assert_trees_equal(resumed.params, straight.params)
  assert without_time(resumed.history) == without_time(straight.history)
  # The epochs finished before the kill were kept, not trained again: their
  # timings are the killed process's.
  after = metrics.read_text().splitlines()
  assert len(after) == epochs
  for old, new in zip(before, after):
    if old.endswith("}"):  # The kill may have cut the last line short.
      assert json.loads(old) == json.loads(new)
