"""MultivariateLogitNormal: a GaussianGraphicalModel pushed through the sigmoid."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfggm.distributions.ggm import GaussianGraphicalModel

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["MultivariateLogitNormal", "squash"]


def squash(alpha: float) -> tfb.Bijector:
  """The affine map [0, 1] -> [alpha, 1 - alpha], x' = alpha + (1 - 2 alpha) x.

  Data with exact 0s and 1s (or dequantized pixels) must be squashed into the
  open interval before a logit-normal can score them. The density of the
  original data is recovered with the Jacobian:

  ```none
  log p(x) = log p'(alpha + (1 - 2 alpha) x) + n log(1 - 2 alpha)
  ```

  which is `squash(alpha).forward_log_det_jacobian(x, event_ndims=1)`.
  """
  if not 0.0 <= alpha < 0.5:
    raise ValueError(f"alpha must be in [0, 0.5); got {alpha}.")
  return tfb.Shift(alpha)(tfb.Scale(1.0 - 2.0 * alpha))


class MultivariateLogitNormal(tfd.TransformedDistribution):
  """x = sigmoid(z), z ~ GaussianGraphicalModel(loc, L): a density on (0, 1)^n.

  ```none
  p(x) = N(logit x | loc, (L L^T)^{-1}) / prod_i x_i (1 - x_i)        O(n b)
  ```

  With a grid stencil over the pixels, the precision couples neighbouring
  pixels in logit space. With `validate_args=True`, `log_prob` of an x outside
  (0, 1), or NaN, raises InvalidArgumentError instead of returning NaN.
  """

  def __init__(self, loc, precision_factor_bands, validate_args: bool = False,
               allow_nan_stats: bool = True, name: str = "MultivariateLogitNormal"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      gaussian = GaussianGraphicalModel(loc, precision_factor_bands, validate_args=validate_args,
                                        allow_nan_stats=allow_nan_stats)
      super().__init__(distribution=gaussian, bijector=tfb.Sigmoid(validate_args=validate_args),
                       validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return GaussianGraphicalModel._parameter_properties(dtype)

  @property
  def gaussian(self) -> GaussianGraphicalModel:
    """The Gaussian graphical model of logit(x)."""
    return self.distribution

  @property
  def loc(self) -> tf.Tensor:
    return self.distribution.loc

  @property
  def precision_factor_bands(self) -> tf.Tensor:
    return self.distribution.precision_factor_bands

  def _sample_control_dependencies(self, x):
    if not self.validate_args:
      return []
    return [
        tf.debugging.assert_all_finite(x, message="MultivariateLogitNormal: x has NaN or Inf entries"),
        tf.debugging.assert_positive(x, message="MultivariateLogitNormal: x must be in (0, 1), found x <= 0"),
        tf.debugging.assert_less(x, tf.ones([], x.dtype),
                                 message="MultivariateLogitNormal: x must be in (0, 1), found x >= 1"),
    ]
