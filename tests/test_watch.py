"""Tests of loop.PGDWatch: catastrophic overfitting flagged, the best watched epoch kept."""

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from advjax import evaluation
from advjax import loop
from advjax import models
from advjax import train

# Two well-separated classes in 12 dimensions: PGD at eps 0.05 barely dents
# a trained model, so a collapse below the floor can only come from training.
rng = np.random.default_rng(0)
Y = rng.integers(0, 2, 200).astype(np.int32)
X = np.clip(0.5 + 0.3 * (2 * Y[:, None] - 1) + 0.05 * rng.normal(size=(200, 12)), 0, 1).astype(
    np.float32
)


class Split:

  def __init__(self, x, y):
    self.x, self.y = x, y


TRAIN = Split(X, Y)


class MLP(nn.Module):
  """A ReLU network with Flax's default initialisation: it learns in a few steps."""

  @nn.compact
  def __call__(self, x, *, train=False):
    del train
    return nn.Dense(2)(nn.relu(nn.Dense(16)(x)))


MODEL = models.Classifier(MLP(), models.SOFTMAX)
CONFIG = loop.TrainConfig(epochs=4, batch_size=20)
WATCH = loop.PGDWatch(X[:100], Y[:100], eps=0.05, step=0.02, num_steps=5)


def blow_up_after(epochs):
  """SGD that learns for ``epochs`` epochs (10 steps each), then takes steps far too large."""
  schedule = optax.piecewise_constant_schedule(0.5, {10 * epochs: 1e30})
  return optax.sgd(schedule)


def test_a_collapse_is_flagged_and_the_best_epoch_kept(tmp_path, capsys):
  # Its steps blow up after epoch 2 (its weights overflow, every prediction
  # turns NaN: PGD accuracy 0). Runs that learn throughout are
  # test_population_members_are_watched_each_on_its_own's.
  broken = loop.fit(MODEL, TRAIN, CONFIG, tx=blow_up_after(2), watch=WATCH, workdir=tmp_path)
  assert broken.watch_accuracy[1] > 0.9 and broken.watch_accuracy[2] < 0.2
  assert broken.collapse_epoch == 3
  assert "PGD accuracy collapsed (member 0)" in capsys.readouterr().out
  # The result holds the best watched epoch's parameters, not the last (NaN) ones.
  best = int(np.argmax(broken.watch_accuracy))
  error = evaluation.pgd_error(
      MODEL,
      broken.params,
      WATCH.x,
      WATCH.y,
      0.05,
      step_size=0.02,
      num_steps=5,
      restarts=1,
      key=jax.random.key(0),
      clip=(0.0, 1.0),
  )
  assert 1 - float(error) == pytest.approx(broken.watch_accuracy[best])
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [row["watch_pgd_accuracy"] for row in rows] == broken.watch_accuracy
  # Its loss turned NaN in the epoch it collapsed: it stopped there as diverged.
  assert broken.diverged == 3
  assert [row.get("watch_collapse", False) for row in rows] == [False, False, True]


def test_population_members_are_watched_each_on_its_own():
  objective = train.FGSMRandomStart(eps=0.05, step=[0.05, 0.0625], clip=(0.0, 1.0))
  results = loop.fit_members(
      MODEL, TRAIN, CONFIG, seeds=[0, 1], objective=objective, watch=WATCH, progress=False
  )
  for m, result in enumerate(results):
    alone = loop.fit(
        MODEL,
        TRAIN,
        dataclasses.replace(CONFIG, seed=m),
        objective=train.FGSMRandomStart(0.05, [0.05, 0.0625][m], (0.0, 1.0)),
        watch=WATCH,
        progress=False,
    )
    np.testing.assert_allclose(result.watch_accuracy, alone.watch_accuracy, atol=1e-6)
    # A run that learns throughout is never flagged.
    assert result.collapse_epoch is None and result.watch_accuracy[-1] > 0.9


@pytest.mark.parametrize(
    "history, collapsed",
    [
        ([0.9, 0.1], True),
        ([0.9, 0.5, 0.1], True),
        ([0.3, 0.1], False),  # under the floor 0.2, not under 0.25 * 0.3
        ([0.9, 0.21], False),  # under 0.25 * 0.9, not under the floor
        ([0.1], False),  # no epoch before it
    ],
)
def test_a_collapse_is_below_a_fraction_of_the_best_before_and_below_the_floor(history, collapsed):
  watch = loop.PGDWatch(X[:1], Y[:1], eps=0.1, step=0.1, num_steps=1, drop=0.25)
  assert watch.collapsed(history) == collapsed
