"""The robust-training experiment end to end on a tiny synthetic MNIST folder (preset tiny)."""

from __future__ import annotations

import json

import pytest

from experiments import robust_training
from tests.conftest import write_idx


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  folder = tmp_path_factory.mktemp("mnist")
  write_idx(folder)
  out = tmp_path_factory.mktemp("out")
  returned = robust_training.main(
      ["--preset", "tiny", "--data-dir", str(folder), "--out", str(out)]
  )
  return returned, out


def test_every_method_is_trained_scored_and_watched(results):
  returned, out = results
  written = json.loads((out / "robust_training.json").read_text())
  assert written["models"] == returned["models"]
  preset = robust_training.PRESETS["tiny"]
  expected = [("small CNN", m) for m in robust_training.cnn_methods(preset)] + [
      ("maxout 240", m) for m in robust_training.maxout_methods(preset)
  ]
  assert [(row["model"], row["method"]) for row in written["models"]] == expected
  for row in written["models"] + written["study"]["members"]:
    assert len(row["watch_pgd_accuracy"]) == len(row["losses"])
    assert all(0 <= a <= 1 for a in row["watch_pgd_accuracy"])
    assert row["pgd_examples"] == min(preset.subset, 30)
  assert (out / written["figures"][0]).is_file()


def test_a_study_member_is_the_model_trained_alone_with_its_step(results):
  """The study's first member (step 1.25 eps) is the FGSM-from-a-random-start CNN: one
  program for all members must give each what it gets alone."""
  returned, _ = results
  alone = next(r for r in returned["models"] if r["method"] == "FGSM, random start")
  member = returned["study"]["members"][0]
  assert member["step_over_eps"] == 1.25
  assert member["losses"] == pytest.approx(alone["losses"], rel=1e-5)
  for key in ("test_error", "fgsm_error", "pgd_error"):
    assert member[key] == pytest.approx(alone[key], abs=1e-6)


def test_the_report_shows_the_table_and_the_study(results):
  from experiments import report

  _, out = results
  text = report.render(out, out / "REPORT.md")
  assert "## Beyond the paper: training that holds" in text
  assert "| small CNN | TRADES |" in text
  assert "Study: FGSM from a random start at eps 0.3 over steps of 1.25, 2 eps" in text
