"""GaussianGraphicalModel: N(loc, P^{-1}) with P = L L^T and L banded lower triangular."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import parameter_properties, tensor_util

from tfggm import linalg
from tfggm.bijector import PrecisionFactorSolve, floating_dtype
from tfggm.linalg import _bands

tfd = tfp.distributions

__all__ = ["GaussianGraphicalModel"]


def sample_shape_assertions(sample_shape, validate_args: bool) -> list:
  """Raises ValueError on a sample shape with a negative entry, when static; else asserts it under validate_args."""
  static = tf.get_static_value(sample_shape)
  if static is not None:
    if np.any(np.asarray(static) < 0):
      raise ValueError(f"sample_shape must have non-negative entries; got {np.asarray(static).tolist()}.")
    return []
  if not validate_args:
    return []
  return [tf.debugging.assert_non_negative(sample_shape, message="sample_shape must have non-negative entries")]


def point_assertions(owner: str, distribution: tfd.Distribution, x: tf.Tensor) -> list:
  """Checks an x [..., n] given to `log_prob` of a distribution with an event [n]: its width (n exactly) and the
  broadcasting of its leading dimensions with the batch shape from static shapes (ValueError), a width unknown
  statically and finite entries under validate_args. `owner` names the distribution in the messages."""
  assertions = _bands.check_vector(owner, "x", x, distribution.event_shape[-1], distribution.batch_shape,
                                   distribution.validate_args)
  if distribution.validate_args:
    assertions.append(tf.debugging.assert_all_finite(x, message=f"{owner}: x has NaN or Inf entries"))
  return assertions


class GaussianGraphicalModel(tfd.TransformedDistribution):
  """A Gaussian whose precision P = L L^T has a banded (sparse) Cholesky factor L.

  ```none
  z = loc + L^{-T} eps,  eps ~ N(0, I_n)                           sample,   O(n b)
  log p(z) = log N(L^T (z - loc); 0, I) + sum_i log L_ii            log_prob, O(n b)
  H = n/2 (1 + log 2 pi) - sum_i log L_ii                           entropy,  O(n)
  Var(z_i) = Sigma_ii, Sigma = P^{-1}, by selected inversion         variance, O(n b^2)
  ```

  L is given in the compact band layout `bands[..., j, i] = L[i, i - lags[j]]`
  ([..., R, n]); its diagonal (row 0, lag 0) must be positive. By default the
  rows are every lag 0, 1, ..., b; a sparse stencil may pass only its active
  lags (a 28 x 28 grid: lags (0, 1, 28), 3 rows instead of 29), and sampling and
  `log_prob` then cost O(n R). A stencil (`tfggm.stencils`) fixes which entries
  are free; entries outside it are simply zeros here. Nothing n x n is formed
  except by `covariance` and `precision`, which exist for inspection and tests.

  The x given to `log_prob` is [..., n], not broadcast along the event: another width, or leading dimensions
  that do not broadcast with the batch shape, raise ValueError naming both shapes.

  #### Examples

  ```python
  stencil = tfggm.stencils.chain(16)
  bands = tfggm.parameterizations.factor_bands_from_values(stencil, values)  # [..., 2, 16], L_ii > 0
  q = tfggm.GaussianGraphicalModel(loc, bands)
  z = q.sample(4)                             # [4, ..., 16]
  kl = tfd.kl_divergence(q, tfd.MultivariateNormalDiag(tf.zeros(16)))
  ```
  """

  def __init__(self, loc: tf.Tensor, precision_factor_bands: tf.Tensor, lags: Sequence[int] | None = None,
               validate_args: bool = False,
               allow_nan_stats: bool = True, name: str = "GaussianGraphicalModel"):
    """Builds the distribution.

    Args:
      loc: mean, [..., n].
      precision_factor_bands: compact bands of L, [..., R, n], static R and n.
      lags: the lag of each row of the bands, increasing from 0; default
        (0, 1, ..., R - 1). `Stencil.active_lags` gives a stencil's.
      validate_args: check at run time that loc and every entry of L are finite and the diagonal of L
        positive, that the x given to `log_prob` is finite, that a sample shape is non-negative, and the
        event sizes that static shapes leave open.
      allow_nan_stats: as in every TFP distribution.
      name: name scope of the ops.

    Raises:
      TypeError: when loc and the bands do not share one floating dtype.
      ValueError: when loc's n and the bands' n differ or their batch shapes do not broadcast (static
        shapes), or on bad lags.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = floating_dtype(type(self).__name__, loc=loc, precision_factor_bands=precision_factor_bands)
      self._loc = tensor_util.convert_nonref_to_tensor(loc, dtype=dtype, name="loc")
      self._precision_factor_bands = tensor_util.convert_nonref_to_tensor(
          precision_factor_bands, dtype=dtype, name="precision_factor_bands")
      n, _ = _bands.check_bands(self._precision_factor_bands)
      bands_shape = self._precision_factor_bands.shape
      _bands.check_vector(f"{type(self).__name__} with n = {n} (precision_factor_bands of shape {bands_shape})",
                          "loc", self._loc, n, bands_shape[:-2], validate_args=False)
      self._n = n
      # The distribution checks the bands (`_parameter_control_dependencies`) and x (`_sample_control_dependencies`)
      # itself, naming itself in the messages: its bijector need not check them again.
      solve = PrecisionFactorSolve(self._precision_factor_bands, lags=lags)
      self._lags = solve.lags
      super().__init__(
          distribution=tfd.Sample(tfd.Normal(tf.zeros([], dtype), tf.ones([], dtype)), [n]),
          bijector=tfp.bijectors.Shift(self._loc, validate_args=validate_args)(solve),
          validate_args=validate_args,
          parameters=parameters,
          name=name)
      self._allow_nan_stats = allow_nan_stats

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(
        loc=parameter_properties.ParameterProperties(event_ndims=1),
        precision_factor_bands=parameter_properties.ParameterProperties(
            event_ndims=2,
            default_constraining_bijector_fn=parameter_properties.BIJECTOR_NOT_IMPLEMENTED))

  @property
  def loc(self) -> tf.Tensor:
    return self._loc

  @property
  def precision_factor_bands(self) -> tf.Tensor:
    """Compact bands of L at `lags`, [..., R, n]."""
    return self._precision_factor_bands

  @property
  def lags(self) -> tuple[int, ...]:
    """The lag of each row of `precision_factor_bands`."""
    return self._lags

  @property
  def bandwidth(self) -> int:
    """b: the largest lag of L."""
    return self._lags[-1]

  def factor_bands_at_every_lag(self) -> tf.Tensor:
    """L at every lag 0, 1, ..., b: [..., b + 1, n] (zeros at lags not in `lags`), O(n b)."""
    return linalg.bands_at_every_lag(self._precision_factor_bands, self._lags)

  def _event_shape_full(self, x: tf.Tensor) -> tf.Tensor:
    """Broadcasts an [..., n] tensor to batch_shape + [n]."""
    return tf.broadcast_to(x, tf.concat([self.batch_shape_tensor(), [self._n]], axis=0))


  def _mean(self):
    return self._event_shape_full(tf.convert_to_tensor(self._loc))

  _mode = _mean

  def _entropy(self):
    constant = 0.5 * self._n * (1.0 + np.log(2.0 * np.pi))
    log_det = _bands.log_determinant(self._precision_factor_bands)
    return tf.broadcast_to(tf.constant(constant, self.dtype) - log_det, self.batch_shape_tensor())

  def covariance_bands(self, bandwidth: int | None = None) -> tf.Tensor:
    """Sigma within a band, compact layout [..., b' + 1, n], by selected inversion: O(n b'^2)."""
    return linalg.selected_inversion(self.factor_bands_at_every_lag(), bandwidth=bandwidth)

  def precision_bands(self) -> tf.Tensor:
    """Lower bands of P = L L^T, [..., b + 1, n]: O(n b^2)."""
    return linalg.product_with_transpose(self.factor_bands_at_every_lag())

  def _variance(self):
    """diag(Sigma) by selected inversion without the off-diagonal band: O(n b^2)."""
    return self._event_shape_full(linalg.marginal_variances(self.factor_bands_at_every_lag()))

  def _stddev(self):
    return tf.sqrt(self._variance())

  def precision(self) -> tf.Tensor:
    """Dense P = L L^T, [..., n, n]: O(n^2) memory, for inspection and tests only."""
    factor = linalg.dense_from_bands(self.factor_bands_at_every_lag())
    return tf.matmul(factor, factor, adjoint_b=True)

  def _covariance(self):
    # Dense Sigma = L^{-T} L^{-1}: O(n^3), for inspection and tests only.
    factor = linalg.dense_from_bands(self.factor_bands_at_every_lag())
    identity = tf.broadcast_to(tf.eye(self._n, dtype=self.dtype), tf.shape(factor))
    factor_inverse = tf.linalg.triangular_solve(factor, identity, lower=True)
    covariance = tf.matmul(factor_inverse, factor_inverse, adjoint_a=True)
    return tf.broadcast_to(covariance,
                           tf.concat([self.batch_shape_tensor(), [self._n, self._n]], axis=0))

  def _call_sample_n(self, sample_shape, seed, **kwargs):
    with tf.control_dependencies(sample_shape_assertions(sample_shape, self.validate_args)):
      return super()._call_sample_n(sample_shape, seed, **kwargs)

  def _sample_and_log_prob(self, sample_shape, seed, **kwargs):
    with tf.control_dependencies(sample_shape_assertions(sample_shape, self.validate_args)):
      return super()._sample_and_log_prob(sample_shape, seed, **kwargs)

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    assertions = []
    if is_init != tensor_util.is_ref(self._loc):
      assertions.append(_bands.assert_finite(tf.convert_to_tensor(self._loc),
                                             f"{type(self).__name__}: loc has NaN or Inf entries"))
    if is_init != tensor_util.is_ref(self._precision_factor_bands):
      assertions += _bands.factor_assertions(type(self).__name__, tf.convert_to_tensor(self._precision_factor_bands))
    return assertions

  def _sample_control_dependencies(self, x):
    return point_assertions(type(self).__name__, self, x)

  def _default_event_space_bijector(self):
    return tfp.bijectors.Identity(validate_args=self.validate_args)
