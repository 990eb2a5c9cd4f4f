"""The VAE: a tf_keras.Model over any encoder and decoder that output distributions; the ELBO or the IWAE bound."""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

tfd = tfp.distributions

__all__ = ["VAE"]


@tf_keras.saving.register_keras_serializable(package="tfggm")
class VAE(tf_keras.Model):
  """A VAE with posterior q(z|x) = encoder(x), likelihood p(x|z) = decoder(z), prior N(0, I).

  The encoder and decoder are any Keras models whose outputs are distributions (e.g. ending in a
  `tfggm` layer): the encoder's over the `latent_dim` latents, the decoder's over the data x, whatever
  its shape ([B, D] pixels, [B, h, w, c] images, real values). Objectives, per data point, with
  z_1..z_k ~ q(z|x):

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
    super().__init__(**kwargs)
    if objective not in ("elbo", "iwae"):
      raise ValueError(f"objective must be 'elbo' or 'iwae'; got {objective!r}.")
    for name, value in (("latent_dim", latent_dim), ("num_samples", num_samples)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    self.encoder = encoder
    self.decoder = decoder
    self.latent_dim = latent_dim
    self.objective = objective
    self.num_samples = num_samples
    self.analytic_kl = analytic_kl
    self.seed = seed
    self.beta = tf.Variable(1.0, trainable=False, name="kl_weight")
    self._trackers = [tf_keras.metrics.Mean(name) for name in ("loss", "elbo", "kl", "reconstruction")]

  @property
  def metrics(self):
    return self._trackers

  def prior(self, dtype=tf.float32) -> tfd.Distribution:
    return tfd.MultivariateNormalDiag(tf.zeros(self.latent_dim, dtype))

  def call(self, images, training=False):
    return self.encoder(images, training=training).mean()

  def log_likelihood(self, images: tf.Tensor, z: tf.Tensor, training=False) -> tf.Tensor:
    """log p(x|z) for z [S, B, n] and data x [B, ...] -> [S, B]; the decoder sees S B rows.

    Row s B + b of the decoder's batch is z[s, b], so x is tiled S times along its first axis to match.
    """
    images = tf.convert_to_tensor(images)
    num_samples, batch = tf.shape(z)[0], tf.shape(z)[1]
    likelihood = self.decoder(tf.reshape(z, [-1, self.latent_dim]), training=training)
    tiled = tf.tile(images, tf.concat([[num_samples], tf.ones([images.shape.rank - 1], tf.int32)], 0))
    return tf.reshape(likelihood.log_prob(tiled), [num_samples, batch])

  def objective_terms(self, images: tf.Tensor, training=False, seed=None) -> dict:
    """loss (scalar) and per-batch means of elbo, kl, reconstruction; z drawn with `seed` (stateless if given)."""
    posterior = self.encoder(images, training=training)
    z = posterior.sample(self.num_samples, seed=seed)
    log_likelihood = self.log_likelihood(images, z, training=training)
    prior = self.prior(z.dtype)
    if self.analytic_kl:
      kl = tfd.kl_divergence(posterior, prior)
    else:
      kl = tf.reduce_mean(posterior.log_prob(z) - prior.log_prob(z), axis=0)
    reconstruction = tf.reduce_mean(log_likelihood, axis=0)
    if self.objective == "iwae":
      beta = tf.cast(self.beta, log_likelihood.dtype)
      log_weights = log_likelihood + beta * (prior.log_prob(z) - posterior.log_prob(z))
      bound = tf.reduce_logsumexp(log_weights, axis=0) - math.log(self.num_samples)
      loss = -tf.reduce_mean(bound)
    else:
      loss = -tf.reduce_mean(reconstruction - tf.cast(self.beta, kl.dtype) * kl)
    return dict(loss=loss, elbo=tf.reduce_mean(reconstruction - kl), kl=tf.reduce_mean(kl),
                reconstruction=tf.reduce_mean(reconstruction))

  def _record(self, terms: dict, share: tf.Tensor) -> dict:
    # Each replica adds its batch means with weight `share`, so a metric is the mean over global
    # batches of their means, as on one device; an empty replica batch (NaN means) adds 0 with weight 0.
    for tracker in self._trackers:
      value = terms[tracker.name]
      tracker.update_state(tf.where(share > 0, value, tf.zeros_like(value)), sample_weight=share)
    return {tracker.name: tracker.result() for tracker in self._trackers}

  def train_step(self, data):
    images = data[0] if isinstance(data, tuple) else data
    share = _share_of_global_batch(images)
    with tf.GradientTape() as tape:
      terms = self.objective_terms(images, training=True, seed=self.posterior_noise_seed())
      # tf.distribute SUMS the replicas' gradients, so each replica differentiates its part of the
      # global-batch mean, loss_r * n_r / n; on one device share = 1. multiply_no_nan: an empty
      # replica batch (loss_r = NaN) contributes 0.
      loss = tf.math.multiply_no_nan(terms["loss"], share)
    gradients = tape.gradient(loss, self.trainable_variables)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
    return self._record(terms, share)

  def posterior_noise_seed(self) -> tf.Tensor:
    """The stateless seed of this training step's posterior noise on this replica.

    ```none
    seed = fold_in((self.seed, step), replica id among all replicas of all workers)
    ```

    Workers of a cluster trace the same graph, so stateful random ops would draw
    the same noise on every worker; the fold-in keeps replicas' draws
    independent. The step is the optimizer's, so a run resumed from a backup
    draws what the uninterrupted run would have.
    """
    context = tf.distribute.get_replica_context()
    if context is None:
      raise RuntimeError("posterior_noise_seed() runs per replica: call it in train_step or strategy.run.")
    step = tf.cast(self.optimizer.iterations % (2**31 - 1), tf.int32)
    replica = context.replica_id_in_sync_group
    return tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(self.seed, tf.int32), step]), replica)

  def test_step(self, data):
    images = data[0] if isinstance(data, tuple) else data
    return self._record(self.objective_terms(images, training=False), _share_of_global_batch(images))

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


def _share_of_global_batch(images: tf.Tensor) -> tf.Tensor:
  """n_r / n: the part of the global batch (n = sum of the replicas' n_r) that this replica holds."""
  local = tf.cast(tf.shape(images)[0], tf.float32)
  total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)
  return tf.math.divide_no_nan(local, total)
