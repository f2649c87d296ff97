"""Tests of the shallow-model experiments on a tiny synthetic MNIST folder.

The four scripts run once each (module fixture) with the ``tiny`` preset in
one output folder, as they would in sequence: the later ones restore the
models the earlier ones trained. Softmax regression runs with two seeds, so
that the averaging over seeds is checked on the same run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import curves
from experiments import logistic_regression
from experiments import numeric
from experiments import rbf_network
from experiments import rubbish
from experiments import shallow
from experiments import softmax_regression
from experiments import verdicts
from tests.conftest import write_mnist_dir

SCRIPTS = {
    "softmax_regression": softmax_regression,
    "logistic_regression": logistic_regression,
    "rbf_network": rbf_network,
    "rubbish": rubbish,
}
ROW_IDS = {
    "softmax_regression": {"M1"},
    "logistic_regression": {"M2", "L1"},
    "rbf_network": {"M8", "T"},
    "rubbish": {"R"},
}
FIGURES = {
    "logistic_regression": ["figures/logistic_regression.png"],
    "rubbish": ["figures/rubbish.png"],
}
KEYS = {"config", "measured", "per_seed", "sweep", "rows", "figures", "seconds"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("shallow")
  data_dir, out = root / "mnist", root / "out"
  data_dir.mkdir()
  # 1,000 training images: about 200 3s and 7s, two batches of 100.
  write_mnist_dir(data_dir, n_train=1200, n_test=100, gz=False)
  argv = ["--preset", "tiny", "--data-dir", str(data_dir), "--out", str(out)]
  seeds = {"softmax_regression": ["--seeds", "2"]}
  results = {name: script.main([*argv, *seeds.get(name, [])]) for name, script in SCRIPTS.items()}
  return argv, out, results


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_script_writes_its_json_rows_sweep_and_figures(runs, name):
  _, out, results = runs
  written = json.loads((out / f"{name}.json").read_text())
  assert set(written) == KEYS
  assert written["rows"] == results[name]["rows"]
  assert written["config"]["preset"] == "tiny"
  assert {row["id"] for row in written["rows"]} == ROW_IDS[name]
  for row in written["rows"]:
    assert row["verdict"] in verdicts.VERDICTS and row["paper"]
    assert row["measured"] is None or 0 <= row["measured"] <= 1
  assert written["sweep"]
  for curve in written["sweep"].values():
    assert curve["eps"] == list(curves.SWEEP_EPS)
    assert len(curve["error"]) == len(curve["confidence"]) == len(curves.SWEEP_EPS)
    assert all(0 <= e <= 1 for e in curve["error"])
  assert written["figures"] == FIGURES.get(name, [])
  for figure in written["figures"]:
    assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["softmax_regression", "logistic_regression", "rbf_network"])
def test_the_sweep_at_the_papers_eps_is_the_measured_fgsm_error(runs, name):
  # Two code paths: advjax.epsilon_sweep, and fgsm_examples then score.
  results = runs[2][name]
  (curve,) = results["sweep"].values()
  at = curve["eps"].index(shallow.PRESETS["tiny"].eps)
  assert curve["error"][at] == pytest.approx(results["measured"]["fgsm_error"], abs=1e-6)


def test_logistic_fgsm_point_is_the_closed_form_worst_case(runs):
  closed = runs[2]["logistic_regression"]["measured"]["closed_form"]
  assert closed["direction_match"] == 1.0
  assert closed["loss_gap"] <= 1e-5 * (1 + closed["fgsm_loss"])
  assert closed["worst_case_loss"] > 0


def test_l1_runs_record_the_training_error_of_every_epoch(runs):
  l1 = runs[2]["logistic_regression"]["measured"]["l1"]
  assert set(l1) == {"clean", "l1_0.0025", "l1_0.0001", "l1_1e-05"}
  epochs = shallow.PRESETS["tiny"].l1_epochs
  for coefficient in logistic_regression.L1_COEFFICIENTS:
    run = l1[f"l1_{coefficient:g}"]
    assert len(run["train_error_by_epoch"]) == epochs
    assert run["train_error_by_epoch"][-1] == pytest.approx(run["train_error"])


def test_shared_models_are_trained_once(runs):
  _, out, _ = runs
  folders = sorted(p.name.rsplit("-", 1)[0] for p in (out / "shallow_runs").iterdir())
  assert folders == sorted(
      [
          "softmax_regression",  # seed 0, restored by the other scripts
          "softmax_regression",  # seed 1
          "logistic_regression",
          "maxout_softmax",
          "maxout_l1_0.0025",
          "maxout_l1_0.0001",
          "maxout_l1_1e-05",
          "rbf_network",
          "maxout_sigmoid",
      ]
  )


def test_seeds_are_averaged(runs):
  results = runs[2]["softmax_regression"]
  per_seed = results["per_seed"]
  assert [r["seed"] for r in per_seed] == [0, 1]
  assert per_seed[0]["test_error"] != per_seed[1]["test_error"]
  assert results["measured"]["test_error"] == pytest.approx(
      (per_seed[0]["test_error"] + per_seed[1]["test_error"]) / 2
  )


def test_transfer_agreement_follows_the_definitions():
  labels = np.array([0, 0, 0, 0, 0])
  maxout = np.array([1, 1, 2, 3, 0])  # four mistakes
  softmax = np.array([1, 0, 2, 4, 5])  # agrees on two of them, errs on four
  rbf = np.array([1, 0, 0, 4, 0])  # agrees on one, errs on two
  agreement = rbf_network.transfer_agreement(labels, maxout, softmax, rbf)
  assert agreement["maxout_error"] == 0.8
  assert agreement["softmax_agrees_on_maxout_mistakes"] == 0.5
  assert agreement["rbf_agrees_on_maxout_mistakes"] == 0.25
  assert agreement["softmax_agrees_where_both_wrong"] == 2 / 3
  assert agreement["rbf_agrees_where_both_wrong"] == 0.5
  assert agreement["rbf_agrees_with_softmax_where_both_wrong"] == 1.0


def test_mean_over_seeds():
  assert numeric.mean_over_seeds(
      [{"a": 1.0, "b": [None, 2.0], "c": "x"}, {"a": 3.0, "b": [None, 4.0], "c": "x"}]
  ) == {"a": 2.0, "b": [None, 3.0], "c": "x"}


def test_the_adversarial_reference_is_read_from_mnist_maxout_when_present(tmp_path):
  assert logistic_regression.adversarial_reference(tmp_path) is None
  (tmp_path / "mnist_maxout.json").write_text(
      json.dumps({"models": {"adversarial": {"fgsm_error": 0.2}}})
  )
  assert logistic_regression.adversarial_reference(tmp_path) == 0.2
