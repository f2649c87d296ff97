"""Tests of advjax.train: the step, the schedule, evaluation, early stopping, resume."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import advjax
from advjax import checkpoint
from advjax import models
from advjax import train

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = models.maxout_mlp(units=8, pieces=2, classes=3)
CONFIG = train.TrainConfig(epochs=3, batch_size=20, eval_batch_size=64)


@dataclasses.dataclass(frozen=True)
class Split:
  x: np.ndarray
  y: np.ndarray


def synthetic(n: int, seed: int = 0) -> Split:
  """Three classes in 12 dimensions, given by a random linear teacher."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, 12)).astype(np.float32)
  teacher = np.random.default_rng(99).normal(size=(12, 3))
  return Split(x, np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int32))


TRAIN, VALID = synthetic(100), synthetic(50, seed=1)
INIT = jax.jit(MODEL.init)


def assert_trees_equal(a, b):
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))


def without_time(history):
  return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_train_step_lowers_the_loss():
  state = train.create_train_state(MODEL, jax.random.key(0), TRAIN.x[:1],
                                   optax.sgd(0.5, 0.5))
  # Out of the recipe's tiny initialisation, where the first steps crawl.
  state = state.replace(params=jax.tree.map(lambda p: 100 * p, state.params))
  step = train.make_train_step(MODEL)
  batch = (TRAIN.x, TRAIN.y)
  loss = jax.jit(MODEL.loss)
  before = loss(state.params, *batch)
  for i in range(30):
    state, _ = step(state, batch, jax.random.key(i))
  assert float(loss(state.params, *batch)) < 0.9 * float(before)
  assert int(state.step) == 30


def test_adversarial_gradient_mixes_clean_and_adversarial_gradients():
  params = jax.tree.map(lambda p: 100 * p, INIT(jax.random.key(0), TRAIN.x[:1]))
  x, y = jnp.asarray(TRAIN.x[:40]), jnp.asarray(TRAIN.y[:40])
  rng = jax.random.key(7)
  alpha, eps = 0.3, 0.2
  _, grads = jax.jit(train.loss_and_grads, static_argnums=(0, 1))(
      MODEL, train.Adversarial(eps, alpha), params, (x, y), rng)

  @jax.jit
  def separately(params):
    # With the step's dropout mask throughout.
    dropout_key, _ = jax.random.split(rng)
    loss_fn = MODEL.loss_fn(dropout_key)
    x_adv = x + eps * jnp.sign(jax.grad(loss_fn, argnums=1)(params, x, y))
    return jax.grad(loss_fn)(params, x, y), jax.grad(loss_fn)(params, x_adv, y)

  clean, adversarial = separately(params)
  expected = jax.tree.map(lambda c, a: alpha * c + (1 - alpha) * a, clean, adversarial)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # The adversarial term matters: the mix is far from the clean gradient.
  assert not np.allclose(jax.tree.leaves(grads)[-1], jax.tree.leaves(clean)[-1],
                         rtol=0.05)


def test_max_norm_holds_after_every_step():
  state = train.create_train_state(MODEL, jax.random.key(0), TRAIN.x[:1],
                                   optax.sgd(50.0))
  step = train.make_train_step(MODEL, train.Adversarial(0.25))
  on_bound = 0
  for i in range(5):
    state, _ = step(state, (TRAIN.x[:50], TRAIN.y[:50]), jax.random.key(i))
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
      if path[-1].key == "kernel":
        norms = np.linalg.norm(np.asarray(leaf), axis=0)
        assert norms.max() <= models.MAX_COL_NORM * (1 + 1e-5)
        on_bound += int(np.sum(norms > 0.999 * models.MAX_COL_NORM))
  assert on_bound > 0  # The constraint was active, not merely satisfied.


def test_recipe_schedule_decays_the_learning_rate_and_raises_the_momentum():
  tx = train.recipe_sgd(steps_per_epoch=2, momentum_epochs=5)
  params = {"w": jnp.zeros(3)}
  opt_state = tx.init(params)
  for _ in range(10):
    _, opt_state = tx.update({"w": jnp.ones(3)}, opt_state, params)
  hyper = opt_state.hyperparams
  # The values used by the last (10th) update: count 9.
  np.testing.assert_allclose(hyper["learning_rate"], 0.1 / 1.000004 ** 9, rtol=1e-6)
  np.testing.assert_allclose(hyper["momentum"], 0.5 + 0.2 * 9 / 10, rtol=1e-6)
  floor = train.recipe_sgd(1, decay=10.0, min_learning_rate=1e-3)
  opt_state = floor.init(params)
  for _ in range(5):
    _, opt_state = floor.update({"w": jnp.ones(3)}, opt_state, params)
  np.testing.assert_allclose(opt_state.hyperparams["learning_rate"], 1e-3)


