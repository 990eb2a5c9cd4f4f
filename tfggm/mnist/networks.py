"""The networks of a configuration: Dense encoders, conditional priors and a decoder around tfggm's layers, and the
compiled VAE (one stochastic layer) or hierarchical VAE (several)."""

from __future__ import annotations

import math

import numpy as np
import tf_keras

from tfggm.layers import GaussianGraphicalModelLayer, IndependentBernoulliLayer, MultivariateLogitNormalLayer
from tfggm.mnist.config import VAEConfig, likelihood_stencil, posterior_stencil
from tfggm.models import VAE, HierarchicalVAE

__all__ = ["build_encoder", "build_decoder", "build_vae", "set_output_bias_from_data"]

LIKELIHOOD_PARAMS = "likelihood_params"  # the decoder's last Dense layer


def _hidden_stack(inputs, hidden_units: tuple[int, ...], activation: str, name: str | None = None):
  """Dense layers of `hidden_units` widths; named <name>_hidden_<i> when `name` is given (else Keras's names)."""
  hidden = inputs
  for index, units in enumerate(hidden_units):
    hidden = tf_keras.layers.Dense(units, activation=activation,
                                   name=name and f"{name}_hidden_{index + 1}")(hidden)
  return hidden


def _params_initializer(config: VAEConfig) -> str:
  """The kernel initializer of a Gaussian's parameter layer: zeros under `zero_init_gaussians`, else Keras's.

  With zero weights every Gaussian starts at mean 0 and L = (softplus(0) + floor) I, whatever its input. With
  random ones, a band of L whose off-diagonal entries are as large as its diagonal can make L^-1 grow
  exponentially along the band: a band-4 q over 50 latents started with KL(q || N(0, I)) near 4e4 nats.
  """
  return "zeros" if config.zero_init_gaussians else "glorot_uniform"


def _gaussian(config: VAEConfig, inputs_size: int, hidden_units: tuple[int, ...], structure: str, latent_dim: int,
              name: str) -> tf_keras.Model:
  """inputs [B, inputs_size] -> Dense stack -> a GaussianGraphicalModel over `latent_dim` latents on `structure`."""
  stencil, parameterization = posterior_stencil(structure, latent_dim)
  inputs = tf_keras.Input([inputs_size], name=f"{name}_inputs")
  params = tf_keras.layers.Dense(GaussianGraphicalModelLayer.params_size(stencil), name=f"{name}_params",
                                 kernel_initializer=_params_initializer(config))(
      _hidden_stack(inputs, hidden_units, config.activation, name))
  distribution = GaussianGraphicalModelLayer(stencil, parameterization, diagonal_floor=config.diagonal_floor,
                                             name=f"{name}_distribution")(params)
  return tf_keras.Model(inputs, distribution, name=name)


def build_encoder(config: VAEConfig, image_shape: tuple[int, int]) -> tf_keras.Model:
  """images [B, h w] -> Dense stack -> q(z_1|x), a GaussianGraphicalModel on the posterior's stencil."""
  stencil, parameterization = posterior_stencil(config.posterior, config.latent_dim)
  images = tf_keras.Input([math.prod(image_shape)], name="images")
  params = tf_keras.layers.Dense(GaussianGraphicalModelLayer.params_size(stencil), name="posterior_params",
                                 kernel_initializer=_params_initializer(config))(
      _hidden_stack(images, config.hidden_units, config.activation))
  posterior = GaussianGraphicalModelLayer(stencil, parameterization, diagonal_floor=config.diagonal_floor,
                                          name="posterior")(params)
  return tf_keras.Model(images, posterior, name="encoder")


