"""The VAE: one stochastic layer, a tf_keras.Model over any encoder and decoder that output distributions."""

from __future__ import annotations

import tf_keras

from tfggm.models.hierarchical import HierarchicalVAE

__all__ = ["VAE"]


@tf_keras.saving.register_keras_serializable(package="tfggm")
class VAE(HierarchicalVAE):
  """A VAE with posterior q(z|x) = encoder(x), likelihood p(x|z) = decoder(z), prior N(0, I).

  The one-layer case of `HierarchicalVAE` (L = 1): the encoder and decoder are any Keras models whose
  outputs are distributions (e.g. ending in a `tfggm` layer): the encoder's over the `latent_dim` latents,
  the decoder's over the data x, whatever its shape ([B, D] pixels, [B, h, w, c] images, real values).
  Objectives, per data point, with z_1..z_k ~ q(z|x):

  ```none
  ELBO   = mean_k log p(x|z_k) - KL(q(z|x) || p(z))          (KL exact, or mean_k log q - log p)
  loss   = -(mean_k log p(x|z_k) - beta KL)                   (beta: KL warm-up, 0 -> 1)
  IWAE_k = logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k      (objective="iwae")
  ```

  Under warm-up the IWAE weights become log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)),
  the bound itself once beta = 1 (the default; a warm-up callback lowers it).

  The model checks no data values itself: the likelihood knows its support and checks it under
  `validate_args=True` (Bernoulli pixels in [0, 1], logit-normal pixels in (0, 1), real values finite).

  `fit`, `evaluate` track loss, elbo, kl and reconstruction (= mean_k log p(x|z_k));
  `predict` and `call` return the posterior mean. Training draws z with the
  stateless seed `posterior_noise_seed()`: a function of `seed`, the step and
  the replica.

  ```python
  stencil = tfggm.stencils.band(16, 4)
  x = tf_keras.Input([784])
  params = tf_keras.layers.Dense(tfggm.GaussianGraphicalModelLayer.params_size(stencil))(x)
  encoder = tf_keras.Model(x, tfggm.GaussianGraphicalModelLayer(stencil)(params))
  z = tf_keras.Input([16])
  decoder = tf_keras.Model(z, tfggm.IndependentBernoulliLayer(784)(tf_keras.layers.Dense(784)(z)))
  vae = tfggm.VAE(encoder, decoder, latent_dim=16)
  vae.compile(tf_keras.optimizers.Adam(1e-3))
  vae.fit(binary_images, epochs=10)
  ```
  """

  def __init__(self, encoder: tf_keras.Model, decoder: tf_keras.Model, latent_dim: int,
               objective: str = "elbo", num_samples: int = 1, analytic_kl: bool = True, seed: int = 0,
               **kwargs):
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
      raise ValueError(f"latent_dim must be a positive integer; got {latent_dim!r}.")
    super().__init__([encoder], [], decoder, [latent_dim], objective=objective, num_samples=num_samples,
                     analytic_kl=analytic_kl, seed=seed, **kwargs)
    # Also tracked under its old name: checkpoints (BackupAndRestore's backups) written when the VAE was no
    # HierarchicalVAE hold the encoder at model/encoder, and restore into it.
    self.encoder = encoder
    self.latent_dim = latent_dim

  def get_config(self) -> dict:
    return dict(name=self.name,
                encoder=tf_keras.saving.serialize_keras_object(self.encoder),
                decoder=tf_keras.saving.serialize_keras_object(self.decoder),
                latent_dim=self.latent_dim, objective=self.objective,
                num_samples=self.num_samples, analytic_kl=self.analytic_kl, seed=self.seed)

  @classmethod
  def from_config(cls, config: dict):
    config = dict(config)
    for key in ("encoder", "decoder"):
      config[key] = tf_keras.saving.deserialize_keras_object(config[key])
    return cls(**config)


