"""The images a decoder stands for: its likelihood's mean image, or a draw from it, in [0, 1]."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from tfggm.distributions import MultivariateLogitNormal

__all__ = ["DRAWS", "likelihood_images", "is_logit_normal", "decode_images", "draw_images"]

DRAWS = ("mean", "sample")


def likelihood_images(likelihood) -> tf.Tensor:
  """The mean image of p(x|z): Bernoulli pixel probabilities, or for a logit-normal (whose mean has no
  closed form) its median sigmoid(loc), unsquashed and clipped to [0, 1]."""
  if is_logit_normal(likelihood):
    return tf.clip_by_value(likelihood.median(), 0.0, 1.0)
  return likelihood.mean()


def is_logit_normal(likelihood) -> bool:
  """Whether a decoder's output is a MultivariateLogitNormal (Keras layers wrap it in a tensor-coercible)."""
  return isinstance(getattr(likelihood, "tensor_distribution", likelihood), MultivariateLogitNormal)


def decode_images(decoder: tf_keras.Model, z: tf.Tensor) -> tf.Tensor:
  """The mean images the decoder draws for latents z (see `likelihood_images`)."""
  return likelihood_images(decoder(z))


def draw_images(decoder: tf_keras.Model, z: tf.Tensor, draw: str = "mean", seed=(0, 0)) -> tf.Tensor:
  """Images in [0, 1] for latents z: the likelihood's mean image ("mean", see `likelihood_images`), or one
  draw x ~ p(x|z) with a stateless `seed` ("sample": binary pixels for Bernoulli; for a logit-normal, its
  pixel noise, correlated along the stencil, clipped to [0, 1] after unsquashing)."""
  if draw not in DRAWS:
    raise ValueError(f"draw must be one of {DRAWS}; got {draw!r}.")
  likelihood = decoder(z)
  if draw == "mean":
    return likelihood_images(likelihood)
  return tf.clip_by_value(likelihood.sample(seed=tf.constant(seed, tf.int32)), 0.0, 1.0)
