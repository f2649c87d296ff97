"""Tests of the maxout experiments of the paper: noise controls, ensemble, epsilon sweep, study.

Each runs once on a tiny synthetic MNIST folder with its ``tiny`` preset: a
smoke test of what it writes, and a property that fails if it measured the
wrong thing, checked against a second computation. Random labels teach a
tiny model nothing, so its rows can only be "not reproduced".
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import models
from advjax import objectives
from experiments import curves
from experiments import ensemble
from experiments import epsilon_sweep
from experiments import maxout
from experiments import noise_controls
from experiments import report
from experiments import training_study
from tests.conftest import write_idx


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> pathlib.Path:
  folder = tmp_path_factory.mktemp("mnist")
  write_idx(folder)
  return folder


def flags(data_dir: pathlib.Path, out: pathlib.Path) -> list[str]:
  return ["--preset", "tiny", "--data-dir", str(data_dir), "--out", str(out)]


def check_rows(results: dict, row_id: str, count: int) -> None:
  rows = [r for r in results["rows"] if r["id"] == row_id]
  assert len(rows) == count, results["rows"]
  for r in rows:
    assert set(r) >= {"id", "metric", "paper", "measured", "verdict", "note"}
    assert r["verdict"] == "not reproduced"


def errors(model, params, x, y) -> float:
  """The error rate, as argmax of the logits: independent of the experiments' scoring."""
  return float(np.mean(np.argmax(model.scores(params, x), axis=-1) != y))


def test_noise_controls_scores_the_models_it_trained(tiny_mnist, tmp_path):
  out = tmp_path / "out"
  results = noise_controls.main(flags(tiny_mnist, out))
  written = json.loads((out / "noise_controls.json").read_text())
  assert set(written["models"]) == {"sign", "uniform"}
  assert written["config"]["preset"] == "tiny" and written["config"]["units"] == 8
  check_rows(written, "M7", 4)
  assert set(written["sweep"]) == {"maxout, +-eps sign noise", "maxout, U(-eps, eps) noise"}
  for sweep in written["sweep"].values():
    assert sweep["eps"] == pytest.approx(list(curves.SWEEP_EPS))
  # The sign-noise model, restored from its checkpoint, under plain FGSM.
  preset = noise_controls.PRESETS["tiny"]
  data = advjax.data.load_mnist(tiny_mnist)
  objective = objectives.Noise(advjax.sign_noise, preset.eps, preset.alpha)
  (trained,) = maxout.train(
      "sign-noise", objective, "error", preset, data, out / "noise_controls_runs"
  )
  model, test = trained.model, data.test
  x_adv = advjax.fgsm(model.loss_fn(), trained.params, test.x, test.y, preset.eps)
  sign = results["models"]["sign"]
  assert sign["test_error"] == pytest.approx(errors(model, trained.params, test.x, test.y))
  assert sign["fgsm_error"] == pytest.approx(errors(model, trained.params, x_adv, test.y))


def test_the_ensemble_writes_both_attacks(tiny_mnist, tmp_path):
  out = tmp_path / "out"
  ensemble.main(flags(tiny_mnist, out))
  written = json.loads((out / "ensemble.json").read_text())
  assert written["config"]["members"] == 3
  (run,) = written["per_seed"]
  assert [m["seed"] for m in run["members"]] == [0, 1, 2]
  assert len(run["attack_on_one_member"]["per_member_fgsm_error"]) == 2
  assert len(run["members_alone"]["per_member_test_error"]) == 2
  check_rows(written, "E1", 2)
  (sweep,) = written["sweep"].values()
  assert sweep["eps"] == pytest.approx(list(curves.SWEEP_EPS))
  assert sweep["error"][0] == written["ensemble"]["test_error"]
  # AutoAttack on the ensemble as a whole never beats its clean accuracy on the
  # attacked images, computed here from the members restored from their checkpoints.
  preset = ensemble.PRESETS["tiny"]
  attack = written["autoattack"]
  assert attack["n"] == preset.autoattack_subset
  assert attack["eps"] == pytest.approx(list(preset.autoattack_eps))
  data = advjax.data.load_mnist(tiny_mnist)
  stacked, _ = ensemble.train_ensemble(preset, 0, data, out / "ensemble_runs")
  x, y = data.test.x[: attack["n"]], data.test.y[: attack["n"]]
  probs = advjax.ensemble_probs(models.maxout_mlp(units=8).probabilities, stacked, x)
  assert max(attack["robust_accuracy"]) <= np.mean(np.argmax(probs, -1) == y)


