"""The hierarchical VAE against a two-layer linear-Gaussian chain whose log p(x), exact posterior and ELBO of any
linear-Gaussian q are known in closed form (dense float64 references); training, serialization, bad arguments."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfggm
from tfggm import linalg, stencils

tfd = tfp.distributions

DATA, LATENT_1, LATENT_2 = 4, 3, 2


def _gaussian_layer(inputs: tf_keras.Input, kernel: np.ndarray, bias: np.ndarray,
                    covariance: np.ndarray) -> tf_keras.Model:
  """inputs -> N(inputs @ kernel + bias, covariance) as a GaussianGraphicalModel (full band of chol(P))."""
  dense = tf_keras.layers.Dense(len(bias))
  factor = np.linalg.cholesky(np.linalg.inv(covariance))
  bands = tf.cast(linalg.bands_from_dense(factor, len(bias) - 1), tf.float32)
  outputs = tfp.layers.DistributionLambda(lambda loc: tfggm.GaussianGraphicalModel(loc, bands))(dense(inputs))
  dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
  return tf_keras.Model(inputs, outputs)


def _random_covariance(rng: np.random.Generator, n: int) -> np.ndarray:
  root = rng.normal(size=(n, n)) * 0.4
  return root @ root.T + 0.3 * np.eye(n)


class LinearGaussianChain:
  """p(z2) = N(0, I), p(z1|z2) = N(A z2 + a, C1), p(x|z1) = N(B z1 + c, C0): every quantity in closed form.

  ```none
  p(x)          = N(x; B a + c, B S1 B^T + C0),     S1 = A A^T + C1 (the marginal of z1)
  p(z1 | x)     = N(Q^{-1} (S1^{-1} a + B^T C0^{-1} (x - c)), Q^{-1}),   Q = S1^{-1} + B^T C0^{-1} B
  p(z2 | z1, x) = p(z2 | z1) = N(R^{-1} A^T C1^{-1} (z1 - a), R^{-1}),   R = I + A^T C1^{-1} A
  ```

  The exact posterior factorizes bottom-up, so a hierarchical VAE with linear-Gaussian encoders can hold it.
  `perturbation` moves q's means and covariances away from it: then ELBO = log p(x) - KL(q(z1, z2|x) || p(z1, z2|x)),
  a KL of two 5-dimensional Gaussians.
  """

  def __init__(self, seed: int = 0, perturbation: float = 0.0):
    rng = np.random.default_rng(seed)
    self.a_matrix, self.a = rng.normal(size=(LATENT_1, LATENT_2)), rng.normal(size=LATENT_1)
    self.b_matrix, self.c = rng.normal(size=(DATA, LATENT_1)), rng.normal(size=DATA)
    self.c1, self.c0 = _random_covariance(rng, LATENT_1), _random_covariance(rng, DATA)
    self.s1 = self.a_matrix @ self.a_matrix.T + self.c1
    q = np.linalg.inv(self.s1) + self.b_matrix.T @ np.linalg.solve(self.c0, self.b_matrix)
    self.q1_covariance = np.linalg.inv(q)
    self.q1_gain = self.q1_covariance @ self.b_matrix.T @ np.linalg.inv(self.c0)
    self.q1_offset = self.q1_covariance @ np.linalg.solve(self.s1, self.a) - self.q1_gain @ self.c
    r = np.eye(LATENT_2) + self.a_matrix.T @ np.linalg.solve(self.c1, self.a_matrix)
    self.q2_covariance = np.linalg.inv(r)
    self.q2_gain = self.q2_covariance @ self.a_matrix.T @ np.linalg.inv(self.c1)
    self.q2_offset = -self.q2_gain @ self.a
    self.exact = dict(q1_gain=self.q1_gain, q1_offset=self.q1_offset, q1_covariance=self.q1_covariance,
                      q2_gain=self.q2_gain, q2_offset=self.q2_offset, q2_covariance=self.q2_covariance)
    if perturbation:
      self.q1_offset = self.q1_offset + perturbation * rng.normal(size=LATENT_1)
      self.q1_covariance = self.q1_covariance * (1 + perturbation)
      self.q2_gain = self.q2_gain + perturbation * rng.normal(size=self.q2_gain.shape)
      self.q2_covariance = self.q2_covariance + perturbation * np.eye(LATENT_2)

  def model(self, **kwargs) -> tfggm.HierarchicalVAE:
    encoders = [_gaussian_layer(tf_keras.Input([DATA]), self.q1_gain.T, self.q1_offset, self.q1_covariance),
                _gaussian_layer(tf_keras.Input([LATENT_1]), self.q2_gain.T, self.q2_offset, self.q2_covariance)]
    prior = _gaussian_layer(tf_keras.Input([LATENT_2]), self.a_matrix.T, self.a, self.c1)
    decoder = _gaussian_layer(tf_keras.Input([LATENT_1]), self.b_matrix.T, self.c, self.c0)
    return tfggm.HierarchicalVAE(encoders, [prior], decoder, [LATENT_1, LATENT_2], **kwargs)

  def log_marginal(self, x: np.ndarray) -> np.ndarray:
    return scipy.stats.multivariate_normal(self.b_matrix @ self.a + self.c,
                                           self.b_matrix @ self.s1 @ self.b_matrix.T + self.c0).logpdf(x)

  def _joint(self, x: np.ndarray, q: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean [N, 5] and covariance [5, 5] of q(z1, z2 | x) = q(z1|x) q(z2|z1), both linear-Gaussian."""
    m1 = x @ q["q1_gain"].T + q["q1_offset"]
    m2 = m1 @ q["q2_gain"].T + q["q2_offset"]
    s11, h = q["q1_covariance"], q["q2_gain"]
    covariance = np.block([[s11, s11 @ h.T], [h @ s11, h @ s11 @ h.T + q["q2_covariance"]]])
    return np.concatenate([m1, m2], axis=1), covariance

  def elbo(self, x: np.ndarray) -> np.ndarray:
    """log p(x) - KL(q(z|x) || p(z|x)), the reference ELBO per example, float64."""
    q_mean, q_cov = self._joint(x, dict(q1_gain=self.q1_gain, q1_offset=self.q1_offset,
                                        q1_covariance=self.q1_covariance, q2_gain=self.q2_gain,
                                        q2_offset=self.q2_offset, q2_covariance=self.q2_covariance))
    p_mean, p_cov = self._joint(x, self.exact)
    p_precision = np.linalg.inv(p_cov)
    difference = p_mean - q_mean
    kl = 0.5 * (np.trace(p_precision @ q_cov) - len(q_cov) + np.linalg.slogdet(p_cov)[1]
                - np.linalg.slogdet(q_cov)[1] + np.einsum("ni,ij,nj->n", difference, p_precision, difference))
    return self.log_marginal(x) - kl


