"""Bad inputs and faults a user can cause: each refused in one line, nothing misreported."""

import errno
import json
import os
import pathlib
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import _progress
from advjax import _run_folder
from advjax import checkpoint
from advjax import data
from advjax import loop
from advjax import train
from experiments import all as experiments_all
from experiments import cli
from experiments import files
from experiments import report
from tests.conftest import IMAGES
from tests.conftest import MODEL
from tests.conftest import TEST_IMAGES
from tests.conftest import TRAIN
from tests.conftest import Split
from tests.conftest import assert_one_line_naming
from tests.conftest import assert_trees_equal
from tests.conftest import write_mnist_dir

PARAMS = MODEL.init(jax.random.key(0), TRAIN.x[:1])
X = jnp.asarray(TRAIN.x[:4])


@pytest.mark.parametrize("bad", [12, -1])
def test_out_of_range_labels_are_refused_where_the_classes_are_known(bad):
  y = jnp.array([0, 1, 2, bad])
  message = f"y must hold class labels in 0..2, got {bad}."
  with pytest.raises(ValueError, match=message):
    advjax.fgsm(MODEL.loss_fn(), PARAMS, X, y, 0.1)
  with pytest.raises(ValueError, match=message):
    advjax.epsilon_sweep(MODEL.loss_fn(), MODEL.probabilities, PARAMS, X, y, jnp.array([0.1]))
  stacked = advjax.stack([PARAMS, PARAMS])
  with pytest.raises(ValueError, match=message):
    advjax.ensembles.ensemble_loss(MODEL.probabilities)(stacked, X, y)
  # Traced labels stay unchecked, as traced eps does: no host round trip per step.
  jax.jit(lambda y: advjax.fgsm(MODEL.loss_fn(), PARAMS, X, y, 0.1))(y)


def test_an_empty_ensemble_is_refused_like_stack_of_nothing():
  empty = jax.tree.map(lambda a: a[:0], advjax.stack([PARAMS, PARAMS]))
  with pytest.raises(ValueError, match="stacked_params must hold at least one member, got none."):
    advjax.ensemble_probs(MODEL.probabilities, empty, X)


@pytest.mark.parametrize("eps", ["0.1", None])
def test_eps_that_is_no_number_is_named(eps):
  with pytest.raises(ValueError, match="eps must be a number"):
    advjax.fgsm(MODEL.loss_fn(), PARAMS, X, jnp.zeros(4, int), eps)


def test_the_fingerprint_covers_the_images_not_only_the_labels():
  config = loop.TrainConfig(epochs=1, batch_size=20)
  flipped = Split(1.0 - TRAIN.x, TRAIN.y)

  def run(split):
    return loop.fingerprint(MODEL, train.Clean(), config, seeds=[0], train=split)

  assert run(TRAIN) == run(Split(TRAIN.x.copy(), TRAIN.y.copy()))
  assert run(TRAIN) != run(flipped)


def test_a_diverged_member_is_named_kept_finite_and_written_as_strict_json(tmp_path, monkeypatch):
  # Member 1's epoch 2 loss is NaN, as when its eps overflows the logits; the
  # epoch itself only nudges the parameters (no compiled training needed).
  def fake_epoch(model, static, dynamic, states, x, y, keys, **kwargs):
    epoch = int(states.step[0]) + 1
    states = states.replace(
        params=jax.tree.map(lambda p: p + 1.0, states.params), step=states.step + 1
    )
    return states, jnp.array([1.0, 1.0 if epoch == 1 else jnp.nan]) * 5

  monkeypatch.setattr(loop.train_lib, "train_epoch", fake_epoch)
  config = loop.TrainConfig(epochs=3, batch_size=20)
  results = loop.fit_members(
      MODEL,
      TRAIN,
      config,
      seeds=[0, 1],
      objective=train.Adversarial(eps=[0.1, 3e38]),
      workdir=tmp_path,
      progress=False,
  )
  healthy, diverged = results
  assert (healthy.diverged, diverged.diverged) == (None, 2)
  assert diverged.setting == "seed 1, eps=3e+38"
  # It keeps the parameters of its last finite epoch (1) and trains no further.
  init = MODEL.init(jax.random.split(jax.random.key(1))[0], X[:1])
  assert_trees_equal(diverged.params, jax.tree.map(lambda p: p + 1.0, init))
  assert len(diverged.history) == 2 and len(healthy.history) == 3
  assert not (tmp_path / "lock").exists()  # released
  rows = [
      json.loads(line, parse_constant=pytest.fail)
      for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
  ]
  assert [(row["member"], row["loss"], row.get("diverged")) for row in rows] == [
      (0, 5 / 5, None),
      (1, 5 / 5, None),
      (0, 5 / 5, None),
      (1, None, True),
      (0, 5 / 5, None),
  ]


def test_the_progress_line_names_a_diverged_member(capsys):
  rows = [{"member": 0, "loss": 0.5}, {"member": 1, "loss": None}]
  settings = ["seed 0, eps=0.1", "seed 1, eps=0.3"]
  loop.ProgressLines().epoch(_progress.summarize("study", 3, 5, rows, settings, 2.0))
  assert capsys.readouterr().out == (
      "study: epoch 3/5 (2 members) loss 0.5000 2.0 s diverged: member 1 (seed 1, eps=0.3)\n"
  )