def test_the_ensemble_attacks_match_fgsm_on_the_ensemble_and_on_a_member():
  model = models.maxout_mlp(units=4, pieces=2)
  init = jax.jit(lambda k: model.init(k, jnp.zeros((1, 784))))
  stacked = advjax.init_ensemble(init, jax.random.key(0), 3)
  x = jax.random.uniform(jax.random.key(1), (6, 784))
  y = jnp.arange(6) % 10

  @jax.jit  # one program: eager, each operation would compile on its own
  def truths(stacked):
    probs = lambda xs: advjax.ensemble_probs(model.probabilities, stacked, xs)
    on_ensemble = advjax.fgsm(advjax.ensemble_loss(model.probabilities), stacked, x, y, 0.25)
    on_member = advjax.fgsm(model.loss_fn(), advjax.member(stacked, 2), x, y, 0.25)
    return {
        "ensemble": advjax.error_and_confidence(probs(on_ensemble), y),
        "member": advjax.error_and_confidence(probs(on_member), y),
    }

  expected = truths(stacked)
  for name, (loss_fn, probs_fn) in ensemble.attacks(model).items():
    sweep = advjax.epsilon_sweep(
        loss_fn, probs_fn, (stacked, jnp.int32(2)), x, y, jnp.array([0.0, 0.25])
    )
    error, confidence = expected[name]
    np.testing.assert_allclose(sweep.error[1], error)
    np.testing.assert_allclose(sweep.confidence[1], confidence, rtol=1e-5)


def test_the_epsilon_sweep_draws_mnist_maxouts_pair(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "out"
  model = models.maxout_mlp(units=6, pieces=3)
  pair = {
      name: model.init(jax.random.key(seed), jnp.zeros((1, 784)))
      for seed, name in enumerate(maxout.MODEL_NAMES)
  }
  maxout.save_params(out / epsilon_sweep.PARAMS_FILE, pair)
  (out / "other.json").write_text(json.dumps({"sweep": {"eps": [0], "error": [0.5]}}))
  results = epsilon_sweep.main(flags(tiny_mnist, out))
  written = json.loads((out / "epsilon_sweep.json").read_text())
  assert written["maxouts"] == str(out / epsilon_sweep.PARAMS_FILE)
  check_rows(written, "F4", 2)
  check_rows(written, "M6", 1)
  assert written["left_out"] == []
  for figure in written["figures"].values():
    assert (out / figure).stat().st_size > 1000
  assert "epsilon_sweep.json" in capsys.readouterr().out
  # The sweep at eps 0 is each model's clean error, and the ratio that of its kernel.
  test = advjax.data.load_mnist(tiny_mnist).test
  for name, params in pair.items():
    error, _ = curves.at_eps(results["sweep"][f"{name} maxout"], 0.0)
    assert error == pytest.approx(errors(model, params, test.x, test.y))
    kernel = np.asarray(params["maxout_0"]["kernel"])
    ratio = epsilon_sweep.participation_ratio(kernel)
    assert results["participation_ratio"][name] == pytest.approx(ratio)
  text = report.render(out, out / "REPORT.md")
  assert "(figures/epsilon_sweep_fig4_logits.png)" in text

  np.savez(out / epsilon_sweep.PARAMS_FILE, **{"clean/output/kernel": np.zeros(3)})
  with pytest.raises(SystemExit) as exit_info:
    epsilon_sweep.main(flags(tiny_mnist, out))
  message = str(exit_info.value)
  assert "\n" not in message and epsilon_sweep.PARAMS_FILE in message


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
  for name, content in (
      ("softmax_regression", {"sweep": curve}),
      ("noise_controls", {"sweep": {"sign": curve, "bad": {"eps": []}}}),
      ("rubbish", {"rows": []}),
      ("epsilon_sweep", {"sweep": curve}),  # its own: skipped
  ):
    (tmp_path / f"{name}.json").write_text(json.dumps(content))
  found, notes = epsilon_sweep.gather_sweeps(tmp_path)
  assert set(found) == {"softmax_regression", "noise_controls: sign"}
  assert notes == [
      "noise_controls.json: sweep 'bad' lacks eps and error lists",
      "rubbish.json: no sweep",
  ]


def test_the_training_study_scores_each_member_at_its_own_eps(tiny_mnist, tmp_path):
  out = tmp_path / "out"
  results = training_study.main([*flags(tiny_mnist, out), "--eps", "0.2"])
  written = json.loads((out / "training_study.json").read_text())
  groups = written["groups"]
  assert groups["eps"]["values"] == [0.0, 0.3] and groups["alpha"]["values"] == [0.5, 1.0]
  assert written["config"]["eps"] == 0.2 and results["rows"] == []
  preset = training_study.PRESETS["tiny"]
  for group in groups.values():
    for row in group["members"]:
      assert set(training_study.SCORES) <= set(row)
      # AutoAttack on every member: each attacked image is robust or broken by one attack.
      attack = row["autoattack"]
      assert attack["eps"] == pytest.approx(list(preset.autoattack_eps))
      for k, accuracy in enumerate(attack["robust_accuracy"]):
        broken = sum(counts[k] for counts in attack["broken_by"].values())
        assert broken + round(accuracy * attack["n"]) == attack["n"] == preset.autoattack_subset
  # FGSM at a training eps of 0 is no attack; the alpha group trains at the attack eps.
  zero, _ = groups["eps"]["members"]
  assert zero["fgsm_error_own_eps"] == zero["test_error"]
  for row in groups["alpha"]["members"]:
    assert row["fgsm_error_own_eps"] == row["fgsm_error"]
  assert (out / written["figures"]["scores against the training eps and alpha"]).exists()
  section = report.render(out, out / "REPORT.md").split("training eps and alpha")[1]
  assert "| 0.3 |" in section and "| 1 |" in section
  assert "AutoAttack, eps 0.25 (8 images)" in section