def test_evaluate_matches_a_direct_computation_whatever_the_batch_size():
  params = jax.tree.map(lambda p: 100 * p, INIT(jax.random.key(0), TRAIN.x[:1]))
  x, y = jnp.asarray(VALID.x), jnp.asarray(VALID.y)

  @jax.jit
  def directly(params):
    x_adv = advjax.fgsm(MODEL.loss_fn(), params, x, y, 0.25)
    return (advjax.error_and_confidence(MODEL.probabilities(params, x), y)
            + advjax.error_and_confidence(MODEL.probabilities(params, x_adv), y))

  error, confidence, fgsm_error, fgsm_confidence = directly(params)
  # 50 examples in batches of 16: the last batch is padded.
  scores = train.evaluate(MODEL, params, VALID, eps=0.25, batch_size=16)
  np.testing.assert_allclose(
      [scores["error"], scores["confidence"], scores["fgsm_error"],
       scores["fgsm_confidence"]],
      [error, confidence, fgsm_error, fgsm_confidence], rtol=1e-5)
  assert scores["fgsm_error"] > scores["error"]


def test_same_seed_gives_bit_identical_parameters():
  a = train.fit(MODEL, TRAIN, CONFIG, objective=train.Adversarial(0.25))
  b = train.fit(MODEL, TRAIN, CONFIG, objective=train.Adversarial(0.25))
  c = train.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, seed=1),
                objective=train.Adversarial(0.25))
  assert_trees_equal(a.params, b.params)
  assert not np.array_equal(a.params["output"]["kernel"], c.params["output"]["kernel"])


class Crash(Exception):
  pass


def crash_on_epoch(monkeypatch, epoch):
  """Makes the ``epoch``-th epoch trained from now die halfway, as if killed.

  Returns:
    A list that gains one entry per epoch trained.
  """
  real = train._train_epoch
  calls = []

  def flaky(*args, **kwargs):
    calls.append(1)
    if len(calls) == epoch:
      raise Crash
    return real(*args, **kwargs)

  monkeypatch.setattr(train, "_train_epoch", flaky)
  return calls


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, monkeypatch):
  objective = train.Noise("sign", 0.1)  # Uses the objective's PRNG key too.
  config = dataclasses.replace(CONFIG, patience=5)
  straight = train.fit(MODEL, TRAIN, config, objective=objective, valid=VALID,
                       workdir=tmp_path / "straight")
  with monkeypatch.context() as patch:
    crash_on_epoch(patch, 3)
    with pytest.raises(Crash):
      train.fit(MODEL, TRAIN, config, objective=objective, valid=VALID,
                workdir=tmp_path / "crashed")
  metrics = tmp_path / "crashed" / "metrics.jsonl"
  assert len(metrics.read_text().splitlines()) == 2
  # A line written after the last checkpoint must not survive the resume.
  with metrics.open("a") as f:
    f.write('{"epoch": 3, "loss": 0.0}\n')
  with monkeypatch.context() as patch:
    trained = crash_on_epoch(patch, 0)
    resumed = train.fit(MODEL, TRAIN, config, objective=objective, valid=VALID,
                        workdir=tmp_path / "crashed")
  assert len(trained) == 1  # Only epoch 3 was left to train.
  assert_trees_equal(straight.params, resumed.params)
  assert without_time(straight.history) == without_time(resumed.history)
  assert (straight.best_epoch, straight.best_value) == (resumed.best_epoch,
                                                        resumed.best_value)
  lines = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert without_time(lines) == without_time(straight.history)
  # A finished run resumes as finished: no epoch is trained again.
  with monkeypatch.context() as patch:
    trained = crash_on_epoch(patch, 1)
    again = train.fit(MODEL, TRAIN, config, objective=objective, valid=VALID,
                      workdir=tmp_path / "crashed")
  assert not trained
  assert_trees_equal(again.params, straight.params)


def test_resume_refuses_a_folder_of_another_run(tmp_path):
  train.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, epochs=1), workdir=tmp_path)
  with pytest.raises(checkpoint.RunMismatchError, match="other settings"):
    train.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, epochs=1, seed=3),
              workdir=tmp_path)


