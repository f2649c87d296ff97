"""The robust-training experiment end to end on a tiny synthetic MNIST folder (preset tiny).

The smoke run trains one of the CNN's objectives and none of the maxout's (the
objectives are the library's, tested in test_robust_objectives.py), then the
step study, whose first member (step 1.25 eps) is set up as the CNN's "FGSM,
random start": one program for the study's members must give it what it got
trained alone.
"""

from __future__ import annotations

import json
import math

import pytest

from experiments import report
from experiments import robust_training
from tests.conftest import write_idx

CNN_METHODS = ("FGSM, random start",)
MAXOUT_METHODS = ()


def only(methods, names):
  return lambda preset: {k: v for k, v in methods(preset).items() if k in names}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  folder = tmp_path_factory.mktemp("mnist")
  write_idx(folder)
  out = tmp_path_factory.mktemp("out")
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(robust_training, "cnn_methods", only(robust_training.cnn_methods, CNN_METHODS))
    patch.setattr(
        robust_training, "maxout_methods", only(robust_training.maxout_methods, MAXOUT_METHODS)
    )
    returned = robust_training.main(
        ["--preset", "tiny", "--data-dir", str(folder), "--out", str(out)]
    )
  return returned, out


def test_every_model_is_trained_scored_and_watched(results):
  returned, out = results
  written = json.loads((out / "robust_training.json").read_text())
  assert set(written) == {"models", "study", "figures", "field", "config", "rows", "seconds"}
  assert written["config"]["clip"] == [0.0, 1.0] and written["rows"] == []
  expected = [("small CNN", m) for m in CNN_METHODS] + [("maxout 240", m) for m in MAXOUT_METHODS]
  assert [(row["model"], row["method"]) for row in written["models"]] == expected
  preset = robust_training.PRESETS["tiny"]
  for row in written["models"] + written["study"]["members"]:
    assert len(row["watch_pgd_accuracy"]) == len(row["losses"]) == preset.epochs
    # The kept epoch is the best watched one; the standard error the binomial one.
    best = max(row["watch_pgd_accuracy"])
    assert row["watch_pgd_accuracy"][row["kept_epoch"] - 1] == best
    assert row["pgd_examples"] == preset.subset and row["pgd_steps"] == preset.pgd_steps
    p = row["pgd_error"]
    assert row["pgd_error_se"] == pytest.approx(math.sqrt(p * (1 - p) / preset.subset))
  assert (out / written["figures"][0]).is_file()


def test_a_study_member_is_the_model_trained_alone_with_its_step(results):
  returned, _ = results
  alone = next(r for r in returned["models"] if r["method"] == "FGSM, random start")
  member = returned["study"]["members"][0]
  assert member["step_over_eps"] == 1.25
  assert member["losses"] == pytest.approx(alone["losses"], rel=1e-5)
  for key in ("test_error", "fgsm_error", "pgd_error"):
    assert member[key] == pytest.approx(alone[key], abs=1e-6)
  assert member["autoattack"]["robust_accuracy"] == alone["autoattack"]["robust_accuracy"]


def test_autoattack_accounts_for_every_attacked_image(results):
  returned, _ = results
  for row in returned["models"] + returned["study"]["members"]:
    attack = row["autoattack"]
    assert attack["n"] == row["pgd_examples"] and attack["eps"] == [pytest.approx(0.3)]
    broken = sum(counts[0] for counts in attack["broken_by"].values())
    assert broken + round(attack["robust_accuracy"][0] * attack["n"]) == attack["n"]


def test_the_report_shows_the_table_and_the_study(results):
  _, out = results
  text = report.render(out, out / "REPORT.md")
  assert "## Beyond the paper: training that holds" in text
  assert "| small CNN | FGSM, random start |" in text
  assert "Study: FGSM from a random start at eps 0.3 over steps of 1.25, 2 eps" in text
  assert f"AutoAttack error ({robust_training.PRESETS['tiny'].subset} images)" in text
  assert "- target: FGSM, random start, clean accuracy >= 97.5%: " in text
