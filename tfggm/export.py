"""Export a trained VAE as a SavedModel for TF Serving: tensors in, a dict of tensors out."""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import tensorflow as tf

from tfggm.callbacks import decode_images, likelihood_images
from tfggm.data import NUM_PIXELS
from tfggm.layers import IndependentBernoulliLayer
from tfggm.linalg import plain_graph_kernels
from tfggm.vae import VAE, checked_images

__all__ = ["ServingModule", "export_model", "next_version_dir"]


class ServingModule(tf.Module):
  """The signatures of an exported VAE (all outputs are tensors).

  - `serving_default`: images [N, 784] in [0, 1] -> `loc` [N, n], `bands` [N, b+1, n]
    (compact layout of the posterior's L, bands[:, k, i] = L[i, i-k]), one `sample`
    [N, n] of q(z|x) and its `log_prob` [N].
  - `decode`: z [N, n] -> the likelihood's parameters (`logits` [N, 784] for
    Bernoulli; `loc` and `bands` for a logit-normal) and `images` [N, 784].
  - `sample`: num_images [] -> `z` [num_images, n] from the prior and `images`.
  """

  def __init__(self, model: VAE):
    super().__init__(name="tfggm_vae")
    self.encoder = model.encoder
    self.decoder = model.decoder
    self.latent_dim = model.latent_dim
    self.bernoulli = isinstance(model.decoder.layers[-1], IndependentBernoulliLayer)
    self.encode = tf.function(self._encode, input_signature=[tf.TensorSpec([None, NUM_PIXELS], tf.float32,
                                                                          name="images")])
    self.decode = tf.function(self._decode, input_signature=[tf.TensorSpec([None, model.latent_dim],
                                                                          tf.float32, name="z")])
    self.sample = tf.function(self._sample, input_signature=[tf.TensorSpec([], tf.int32, name="num_images")])

  def _encode(self, images):
    posterior = self.encoder(checked_images(images, NUM_PIXELS))  # NaN or out-of-range pixels fail the request
    z = posterior.sample()
    return {"loc": posterior.mean(), "bands": posterior.compact_bands(),
            "sample": z, "log_prob": posterior.log_prob(z)}

  def _decode(self, z):
    likelihood = self.decoder(z)
    outputs = {"images": likelihood_images(self.decoder, likelihood)}
    if self.bernoulli:
      outputs["logits"] = likelihood.tensor_distribution.distribution.logits
    else:
      outputs["loc"] = likelihood.gaussian.mean()
      outputs["bands"] = likelihood.compact_bands()
    return outputs

  def _sample(self, num_images):
    z = tf.random.normal([num_images, self.latent_dim])
    return {"z": z, "images": decode_images(self.decoder, z)}


def next_version_dir(base: str | os.PathLike) -> pathlib.Path:
  """base/<n + 1> where n is the largest integer version already in base (1 if none)."""
  base = pathlib.Path(base)
  versions = [int(p.name) for p in base.glob("*") if p.is_dir() and re.fullmatch(r"\d+", p.name)]
  return base / str(max(versions, default=0) + 1)


def export_model(model: VAE, base: str | os.PathLike) -> pathlib.Path:
  """Writes base/<next version>/ (a SavedModel), via a temporary folder and a rename; never overwrites.

  The graph is plain TensorFlow (kernels traced with `plain_graph_kernels`), so
  a server without XLA enabled runs it.
  """
  base = pathlib.Path(base)
  base.mkdir(parents=True, exist_ok=True)
  module = ServingModule(model)
  target = next_version_dir(base)
  temporary = base / f".tmp-{target.name}-{os.getpid()}"
  try:
    with plain_graph_kernels():
      tf.saved_model.save(module, str(temporary), signatures={
          "serving_default": module.encode, "decode": module.decode, "sample": module.sample})
    if target.exists():
      raise FileExistsError(f"{target} appeared during the export; run it again for the next version.")
    os.rename(temporary, target)
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
  return target
