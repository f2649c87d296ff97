"""Tests of the paper's experiments (noise controls, ensemble, sweeps, figures) and the report.

The scripts run end to end on a tiny synthetic MNIST folder with their
``tiny`` preset: these tests check what they write, not what they measure.
The report runs on synthetic results files.
"""

from __future__ import annotations

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import loop
from advjax import models
from advjax import train
from experiments import all as experiments_all
from experiments import common
from experiments import ensemble
from experiments import epsilon_sweep
from experiments import maxout
from experiments import mnist_maxout
from experiments import noise_controls
from experiments import paper
from experiments import report
from experiments import training_study
from tests.conftest import write_idx

# The ids of ../shared/PAPER.md's table, written out here independently of
# experiments.paper.ROWS, so that a row dropped from the report fails a test.
PAPER_IDS = (
    "M1",
    "M2",
    "M3",
    "M4",
    "M5",
    "M6",
    "M7",
    "L1",
    "M8",
    "T",
    "F4",
    "E1",
    "DBM",
    "R",
    "C10",
    "IN",
)


# ---------------------------------------------------------------------------
# The report, on synthetic results.
# ---------------------------------------------------------------------------


def write_json(folder: pathlib.Path, name: str, content: dict) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  (folder / f"{name}.json").write_text(json.dumps(content))


def row(row_id: str, verdict: str, measured: float = 0.5, metric: str = "FGSM error"):
  return {
      "id": row_id,
      "metric": metric,
      "paper": "99.9%",
      "measured": measured,
      "verdict": verdict,
      "note": f"note of {row_id}",
  }


def maxout_results(
    preset: str = "quick", adversarial_error: float = 0.011, units: int = 240
) -> dict:
  """mnist_maxout.json as that script writes it: models, transfer, audit, config, rows."""
  results = {
      "models": {
          "clean": {
              "test_error": 0.012,
              "test_confidence": 0.9,
              "fgsm_error": 0.91,
              "fgsm_confidence": 0.95,
          },
          "adversarial": {
              "test_error": adversarial_error,
              "test_confidence": 0.9,
              "fgsm_error": 0.30,
              "fgsm_confidence": 0.80,
          },
      },
      "transfer": {"clean_to_adversarial": 0.25, "adversarial_to_clean": 0.45},
      "audit": {
          name: {
              "pgd": {"0.1": 0.5, "0.25": pgd},
              "fgsm_predicted_labels": 0.35,
              "worst_fgsm": {"error": 0.6, "eps": 0.1},
          }
          for name, pgd in (("clean", 1.0), ("adversarial", 0.97))
      },
      "test_examples": 10_000,
      "config": {
          "preset": preset,
          "units": units,
          "epochs": 40,
          "adversarial_epochs": 60,
          "patience": None,
          "seeds": 1,
          "eps": 0.25,
          "dataset": "mnist",
      },
      "seconds": 600.0,
  }
  results["rows"] = mnist_maxout.rows(results)
  return results


def summary_lines(text: str) -> dict[str, str]:
  """The summary table's lines, keyed by their id."""
  summary = text.split("## Summary")[1].split("\n## ")[0]
  return {
      line.split("|")[1].strip(): line
      for line in summary.splitlines()
      if line.startswith("| ") and not line.startswith("| id ")
  }


