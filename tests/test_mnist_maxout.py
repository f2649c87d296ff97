"""Tests of `python -m experiments.mnist_maxout` on tiny IDX folders.

`main` runs in-process where it can: a subprocess pays JAX's import and
every compilation again. The flags and refusals every experiment shares are
tested once, in test_runner.py.
"""

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

import advjax
from advjax import data as data_lib
from experiments import cli
from experiments import maxout
from experiments import mnist_maxout
from experiments import training
from tests.conftest import write_idx

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--units", "8", "--autoattack", "0"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  data_dir, out = tmp_path_factory.mktemp("mnist"), tmp_path_factory.mktemp("out")
  write_idx(data_dir)
  flags = ["--preset", "tiny", "--data-dir", str(data_dir), "--out", str(out)]
  results = mnist_maxout.main([*flags, "--eps", "0.1", "--alpha", "0.3"])
  return flags, out, results


def test_the_experiment_writes_its_results_and_the_pair(tiny_run, capsys):
  _, out, results = tiny_run
  written = json.loads((out / "mnist_maxout_tiny.json").read_text())
  assert set(written) == {"models", "transfer", "audit", "test_examples", "config", "rows"} | {
      "seconds",
      "figures",
  }
  assert (written["config"]["eps"], written["config"]["alpha"]) == (0.1, 0.3)
  assert written["config"]["units"] == 8 and written["config"]["epochs"] == 1
  assert {row["id"] for row in written["rows"]} == {"M3", "M4", "M6"}
  for name in ("clean", "adversarial"):
    assert set(written["audit"][name]["pgd"]) == {"0.1"}
    (row,) = written["models"][name]["per_seed"]
    assert row["seed"] == 0 and row["epochs_trained"] == 1
  with np.load(out / "mnist_maxout_tiny_params.npz") as params:
    assert params["clean/maxout_0/kernel"].shape == (784, 40)
    assert params["adversarial/output/kernel"].shape == (8, 10)


def test_autoattack_never_beats_the_clean_accuracy_and_draws_its_curve(tiny_run):
  """Checked against the saved pair's own clean accuracy on the attacked images."""
  flags, out, results = tiny_run
  model, pair = maxout.load_params(out / "mnist_maxout_tiny_params.npz")
  test = data_lib.load_mnist(flags[flags.index("--data-dir") + 1]).test
  for name, params in pair.items():
    attack = results["audit"][name]["per_seed"][0]["autoattack"]
    tiny = maxout.PRESETS["tiny"]
    assert attack["n"] == tiny.autoattack_subset
    assert attack["eps"] == pytest.approx(tiny.autoattack_eps)
    x, y = test.x[: attack["n"]], test.y[: attack["n"]]
    clean = np.mean(np.argmax(model.scores(params, x), -1) == y)
    assert max(attack["robust_accuracy"]) <= clean
  assert (out / results["figures"]["AutoAttack robust accuracy against eps"]).is_file()


def test_the_transfer_is_each_models_error_on_the_others_fgsm_examples(tiny_run, tmp_path):
  """Checked with `advjax.fgsm` on the saved pair, not the experiment's scoring."""
  flags, out, results = tiny_run
  model, pair = maxout.load_params(out / "mnist_maxout_tiny_params.npz")
  test = data_lib.load_mnist(flags[flags.index("--data-dir") + 1]).test
  examples = {
      name: advjax.fgsm(model.loss_fn(), params, test.x, test.y, 0.1)
      for name, params in pair.items()
  }
  error = lambda name, x: float(np.mean(np.argmax(model.scores(pair[name], x), -1) != test.y))
  transfer = results["transfer"]
  assert transfer["clean_to_adversarial"] == pytest.approx(error("adversarial", examples["clean"]))
  assert transfer["adversarial_to_clean"] == pytest.approx(error("clean", examples["adversarial"]))
  for name in maxout.MODEL_NAMES:
    assert results["models"][name]["fgsm_error"] == pytest.approx(error(name, examples[name]))


