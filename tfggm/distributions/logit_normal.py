"""MultivariateLogitNormal: a GaussianGraphicalModel pushed through the sigmoid."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfggm.distributions.ggm import GaussianGraphicalModel, point_assertions

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["MultivariateLogitNormal", "squash"]


def squash(alpha: float, dtype: tf.DType = tf.float32) -> tfb.Bijector:
  """The affine map [0, 1] -> [alpha, 1 - alpha], x' = alpha + (1 - 2 alpha) x.

  Data with exact 0s and 1s (or dequantized pixels) must be squashed into the
  open interval before a logit-normal can score them. The density of the
  original data is recovered with the Jacobian:

  ```none
  log p(x) = log p'(alpha + (1 - 2 alpha) x) + n log(1 - 2 alpha)
  ```

  which is `squash(alpha).forward_log_det_jacobian(x, event_ndims=1)`.
  """
  alpha = check_alpha(alpha)
  return tfb.Shift(tf.constant(alpha, dtype))(tfb.Scale(tf.constant(1.0 - 2.0 * alpha, dtype)))


def check_alpha(alpha) -> float:
  """alpha as a Python float, which must be in [0, 0.5) (a static constant, not a tensor of the graph)."""
  try:
    value = float(alpha)
  except TypeError:
    raise TypeError(f"alpha must be a number in [0, 0.5); got {alpha!r}.") from None
  if not 0.0 <= value < 0.5:
    raise ValueError(f"alpha must be in [0, 0.5); got {alpha!r}.")
  return value


class MultivariateLogitNormal(tfd.TransformedDistribution):
  """x = sigmoid(z), z ~ GaussianGraphicalModel(loc, L): a density on (0, 1)^n.

  ```none
  p(x) = N(logit x | loc, (L L^T)^{-1}) / prod_i x_i (1 - x_i)        O(n b)
  ```

  With a grid stencil over the pixels, the precision couples neighbouring
  pixels in logit space. With `alpha > 0` the density is that of the original
  data x in [0, 1] whose squashed version x' = alpha + (1 - 2 alpha) x is
  logit-normal: `log p(x) = log p'(x') + n log(1 - 2 alpha)` (see `squash`).
  With `validate_args=True`, `log_prob` of an x outside the open support, or
  NaN, raises InvalidArgumentError instead of returning NaN. An x of another
  width than n, or whose batch dimensions do not broadcast, raises ValueError.
  """

  def __init__(self, loc, precision_factor_bands, alpha: float = 0.0, lags=None, validate_args: bool = False,
               allow_nan_stats: bool = True, name: str = "MultivariateLogitNormal"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      gaussian = GaussianGraphicalModel(loc, precision_factor_bands, lags=lags, validate_args=validate_args,
                                        allow_nan_stats=allow_nan_stats)
      alpha = check_alpha(alpha)
      bijector = tfb.Sigmoid(validate_args=validate_args)
      if alpha:
        bijector = tfb.Invert(squash(alpha, gaussian.dtype))(bijector)
      self._alpha = alpha
      super().__init__(distribution=gaussian, bijector=bijector,
                       validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return GaussianGraphicalModel._parameter_properties(dtype)

  @property
  def gaussian(self) -> GaussianGraphicalModel:
    """The Gaussian graphical model of logit(x)."""
    return self.distribution

  @property
  def alpha(self) -> float:
    return self._alpha

  def median(self) -> tf.Tensor:
    """The image of the Gaussian's median loc: each coordinate's median, O(n)."""
    return self.bijector.forward(self.distribution.mean())

  @property
  def loc(self) -> tf.Tensor:
    return self.distribution.loc

  @property
  def precision_factor_bands(self) -> tf.Tensor:
    return self.distribution.precision_factor_bands

  @property
  def lags(self) -> tuple[int, ...]:
    return self.distribution.lags

  def factor_bands_at_every_lag(self) -> tf.Tensor:
    return self.distribution.factor_bands_at_every_lag()

  def _sample_control_dependencies(self, x):
    assertions = point_assertions(type(self).__name__, self, x)
    if not self.validate_args:
      return assertions
    low = 0.0 - self._alpha / (1 - 2 * self._alpha)  # 0.0 - 0.0 is +0.0, printed "0"
    high = (1 - self._alpha) / (1 - 2 * self._alpha)
    support = f"({low:g}, {high:g})"
    return assertions + [
        tf.debugging.assert_greater(x, tf.constant(low, x.dtype),
                                    message=f"MultivariateLogitNormal: x must be in {support}, found x <= {low:g}"),
        tf.debugging.assert_less(x, tf.constant(high, x.dtype),
                                 message=f"MultivariateLogitNormal: x must be in {support}, found x >= {high:g}"),
    ]