def test_the_report_has_every_paper_row_and_passes_verdicts_through(tmp_path):
  out = tmp_path / "results"
  write_json(
      out,
      "softmax_regression",
      {
          "config": {"preset": "quick", "seeds": 3},
          "rows": [
              row("M1", "reproduced", 0.995),
              row("M1", "same direction", 0.6, "confidence on the mistakes"),
          ],
      },
  )
  write_json(
      out,
      "ensemble",
      {"config": {"preset": "paper", "seeds": 1}, "rows": [row("E1", "not reproduced", 0.42)]},
  )
  write_json(out, "mnist_maxout", maxout_results())
  (out / "figures").mkdir()
  (out / "figures" / "ensemble_curve.png").write_bytes(b"not really a png")
  report_path = tmp_path / "docs" / "REPORT.md"

  report.main(["--out", str(out), "--report", str(report_path)])

  text = report_path.read_text()
  lines = summary_lines(text)
  assert set(lines) == set(PAPER_IDS)
  assert "99.50%" in lines["M1"] and "softmax_regression (quick, 3 seeds)" in lines["M1"]
  assert "same direction (1 of 2 reproduced)" in lines["M1"]
  assert lines["E1"].rstrip(" |").endswith("not reproduced")
  for missing, file in (("M7", "noise_controls"), ("R", "rubbish"), ("M8", "rbf_network")):
    assert f"not run (no {file}.json)" in lines[missing]
  for out_of_scope in ("DBM", "C10", "IN"):
    assert "out of scope:" in lines[out_of_scope]
  assert "91.00%" in lines["M3"] and "reproduced" in lines["M3"]
  assert "30.00%" in lines["M6"]
  assert "not run (mnist_maxout.json has no row M5)" in lines["M5"]
  details = text.split("## Every measured number")[1]
  assert "| E1 | FGSM error | 99.9% | 42.00% | not reproduced | note of E1 |" in details
  # Figures are embedded by a path relative to the report.
  assert "](../results/figures/ensemble_curve.png)" in text


def test_the_report_takes_each_row_from_the_strongest_run(tmp_path):
  write_json(tmp_path, "mnist_maxout", maxout_results())
  write_json(tmp_path, "mnist_maxout_long", maxout_results("long", 0.0085))
  text = report.render(tmp_path, tmp_path / "REPORT.md")
  lines = summary_lines(text)
  assert "mnist_maxout_long (long, 1 seed)" in lines["M4"]
  assert "0.85%" in lines["M4"] and "1.10%" not in lines["M4"]
  assert lines["M4"].rstrip(" |").endswith("reproduced")
  # The details keep both runs' numbers.
  details = text.split("## Every measured number")[1]
  assert "1.10%" in details and "0.85%" in details


def test_the_report_says_what_stronger_attacks_leave_of_the_robustness(tmp_path):
  write_json(tmp_path, "mnist_maxout", maxout_results())
  text = report.render(tmp_path, tmp_path / "REPORT.md")
  section = text.split("## Beyond the paper")[1].split("\n## ")[0]
  assert "| adversarial | 30.0% | 50.0% | 97.0% | 35.0% | 60.0% (eps 0.1) |" in section
  assert "FGSM error of 30.0% at eps 0.25 becomes 97.0% under PGD at the same eps" in section


def test_maxout_rows_judge_the_numbers():
  rows = {(r["id"], r["metric"]): r for r in maxout_results()["rows"]}
  assert rows["M3", "FGSM error, clean maxout"]["verdict"] == "reproduced"
  # 30% against the paper's 17.9%, but below the clean model's 91%.
  assert rows["M6", "FGSM error, adversarially trained maxout"]["verdict"] == "same direction"
  # 1.1% against 1.2%: -0.10 +- 0.15 points.
  assert "difference -0.10 +- 0.15 points" in rows["M4", "test error, clean maxout"]["note"]
  untrained = maxout_results()
  untrained["models"]["clean"]["test_error"] = 0.9
  verdicts = {r["verdict"] for r in mnist_maxout.rows(untrained) if r["id"] == "M3"}
  assert verdicts == {"not reproduced"}
  assert {r["id"] for r in maxout_results(units=1600)["rows"]} >= {"M5"}


def test_judge():
  assert common.judge(0.85, 0.894, 0.10, False) == "reproduced"
  assert common.judge(0.60, 0.894, 0.10, True) == "same direction"
  assert common.judge(0.60, 0.894, 0.10, False) == "not reproduced"
  assert common.judge(None, 0.894, 0.10, True) == "not reproduced"
  assert common.judge(0.89, 0.894, 0.10, True, trained=False) == "not reproduced"