def scripted_evaluate(monkeypatch, errors):
  """Replaces the validation scores by a scripted sequence of errors."""
  values = iter(errors)

  def fake(model, params, split, **kwargs):
    value = next(values)
    return {"error": value, "confidence": 0.5, "fgsm_error": 1 - value,
            "fgsm_confidence": 0.5}

  monkeypatch.setattr(train, "evaluate", fake)


def test_early_stopping_returns_the_best_epoch(monkeypatch):
  config = dataclasses.replace(CONFIG, epochs=10, patience=2)
  scripted_evaluate(monkeypatch, [0.5, 0.3, 0.4, 0.3, 0.1])
  result = train.fit(MODEL, TRAIN, config, valid=VALID)
  # Epoch 2 is best; epochs 3 and 4 do not beat it (a tie is no improvement).
  assert result.best_epoch == 2 and result.best_value == 0.3
  assert len(result.history) == 4
  two_epochs = train.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, epochs=2))
  assert_trees_equal(result.params, two_epochs.params)


def test_early_stopping_on_the_adversarial_error(monkeypatch):
  config = dataclasses.replace(CONFIG, epochs=3, patience=5, monitor="fgsm_error")
  scripted_evaluate(monkeypatch, [0.5, 0.3, 0.6])  # fgsm_error: 0.5, 0.7, 0.4
  assert train.fit(MODEL, TRAIN, config, valid=VALID).best_epoch == 3


def test_fit_and_retrain_retrains_on_all_data_for_the_best_epoch_count(
    monkeypatch, tmp_path):
  data = type("Data", (), {"train": TRAIN, "valid": VALID,
                           "train_full": Split(np.concatenate([TRAIN.x, VALID.x]),
                                               np.concatenate([TRAIN.y, VALID.y]))})
  scripted_evaluate(monkeypatch, [0.5, 0.2, 0.4, 0.4])
  config = dataclasses.replace(CONFIG, epochs=10, patience=2)
  selection, final = train.fit_and_retrain(MODEL, data, config, workdir=tmp_path)
  assert selection.best_epoch == 2
  assert [row["epoch"] for row in final.history] == [1, 2]
  assert "valid_error" not in final.history[0]
  assert (tmp_path / "retrain" / "metrics.jsonl").exists()
  direct = train.fit(MODEL, data.train_full, dataclasses.replace(CONFIG, epochs=2))
  assert_trees_equal(final.params, direct.params)


def test_fit_rejects_bad_settings():
  with pytest.raises(ValueError, match="validation split"):
    train.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, patience=3))
  with pytest.raises(ValueError, match="fewer than one batch"):
    train.fit(MODEL, TRAIN, dataclasses.replace(CONFIG, batch_size=1000))
  with pytest.raises(ValueError, match="monitor"):
    train.TrainConfig(epochs=1, monitor="loss")
  with pytest.raises(ValueError, match="kind"):
    train.Noise("gaussian")


KILL_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_train import MODEL, TRAIN, CONFIG
    import dataclasses
    import time
    from advjax import train
    # Slow epochs leave the test time to kill the run part way.
    epoch = train._train_epoch
    train._train_epoch = lambda *a: (time.sleep(0.1), epoch(*a))[1]
    config = dataclasses.replace(CONFIG, epochs=int(sys.argv[2]))
    train.fit(MODEL, TRAIN, config, objective=train.Adversarial(0.25),
              workdir=sys.argv[1])
""")


def test_kill_9_then_rerun_resumes_to_the_same_result(tmp_path):
  epochs = 10
  script = tmp_path / "run.py"
  script.write_text(KILL_SCRIPT.format(tests=str(REPO / "tests")))
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  workdir = tmp_path / "run"
  process = subprocess.Popen([sys.executable, str(script), str(workdir), str(epochs)],
                             env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
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
  resumed = train.fit(MODEL, TRAIN, config, objective=train.Adversarial(0.25),
                      workdir=workdir)
  straight = train.fit(MODEL, TRAIN, config, objective=train.Adversarial(0.25))
  assert_trees_equal(resumed.params, straight.params)
  assert without_time(resumed.history) == without_time(straight.history)
  # The epochs finished before the kill were kept, not trained again: their
  # timings are the killed process's.
  after = metrics.read_text().splitlines()
  assert len(after) == epochs
  for old, new in zip(before, after):
    if old.endswith("}"):  # The kill may have cut the last line short.
      assert json.loads(old) == json.loads(new)