def _data(num: int = 6, seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(num, DATA)).astype(np.float32)


def test_the_chain_reference_is_self_consistent():
  """The closed forms agree with a dense joint Gaussian over (z2, z1, x): the reference can be trusted."""
  chain = LinearGaussianChain()
  rng = np.random.default_rng(5)
  z2 = rng.normal(size=(200_000, LATENT_2))
  z1 = z2 @ chain.a_matrix.T + chain.a + rng.multivariate_normal(np.zeros(LATENT_1), chain.c1, 200_000)
  x = z1 @ chain.b_matrix.T + chain.c + rng.multivariate_normal(np.zeros(DATA), chain.c0, 200_000)
  np.testing.assert_allclose(np.cov(x.T), chain.b_matrix @ chain.s1 @ chain.b_matrix.T + chain.c0, atol=0.15, rtol=0.02)
  np.testing.assert_allclose(chain.elbo(_data()), chain.log_marginal(_data()), rtol=1e-10)  # exact q: KL = 0


def test_importance_weights_of_the_exact_posterior_all_equal_log_p_x():
  chain, x = LinearGaussianChain(), _data()
  log_weights = chain.model().log_importance_weights(x, 7, seed=tf.constant([1, 2]))
  assert log_weights.shape == (7, len(x))
  np.testing.assert_allclose(log_weights, np.broadcast_to(chain.log_marginal(x), (7, len(x))), atol=2e-3)
  estimate = tfggm.models.log_likelihood_from_weights(chain.model().log_importance_weights, x, num_samples=5,
                                                      chunk_size=2, batch_size=4, progress=False)
  np.testing.assert_allclose(estimate, chain.log_marginal(x), atol=2e-3)


