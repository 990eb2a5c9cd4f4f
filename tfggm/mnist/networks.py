"""The networks of a configuration: a Dense encoder and decoder around tfggm's layers, and the compiled VAE."""

from __future__ import annotations

import math

import tf_keras

from tfggm.layers import GaussianGraphicalModelLayer, IndependentBernoulliLayer, MultivariateLogitNormalLayer
from tfggm.mnist.config import VAEConfig, likelihood_stencil, posterior_stencil
from tfggm.models import VAE

__all__ = ["build_encoder", "build_decoder", "build_vae"]


def _hidden_stack(inputs, config: VAEConfig):
  hidden = inputs
  for units in config.hidden_units:
    hidden = tf_keras.layers.Dense(units, activation=config.activation)(hidden)
  return hidden


def build_encoder(config: VAEConfig, image_shape: tuple[int, int]) -> tf_keras.Model:
  """images [B, h w] -> Dense stack -> q(z|x), a GaussianGraphicalModel on the posterior's stencil."""
  stencil, parameterization = posterior_stencil(config.posterior, config.latent_dim)
  images = tf_keras.Input([math.prod(image_shape)], name="images")
  params = tf_keras.layers.Dense(GaussianGraphicalModelLayer.params_size(stencil), name="posterior_params")(
      _hidden_stack(images, config))
  posterior = GaussianGraphicalModelLayer(stencil, parameterization, diagonal_floor=config.diagonal_floor,
                                          name="posterior")(params)
  return tf_keras.Model(images, posterior, name="encoder")


def build_decoder(config: VAEConfig, image_shape: tuple[int, int]) -> tf_keras.Model:
  """z [B, n] -> Dense stack -> p(x|z): independent Bernoulli, or a logit-normal over the pixel grid.

  Both check the images they score (`validate_args=True`): Bernoulli pixels in [0, 1], logit-normal
  pixels in [0, 1] (squashed into (alpha, 1 - alpha)), none NaN.
  """
  stencil = likelihood_stencil(config.likelihood, image_shape)
  num_pixels = math.prod(image_shape)
  z = tf_keras.Input([config.latent_dim], name="z")
  hidden = _hidden_stack(z, config)
  if stencil is None:
    logits = tf_keras.layers.Dense(num_pixels, name="likelihood_params")(hidden)
    likelihood = IndependentBernoulliLayer(num_pixels, validate_args=True, name="likelihood")(logits)
  else:
    params = tf_keras.layers.Dense(MultivariateLogitNormalLayer.params_size(stencil),
                                   name="likelihood_params")(hidden)
    likelihood = MultivariateLogitNormalLayer(stencil, alpha=config.alpha, diagonal_floor=config.diagonal_floor,
                                              validate_args=True, name="likelihood")(params)
  return tf_keras.Model(z, likelihood, name="decoder")


def build_vae(config: VAEConfig, image_shape: tuple[int, int]) -> VAE:
  """The VAE of a configuration for images of `image_shape`, compiled with Adam (and global-norm clipping
  when set), XLA if asked; the KL weight starts at 0 when the configuration warms it up.

  `steps_per_execution` runs that many training steps per call of the step function; each step's posterior
  noise is seeded by the optimizer's step (`posterior_noise_seed`), so the updates are those of one step per call.
  """
  tf_keras.utils.set_random_seed(config.seed)
  model = VAE(build_encoder(config, image_shape), build_decoder(config, image_shape), config.latent_dim,
              objective=config.objective, num_samples=config.num_samples, analytic_kl=config.analytic_kl,
              seed=config.seed, name="vae")
  model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate,
                                                   global_clipnorm=config.clip_global_norm),
                jit_compile=config.jit_compile, steps_per_execution=config.steps_per_execution)
  model.beta.assign(0.0 if config.warmup_epochs else 1.0)
  return model