def build_decoder(config: VAEConfig, image_shape: tuple[int, int]) -> tf_keras.Model:
  """z_1 [B, n_1] -> Dense stack -> p(x|z_1): independent Bernoulli, or a logit-normal over the pixel grid.

  Both check the images they score (`validate_args=True`): Bernoulli pixels in [0, 1], logit-normal
  pixels in [0, 1] (squashed into (alpha, 1 - alpha)), none NaN.
  """
  stencil = likelihood_stencil(config.likelihood, image_shape)
  num_pixels = math.prod(image_shape)
  z = tf_keras.Input([config.latent_dim], name="z")
  hidden = _hidden_stack(z, config.hidden_units, config.activation)
  if stencil is None:
    logits = tf_keras.layers.Dense(num_pixels, name=LIKELIHOOD_PARAMS)(hidden)
    likelihood = IndependentBernoulliLayer(num_pixels, validate_args=True, name="likelihood")(logits)
  else:
    params = tf_keras.layers.Dense(MultivariateLogitNormalLayer.params_size(stencil), name=LIKELIHOOD_PARAMS)(hidden)
    likelihood = MultivariateLogitNormalLayer(stencil, alpha=config.alpha, diagonal_floor=config.diagonal_floor,
                                              validate_args=True, name="likelihood")(params)
  return tf_keras.Model(z, likelihood, name="decoder")


def _model(config: VAEConfig, image_shape: tuple[int, int]) -> HierarchicalVAE:
  """A VAE for one stochastic layer; else a HierarchicalVAE whose layer l + 1 networks mirror each other:
  q(z_{l+1}|z_l) and p(z_l|z_{l+1}) both through layer l + 1's hidden widths (the IWAE paper's architecture)."""
  options = dict(objective=config.objective, num_samples=config.num_samples, analytic_kl=config.analytic_kl,
                 seed=config.seed, name="vae")
  encoder, decoder = build_encoder(config, image_shape), build_decoder(config, image_shape)
  layers = config.stochastic_layers
  if len(layers) == 1:
    return VAE(encoder, decoder, config.latent_dim, **options)
  encoders, priors = [encoder], []
  for number, (below, layer) in enumerate(zip(layers, layers[1:]), start=2):
    encoders.append(_gaussian(config, below.latent_dim, layer.hidden_units, layer.posterior, layer.latent_dim,
                              f"encoder_{number}"))
    priors.append(_gaussian(config, layer.latent_dim, layer.hidden_units, below.prior, below.latent_dim,
                            f"prior_{number - 1}"))
  return HierarchicalVAE(encoders, priors, decoder, [layer.latent_dim for layer in layers], **options)


def build_vae(config: VAEConfig, image_shape: tuple[int, int]) -> HierarchicalVAE:
  """The model of a configuration for images of `image_shape`, compiled with Adam (and global-norm clipping
  when set), XLA if asked; the KL weight starts at 0 when the configuration warms it up.

  `steps_per_execution` runs that many training steps per call of the step function; each step's posterior
  noise is seeded by the optimizer's step (`posterior_noise_seed`), so the updates are those of one step per call.
  """
  tf_keras.utils.set_random_seed(config.seed)
  model = _model(config, image_shape)
  model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate,
                                                   global_clipnorm=config.clip_global_norm),
                jit_compile=config.jit_compile, steps_per_execution=config.steps_per_execution)
  model.beta.assign(0.0 if config.warmup_epochs else 1.0)
  return model


def set_output_bias_from_data(model: HierarchicalVAE, train_images: np.ndarray) -> None:
  """Sets the Bernoulli decoder's output bias to logit(mean pixel intensity), clipped to [1e-3, 1 - 1e-3].

  The IWAE paper's initialization (Burda et al. 2016): at the start every pixel's probability is its training-set
  mean. O(N D) for N uint8 images of D pixels.
  """
  means = np.clip(np.mean(train_images.reshape(len(train_images), -1), axis=0, dtype=np.float64) / 255.0,
                  1e-3, 1.0 - 1e-3)
  dense = model.decoder.get_layer(LIKELIHOOD_PARAMS)
  dense.bias.assign(np.log(means / (1.0 - means)).astype(dense.bias.dtype.as_numpy_dtype))