@pytest.mark.parametrize("analytic_kl", [True, False])
@pytest.mark.parametrize("perturbation", [0.0, 0.3])
def test_the_elbo_estimate_is_unbiased_for_the_closed_form_elbo(analytic_kl, perturbation):
  """Mean over 4,000 samples of the ELBO estimate = log p(x) - KL(q || posterior), within 4 standard errors."""
  chain, x = LinearGaussianChain(perturbation=perturbation), _data(3)
  model = chain.model(analytic_kl=analytic_kl)
  layers = model.posteriors_and_samples(x, 4000, seed=tf.constant([3, 4]))
  kls, _ = model._layer_terms(layers)
  per_sample = (model.log_likelihood(x, layers[0][1]) - tf.add_n(kls)).numpy().astype(np.float64)
  mean, stderr = per_sample.mean(axis=0), per_sample.std(axis=0) / np.sqrt(len(per_sample))
  reference = chain.elbo(x.astype(np.float64))
  assert np.all(np.abs(mean - reference) < 4 * stderr + 2e-3), (mean, reference, stderr)
  np.testing.assert_allclose(model.elbo(x, 4000, seed=tf.constant([3, 4])), mean, atol=1e-3)
  if perturbation:
    assert np.all(reference < chain.log_marginal(x) - 0.05)  # the test has a gap to find


def test_the_iwae_bound_closes_the_gap_with_k():
  chain, x = LinearGaussianChain(perturbation=0.15), _data(4)
  estimates = [tfggm.models.log_likelihood_from_weights(chain.model().log_importance_weights, x, num_samples=k,
                                                        chunk_size=1000, progress=False, seed=3)
               for k in (1, 5000)]
  truth, elbo = chain.log_marginal(x), chain.elbo(x.astype(np.float64))
  assert np.mean(estimates[0]) < np.mean(truth) - 0.05
  np.testing.assert_allclose(estimates[1], truth, atol=0.03)
  assert np.all(elbo < truth)


def test_objective_terms_of_the_exact_posterior():
  """IWAE at the exact posterior: every weight is p(x), so the loss is -mean log p(x) for any k and beta = 1."""
  chain, x = LinearGaussianChain(), _data()
  terms = chain.model(objective="iwae", num_samples=5).objective_terms(x, seed=tf.constant([0, 9]))
  np.testing.assert_allclose(terms["loss"], -np.mean(chain.log_marginal(x)), atol=2e-3)
  np.testing.assert_allclose(terms["kl"], terms["kl_z1"] + terms["kl_z2"], rtol=1e-5)
  np.testing.assert_allclose(terms["elbo"], terms["reconstruction"] - terms["kl"], rtol=1e-5)


def test_warm_up_scales_the_kl_terms():
  chain, x = LinearGaussianChain(perturbation=0.3), _data()
  model = chain.model()
  seed = tf.constant([0, 9])
  full = model.objective_terms(x, seed=seed)
  model.beta.assign(0.25)
  warm = model.objective_terms(x, seed=seed)
  np.testing.assert_allclose(warm["loss"], -(full["reconstruction"] - 0.25 * full["kl"]), rtol=1e-5)