@pytest.mark.parametrize(
    ("n_train", "n_test", "needles"),
    [
        (0, 5, ["0 images", "at least 2"]),
        (12, 0, ["holds no images"]),
        (5, 12, ["5 images, fewer than the 12", "swapped"]),
    ],
)
def test_empty_or_swapped_idx_files_are_refused_naming_the_file(tmp_path, n_train, n_test, needles):
  write_mnist_dir(tmp_path, n_train=n_train, n_test=n_test, gz=False)
  with pytest.raises(data.DataError) as err:
    data.load_idx_dir(tmp_path)
  named = IMAGES if n_train < 2 or n_test > n_train else TEST_IMAGES
  assert_one_line_naming(err, str(tmp_path / named), *needles)


def test_results_files_get_the_mode_of_any_new_file(tmp_path):
  old = os.umask(0o022)
  try:
    files.atomic_write(tmp_path / "r.json", lambda tmp: tmp.write_text("{}"))
  finally:
    os.umask(old)
  assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def write_results(out, name, content):
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{name}.json").write_text(json.dumps(content))


def test_a_malformed_results_file_is_skipped_by_name_and_the_rest_reported(tmp_path, capsys):
  out = tmp_path / "results"
  good = {"id": "E1", "metric": "FGSM error", "paper": "99.9%", "measured": 0.42}
  write_results(out, "ensemble", {"config": {}, "rows": [{**good, "verdict": "not reproduced"}]})
  write_results(out, "softmax_regression", {"config": {}, "rows": [{**good, "id": "M1"}]})
  write_results(out, "training_study", {"config": {}})
  write_results(out, "listed", [1, 2])
  report.main(["--out", str(out), "--report", str(tmp_path / "R.md")])
  printed = capsys.readouterr().out.splitlines()
  assert (
      printed[0]
      == f"report: skipping {out / 'listed.json'}: its top level is a list, not an object"
  )
  for name, key in (("softmax_regression", "'verdict'"), ("training_study", "'groups'")):
    assert any(f"skipping {out / name}.json: malformed (KeyError: {key})" in p for p in printed)
  text = (tmp_path / "R.md").read_text()
  assert "not reproduced" in text and "not run (no softmax_regression.json)" in text


@pytest.mark.parametrize("where", ["folder", "unwritable"])
def test_a_report_path_that_cannot_be_written_is_one_line(tmp_path, where):
  write_results(tmp_path, "ensemble", {"config": {}, "rows": []})
  path = tmp_path if where == "folder" else pathlib.Path("/proc/x/R.md")
  with pytest.raises(SystemExit) as exit_info:
    report.main(["--out", str(tmp_path), "--report", str(path)])
  message = str(exit_info.value)
  assert message.startswith(f"experiments.report: error: --report {path}") and "\n" not in message


def test_the_driver_prints_its_status_table_when_the_report_fails(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(experiments_all, "run_experiment", lambda name, flags: (0, 1.0))
  with pytest.raises(SystemExit) as exit_info:
    experiments_all.main(["--out", str(tmp_path), "--report", str(tmp_path)])
  assert "failed: report" in str(exit_info.value)
  printed = capsys.readouterr()
  assert "is a folder" in printed.err and "mnist_maxout" in printed.out


def test_a_run_folder_in_use_by_a_live_process_is_refused_and_a_dead_ones_taken_over(tmp_path):
  other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (tmp_path / "lock").write_text(f"{other.pid}\n")
    with pytest.raises(checkpoint.RunInUseError) as err:
      _run_folder.lock(tmp_path)
    assert f"in use by process {other.pid} (lock file {tmp_path / 'lock'})" in str(err.value)
  finally:
    other.kill()
    other.wait()
  assert _run_folder.lock(tmp_path) == tmp_path / "lock"
  assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_finished_epochs(tmp_path, monkeypatch):
  arrays = {"w": np.arange(3.0)}
  ckpt = checkpoint.RunCheckpointer(tmp_path, {"run": 1})
  ckpt.save(1, arrays, {"epoch": 1})

  def full(*args, **kwargs):
    raise RuntimeError("tensorstore write failed") from OSError(
        errno.ENOSPC, "No space left on device"
    )

  monkeypatch.setattr(ckpt._manager, "save", full)
  with pytest.raises(checkpoint.SaveError) as err:
    ckpt.save(2, arrays, {"epoch": 2})
  assert "(No space left on device)" in str(err.value) and "resume after epoch 1" in str(err.value)
  ckpt.close()
  restored = checkpoint.RunCheckpointer(tmp_path, {"run": 1})
  assert restored.restore_latest(arrays)[1]["epoch"] == 1
  restored.close()
  # Under --out, a full disk is one line too; other OS errors stay themselves.
  with pytest.raises(SystemExit) as exit_info:
    with cli.one_line_errors("prog"):
      raise OSError(errno.ENOSPC, "No space left on device", "out/x.json")
  assert str(exit_info.value).startswith("prog: error: out/x.json: No space left on device:")
  with pytest.raises(PermissionError):
    with cli.one_line_errors("prog"):
      raise PermissionError(errno.EACCES, "Permission denied", "out/x.json")


def test_the_study_report_names_a_diverged_member_by_index_and_setting():
  scores = dict(test_error=0.9, fgsm_error_own_eps=0.9, fgsm_error=0.9, pgd_error=1)
  members = [
      {**scores, "test_error": 0.02, "train_loss": [2.3, 0.5], "diverged": None},
      {**scores, "train_loss": [2.3026, None], "diverged": 2},
  ]
  group = {"values": [0.1, 0.3], "members": members}
  text = "\n".join(report.study_lines({"config": {"eps": 0.25}, "groups": {"eps": group}}))
  assert "Diverged (training loss not finite; scored with its last finite parameters): " in text
  assert "member 1 (training eps 0.3) at epoch 2." in text
  assert "| 0.3 | 90.00% | 90.00% | 90.00% | 100.00% | all 2 |" in text
