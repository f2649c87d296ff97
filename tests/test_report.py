"""Tests of the report and of the driver that runs every experiment, on synthetic results.

The report reads what the experiments wrote; these tests write results files
by hand (mnist_maxout's rows judged by `experiments.mnist_maxout.rows`), so
that no experiment trains.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from experiments import all as experiments_all
from experiments import mnist_maxout
from experiments import paper
from experiments import report

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


def test_the_study_says_what_autoattack_leaves_of_each_member_that_learned():
  def member(error, robust, zero_gradients):
    flags = dict(square_broke=[0, 0], zero_gradients=zero_gradients, non_monotone=False)
    flags["any"] = bool(zero_gradients)
    return dict(
        test_error=error,
        fgsm_error_own_eps=0.5,
        fgsm_error=error,
        pgd_error=1,
        autoattack=dict(eps=[0.1, 0.3], n=1000, robust_accuracy=robust, flags=flags),
    )

  members = [member(0.02, [0.75, 0.125], 3), member(0.8865, [0.126, 0.126], 0)]
  group = {"values": [0.1, 0.3], "members": members}
  text = "\n".join(report.study_lines({"config": {"eps": 0.25}, "groups": {"eps": group}}))
  # The table holds errors: one minus the robust accuracy.
  assert "| 0.1 | 2.00% | 50.00% | 2.00% | 100.00% | 25.0% | 87.5% |" in text
  assert (
      "- AutoAttack standard, the member at training eps 0.1: robust accuracy 75.0% at eps "
      "0.1, 12.5% at eps 0.3; AutoAttack flags gradient masking: 3 points had a zero gradient."
  ) in text
  assert "the member at training eps 0.3" not in text  # it did not learn
