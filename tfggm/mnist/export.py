"""Export a trained VAE (one stochastic layer or several) as a SavedModel for TF Serving: tensors in, a dict of
tensors out."""

from __future__ import annotations

import os
import pathlib
import re

import tensorflow as tf

from tfggm.linalg import plain_graph_kernels
from tfggm.mnist import files
from tfggm.mnist.images import decode_images, is_logit_normal, likelihood_images
from tfggm.models import HierarchicalVAE

__all__ = ["ServingModule", "export_model", "next_version_dir"]


class ServingModule(tf.Module):
  """The signatures of an exported VAE (all outputs are tensors).

  - `serving_default`: images [N, D] in [0, 1] (D = 784 for MNIST) -> the posterior of every stochastic
    layer: `loc` [N, n], `bands` [N, b+1, n] (compact layout of the posterior's L, bands[:, k, i] = L[i, i-k]),
    one `sample` [N, n] of q(z|x) and its `log_prob` [N]. With L > 1 layers the keys are `loc_z<l>`,
    `bands_z<l>`, `sample_z<l>`, `log_prob_z<l>` for l = 1..L: q(z_l | z_{l-1}) at the sample of the layer
    below (one ancestral draw of q(z|x) per image).
  - `decode`: z_1 [N, n_1] -> the likelihood's parameters (`logits` [N, 784] for
    Bernoulli; `loc` and `bands` for a logit-normal) and `images` [N, 784].
  - `sample`: num_images [] -> `z` [num_images, n_1] drawn ancestrally from the prior and `images`.
  """

  def __init__(self, model: HierarchicalVAE):
    super().__init__(name="tfggm_vae")
    # The networks are tracked (their variables are saved); the model's methods that run them are not (the
    # model's optimizer and metrics stay out of the SavedModel).
    self.encoders, self.conditional_priors, self.decoder = model.encoders, model.conditional_priors, model.decoder
    self._posteriors_and_samples = model.posteriors_and_samples
    self._sample_first_latents = model.sample_first_latents
    self.num_pixels = int(model.encoders[0].inputs[0].shape[-1])
    self.encode = tf.function(self._encode, input_signature=[tf.TensorSpec([None, self.num_pixels], tf.float32,
                                                                          name="images")])
    self.decode = tf.function(self._decode, input_signature=[tf.TensorSpec([None, model.latent_dims[0]],
                                                                          tf.float32, name="z")])
    self.sample = tf.function(self._sample, input_signature=[tf.TensorSpec([], tf.int32, name="num_images")])

  def _encode(self, images):
    images = _checked_images(images, self.num_pixels)  # NaN or out-of-range pixels fail it
    layers = self._posteriors_and_samples(images, 1, seed=_random_seed())
    outputs = {}
    for number, (posterior, z) in enumerate(layers, start=1):
      suffix = f"_z{number}" if len(layers) > 1 else ""
      z = z[0]
      outputs.update({f"loc{suffix}": posterior.mean(), f"bands{suffix}": posterior.factor_bands_at_every_lag(),
                      f"sample{suffix}": z, f"log_prob{suffix}": posterior.log_prob(z)})
    return outputs

  def _decode(self, z):
    likelihood = self.decoder(_checked_finite(z, "decode: z"))
    outputs = {"images": likelihood_images(likelihood)}
    if is_logit_normal(likelihood):
      outputs["loc"] = likelihood.gaussian.mean()
      outputs["bands"] = likelihood.factor_bands_at_every_lag()
    else:
      outputs["logits"] = likelihood.distribution.logits
    return outputs

  def _sample(self, num_images):
    z = self._sample_first_latents(num_images, _random_seed())
    return {"z": z, "images": decode_images(self.decoder, z)}


def _random_seed() -> tf.Tensor:
  """A fresh stateless seed [2] per call: a served model draws new noise on every request."""
  return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)


def _checked_images(images: tf.Tensor, num_pixels: int) -> tf.Tensor:
  """Fails with a clear message on a wrong width, NaN or pixels outside [0, 1] (instead of a NaN loss)."""
  images = tf.convert_to_tensor(images)
  if images.shape.rank != 2 or images.shape[-1] not in (None, num_pixels):
    raise ValueError(f"serving_default: images must have shape [batch, {num_pixels}]; got {images.shape}.")
  images = _checked_finite(images, "serving_default: images")  # first: NaN would fail the range checks below
  with tf.control_dependencies([
      tf.debugging.assert_equal(tf.shape(images)[-1], num_pixels,
                                message=f"serving_default: images must have shape [batch, {num_pixels}]"),
      tf.debugging.assert_greater_equal(images, tf.zeros([], images.dtype),
                                        message="serving_default: images must be in [0, 1]; found a pixel < 0"),
      tf.debugging.assert_less_equal(images, tf.ones([], images.dtype),
                                     message="serving_default: images must be in [0, 1]; found a pixel > 1"),
  ]):
    return tf.identity(images)


def _checked_finite(tensor: tf.Tensor, name: str) -> tf.Tensor:
  """`tensor`, failing with a clear message if it holds NaN or Inf (instead of NaN outputs)."""
  with tf.control_dependencies([tf.debugging.assert_all_finite(tensor, f"{name} contains NaN or Inf")]):
    return tf.identity(tensor)


def next_version_dir(base: str | os.PathLike) -> pathlib.Path:
  """base/<n + 1> where n is the largest integer name in base, of a version or of any stray file (1 if none)."""
  base = pathlib.Path(base)
  versions = [int(p.name) for p in base.iterdir() if re.fullmatch(r"\d+", p.name)] if base.is_dir() else []
  return base / str(max(versions, default=0) + 1)


def export_model(model: HierarchicalVAE, base: str | os.PathLike) -> pathlib.Path:
  """Writes base/<next version>/ (a SavedModel), via a temporary folder and a rename; never overwrites.

  The export owns `base` meanwhile (a concurrent export waits its turn as a clear error), and first
  removes the temporary folders that interrupted exports left. The graph is plain TensorFlow (kernels
  traced with `plain_graph_kernels`), so a server without XLA enabled runs it.
  """
  module = ServingModule(model)
  with files.owned_directory(base) as base:
    target = next_version_dir(base)
    with files.replacing(target) as temporary, plain_graph_kernels():
      tf.saved_model.save(module, str(temporary), signatures={
          "serving_default": module.encode, "decode": module.decode, "sample": module.sample})
  return target
