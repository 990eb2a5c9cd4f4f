"""MultivariateLogitNormal against its formula; squashing; bad input."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from conftest import dense_lower
from tfggm import MultivariateLogitNormal, stencils
from tfggm._testing import random_factor_bands
from tfggm.distributions import squash


def test_log_prob_matches_the_formula(stencil):
  rng = np.random.default_rng(0)
  bands = random_factor_bands(stencil, batch_shape=(2,), seed=1)
  loc = rng.normal(size=(2, stencil.n))
  x = rng.uniform(0.01, 0.99, size=(3, 2, stencil.n))
  factor = dense_lower(bands)
  covariance = np.linalg.inv(factor @ np.swapaxes(factor, -1, -2))
  logit = np.log(x) - np.log1p(-x)
  want = np.stack([[stats.multivariate_normal(loc[b], covariance[b]).logpdf(logit[s, b])
                    for b in range(2)] for s in range(3)])
  want -= np.sum(np.log(x * (1 - x)), axis=-1)
  np.testing.assert_allclose(MultivariateLogitNormal(loc, bands).log_prob(x), want, rtol=1e-9)


def test_samples_lie_in_the_unit_cube_and_their_logits_are_the_gaussian():
  stencil = stencils.grid(3, 3)
  d = MultivariateLogitNormal(np.zeros(9), random_factor_bands(stencil, seed=2))
  x = d.sample(5000, seed=3).numpy()
  assert np.all((x > 0) & (x < 1))
  logit = np.log(x) - np.log1p(-x)
  np.testing.assert_allclose(np.cov(logit.T), d.gaussian.covariance(), atol=0.1)


def test_squash_maps_the_unit_interval_and_accounts_for_the_jacobian():
  alpha = 0.05
  bijector = squash(alpha)
  x = np.array([[0.0, 0.5, 1.0]])
  np.testing.assert_allclose(bijector.forward(x), [[alpha, 0.5, 1 - alpha]])
  np.testing.assert_allclose(bijector.forward_log_det_jacobian(x, event_ndims=1), 3 * np.log(1 - 2 * alpha),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="alpha"):
    squash(0.5)


@pytest.mark.parametrize("bad,message", [(1.0, "x >= 1"), (0.0, "x <= 0"), (-0.2, "x <= 0"),
                                         (np.nan, "NaN"), (1.5, "x >= 1")])
def test_validate_args_rejects_x_outside_the_open_cube(bad, message):
  d = MultivariateLogitNormal(np.zeros(4), np.ones((1, 4)), validate_args=True)
  x = np.full(4, 0.5)
  x[1] = bad
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    d.log_prob(x)


def test_alpha_scores_the_original_data_with_the_squashing_jacobian():
  alpha = 0.05
  bands = random_factor_bands(stencils.grid(2, 3), seed=4)
  loc = np.random.default_rng(5).normal(size=6)
  x = np.random.default_rng(6).uniform(0.0, 1.0, size=(4, 6))
  x[0, 0], x[1, 2] = 0.0, 1.0  # exact 0 and 1 are inside the support once squashed
  squashed = alpha + (1 - 2 * alpha) * x
  want = MultivariateLogitNormal(loc, bands).log_prob(squashed) + 6 * np.log(1 - 2 * alpha)
  d = MultivariateLogitNormal(loc, bands, alpha=alpha, validate_args=True)
  np.testing.assert_allclose(d.log_prob(x), want, rtol=1e-10)
  np.testing.assert_allclose(d.median(), (1 / (1 + np.exp(-loc)) - alpha) / (1 - 2 * alpha), rtol=1e-10)
  with pytest.raises(tf.errors.InvalidArgumentError, match="must be in"):
    d.log_prob(np.full(6, 1.2))

