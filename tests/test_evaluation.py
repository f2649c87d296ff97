"""Tests of advjax.evaluation: whole-split scores in one compiled call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import evaluation
from tests.conftest import INIT
from tests.conftest import MODEL
from tests.conftest import TRAIN
from tests.conftest import VALID


def trained_params(seed=0):
  return jax.tree.map(lambda p: 100 * p, INIT(jax.random.key(seed), TRAIN.x[:1]))


@jax.jit
def directly(params, x, y):
  x_adv = advjax.fgsm(MODEL.loss_fn(), params, x, y, 0.25)
  return advjax.error_and_confidence(
      MODEL.probabilities(params, x), y
  ) + advjax.error_and_confidence(MODEL.probabilities(params, x_adv), y)


@pytest.mark.parametrize("batch_size", [16, 50, 1000])
def test_evaluate_matches_a_direct_computation_whatever_the_batch_size(batch_size):
  params = trained_params()
  expected = directly(params, jnp.asarray(VALID.x), jnp.asarray(VALID.y))
  # 50 examples in batches of 16: the last batch is padded.
  scores = evaluation.evaluate(MODEL, params, VALID, eps=0.25, batch_size=batch_size)
  np.testing.assert_allclose([scores[name] for name in evaluation.SCORES], expected, rtol=1e-5)
  assert scores["fgsm_error"] > scores["error"]


def test_evaluate_members_scores_each_member_at_its_eps():
  stacked = advjax.stack([trained_params(0), trained_params(1)])
  scores = evaluation.evaluate_members(MODEL, stacked, VALID, eps=[0.0, 0.25])
  for m, eps in enumerate([0.0, 0.25]):
    alone = evaluation.evaluate(MODEL, advjax.member(stacked, m), VALID, eps=eps)
    for name in evaluation.SCORES:
      np.testing.assert_allclose(scores[name][m], alone[name], rtol=1e-6)
  # At eps 0 the FGSM examples are the clean inputs.
  assert scores["fgsm_error"][0] == scores["error"][0]
  with pytest.raises(ValueError, match=r"one per member \(2\), got shape \(3,\)"):
    evaluation.evaluate_members(MODEL, stacked, VALID, eps=[0.0, 0.1, 0.25])


def test_fgsm_examples_and_probabilities_equal_the_core_functions():
  params = trained_params()
  x, y = jnp.asarray(VALID.x), jnp.asarray(VALID.y)
  np.testing.assert_allclose(
      evaluation.fgsm_examples(MODEL, params, x, y, 0.25, batch_size=16),
      advjax.fgsm(MODEL.loss_fn(), params, x, y, 0.25),
      atol=1e-7,
  )
  clipped = evaluation.fgsm_examples(MODEL, params, x, y, 0.25, clip=(0.0, 1.0))
  assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0
  np.testing.assert_allclose(
      evaluation.probabilities(MODEL, params, x, batch_size=7),
      MODEL.probabilities(params, x),
      rtol=1e-6,
  )


def test_score_maps_plus_minus_one_labels_to_classes():
  model = advjax.models.logistic_regression()
  params = {"Dense_0": {"kernel": jnp.ones((12, 1)), "bias": jnp.array([-6.0])}}
  y = np.where(TRAIN.x.sum(1) > 6, 1.0, -1.0).astype(np.float32)
  error, _ = evaluation.score(model, params, TRAIN.x, y)
  assert error == 0.0


def test_a_nan_prediction_is_a_mistake():
  params = trained_params()
  x = np.array(VALID.x)
  x[:5] = np.nan
  error, _ = evaluation.score(MODEL, params, x, VALID.y)
  clean_error, _ = evaluation.score(MODEL, params, VALID.x, VALID.y)
  wrong_before = (
      np.asarray(evaluation.probabilities(MODEL, params, VALID.x[:5])).argmax(1) != VALID.y[:5]
  )
  assert error == pytest.approx(clean_error + (5 - wrong_before.sum()) / 50)


def test_an_empty_split_is_refused():
  with pytest.raises(ValueError, match="empty split"):
    evaluation.probabilities(MODEL, trained_params(), np.zeros((0, 12), np.float32))
