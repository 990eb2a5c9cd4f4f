"""The hierarchical VAE: L stochastic layers, any posterior and conditional prior per layer; ELBO and IWAE bounds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

tfd = tfp.distributions

__all__ = ["HierarchicalVAE"]


@tf_keras.saving.register_keras_serializable(package="tfggm")
class HierarchicalVAE(tf_keras.Model):
  """A VAE with L stochastic layers z_1 .. z_L (Burda et al. 2016, section 5; Rezende et al. 2014).

  ```none
  inference   q(z|x) = q(z_1|x) q(z_2|z_1) ... q(z_L|z_{L-1})          encoders[0], ..., encoders[L-1]
  generation  p(x, z) = p(x|z_1) p(z_1|z_2) ... p(z_{L-1}|z_L) p(z_L)  decoder, conditional_priors[0..L-2],
                                                                       p(z_L) = N(0, I)
  ```

  Every encoder and conditional prior is any Keras model whose output is a distribution over its layer's
  latents (a `tfggm.GaussianGraphicalModelLayer` on any stencil, or a diagonal one); the decoder's is over x.
  Samples run bottom-up, z_1^(s) ~ q(z_1|x), z_l^(s) ~ q(z_l|z_{l-1}^(s)). Per data point, with S samples:

  ```none
  log w_s = log p(x|z_1) + sum_{l<L} [log p(z_l|z_{l+1}) - log q(z_l|z_{l-1})]
            + log p(z_L) - log q(z_L|z_{L-1})                                   (z_0 = x; every term at z^(s))
  ELBO    = 1/S sum_s [log p(x|z_1) - sum_l KL_l]                               (the estimate; E = E_q log w)
  KL_l    = -H[q(z_l|z_{l-1})] - log p(z_l|z_{l+1})          l < L,  analytic entropy given the sampled parent
  KL_L    = KL(q(z_L|z_{L-1}) || N(0, I))                            analytic, given the sampled parent
  IWAE_S  = logsumexp_s log w_s - log S                                          (objective="iwae")
  ```

  The entropy of each q and the top layer's KL to N(0, I) are exact given the parent sample (no Monte Carlo
  over their own layer's noise); log p(z_l|z_{l+1}) is single-sample Monte Carlo (z_{l+1} is drawn given z_l,
  so no closed form averages it). With `analytic_kl=False` every KL_l is log q(z_l|z_{l-1}) - log p(z_l|.)
  at the sample. For L = 1 this is the one-layer VAE's objective, exact KL(q(z|x) || N(0, I)) included
  (`tfggm.VAE` is that case). Cost: one pass of every network per sample, plus each distribution's log_prob
  and entropy (linear in the latents for a GGM).

  Under KL warm-up (beta from 0 to 1) the loss is -(log p(x|z_1) - beta sum_l KL_l) and the IWAE weights
  log p(x|z_1) + beta (log w - log p(x|z_1)). `fit` and `evaluate` track loss, elbo, kl (the sum), one kl_z<l>
  per layer, and reconstruction (= mean_s log p(x|z_1)); `call` returns the mean of q(z_1|x). Training draws
  noise with the stateless seed `posterior_noise_seed()`, layer l's folded in with l - 1 (layer 1's is the
  seed itself).
  """

  def __init__(self, encoders: Sequence[tf_keras.Model], conditional_priors: Sequence[tf_keras.Model],
               decoder: tf_keras.Model, latent_dims: Sequence[int], objective: str = "elbo",
               num_samples: int = 1, analytic_kl: bool = True, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    latent_dims = tuple(latent_dims)
    if objective not in ("elbo", "iwae"):
      raise ValueError(f"objective must be 'elbo' or 'iwae'; got {objective!r}.")
    for name, value in (*((f"latent_dims[{i}]", n) for i, n in enumerate(latent_dims)),
                        ("num_samples", num_samples)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if not latent_dims or len(encoders) != len(latent_dims) or len(conditional_priors) != len(latent_dims) - 1:
      raise ValueError(f"a hierarchy of L stochastic layers takes L encoders, L - 1 conditional priors and L "
                       f"latent sizes, L >= 1; got {len(encoders)} encoders, {len(conditional_priors)} "
                       f"conditional priors and latent_dims = {latent_dims}.")
    self.encoders = list(encoders)
    self.conditional_priors = list(conditional_priors)
    self.decoder = decoder
    self.latent_dims = latent_dims
    self.objective = objective
    self.num_samples = num_samples
    self.analytic_kl = analytic_kl
    self.seed = seed
    self.beta = tf.Variable(1.0, trainable=False, name="kl_weight")
    names = ("loss", "elbo", "kl", "reconstruction",
             *(() if len(latent_dims) == 1 else (f"kl_z{layer}" for layer in range(1, len(latent_dims) + 1))))
    self._trackers = [tf_keras.metrics.Mean(name) for name in names]

  @property
  def metrics(self):
    return self._trackers

  @property
  def num_layers(self) -> int:
    return len(self.latent_dims)

  def prior(self, dtype=tf.float32) -> tfd.Distribution:
    """p(z_L) = N(0, I), the top layer's prior."""
    return tfd.MultivariateNormalDiag(tf.zeros(self.latent_dims[-1], dtype))

  def call(self, images, training=False):
    return self.encoders[0](images, training=training).mean()

  def log_likelihood(self, images: tf.Tensor, z: tf.Tensor, training=False) -> tf.Tensor:
    """log p(x|z_1) for z_1 [S, B, n_1] and data x [B, ...] -> [S, B]; the decoder sees S B rows.

    Row s B + b of the decoder's batch is z[s, b], so x is tiled S times along its first axis to match.
    """
    images = tf.convert_to_tensor(images)
    num_samples, batch = tf.shape(z)[0], tf.shape(z)[1]
    likelihood = self.decoder(tf.reshape(z, [-1, self.latent_dims[0]]), training=training)
    tiled = tf.tile(images, tf.concat([[num_samples], tf.ones([images.shape.rank - 1], tf.int32)], 0))
    return tf.reshape(likelihood.log_prob(tiled), [num_samples, batch])

  def posteriors_and_samples(self, images: tf.Tensor, num_samples: int, seed=None,
                             training=False) -> list[tuple[tfd.Distribution, tf.Tensor]]:
    """[(q(z_l | z_{l-1}), z_l)] for l = 1..L, bottom-up; z_l [S, B, n_l].

    q(z_1|x) has batch shape [B]; q(z_l|z_{l-1}), l >= 2, [S B] (one per sample of the layer below).
    """
    posterior = self.encoders[0](images, training=training)
    z = posterior.sample(num_samples, seed=seed)
    layers = [(posterior, z)]
    for layer in range(1, self.num_layers):
      posterior = self.encoders[layer](tf.reshape(z, [-1, self.latent_dims[layer - 1]]), training=training)
      layer_seed = None if seed is None else tf.random.experimental.stateless_fold_in(seed, layer)
      z = tf.reshape(posterior.sample(seed=layer_seed), tf.concat([tf.shape(z)[:2], [self.latent_dims[layer]]], 0))
      layers.append((posterior, z))
    return layers

  def _layer_terms(self, layers: list[tuple[tfd.Distribution, tf.Tensor]], training=False,
                   analytic_kl: bool | None = None) -> tuple[list[tf.Tensor], list[tuple[tf.Tensor, tf.Tensor]]]:
    """Per layer l = 1..L: KL_l as the ELBO estimates it, and (log p(z_l|.), log q(z_l|.)) at the sample.

    Terms of layer 1's q, whose batch is [B], keep the shape [1, B] (they broadcast against [S, B] when summed,
    so a mean over the samples gives them back exactly); the others are [S, B].
    """
    analytic_kl = self.analytic_kl if analytic_kl is None else analytic_kl
    batch = tf.shape(layers[0][1])[1]
    per_sample = lambda value: tf.reshape(value, [-1, batch])  # [B] -> [1, B]; [S B] -> [S, B]
    kls, log_densities = [], []
    for layer, (posterior, z) in enumerate(layers):
      flat_z = tf.reshape(z, [-1, self.latent_dims[layer]])
      if layer + 1 < self.num_layers:
        parent = tf.reshape(layers[layer + 1][1], [-1, self.latent_dims[layer + 1]])
        log_prior = per_sample(self.conditional_priors[layer](parent, training=training).log_prob(flat_z))
      else:
        log_prior = self.prior(z.dtype).log_prob(z)
      log_posterior = posterior.log_prob(z) if layer == 0 else per_sample(posterior.log_prob(flat_z))
      log_densities.append((log_prior, log_posterior))
      if not analytic_kl:
        kls.append(log_posterior - log_prior)
      elif layer + 1 < self.num_layers:
        kls.append(-per_sample(posterior.entropy()) - log_prior)
      else:
        kls.append(per_sample(tfd.kl_divergence(posterior, self.prior(z.dtype))))
    return kls, log_densities

  def log_importance_weights(self, images: tf.Tensor, num_samples: int, seed=None) -> tf.Tensor:
    """log w_s = log p(x, z^(s)) - log q(z^(s)|x), z^(s) ~ q(z|x): [S, B]; logsumexp_s - log S estimates log p(x).

    Summed as log p(x|z_1) + log p(z_1|.) - log q(z_1|x) + ..., layer by layer. O(S (cost of every network)).
    """
    layers = self.posteriors_and_samples(images, num_samples, seed)
    log_weights = self.log_likelihood(images, layers[0][1])
    for log_prior, log_posterior in self._layer_terms(layers, analytic_kl=False)[1]:
      log_weights = log_weights + log_prior - log_posterior
    return log_weights

  def elbo(self, images: tf.Tensor, num_samples: int = 1, seed=None, analytic_kl: bool | None = None) -> tf.Tensor:
    """The ELBO estimate per data point with S = num_samples samples: [B].

    ```none
    ELBO ~= 1/S sum_s [log p(x|z_1^(s)) - sum_l KL_l^(s)]
    ```

    KL_l as in the class docstring: exact entropies and top KL if `analytic_kl` (default: the model's
    `analytic_kl`), else log q - log p at the sample. O(S (cost of every network)).
    """
    layers = self.posteriors_and_samples(images, num_samples, seed)
    kls, _ = self._layer_terms(layers, analytic_kl=analytic_kl)
    return tf.reduce_mean(self.log_likelihood(images, layers[0][1]) - sum(kls), axis=0)

  def objective_terms(self, images: tf.Tensor, training=False, seed=None) -> dict:
    """loss (scalar) and per-batch means of elbo, kl, kl_z<l>, reconstruction; z drawn with `seed`."""
    layers = self.posteriors_and_samples(images, self.num_samples, seed, training=training)
    log_likelihood = self.log_likelihood(images, layers[0][1], training=training)
    kls, log_densities = self._layer_terms(layers, training=training)
    kl = tf.reduce_mean(sum(kls), axis=0)
    reconstruction = tf.reduce_mean(log_likelihood, axis=0)
    beta = tf.cast(self.beta, log_likelihood.dtype)
    if self.objective == "iwae":
      log_weights = log_likelihood + beta * sum(log_prior - log_posterior for log_prior, log_posterior in log_densities)
      loss = -tf.reduce_mean(tf.reduce_logsumexp(log_weights, axis=0) - math.log(self.num_samples))
    else:
      loss = -tf.reduce_mean(reconstruction - beta * kl)
    terms = dict(loss=loss, elbo=tf.reduce_mean(reconstruction - kl), kl=tf.reduce_mean(kl),
                 reconstruction=tf.reduce_mean(reconstruction))
    if self.num_layers > 1:
      terms.update({f"kl_z{layer + 1}": tf.reduce_mean(value) for layer, value in enumerate(kls)})
    return terms

  def sample_first_latents(self, num: int, seed: tf.Tensor) -> tf.Tensor:
    """z_1 [num, n_1] drawn ancestrally from the prior: z_L ~ N(0, I), z_l ~ p(z_l|z_{l+1}); stateless `seed` [2]."""
    seed = tf.convert_to_tensor(seed, tf.int32)
    z = tf.random.stateless_normal([num, self.latent_dims[-1]], seed=seed)
    for layer in reversed(range(self.num_layers - 1)):
      z = self.conditional_priors[layer](z).sample(seed=tf.random.experimental.stateless_fold_in(seed, layer + 1))
    return z

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
    serialize = tf_keras.saving.serialize_keras_object
    return dict(name=self.name, encoders=[serialize(e) for e in self.encoders],
                conditional_priors=[serialize(p) for p in self.conditional_priors],
                decoder=serialize(self.decoder), latent_dims=list(self.latent_dims), objective=self.objective,
                num_samples=self.num_samples, analytic_kl=self.analytic_kl, seed=self.seed)

  @classmethod
  def from_config(cls, config: dict):
    config = dict(config)
    deserialize = tf_keras.saving.deserialize_keras_object
    config["encoders"] = [deserialize(e) for e in config["encoders"]]
    config["conditional_priors"] = [deserialize(p) for p in config["conditional_priors"]]
    config["decoder"] = deserialize(config["decoder"])
    return cls(**config)


def _share_of_global_batch(images: tf.Tensor) -> tf.Tensor:
  """n_r / n: the part of the global batch (n = sum of the replicas' n_r) that this replica holds."""
  local = tf.cast(tf.shape(images)[0], tf.float32)
  total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)
  return tf.math.divide_no_nan(local, total)
