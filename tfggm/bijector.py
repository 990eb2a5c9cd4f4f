"""The banded-solve bijector: forward(x) = L^{-T} x for a banded lower-triangular L."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util, parameter_properties, tensor_util

from tfggm import linalg
from tfggm.linalg import _bands

__all__ = ["PrecisionFactorSolve"]


def floating_dtype(owner: str, **parameters) -> tf.DType:
  """The one dtype of the parameters, as TFP's `dtype_util.common_dtype` finds it (float32 for Python numbers).

  Raises:
    TypeError: naming each parameter's dtype, when they differ or are not floating (TFP's distributions
      refuse integer parameters too).
  """
  try:
    dtype = dtype_util.common_dtype(list(parameters.values()), dtype_hint=tf.float32)
  except TypeError:  # dtypes that differ
    dtype = None
  if dtype is None or not dtype_util.is_floating(dtype):
    given = ", ".join(f"{name} of dtype {_dtype_name(value)}" for name, value in parameters.items())
    raise TypeError(f"{owner}: got {given}; the parameters need one floating dtype (float32 or float64).")
  return tf.as_dtype(dtype)


def _dtype_name(value) -> str:
  dtype = getattr(value, "dtype", None)
  return "none (a Python value)" if dtype is None else tf.as_dtype(dtype).name


class PrecisionFactorSolve(tfp.bijectors.Bijector):
  """Y = L^{-T} X where P = L L^T is a precision with banded Cholesky factor L.

  L is given in compact bands [..., R, n], `bands[..., j, i] = L[i, i - lags[j]]`
  (lags 0, 1, ..., b by default, or only a stencil's active lags).
  If X ~ N(0, I), then Y ~ N(0, P^{-1}).

  ```none
  forward(x)  = L^{-T} x        banded back-substitution, O(n R)
  inverse(y)  = L^T y           banded matvec, O(n R)
  log|det J|  = -sum_i log L_ii (constant Jacobian)
  ```

  x and y are [..., n]: a last dimension other than n, or leading dimensions that do not broadcast with the
  bands' batch shape, raise ValueError (static shapes); with `validate_args=True`, a width unknown statically
  is asserted at run time, and every entry of the bands must be finite and the diagonal positive.
  """

  def __init__(self, precision_factor_bands, lags=None, validate_args: bool = False,
               name: str = "precision_factor_solve"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = floating_dtype(type(self).__name__, precision_factor_bands=precision_factor_bands)
      self._precision_factor_bands = tensor_util.convert_nonref_to_tensor(
          precision_factor_bands, dtype=dtype, name="precision_factor_bands")
      self._n, _ = _bands.check_bands(self._precision_factor_bands)
      self._lags = _bands.resolve_lags(self._precision_factor_bands, lags)
      super().__init__(forward_min_event_ndims=1, is_constant_jacobian=True, dtype=dtype,
                       validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(precision_factor_bands=parameter_properties.ParameterProperties(
        event_ndims=2,
        default_constraining_bijector_fn=parameter_properties.BIJECTOR_NOT_IMPLEMENTED))

  @property
  def precision_factor_bands(self) -> tf.Tensor:
    return self._precision_factor_bands

  @property
  def lags(self) -> tuple[int, ...]:
    """The lag of each row of `precision_factor_bands`."""
    return self._lags

  def _vector_assertions(self, x: tf.Tensor, what: str) -> list:
    return _bands.check_vector(type(self).__name__, what, x, self._n, self._precision_factor_bands.shape[:-2],
                               self.validate_args)

  def _forward(self, x):
    with tf.control_dependencies(self._vector_assertions(x, "x")):
      return linalg.solve_vec(tf.convert_to_tensor(self._precision_factor_bands), x, transpose=True,
                              lags=self._lags)

  def _inverse(self, y):
    with tf.control_dependencies(self._vector_assertions(y, "y")):
      return linalg.matvec_transpose(tf.convert_to_tensor(self._precision_factor_bands), y, lags=self._lags)

  def _forward_log_det_jacobian(self, x):
    return -_bands.log_determinant(self._precision_factor_bands)

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    if is_init != tensor_util.is_ref(self._precision_factor_bands):
      return _bands.factor_assertions(type(self).__name__, tf.convert_to_tensor(self._precision_factor_bands))
    return []