def test_eps_and_alpha_name_their_own_runs(tmp_path, monkeypatch):
  """The run folders of both models, recorded by a stand-in for the training loop."""
  folders = []

  def record(model, split, config, *, seeds, workdir, **kwargs):
    folders.append(pathlib.Path(workdir).name)
    return [types.SimpleNamespace(history=[], best_epoch=0, diverged=None, params={})] * len(seeds)

  monkeypatch.setattr(training.loop, "fit_members", record)
  write_idx(tmp_path)
  data = data_lib.load_mnist(tmp_path)
  names = []
  for eps, alpha in ((0.1, 0.3), (0.1, 0.4), (0.2, 0.4)):
    preset = dataclasses.replace(maxout.PRESETS["quick"], eps=eps, alpha=alpha)
    folders.clear()
    mnist_maxout.train_pair(preset, data, tmp_path, None)
    names.append(dict(zip(maxout.MODEL_NAMES, folders)))
  # alpha sets only the adversarial model; eps the clean model's validation too.
  assert names[0]["clean"] == names[1]["clean"] != names[2]["clean"]
  assert len({n["adversarial"] for n in names}) == 3
  assert all(n["adversarial"].startswith("adversarial-") for n in names)


def test_the_papers_protocol_runs_at_tiny_scale(tmp_path):
  """Early stopping, then retraining, for two seeds as one population (preset long)."""
  data_dir, out = tmp_path / "mnist", tmp_path / "out"
  write_idx(data_dir, n_train=300)
  flags = ["--preset", "long", "--seeds", "2", *TINY, "--data-dir", str(data_dir)]
  mnist_maxout.main([*flags, "--out", str(out)])
  written = json.loads((out / "mnist_maxout_long.json").read_text())
  for name in ("clean", "adversarial"):
    rows = written["models"][name]["per_seed"]
    assert [row["seed"] for row in rows] == [0, 1]
    # One selection epoch, then as many retraining epochs as it chose.
    assert all(row["best_epoch"] == 1 and row["epochs_trained"] == 2 for row in rows)
    assert [len(curve["epoch"]) for curve in written["models"][name]["curves"]] == [1, 1]
  assert (out / "figures" / "mnist_maxout_long_validation.png").exists()


def test_the_default_preset_is_quick_and_tiny_ranks_with_no_run():
  """The tests' tiny preset is neither the command line's default nor a step toward the paper."""
  experiment = mnist_maxout.EXPERIMENT
  flags = cli.parser(experiment.prog, experiment.description, experiment.presets, alpha=True)
  assert flags.parse_args([]).preset == "quick"
  assert "tiny" not in maxout.STRENGTH


def test_bad_flag_values_are_refused(tmp_path):
  with pytest.raises(SystemExit, match="--epochs must be >= 1"):
    mnist_maxout.main(["--epochs", "0", "--out", str(tmp_path)])


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_hosts_match_one(tiny_run, tmp_path):
  """Two processes of 2 CPU devices each, joined by jax.distributed on localhost, train the
  fixture's pair."""
  flags, out, _ = tiny_run
  coordinator = f"localhost:{free_port()}"
  env = {
      **os.environ,
      "PYTHONPATH": str(REPO),
      # The tests' flags (conftest.py's optimisation level), and 2 devices a host.
      "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
  }
  hosts = [
      subprocess.Popen(
          [sys.executable, "-m", "experiments.mnist_maxout", *flags[:-1], str(tmp_path)]
          + ["--eps", "0.1", "--alpha", "0.3", "--autoattack", "0", "--devices", "all"]
          + ["--coordinator", coordinator]
          + ["--num-processes", "2", "--process-id", str(i)],
          cwd=REPO,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  for host in hosts:
    output = host.communicate(timeout=300)[0]
    assert host.returncode == 0, output
  two_hosts = json.loads((tmp_path / "mnist_maxout_tiny.json").read_text())
  assert two_hosts["config"]["devices"] == 4
  with (
      np.load(tmp_path / "mnist_maxout_tiny_params.npz") as a,
      np.load(out / "mnist_maxout_tiny_params.npz") as b,
  ):
    assert set(a) == set(b)
    for key in a:
      np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


@pytest.mark.parametrize(
    "devices, message",
    [("3", "does not divide the batch"), ("x", "count >= 1 or 'all'"), ("64", "only")],
)
def test_bad_device_counts_are_refused(tmp_path, devices, message):
  with pytest.raises(SystemExit, match=message):
    mnist_maxout.main(["--devices", devices, "--out", str(tmp_path)])
