"""GaussianGraphicalModel against tfd.MultivariateNormalTriL with Sigma = (L L^T)^{-1}, in float64."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import (
  CASES,
  DTYPES,
  STENCIL_CASES,
  assert_gradients_match,
  assert_second_derivatives_match,
  at_every_lag,
  dense_reference,
  tolerance,
)
from tfggm import GaussianGraphicalModel, parameterizations, stencils
from tfggm._testing import random_factor_bands

tfd = tfp.distributions


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case_name", CASES)
def test_matches_dense_reference(case_name, dtype):
  """Every case: L stored at its lags (a stencil's active ones), loc with its own batch shape (broadcasting)."""
  case = CASES[case_name]
  bands = case.factor_bands(seed=1, dtype=dtype)
  full = at_every_lag(bands, case.lags)
  n, batch = case.n, case.broadcast_batch_shape
  loc = np.random.default_rng(2).normal(size=case.other_batch_shape + (n,)).astype(dtype)
  q = GaussianGraphicalModel(loc, bands, lags=case.lags)
  mvn, covariance = dense_reference(np.broadcast_to(loc, batch + (n,)), np.broadcast_to(full, batch + full.shape[-2:]))
  assert q.batch_shape == batch and q.event_shape == (n,) and q.dtype == dtype
  assert q.lags == case.lags and q.bandwidth == case.bandwidth
  np.testing.assert_array_equal(q.factor_bands_at_every_lag(), full)
  x = np.random.default_rng(3).normal(size=(4,) + batch + (n,)).astype(dtype)
  tol = tolerance(dtype)
  np.testing.assert_allclose(q.log_prob(x), mvn.log_prob(x.astype(np.float64)), **tol)
  np.testing.assert_allclose(q.entropy(), mvn.entropy(), **tol)
  np.testing.assert_allclose(q.variance(), mvn.variance(), **tol)
  np.testing.assert_allclose(q.stddev(), mvn.stddev(), **tol)
  np.testing.assert_allclose(q.covariance(), covariance, **tol)
  # precision() has the bands' batch shape (1, 3) in the broadcast case, covariance() the distribution's (2, 3).
  np.testing.assert_allclose(np.broadcast_to(q.precision(), batch + (n, n)), np.linalg.inv(covariance), rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(q.mean(), np.broadcast_to(loc, batch + (n,)))
  np.testing.assert_allclose(q.mode(), q.mean())
  assert q.sample([5, 2], seed=4).shape == (5, 2) + batch + (n,)
  # The rows at the case's lags sample the points the full layout (zero rows at the other lags) samples.
  np.testing.assert_allclose(q.sample(3, seed=[1, 2]), GaussianGraphicalModel(loc, full).sample(3, seed=[1, 2]), **tol)
  if batch:
    np.testing.assert_allclose(q[0].log_prob(x[:, 0]), mvn.log_prob(x.astype(np.float64))[:, 0], **tol)


@pytest.mark.parametrize("case_name", STENCIL_CASES)
def test_sample_moments(case_name):
  case = CASES[case_name]
  bands = case.factor_bands(seed=5)
  loc = np.random.default_rng(6).normal(size=case.batch_shape + (case.n,))
  q = GaussianGraphicalModel(loc, bands, lags=case.lags)
  _, covariance = dense_reference(loc, bands, case.lags)
  num = 20000
  z = q.sample(num, seed=7).numpy()
  sd_mean = np.sqrt(np.diagonal(covariance, axis1=-2, axis2=-1) / num)
  np.testing.assert_array_less(np.abs(z.mean(0) - loc), 5 * sd_mean)
  centred = z - loc
  sample_cov = np.einsum("s...i,s...j->...ij", centred, centred) / num
  variances = np.diagonal(covariance, axis1=-2, axis2=-1)
  sd_cov = np.sqrt((variances[..., :, None] * variances[..., None, :] + covariance**2) / num)
  np.testing.assert_array_less(np.abs(sample_cov - covariance), 5 * sd_cov)


@pytest.mark.parametrize("case_name", STENCIL_CASES)
def test_gradients_match_finite_differences(case_name):
  """Free values of the stencil -> bands at its active lags -> log_prob, a sample, entropy, variance, KL: first
  derivatives, and second ones (Hessian-vector products through every kernel's custom gradient)."""
  case = CASES[case_name]
  stencil = case.stencil
  values = stencil.values_from_bands(case.factor_bands(seed=8, every_lag=True))
  loc = np.random.default_rng(9).normal(size=case.batch_shape + (stencil.n,))
  x = np.random.default_rng(10).normal(size=(3,) + case.batch_shape + (stencil.n,))
  prior = tfd.MultivariateNormalDiag(tf.zeros(stencil.n, tf.float64))
  seed = tf.constant([1, 2], dtype=tf.int32)

  def quantities(loc, values):
    q = GaussianGraphicalModel(loc, stencil.bands_from_values(values, active_lags_only=True), lags=case.lags)
    return (q.log_prob(x), q.sample(2, seed=seed), q.entropy(), q.variance(), tfd.kl_divergence(q, prior))

  assert_gradients_match(quantities, [loc, values])
  assert_second_derivatives_match(quantities, [loc, values])


def test_variables_train_like_tensors():
  """tf.Variable parameters, eager and in (XLA-compiled) tf.functions: the gradients of tensors."""
  stencil = stencils.extended_grid(3, 4)
  bands = random_factor_bands(stencil, batch_shape=(2,), seed=14, lags=stencil.active_lags)
  loc = np.random.default_rng(15).normal(size=(2, stencil.n))
  prior = tfd.MultivariateNormalDiag(tf.zeros(stencil.n, tf.float64))
  eps = np.random.default_rng(16).normal(size=(3, 2, stencil.n))  # XLA may draw other stateless samples

  def loss_and_gradients(loc, bands, watch):
    with tf.GradientTape() as tape:
      if watch:
        tape.watch([loc, bands])
      q = GaussianGraphicalModel(loc, bands, lags=stencil.active_lags)
      z = q.bijector.forward(eps)
      loss = tf.reduce_sum(q.log_prob(z)) + tf.reduce_sum(tfd.kl_divergence(q, prior)) + tf.reduce_sum(q.variance())
    return loss, tape.gradient(loss, [loc, bands])

  want = loss_and_gradients(tf.constant(loc), tf.constant(bands), watch=True)
  variables = (tf.Variable(loc), tf.Variable(bands))
  for run in (lambda: loss_and_gradients(*variables, watch=False),
              tf.function(lambda: loss_and_gradients(*variables, watch=False)),
              tf.function(lambda: loss_and_gradients(*variables, watch=False), jit_compile=True)):
    for got, expected in zip(tf.nest.flatten(run()), tf.nest.flatten(want)):
      np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_works_inside_tf_function_and_xla():
  stencil = stencils.extended_grid(4, 4)
  bands = random_factor_bands(stencil, batch_shape=(3,), seed=11, dtype=np.float32)
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


def test_active_lags_train_like_the_full_layout():
  """Gradients through values -> bands at active lags -> log_prob, KLs and the Hutchinson trace equal the
  full layout's; more than 8 draws (the "blocks" solve) sample the same points."""
  from tfggm.distributions.kl import hutchinson_trace
  stencil, other = stencils.extended_grid(3, 4), stencils.grid(3, 4)
  rng = np.random.default_rng(8)
  values = tf.constant(0.3 * rng.normal(size=(2, stencil.num_params)))
  other_bands = random_factor_bands(other, batch_shape=(2,), seed=9)
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
  want = tfd.kl_divergence(dense_reference(np.zeros((2, stencil.n)), q_bands)[0],
                         dense_reference(x.numpy(), other_bands)[0])
  np.testing.assert_allclose(tfd.kl_divergence(q, p), want, rtol=1e-9)
