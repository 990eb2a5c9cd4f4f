"""PrecisionFactorSolve: forward L^{-T} x, inverse L^T y, and a log-det-Jacobian that autodiff confirms."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import CASES, at_every_lag, dense_lower
from tfggm import PrecisionFactorSolve


@pytest.mark.parametrize("case_name", CASES)
def test_inverts_and_log_det_matches_autodiff(case_name):
  case = CASES[case_name]
  bands = case.factor_bands(seed=12)
  bijector = PrecisionFactorSolve(bands, lags=case.lags)
  batch, n = case.broadcast_batch_shape, case.n
  x = np.random.default_rng(13).normal(size=case.other_batch_shape + (n,))
  y = bijector.forward(x)
  # tf.identity: a new tensor, so the bijector's cache does not simply hand x back.
  np.testing.assert_allclose(bijector.inverse(tf.identity(y)), np.broadcast_to(x, batch + (n,)), rtol=1e-10,
                             atol=1e-10)
  factor_t = np.swapaxes(dense_lower(at_every_lag(bands, case.lags)), -1, -2)
  np.testing.assert_allclose(y, np.linalg.solve(factor_t, x[..., None])[..., 0], rtol=1e-10, atol=1e-10)
  # The Jacobian of each member of the batch, flattened to one batch axis for batch_jacobian.
  flat = tf.constant(np.broadcast_to(x, batch + (n,)).reshape(-1, n))
  with tf.GradientTape() as tape:
    tape.watch(flat)
    y_flat = tf.reshape(bijector.forward(tf.reshape(flat, batch + (n,))), [-1, n])
  _, log_det = np.linalg.slogdet(tape.batch_jacobian(y_flat, flat).numpy())
  np.testing.assert_allclose(np.broadcast_to(bijector.forward_log_det_jacobian(x, event_ndims=1), batch).ravel(),
                             log_det, rtol=1e-10)
  np.testing.assert_allclose(np.broadcast_to(bijector.inverse_log_det_jacobian(y, event_ndims=1), batch).ravel(),
                             -log_det, rtol=1e-10)