def test_the_prior_samples_ancestrally():
  chain = LinearGaussianChain()
  z1 = chain.model().sample_first_latents(50_000, tf.constant([2, 3])).numpy()
  assert z1.shape == (50_000, LATENT_1)
  np.testing.assert_allclose(z1.mean(axis=0), chain.a, atol=0.05)
  np.testing.assert_allclose(np.cov(z1.T), chain.s1, atol=0.1, rtol=0.05)


def _binary_model(posterior_stencil: stencils.Stencil, prior_stencil: stencils.Stencil) -> tfggm.HierarchicalVAE:
  def gaussian(inputs, stencil):
    hidden = tf_keras.layers.Dense(8, activation="tanh")(inputs)
    params = tf_keras.layers.Dense(tfggm.GaussianGraphicalModelLayer.params_size(stencil))(hidden)
    return tf_keras.Model(inputs, tfggm.GaussianGraphicalModelLayer(stencil)(params))

  encoders = [gaussian(tf_keras.Input([16]), posterior_stencil), gaussian(tf_keras.Input([6]), stencils.band(3, 1))]
  prior = gaussian(tf_keras.Input([3]), prior_stencil)
  z1 = tf_keras.Input([6])
  decoder = tf_keras.Model(z1, tfggm.IndependentBernoulliLayer(16)(tf_keras.layers.Dense(16)(z1)))
  return tfggm.HierarchicalVAE(encoders, [prior], decoder, [6, 3], seed=4)


def test_training_raises_the_elbo_and_the_model_round_trips():
  tf_keras.utils.set_random_seed(0)
  images = (np.random.default_rng(0).random((256, 16)) < np.linspace(0.1, 0.9, 16)).astype(np.float32)
  model = _binary_model(stencils.band(6, 2), stencils.chain(6))
  model.compile(tf_keras.optimizers.Adam(1e-2))
  history = model.fit(images, batch_size=32, epochs=8, verbose=0).history
  assert set(history) == {"loss", "elbo", "kl", "kl_z1", "kl_z2", "reconstruction"}
  assert history["elbo"][-1] > history["elbo"][0] + 1.0
  clone = tfggm.HierarchicalVAE.from_config(model.get_config())
  clone(images[:1])
  clone.set_weights(model.get_weights())
  seed = tf.constant([5, 6])
  np.testing.assert_allclose(clone.elbo(images[:8], 3, seed), model.elbo(images[:8], 3, seed), rtol=1e-6)


def _one_layer(objective: str = "elbo", num_samples: int = 1, analytic_kl: bool = True) -> tfggm.VAE:
  model = LinearGaussianChain(perturbation=0.3).model()
  return tfggm.VAE(model.encoders[0], model.decoder, LATENT_1, objective=objective, num_samples=num_samples,
                   analytic_kl=analytic_kl)


@pytest.mark.parametrize("objective, num_samples, analytic_kl", [("elbo", 1, True), ("elbo", 5, True),
                                                                 ("elbo", 2, False), ("iwae", 4, True)])
def test_one_layer_terms_are_the_vae_formulas_to_the_last_bit(objective, num_samples, analytic_kl):
  """The one-layer case computes what the VAE always computed, in the same order (so the same float32 values)."""
  vae, x, seed = _one_layer(objective, num_samples, analytic_kl), _data(256), tf.constant([1, 1])
  vae.beta.assign(0.5)
  q = vae.encoder(x)
  z = q.sample(num_samples, seed=seed)
  prior = tfd.MultivariateNormalDiag(tf.zeros(LATENT_1))
  log_likelihood = vae.log_likelihood(x, z)
  kl = tfd.kl_divergence(q, prior) if analytic_kl else tf.reduce_mean(q.log_prob(z) - prior.log_prob(z), axis=0)
  reconstruction = tf.reduce_mean(log_likelihood, axis=0)
  if objective == "iwae":
    log_weights = log_likelihood + 0.5 * (prior.log_prob(z) - q.log_prob(z))
    loss = -tf.reduce_mean(tf.reduce_logsumexp(log_weights, axis=0) - np.log(num_samples))
  else:
    loss = -tf.reduce_mean(reconstruction - 0.5 * kl)
  expected = dict(loss=loss, elbo=tf.reduce_mean(reconstruction - kl), kl=tf.reduce_mean(kl),
                  reconstruction=tf.reduce_mean(reconstruction))
  terms = vae.objective_terms(x, seed=seed)
  assert set(terms) == set(expected)
  kls, _ = vae._layer_terms(vae.posteriors_and_samples(x, num_samples, seed))
  assert kls[0].shape[0] == (1 if analytic_kl else num_samples)  # an exact KL is not averaged over S copies
  for key, value in expected.items():
    np.testing.assert_array_equal(terms[key], value, err_msg=key)
  np.testing.assert_array_equal(vae.log_importance_weights(x, num_samples, seed),
                                (log_likelihood + prior.log_prob(z)) - q.log_prob(z))


