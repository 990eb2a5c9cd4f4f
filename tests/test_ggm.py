"""GaussianGraphicalModel against tfd.MultivariateNormalTriL with Sigma = (L L^T)^{-1}, in float64."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import assert_gradients_match, dense_lower, random_bands, tolerance
from tfggm import GaussianGraphicalModel, PrecisionFactorSolve, parameterizations, stencils

tfd = tfp.distributions


def reference(loc, bands):
  """Dense MultivariateNormalTriL with covariance (L L^T)^{-1}, float64."""
  factor = dense_lower(bands.astype(np.float64))
  covariance = np.linalg.inv(factor @ np.swapaxes(factor, -1, -2))
  return tfd.MultivariateNormalTriL(loc.astype(np.float64), np.linalg.cholesky(covariance)), covariance


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_matches_dense_reference(stencil, batch, dtype):
  bands = random_bands(stencil, batch, seed=1, dtype=dtype)
  loc = np.random.default_rng(2).normal(size=tuple(batch) + (stencil.n,)).astype(dtype)
  q = GaussianGraphicalModel(loc, bands)
  mvn, covariance = reference(loc, bands)
  assert q.batch_shape == batch and q.event_shape == (stencil.n,) and q.dtype == dtype
  x = np.random.default_rng(3).normal(size=(4,) + tuple(batch) + (stencil.n,)).astype(dtype)
  tol = tolerance(dtype)
  np.testing.assert_allclose(q.log_prob(x), mvn.log_prob(x.astype(np.float64)), **tol)
  np.testing.assert_allclose(q.entropy(), mvn.entropy(), **tol)
  np.testing.assert_allclose(q.variance(), mvn.variance(), **tol)
  np.testing.assert_allclose(q.stddev(), mvn.stddev(), **tol)
  np.testing.assert_allclose(q.covariance(), covariance, **tol)
  np.testing.assert_allclose(q.precision(), np.linalg.inv(covariance), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(q.mean(), np.broadcast_to(loc, q.mean().shape))
  np.testing.assert_allclose(q.mode(), q.mean())
  assert q.sample([5, 2], seed=4).shape == (5, 2) + tuple(batch) + (stencil.n,)


def test_batch_shapes_broadcast():
  rng = np.random.default_rng(0)
  bands = 0.2 * rng.normal(size=(3, 1, 2, 6))
  bands[..., 0, :] = 1.0
  bands[..., 1, 0] = 0.0
  loc = rng.normal(size=(4, 6))
  q = GaussianGraphicalModel(loc, bands)
  assert q.batch_shape == (3, 4)
  mvn, _ = reference(np.broadcast_to(loc, (3, 4, 6)), np.broadcast_to(bands, (3, 4, 2, 6)))
  x = rng.normal(size=(3, 4, 6))
  np.testing.assert_allclose(q.log_prob(x), mvn.log_prob(x), rtol=1e-10)
  np.testing.assert_allclose(q.variance(), mvn.variance(), rtol=1e-10)
  assert q.sample(2, seed=1).shape == (2, 3, 4, 6)


def test_sample_moments(stencil):
  bands = random_bands(stencil, (2,), seed=5)
  loc = np.random.default_rng(6).normal(size=(2, stencil.n))
  q = GaussianGraphicalModel(loc, bands)
  _, covariance = reference(loc, bands)
  num = 20000
  z = q.sample(num, seed=7).numpy()
  sd_mean = np.sqrt(np.diagonal(covariance, axis1=-2, axis2=-1) / num)
  np.testing.assert_array_less(np.abs(z.mean(0) - loc), 5 * sd_mean)
  centred = z - loc
  sample_cov = np.einsum("sbi,sbj->bij", centred, centred) / num
  variances = np.diagonal(covariance, axis1=-2, axis2=-1)
  sd_cov = np.sqrt((variances[..., :, None] * variances[..., None, :] + covariance**2) / num)
  np.testing.assert_array_less(np.abs(sample_cov - covariance), 5 * sd_cov)


def test_gradients_match_finite_differences(stencil):
  bands = random_bands(stencil, (2,), seed=8)
  loc = np.random.default_rng(9).normal(size=(2, stencil.n))
  x = np.random.default_rng(10).normal(size=(3, 2, stencil.n))
  prior = tfd.MultivariateNormalDiag(tf.zeros(stencil.n, tf.float64))
  seed = tf.constant([1, 2], dtype=tf.int32)

  def quantities(loc, values):
    q = GaussianGraphicalModel(loc, stencil.bands_from_values(values))
    return (q.log_prob(x), q.sample(2, seed=seed), q.entropy(), q.variance(),
            tfd.kl_divergence(q, prior))

  assert_gradients_match(quantities, [loc, stencil.values_from_bands(bands)])


def test_works_inside_tf_function_and_xla():
  from tfggm import stencils
  stencil = stencils.extended_grid(4, 4)
  bands = random_bands(stencil, (3,), seed=11, dtype=np.float32)
  loc = np.random.default_rng(12).normal(size=(3, 16)).astype(np.float32)
  eps = np.random.default_rng(13).normal(size=(2, 3, 16)).astype(np.float32)
  prior = tfd.MultivariateNormalDiag(tf.zeros(16))

  # Stateless samplers may pick another RNG algorithm under XLA, so the
  # comparison feeds the same noise eps through the reparameterization.
  def step(loc, bands, eps):
    q = GaussianGraphicalModel(loc, bands)
    z = q.bijector.forward(eps)
    return z, q.log_prob(z), tfd.kl_divergence(q, prior), q.variance()

  eager = step(loc, bands, eps)
  for compiled in (tf.function(step), tf.function(step, jit_compile=True)):
    for got, want in zip(compiled(loc, bands, eps), eager):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert tf.function(lambda: GaussianGraphicalModel(loc, bands).sample(seed=1),
                     jit_compile=True)().shape == (3, 16)


def test_bijector_inverts_and_log_det_matches_autodiff(stencil):
  bands = random_bands(stencil, (2,), seed=12)
  bijector = PrecisionFactorSolve(bands)
  x = np.random.default_rng(13).normal(size=(2, stencil.n))
  y = bijector.forward(x)
  np.testing.assert_allclose(bijector.inverse(y), x, rtol=1e-10, atol=1e-10)
  factor = dense_lower(bands)
  np.testing.assert_allclose(y, np.linalg.solve(np.swapaxes(factor, -1, -2), x[..., None])[..., 0],
                             rtol=1e-10, atol=1e-10)
  x_var = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(x_var)
    y = bijector.forward(x_var)
  jacobian = tape.batch_jacobian(y, x_var)
  _, log_det = np.linalg.slogdet(jacobian.numpy())
  np.testing.assert_allclose(bijector.forward_log_det_jacobian(x, event_ndims=1), log_det, rtol=1e-10)
  np.testing.assert_allclose(bijector.inverse_log_det_jacobian(y, event_ndims=1), -log_det, rtol=1e-10)


def test_mismatched_shapes_raise_naming_them():
  with pytest.raises(ValueError, match=r"n = 6.*\(2, 6\).*\(5,\)"):
    GaussianGraphicalModel(np.zeros(5), np.ones((2, 6)))
  with pytest.raises(ValueError, match="static shape"):
    GaussianGraphicalModel(np.zeros(5), np.ones(5))


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_validate_args_rejects_bad_diagonal(bad):
  bands = np.ones((2, 4))
  bands[0, 2] = bad
  message = "NaN or Inf" if not np.isfinite(bad) else "must be positive"
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    q = GaussianGraphicalModel(np.zeros(4), bands, validate_args=True)
    q.log_prob(np.zeros(4))


@pytest.mark.parametrize("batch", [(), (2,)])
def test_active_lags_only_match_the_dense_reference(stencil, batch):
  bands = random_bands(stencil, batch, seed=5)
  lags = stencil.active_lags
  loc = np.random.default_rng(6).normal(size=tuple(batch) + (stencil.n,))
  q = GaussianGraphicalModel(loc, bands[..., list(lags), :], lags=lags)
  full = GaussianGraphicalModel(loc, bands)
  mvn, covariance = reference(loc, bands)
  assert q.lags == lags and q.bandwidth == stencil.bandwidth
  np.testing.assert_array_equal(q.compact_bands(), bands)
  x = np.random.default_rng(7).normal(size=(3,) + tuple(batch) + (stencil.n,))
  tol = tolerance(np.float64)
  np.testing.assert_allclose(q.log_prob(x), mvn.log_prob(x), **tol)
  np.testing.assert_allclose(q.variance(), mvn.variance(), **tol)
  np.testing.assert_allclose(q.covariance(), covariance, **tol)
  np.testing.assert_allclose(q.sample(4, seed=[1, 2]), full.sample(4, seed=[1, 2]), **tol)
  prior = tfd.MultivariateNormalDiag(tf.zeros(stencil.n, tf.float64))
  np.testing.assert_allclose(tfd.kl_divergence(q, prior), tfd.kl_divergence(mvn, prior), **tol)
  np.testing.assert_allclose(tfd.kl_divergence(q, q), np.zeros(batch), atol=1e-9)
  if batch:
    np.testing.assert_allclose(q[1].log_prob(x[:, 1]), mvn.log_prob(x)[:, 1], **tol)


def test_active_lags_train_like_the_full_layout():
  """Gradients through values -> bands at active lags -> log_prob, KLs and the Hutchinson trace equal the
  full layout's; more than 8 draws (the "blocks" solve) sample the same points."""
  from tfggm.distributions.kl import hutchinson_trace
  stencil, other = stencils.extended_grid(3, 4), stencils.grid(3, 4)
  rng = np.random.default_rng(8)
  values = tf.constant(0.3 * rng.normal(size=(2, stencil.num_params)))
  other_bands = random_bands(other, (2,), seed=9)
  x = tf.constant(rng.normal(size=(2, stencil.n)))

  def terms(active_lags_only):
    with tf.GradientTape() as tape:
      tape.watch(values)
      bands = parameterizations.factor_bands_from_values(stencil, values, active_lags_only=active_lags_only)
      lags = stencil.active_lags if active_lags_only else None
      q = GaussianGraphicalModel(tf.zeros_like(x), bands, lags=lags)
      p = GaussianGraphicalModel(x, other_bands[:, list(other.active_lags)], lags=other.active_lags)
      total = (q.log_prob(x) + tfd.kl_divergence(q, p) + tfd.kl_divergence(p, q)
               + hutchinson_trace(q, tf.ones_like(x), num_probes=3, seed=[1, 1]))
    return total, tape.gradient(total, values), q.sample(12, seed=[3, 4])

  sparse, full = terms(True), terms(False)
  for got, want in zip(sparse, full):
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
  # And against dense references: KL(q || p) between different lag sets.
  q_bands = parameterizations.factor_bands_from_values(stencil, values).numpy()
  q = GaussianGraphicalModel(np.zeros((2, stencil.n)), q_bands[:, list(stencil.active_lags)],
                             lags=stencil.active_lags)
  p = GaussianGraphicalModel(x, other_bands[:, list(other.active_lags)], lags=other.active_lags)
  want = tfd.kl_divergence(reference(np.zeros((2, stencil.n)), q_bands)[0], reference(x.numpy(), other_bands)[0])
  np.testing.assert_allclose(tfd.kl_divergence(q, p), want, rtol=1e-9)
