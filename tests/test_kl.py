"""KL divergences against dense tfd.MultivariateNormalTriL references; the Hutchinson estimate."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import random_bands, tolerance
from test_ggm import reference
from tfggm import GaussianGraphicalModel, hutchinson_trace, kl_to_diagonal_normal, stencils

tfd = tfp.distributions


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_kl_to_diagonal_normals(stencil, batch, dtype):
  rng = np.random.default_rng(0)
  bands = random_bands(stencil, batch, seed=1, dtype=dtype)
  loc = rng.normal(size=tuple(batch) + (stencil.n,)).astype(dtype)
  q = GaussianGraphicalModel(loc, bands)
  mvn, _ = reference(loc, bands)
  prior_loc = rng.normal(size=stencil.n).astype(dtype)
  prior_scale = rng.uniform(0.5, 2.0, size=stencil.n).astype(dtype)
  priors = [
      (tfd.MultivariateNormalDiag(tf.zeros(stencil.n, dtype)),
       tfd.MultivariateNormalDiag(tf.zeros(stencil.n, np.float64))),
      (tfd.MultivariateNormalDiag(prior_loc, prior_scale),
       tfd.MultivariateNormalDiag(prior_loc.astype(np.float64), prior_scale.astype(np.float64))),
      (tfd.Independent(tfd.Normal(prior_loc, prior_scale), 1),
       tfd.MultivariateNormalDiag(prior_loc.astype(np.float64), prior_scale.astype(np.float64))),
  ]
  for prior, prior64 in priors:
    np.testing.assert_allclose(tfd.kl_divergence(q, prior), tfd.kl_divergence(mvn, prior64),
                               **tolerance(dtype))


@pytest.mark.parametrize("other", ["chain", "band3", "extended_grid", "diagonal"])
def test_kl_between_ggms_of_different_bandwidths(stencil, other):
  n = stencil.n
  other_stencil = {"chain": stencils.chain(n), "band3": stencils.band(n, 3),
                   "extended_grid": stencils.from_offsets(n, [-1, -2, -4]),
                   "diagonal": stencils.diagonal(n)}[other]
  rng = np.random.default_rng(2)
  q_args = (rng.normal(size=(2, n)), random_bands(stencil, (2,), seed=3))
  p_args = (rng.normal(size=(n,)), random_bands(other_stencil, (), seed=4))
  q, p = GaussianGraphicalModel(*q_args), GaussianGraphicalModel(*p_args)
  q_ref, p_ref = reference(*q_args)[0], reference(*p_args)[0]
  np.testing.assert_allclose(tfd.kl_divergence(q, p), tfd.kl_divergence(q_ref, p_ref), rtol=1e-9)
  np.testing.assert_allclose(tfd.kl_divergence(p, q), tfd.kl_divergence(p_ref, q_ref), rtol=1e-9)
  np.testing.assert_allclose(tfd.kl_divergence(q, q), 0.0, atol=1e-9)


def test_hutchinson_is_unbiased_with_the_stated_variance():
  stencil = stencils.extended_grid(3, 4)
  bands = random_bands(stencil, (2,), seed=5)
  q = GaussianGraphicalModel(np.zeros((2, stencil.n)), bands)
  _, covariance = reference(np.zeros((2, stencil.n)), bands)
  weights = np.random.default_rng(6).uniform(0.5, 2.0, size=stencil.n)
  exact = np.einsum("i,bii->b", weights, covariance)
  num_probes, repeats = 4, 2000
  estimate = tf.function(lambda seed: hutchinson_trace(q, weights, num_probes, seed=seed))
  estimates = np.stack([estimate(tf.constant([7, r])).numpy() for r in range(repeats)])
  # Var of the k-probe mean: 2 (||A||_F^2 - sum A_ii^2) / k with A = W^1/2 Sigma W^1/2.
  a = np.sqrt(weights)[:, None] * covariance * np.sqrt(weights)[None, :]
  variance = 2 * (np.sum(a**2, axis=(-2, -1)) - np.sum(np.diagonal(a, axis1=-2, axis2=-1)**2, -1))
  variance /= num_probes
  np.testing.assert_array_less(np.abs(estimates.mean(0) - exact), 5 * np.sqrt(variance / repeats))
  np.testing.assert_allclose(estimates.var(0), variance, rtol=0.2)
  prior = tfd.MultivariateNormalDiag(tf.zeros(stencil.n, tf.float64), 1 / np.sqrt(weights))
  stochastic = kl_to_diagonal_normal(q, prior.mean(), prior.stddev(), num_probes=num_probes, seed=(8, 9))
  exact_kl = tfd.kl_divergence(q, prior)
  np.testing.assert_allclose(stochastic - exact_kl,
                             0.5 * (hutchinson_trace(q, weights, num_probes, seed=(8, 9)) - exact),
                             rtol=1e-9, atol=1e-9)