def test_one_layer_evaluation_equals_the_encoder_and_likelihood_path_exactly():
  vae, x = _one_layer(), _data(7)
  prior = vae.prior()
  by_weights = tfggm.models.log_likelihood_from_weights(vae.log_importance_weights, x, num_samples=9, chunk_size=4,
                                                        batch_size=3, seed=2, progress=False)
  by_parts = tfggm.models.importance_sampled_log_likelihood(vae.encoder, vae.log_likelihood, prior, x,
                                                            num_samples=9, chunk_size=4, batch_size=3, seed=2,
                                                            progress=False)
  np.testing.assert_array_equal(by_weights, by_parts)
  elbo = tfggm.models.bound_per_example(lambda images, seed: vae.elbo(images, 1, seed), x, batch_size=3, seed=2)
  np.testing.assert_array_equal(elbo, tfggm.models.elbo_per_example(vae.encoder, vae.log_likelihood, prior, x,
                                                                    batch_size=3, seed=2))


def test_the_evaluation_bound_may_use_the_exact_kl_of_a_monte_carlo_model():
  vae, x, seed = _one_layer(analytic_kl=False), _data(), tf.constant([4, 4])
  q = vae.encoder(x)
  exact = vae.log_likelihood(x, q.sample(1, seed=seed))[0] - tfd.kl_divergence(q, vae.prior())
  np.testing.assert_array_equal(vae.elbo(x, 1, seed, analytic_kl=True), exact)
  assert not np.allclose(vae.elbo(x, 1, seed), exact)


def test_a_checkpoint_of_the_vae_before_the_hierarchy_restores_its_encoder(tmp_path):
  """BackupAndRestore's backups of older runs hold the encoder at model/encoder."""
  old, new = _one_layer(), _one_layer()
  for variable in new.encoder.trainable_variables:
    variable.assign(tf.random.normal(variable.shape))
  path = tf.train.Checkpoint(model=tf.train.Checkpoint(encoder=old.encoder, decoder=old.decoder)).save(
      str(tmp_path / "old"))
  tf.train.Checkpoint(model=new).restore(path).expect_partial()
  for restored, saved in zip(new.encoder.weights, old.encoder.weights):
    np.testing.assert_array_equal(restored, saved)


def test_bad_arguments_are_rejected():
  chain = LinearGaussianChain()
  model = chain.model()
  with pytest.raises(ValueError, match="takes L encoders, L - 1 conditional priors"):
    tfggm.HierarchicalVAE(model.encoders, [], model.decoder, [LATENT_1, LATENT_2])
  with pytest.raises(ValueError, match="takes L encoders"):
    tfggm.HierarchicalVAE([], [], model.decoder, [])
  with pytest.raises(ValueError, match=r"latent_dims\[1\] must be a positive integer; got 0"):
    tfggm.HierarchicalVAE(model.encoders, model.conditional_priors, model.decoder, [LATENT_1, 0])
  with pytest.raises(ValueError, match="objective"):
    tfggm.HierarchicalVAE(model.encoders, model.conditional_priors, model.decoder, [3, 2], objective="vimco")