def test_the_driver_runs_every_experiment_the_report_expects():
  expected = {row.results for row in paper.ROWS if row.results}
  assert expected <= set(experiments_all.EXPERIMENTS)
  # The sweep draws the others' curves, so it runs last.
  assert experiments_all.EXPERIMENTS[-1] == "epsilon_sweep"


def test_the_driver_runs_the_experiments_in_order_then_the_report(tmp_path, monkeypatch):
  out = tmp_path / "results"
  write_json(
      out,
      "ensemble",
      {"config": {"preset": "quick", "seeds": 1}, "rows": [row("E1", "reproduced")]},
  )
  calls = []

  def fake_run(name, flags):
    calls.append((name, list(flags)))
    return (3 if name == "rubbish" else 0), 1.0

  monkeypatch.setattr(experiments_all, "run_experiment", fake_run)
  with pytest.raises(SystemExit) as exit_info:
    experiments_all.main(
        ["--data-dir", "mnist", "--out", str(out), "--report", str(tmp_path / "REPORT.md")]
    )
  assert "failed: rubbish" in str(exit_info.value)
  assert [name for name, _ in calls] == list(experiments_all.EXPERIMENTS)
  assert calls[0][1] == ["--preset", "quick", "--out", str(out), "--data-dir", "mnist"]
  assert "reproduced" in summary_lines((tmp_path / "REPORT.md").read_text())["E1"]


def test_the_report_without_a_results_folder_is_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    report.main(["--out", str(tmp_path / "nowhere"), "--report", str(tmp_path / "R.md")])
  assert "nowhere: no such results folder" in str(exit_info.value)


# ---------------------------------------------------------------------------
# The scripts on a tiny MNIST folder.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> pathlib.Path:
  folder = tmp_path_factory.mktemp("mnist")
  write_idx(folder)
  return folder


def check_rows(results: dict, row_id: str, count: int) -> None:
  rows = [r for r in results["rows"] if r["id"] == row_id]
  assert len(rows) == count, results["rows"]
  for r in rows:
    assert set(r) >= {"id", "metric", "paper", "measured", "verdict", "note"}
    # Random labels: no tiny model learns them, so nothing can be reproduced.
    assert r["verdict"] == "not reproduced"


def check_sweep(sweep: dict) -> None:
  assert sweep["eps"] == pytest.approx(list(common.SWEEP_EPS))
  assert len(sweep["error"]) == len(sweep["confidence"]) == len(sweep["eps"])
  assert all(0 <= e <= 1 for e in sweep["error"])


