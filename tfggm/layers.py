"""Keras layers: a flat parameter tensor (a Dense output) -> a distribution, for posteriors and likelihoods."""

from __future__ import annotations

import numbers

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfggm import parameterizations, stencils
from tfggm.distributions import GaussianGraphicalModel, MultivariateLogitNormal
from tfggm.distributions.ggm import point_assertions
from tfggm.distributions.logit_normal import check_alpha

tfd = tfp.distributions

__all__ = ["GaussianGraphicalModelLayer", "MultivariateLogitNormalLayer", "IndependentBernoulliLayer"]

_TENSOR_CONVERSIONS = {
    "sample": tfd.Distribution.sample,
    "mean": tfd.Distribution.mean,
    "mode": tfd.Distribution.mode,
}
_PARAMETERIZATIONS = ("factor", "precision")


class _DistributionLayer(tfp.layers.DistributionLambda):
  """A DistributionLambda with an explicit JSON config instead of a pickled closure.

  The output is a distribution that also acts as a tensor downstream, through
  `convert_to_tensor_fn` ("sample", "mean" or "mode").

  The parameter tensor must be floating, [..., params_size]: another width raises ValueError when it is static
  and fails a run-time assertion otherwise (extra values are never silently ignored). With
  `validate_args=True`, parameters with NaN or Inf entries fail at run time, and the distribution checks its
  own parameters and the x given to `log_prob`.
  """

  def __init__(self, convert_to_tensor_fn: str = "sample", validate_args: bool = False, **kwargs):
    if convert_to_tensor_fn not in _TENSOR_CONVERSIONS:
      raise ValueError(f"convert_to_tensor_fn must be one of {sorted(_TENSOR_CONVERSIONS)}; "
                       f"got {convert_to_tensor_fn!r}.")
    super().__init__(self._distribution, _TENSOR_CONVERSIONS[convert_to_tensor_fn], **kwargs)
    self._convert_to_tensor_name = convert_to_tensor_fn
    self._validate_args = validate_args

  def call(self, inputs, *args, **kwargs):
    result = super().call(inputs, *args, **kwargs)
    coercible = result[0] if isinstance(result, tuple) else result
    # TFP's tensor-coercible wrapper hands log_prob's computation to the distribution, but not the
    # distribution's checks of its argument (`_sample_control_dependencies`), so `validate_args` would check
    # nothing on the layer's output: hand those over too.
    object.__setattr__(coercible, "_sample_control_dependencies",
                       coercible.tensor_distribution._sample_control_dependencies)
    return result

  def _check_params(self, params: tf.Tensor, expected: int) -> tf.Tensor:
    """params [..., expected], floating; the width is asserted at run time when it is not static (and set
    statically after), the values are checked finite under validate_args."""
    params = tf.convert_to_tensor(params)
    owner = f"{type(self).__name__} '{self.name}'"
    if not params.dtype.is_floating:
      raise TypeError(f"{owner} takes floating parameters; got dtype {params.dtype.name}.")
    takes = f"{owner} takes parameters [..., {expected}] (params_size)"
    if params.shape.rank == 0 or params.shape[-1] not in (None, expected):
      raise ValueError(f"{takes}; got shape {params.shape}.")
    if params.shape.rank is None or params.shape[-1] is None:
      width = tf.shape(params)[-1]
      with tf.control_dependencies([tf.debugging.Assert(tf.equal(width, expected), [f"{takes}; got width", width])]):
        # ensure_shape checks under XLA too, which drops assertions.
        params = tf.ensure_shape(params, params.shape[:-1].concatenate([expected]))
    if self._validate_args:
      params = tf.debugging.assert_all_finite(params, message=f"{owner}: the parameters have NaN or Inf entries")
    return params

  def _distribution(self, params):
    raise NotImplementedError

  def get_config(self) -> dict:
    config = tf_keras.layers.Layer.get_config(self)
    config.update(convert_to_tensor_fn=self._convert_to_tensor_name, validate_args=self._validate_args)
    return config

  @classmethod
  def from_config(cls, config: dict):
    return cls(**config)  # Lambda.from_config would look for a pickled function


class _StencilLayer(_DistributionLayer):
  """Common part of the layers whose distribution is parameterized on a stencil."""

  def __init__(self, stencil: stencils.Stencil | dict, parameterization: str = "factor",
               diagonal_floor: float = 1e-3, **kwargs):
    if isinstance(stencil, dict):
      stencil = stencils.from_config(stencil)
    if not isinstance(stencil, stencils.Stencil):
      raise TypeError(f"stencil must be a tfggm.stencils.Stencil or its config dict; got {stencil!r}.")
    if parameterization not in _PARAMETERIZATIONS:
      raise ValueError(f"parameterization must be one of {sorted(_PARAMETERIZATIONS)}; "
                       f"got {parameterization!r}.")
    self._stencil = stencil
    self._parameterization = parameterization
    self._diagonal_floor = parameterizations.check_diagonal_floor(diagonal_floor)
    super().__init__(**kwargs)

  @property
  def stencil(self) -> stencils.Stencil:
    return self._stencil

  @staticmethod
  def params_size(stencil: stencils.Stencil) -> int:
    """n for the location plus one value per free entry of the stencil."""
    return stencil.n + stencil.num_params

  def _loc_bands_and_lags(self, params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tuple[int, ...] | None]:
    """loc, the bands of L and their lags: only the stencil's active lags for "factor" (O(n R) kernels);
    every lag for "precision", whose banded Cholesky fills the band in."""
    params = self._check_params(params, self.params_size(self._stencil))
    n = self._stencil.n
    if self._parameterization == "factor":
      bands = parameterizations.factor_bands_from_values(self._stencil, params[..., n:], self._diagonal_floor,
                                                         active_lags_only=True)
      return params[..., :n], bands, self._stencil.active_lags
    bands = parameterizations.factor_bands_from_precision_values(self._stencil, params[..., n:],
                                                                 self._diagonal_floor)
    return params[..., :n], bands, None

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(stencil=self._stencil.get_config(), parameterization=self._parameterization,
                  diagonal_floor=self._diagonal_floor)
    return config


