"""Network outputs -> valid factors: softplus diagonal, and Gershgorin precision + banded Cholesky."""

import numpy as np
import pytest

from conftest import band_of, dense_lower
from tfggm import GaussianGraphicalModel, parameterizations


def test_factor_values_give_a_positive_diagonal_on_the_stencil(stencil):
  values = np.random.default_rng(0).normal(size=(4, stencil.num_params)) * 5
  bands = parameterizations.factor_bands_from_values(stencil, values, diagonal_floor=1e-3).numpy()
  assert np.all(bands[..., 0, :] > 1e-3)
  np.testing.assert_allclose(bands[..., 0, :], np.logaddexp(0, values[:, : stencil.n]) + 1e-3)
  np.testing.assert_array_equal(bands[..., ~stencil.mask], 0.0)
  np.testing.assert_array_equal(stencil.values_from_bands(bands)[:, stencil.n:], values[:, stencil.n:])


@pytest.mark.parametrize("batch", [(), (3,)])
def test_gershgorin_precision_is_diagonally_dominant_and_its_factor_exact(stencil, batch):
  values = np.random.default_rng(1).normal(size=tuple(batch) + (stencil.num_params,)) * 2
  precision_bands = parameterizations.precision_bands_from_values(stencil, values).numpy()
  lower = dense_lower(precision_bands)
  precision = lower + np.swapaxes(lower, -1, -2) - np.eye(stencil.n) * lower
  off_diagonal = np.abs(precision).sum(-1) - np.abs(np.diagonal(precision, axis1=-2, axis2=-1))
  diagonal = np.diagonal(precision, axis1=-2, axis2=-1)
  np.testing.assert_allclose(diagonal - off_diagonal,
                             np.logaddexp(0, values[..., : stencil.n]) + 1e-3, rtol=1e-12)
  assert np.all(np.linalg.eigvalsh(precision) > 0)
  factor_bands = parameterizations.factor_bands_from_precision_values(stencil, values)
  np.testing.assert_allclose(factor_bands, band_of(np.linalg.cholesky(precision), stencil.bandwidth),
                             rtol=1e-10, atol=1e-12)
  q = GaussianGraphicalModel(np.zeros(stencil.n), factor_bands)
  np.testing.assert_allclose(q.precision(), np.broadcast_to(precision, q.precision().shape), rtol=1e-10,
                             atol=1e-12)