def test_the_scripts_write_their_results_and_figures(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "results"
  common = ["--preset", "tiny", "--data-dir", str(tiny_mnist), "--out", str(out)]

  noise_controls.main(common)
  noise = json.loads((out / "noise_controls.json").read_text())
  assert set(noise["models"]) == {"sign", "uniform"}
  assert noise["config"]["preset"] == "tiny" and noise["config"]["units"] == 8
  check_rows(noise, "M7", 4)
  assert len(noise["sweep"]) == 2
  for sweep in noise["sweep"].values():
    check_sweep(sweep)

  ensemble.main(common)
  ens = json.loads((out / "ensemble.json").read_text())
  assert ens["config"]["members"] == 3
  assert len(ens["per_seed"][0]["attack_on_one_member"]["per_member_fgsm_error"]) == 2
  check_rows(ens, "E1", 2)
  for sweep in ens["sweep"].values():
    check_sweep(sweep)

  epsilon_sweep.main(common)
  sweeps = json.loads((out / "epsilon_sweep.json").read_text())
  check_rows(sweeps, "F4", 2)
  check_rows(sweeps, "M6", 1)
  assert sweeps["maxouts"].startswith("trained in")
  assert sweeps["left_out"] == []
  for figure in sweeps["figures"].values():
    assert (out / figure).stat().st_size > 1000
  assert "epsilon_sweep.json" in capsys.readouterr().out

  report.main(["--out", str(out), "--report", str(out / "REPORT.md")])
  text = (out / "REPORT.md").read_text()
  assert "(figures/epsilon_sweep_fig4_logits.png)" in text
  assert "noise_controls (tiny, 1 seed)" in summary_lines(text)["M7"]


def test_epsilon_sweep_reads_mnist_maxouts_parameters(tiny_mnist, tmp_path):
  model = models.maxout_mlp(units=6, pieces=3)
  pair = {
      name: model.init(jax.random.key(seed), jnp.zeros((1, 784)))
      for seed, name in enumerate(maxout.MODEL_NAMES)
  }
  path = tmp_path / epsilon_sweep.PARAMS_FILE
  maxout.save_params(path, pair)
  loaded_model, loaded = maxout.load_params(path)
  assert loaded_model.module.units == 6 and loaded_model.module.pieces == 3
  chex.assert_trees_all_equal(loaded, pair)

  np.savez(path, **{"clean/output/kernel": np.zeros(3)})
  with pytest.raises(SystemExit) as exit_info:
    epsilon_sweep.main(["--preset", "tiny", "--data-dir", str(tiny_mnist), "--out", str(tmp_path)])
  message = str(exit_info.value)
  assert "\n" not in message and epsilon_sweep.PARAMS_FILE in message


# ---------------------------------------------------------------------------
# The pieces.
# ---------------------------------------------------------------------------


def test_an_ensembles_members_are_its_seeds_trained_alone(tiny_mnist, tmp_path):
  data = advjax.data.load_mnist(tiny_mnist)
  preset = ensemble.PRESETS["tiny"]
  stacked, summaries = ensemble.train_ensemble(preset, 1, data, tmp_path)
  assert [s["seed"] for s in summaries] == [3, 4, 5]  # ensemble 1 of 3 members
  model = models.maxout_mlp(units=preset.units)
  config = loop.TrainConfig(epochs=preset.epochs, eval_eps=preset.eps, seed=4)
  alone = loop.fit(model, data.train_full, config)
  chex.assert_trees_all_close(advjax.member(stacked, 1), alone.params, rtol=1e-5, atol=1e-7)
  assert not np.allclose(stacked["output"]["kernel"][0], stacked["output"]["kernel"][1])


def test_the_ensemble_attacks_match_fgsm_on_the_ensemble_and_on_a_member():
  model = models.maxout_mlp(units=4, pieces=2)
  stacked = advjax.init_ensemble(lambda k: model.init(k, jnp.zeros((1, 784))), jax.random.key(0), 3)
  x = jax.random.uniform(jax.random.key(1), (6, 784))
  y = jnp.arange(6) % 10
  attacks = ensemble.attacks(model)
  probs = lambda p, xs: advjax.ensemble_probs(model.probabilities, p, xs)
  expected = {
      "ensemble": advjax.fgsm(advjax.ensemble_loss(model.probabilities), stacked, x, y, 0.25),
      "member": advjax.fgsm(model.loss_fn(), advjax.member(stacked, 2), x, y, 0.25),
  }
  for name, (loss_fn, probs_fn) in attacks.items():
    sweep = advjax.epsilon_sweep(
        loss_fn, probs_fn, (stacked, jnp.int32(2)), x, y, jnp.array([0.0, 0.25])
    )
    error, confidence = advjax.error_and_confidence(probs(stacked, expected[name]), y)
    np.testing.assert_allclose(sweep.error[1], error)
    np.testing.assert_allclose(sweep.confidence[1], confidence, rtol=1e-5)


def test_line_fit_and_participation_ratio():
  eps = np.linspace(-1, 1, 21)
  kinked = np.stack([np.abs(eps), 3 * eps + 1], -1)[:, None, :]  # (K, 1, 2)
  assert epsilon_sweep.line_fit_r2(eps, kinked) == pytest.approx(1.0)
  curved = (eps**2)[:, None, None]
  assert epsilon_sweep.line_fit_r2(eps, curved) < 0.99
  one_pixel = np.zeros((784, 1))
  one_pixel[3] = 2.0
  assert epsilon_sweep.participation_ratio(one_pixel) == pytest.approx(1 / 784)
  assert epsilon_sweep.participation_ratio(np.ones((784, 2))) == pytest.approx(1.0)


def test_gather_sweeps_reads_both_layouts_and_notes_the_rest(tmp_path):
  curve = {"eps": [0, 0.25], "error": [0.01, 0.9], "confidence": [0.9, 0.95]}
  write_json(tmp_path, "softmax_regression", {"sweep": curve})
  write_json(tmp_path, "noise_controls", {"sweep": {"sign": curve, "bad": {"eps": []}}})
  write_json(tmp_path, "rubbish", {"rows": []})
  write_json(tmp_path, "epsilon_sweep", {"sweep": curve})  # its own: skipped
  curves, notes = epsilon_sweep.gather_sweeps(tmp_path)
  assert set(curves) == {"softmax_regression", "noise_controls: sign"}
  assert notes == [
      "noise_controls.json: sweep 'bad' lacks eps and error lists",
      "rubbish.json: no sweep",
  ]


def test_a_study_member_equals_the_model_trained_alone_with_its_settings(tiny_mnist, tmp_path):
  preset = training_study.PRESETS["tiny"]
  data = advjax.data.load_mnist(tiny_mnist)
  objective = preset.groups()["eps"]
  members = training_study.train_group(
      "eps", objective, len(preset.eps_values), preset, data, tmp_path
  )
  model = models.maxout_mlp(units=preset.training.units)
  config = loop.TrainConfig(epochs=preset.training.epochs, eval_eps=preset.eps, seed=preset.seed)
  for member, eps in zip(members, preset.eps_values):
    alone = loop.fit(model, data.train_full, config, objective=train.Adversarial(eps, preset.alpha))
    chex.assert_trees_all_close(member.params, alone.params, rtol=1e-5, atol=1e-7)
  # eps 0 and 0.3 trained differently.
  assert not np.allclose(
      members[0].params["output"]["kernel"], members[1].params["output"]["kernel"]
  )


def test_the_training_study_writes_both_groups_and_the_report_shows_them(tiny_mnist, tmp_path):
  out = tmp_path / "out"
  results = training_study.main(
      ["--preset", "tiny", "--data-dir", str(tiny_mnist), "--out", str(out), "--eps", "0.2"]
  )
  written = json.loads((out / "training_study.json").read_text())
  assert written["groups"]["eps"]["values"] == [0.0, 0.3]
  assert written["groups"]["alpha"]["values"] == [0.5, 1.0]
  assert written["config"]["eps"] == 0.2 and results["rows"] == []
  for group in written["groups"].values():
    for row in group["members"]:
      assert set(training_study.SCORES) <= set(row)
      assert all(0 <= row[key] <= 1 for key in training_study.SCORES)
  assert (out / written["figures"]["scores against the training eps and alpha"]).exists()
  text = report.render(out, out / "REPORT.md")
  section = text.split("## Beyond the paper: training eps and alpha")[1]
  assert "| 0.3 |" in section and "| 1 |" in section


def test_the_study_section_names_members_that_did_not_learn():
  scores = lambda error: dict(
      test_error=error, fgsm_error_own_eps=0.5, fgsm_error=error, pgd_error=1
  )
  members = [
      {**scores(0.02), "train_loss": [2.3026, 2.3020, 1.8, 0.5]},
      {**scores(0.8865), "train_loss": [2.3026, 2.3025, 2.3019, 2.3014]},
  ]
  group = {"values": [0.1, 0.3], "members": members}
  text = "\n".join(report.study_lines({"config": {"eps": 0.25}, "groups": {"eps": group}}))
  assert "Did not learn (clean error 50% or more, chance level): training eps 0.3" in text
  assert "FGSM error at 0.25 is lowest at training eps 0.1" in text  # not at 0.3's 88.65%
  assert "| 0.1 | 2.00% | 50.00% | 2.00% | 100.00% | 2 |" in text  # two epochs at ln 10
  assert "| 0.3 | 88.65% | 50.00% | 88.65% | 100.00% | all 4 |" in text