@tf_keras.saving.register_keras_serializable(package="tfggm")
class GaussianGraphicalModelLayer(_StencilLayer):
  """params [..., n + num_params] -> GaussianGraphicalModel on a stencil.

  `params[..., :n]` is the mean; the rest feeds the parameterization:
  "factor" (free entries of L, softplus diagonal + floor) or "precision"
  (Gershgorin-dominant P, then banded Cholesky).

  With "factor", a band of L whose off-diagonal entries are as large as its diagonal has an L^-1 (so a
  covariance) that grows exponentially along the band: a Dense layer with random weights can start a band-4
  posterior over 50 latents at KL(q || N(0, I)) ~ 4e4 nats, and training may diverge. Starting that Dense layer
  at zero weights (`kernel_initializer="zeros"`) starts every Gaussian at mean 0 and L = (softplus(0) + floor) I.

  It serves as a posterior q(z|x) over latents and as a likelihood p(x|z) over real-valued data
  (a decoder's last layer: a Gaussian over x whose precision couples the entries along the stencil,
  e.g. a grid over the pixels of an image). With `validate_args=True`, `log_prob` of an x with NaN or
  Inf entries raises instead of returning NaN.

  ```python
  stencil = tfggm.stencils.extended_grid(4, 4)
  encoder = tf_keras.Sequential([
      tf_keras.layers.Dense(200, activation="elu"),
      tf_keras.layers.Dense(GaussianGraphicalModelLayer.params_size(stencil)),
      GaussianGraphicalModelLayer(stencil)])
  q = encoder(x)  # a distribution over 16 latents; also a tensor (its sample)
  ```
  """

  def _distribution(self, params):
    loc, bands, lags = self._loc_bands_and_lags(params)
    return GaussianGraphicalModel(loc, bands, lags=lags, validate_args=self._validate_args)


@tf_keras.saving.register_keras_serializable(package="tfggm")
class MultivariateLogitNormalLayer(_StencilLayer):
  """params [..., n + num_params] -> MultivariateLogitNormal over pixels in [0, 1].

  The Gaussian lives in logit space of the squashed pixels
  x' = alpha + (1 - 2 alpha) x; `log_prob` scores the original x, Jacobian
  included (see `tfggm.distributions.squash`).
  """

  def __init__(self, stencil: stencils.Stencil | dict, alpha: float = 0.01, **kwargs):
    self._alpha = check_alpha(alpha)
    super().__init__(stencil, **kwargs)

  def _distribution(self, params):
    loc, bands, lags = self._loc_bands_and_lags(params)
    return MultivariateLogitNormal(loc, bands, alpha=self._alpha, lags=lags, validate_args=self._validate_args)

  def get_config(self) -> dict:
    config = super().get_config()
    config["alpha"] = self._alpha
    return config


class _BernoulliPixels(tfd.Independent):
  """Independent Bernoulli pixels that score x in [0, 1]: x log p + (1 - x) log(1 - p) per pixel.

  Binary x gives the Bernoulli log-probability; grey levels in between are soft targets (the usual
  cross-entropy). With `validate_args=True`, `log_prob` of an x with NaN entries or entries outside [0, 1]
  raises InvalidArgumentError instead of returning a wrong number.
  """

  def _sample_control_dependencies(self, x):
    assertions = point_assertions("IndependentBernoulli", self, x)
    if not self.validate_args:
      return assertions
    return assertions + [
        tf.debugging.assert_greater_equal(x, tf.zeros([], x.dtype),
                                          message="IndependentBernoulli: x must be in [0, 1], found x < 0"),
        tf.debugging.assert_less_equal(x, tf.ones([], x.dtype),
                                       message="IndependentBernoulli: x must be in [0, 1], found x > 1"),
    ]


@tf_keras.saving.register_keras_serializable(package="tfggm")
class IndependentBernoulliLayer(_DistributionLayer):
  """logits [..., event_size] -> independent Bernoulli pixels (binarized images, or grey levels in [0, 1]).

  Its `log_prob` scores x in [0, 1]: x log p + (1 - x) log(1 - p) per pixel, the Bernoulli log-probability for
  binary x and the usual cross-entropy for grey levels. With `validate_args=True`, `log_prob` of x outside
  [0, 1] or NaN raises InvalidArgumentError.
  """

  def __init__(self, event_size: int, convert_to_tensor_fn: str = "mean", **kwargs):
    if not isinstance(event_size, numbers.Integral) or isinstance(event_size, bool) or event_size < 1:
      raise ValueError(f"event_size must be a positive integer; got {event_size!r}.")
    self._event_size = int(event_size)
    super().__init__(convert_to_tensor_fn=convert_to_tensor_fn, **kwargs)

  @staticmethod
  def params_size(event_size: int) -> int:
    return event_size

  def _distribution(self, params):
    logits = self._check_params(params, self._event_size)
    return _BernoulliPixels(tfd.Bernoulli(logits=logits, dtype=logits.dtype), reinterpreted_batch_ndims=1,
                            validate_args=self._validate_args)

  def get_config(self) -> dict:
    config = super().get_config()
    config["event_size"] = self._event_size
    return config
