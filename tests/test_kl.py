"""KL divergences against dense tfd.MultivariateNormalTriL references; the Hutchinson estimate."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import CASES, DTYPES, STENCIL_CASES, dense_reference, tolerance
from tfggm import GaussianGraphicalModel, stencils
from tfggm._testing import random_factor_bands
from tfggm.distributions import hutchinson_trace, kl_to_diagonal_normal

tfd = tfp.distributions


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case_name", CASES)
def test_kl_to_diagonal_normals(case_name, dtype):
  case = CASES[case_name]
  n = case.n
  rng = np.random.default_rng(0)
  bands = case.factor_bands(seed=1, dtype=dtype)
  loc = rng.normal(size=case.other_batch_shape + (n,)).astype(dtype)
  q = GaussianGraphicalModel(loc, bands, lags=case.lags)
  batch = case.broadcast_batch_shape
  mvn, _ = dense_reference(np.broadcast_to(loc, batch + (n,)), bands, case.lags)
  prior_loc = rng.normal(size=n).astype(dtype)
  prior_scale = rng.uniform(0.5, 2.0, size=n).astype(dtype)
  priors = [
      (tfd.MultivariateNormalDiag(tf.zeros(n, dtype)), tfd.MultivariateNormalDiag(tf.zeros(n, np.float64))),
      (tfd.MultivariateNormalDiag(prior_loc, prior_scale),
       tfd.MultivariateNormalDiag(prior_loc.astype(np.float64), prior_scale.astype(np.float64))),
      (tfd.Independent(tfd.Normal(prior_loc, prior_scale), 1),
       tfd.MultivariateNormalDiag(prior_loc.astype(np.float64), prior_scale.astype(np.float64))),
  ]
  for prior, prior64 in priors:
    np.testing.assert_allclose(tfd.kl_divergence(q, prior), tfd.kl_divergence(mvn, prior64), **tolerance(dtype))


def _grid_shape(n: int) -> tuple[int, int]:
  """(h, w) with h w = n and h the largest divisor of n up to sqrt(n)."""
  height = max(h for h in range(1, int(np.sqrt(n)) + 1) if n % h == 0)
  return height, n // height


# Stencils for p on the n of q: narrower, wider, sparse 1-D lags, and a real extended grid (2-D, lags 1, w-1, w, w+1).
OTHER_STENCILS = {
    "diagonal": stencils.diagonal,
    "band3": lambda n: stencils.band(n, 3),
    "lags_1_2_4": lambda n: stencils.from_offsets(n, [-1, -2, -4], name="lags_1_2_4"),
    "extended_grid": lambda n: stencils.extended_grid(*_grid_shape(n)),
}


@pytest.mark.parametrize("other", OTHER_STENCILS)
@pytest.mark.parametrize("case_name", [*STENCIL_CASES, "n100"])
def test_kl_between_ggms_of_different_bandwidths(case_name, other):
  """q at a case's lags, p at every lag of another stencil, both directions, against dense references.

  The stencils' n <= 64 are one block; n = 100 takes the block recursions (6 blocks of 17 at b = 3, and of the
  wider band that tr(P_p Sigma_q) reads when p is wider)."""
  case = CASES[case_name]
  n = case.n
  other_stencil = OTHER_STENCILS[other](n)
  rng = np.random.default_rng(2)
  q_loc, q_bands = rng.normal(size=case.batch_shape + (n,)), case.factor_bands(seed=3)
  p_loc, p_bands = rng.normal(size=(n,)), random_factor_bands(other_stencil, seed=4)
  q, p = GaussianGraphicalModel(q_loc, q_bands, lags=case.lags), GaussianGraphicalModel(p_loc, p_bands)
  q_ref, p_ref = dense_reference(q_loc, q_bands, case.lags)[0], dense_reference(p_loc, p_bands)[0]
  np.testing.assert_allclose(tfd.kl_divergence(q, p), tfd.kl_divergence(q_ref, p_ref), rtol=1e-9)
  np.testing.assert_allclose(tfd.kl_divergence(p, q), tfd.kl_divergence(p_ref, q_ref), rtol=1e-9)
  np.testing.assert_allclose(tfd.kl_divergence(q, q), np.zeros(case.batch_shape), atol=1e-9)


def test_hutchinson_is_unbiased_with_the_stated_variance():
  stencil = stencils.extended_grid(3, 4)
  bands = random_factor_bands(stencil, batch_shape=(2,), seed=5)
  q = GaussianGraphicalModel(np.zeros((2, stencil.n)), bands)
  _, covariance = dense_reference(np.zeros((2, stencil.n)), bands)
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
