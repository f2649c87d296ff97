"""Tests of the paper's scores: error, confidence on the mistakes, and the NaN rule."""

from absl.testing import parameterized
import chex
import jax.numpy as jnp
import numpy as np

import advjax
from tests.conftest import loss_fn
from tests.conftest import problem
from tests.conftest import probs_fn

NAN = float("nan")


class MetricsTest(chex.TestCase):

  def test_error_and_confidence_on_mistakes(self):
    probs = jnp.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    labels = jnp.array([0, 0, 1, 1])
    error, confidence = advjax.error_and_confidence(probs, labels)
    np.testing.assert_allclose(error, 0.5)
    np.testing.assert_allclose(confidence, (0.7 + 0.6) / 2, rtol=1e-6)

  def test_no_mistakes_gives_nan_confidence(self):
    error, confidence = advjax.error_and_confidence(jnp.eye(3), jnp.arange(3))
    self.assertEqual(float(error), 0.0)
    self.assertTrue(np.isnan(confidence))

  def test_rubbish_error_counts_claims_above_half(self):
    probs = jnp.array([[0.9, 0.1], [0.5, 0.5], [0.05, 0.3]])
    error, confidence = advjax.rubbish_error_and_confidence(probs)
    np.testing.assert_allclose(error, 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(confidence, 0.9, rtol=1e-6)


class NanTest(parameterized.TestCase):
  """A NaN prediction is a mistake, never the class its argmax lands on (issue 12)."""

  def test_mistakes_flags_wrong_rows_and_rows_holding_a_nan(self):
    probs = jnp.array([[0.9, 0.1], [0.2, 0.8], [NAN, NAN], [NAN, 0.1], [0.9, NAN]])
    np.testing.assert_array_equal(
        advjax.mistakes(probs, jnp.array([0, 0, 0, 0, 0])), [False, True, True, True, True]
    )

  def test_a_nan_row_labelled_zero_is_an_error(self):
    probs = jnp.array([[NAN, NAN, NAN], [0.1, 0.8, 0.1]])
    error, confidence = advjax.error_and_confidence(probs, jnp.array([0, 1]))
    self.assertEqual(float(error), 0.5)
    self.assertTrue(np.isnan(confidence))  # a NaN row has no confidence to report

  def test_a_nan_row_is_a_rubbish_error(self):
    probs = jnp.array([[NAN, NAN], [0.3, 0.2]])
    error, confidence = advjax.rubbish_error_and_confidence(probs)
    self.assertEqual(float(error), 0.5)
    self.assertTrue(np.isnan(confidence))

  def test_nan_params_give_full_error_in_the_sweep(self):
    params, x, _ = problem()
    params = {**params, "w1": params["w1"].at[0, 0].set(NAN)}
    y = jnp.zeros(x.shape[0], jnp.int32)  # the class a NaN argmax lands on
    for batch_size in (None, 4):
      sweep = advjax.epsilon_sweep(
          loss_fn, probs_fn, params, x, y, [0.0, 0.1, 0.3], batch_size=batch_size
      )
      np.testing.assert_array_equal(sweep.error, 1.0)
      error, _ = advjax.error_and_confidence(probs_fn(params, x), y)
      self.assertEqual(float(error), 1.0)

  def test_nan_inputs_count_as_errors_in_the_sweep(self):
    params, x, y = problem()
    x = x.at[:3, 0].set(NAN)  # three NaN rows, labelled with the class NaN lands on
    y = jnp.where(jnp.arange(x.shape[0]) < 3, 0, y)
    sweep = advjax.epsilon_sweep(loss_fn, probs_fn, params, x, y, [0.0, 0.2])
    wrong_elsewhere = np.asarray(advjax.mistakes(probs_fn(params, x[3:]), y[3:])).sum()
    self.assertAlmostEqual(float(sweep.error[0]), (3 + wrong_elsewhere) / x.shape[0], places=6)
    self.assertTrue(np.all(sweep.error >= 0.3))
