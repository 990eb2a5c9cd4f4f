"""The VAE on tiny synthetic data: every posterior learns; objectives and options behave."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfggm
from tfggm.mnist.config import ConfigError, VAEConfig
from tfggm.mnist.data import IMAGE_SHAPE
from tfggm.mnist.networks import build_vae


def _blobs(count, seed=0):
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[:28, :28]
  centres = rng.uniform(8, 20, size=(count, 2))
  distance = (rows[None] - centres[:, 0, None, None])**2 + (cols[None] - centres[:, 1, None, None])**2
  return np.exp(-distance / 30.0).reshape(count, 784).astype(np.float32)


def _fit(config, images, epochs=4):
  model = build_vae(config, IMAGE_SHAPE)
  history = model.fit(images, batch_size=32, epochs=epochs, verbose=0, shuffle=False)
  return model, history.history


@pytest.mark.parametrize("posterior", ["diagonal", "chain", "grid", "gershgorin_grid", "extended_grid",
                                       "band4", "full"])
def test_every_posterior_lowers_the_loss(posterior):
  images = (_blobs(256) > 0.5).astype(np.float32)
  config = VAEConfig(posterior=posterior, hidden_units=(32,), warmup_epochs=0, learning_rate=3e-3)
  _, history = _fit(config, images)
  assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
  np.testing.assert_allclose(history["elbo"], -np.asarray(history["loss"]), rtol=1e-5)  # beta = 1


@pytest.mark.parametrize("likelihood", ["logit_normal_diagonal", "logit_normal_grid", "logit_normal_extended_grid"])
def test_logit_normal_likelihoods_train(likelihood):
  images = np.clip(_blobs(128) * 0.9 + 0.05 + 0.01 * np.random.default_rng(1).random((128, 784)), 0, 1)
  config = VAEConfig(posterior="chain", likelihood=likelihood, hidden_units=(32,), warmup_epochs=0,
                     learning_rate=3e-3)
  _, history = _fit(config, images.astype(np.float32), epochs=3)
  assert history["loss"][-1] < history["loss"][0], history["loss"]


def test_the_monte_carlo_kl_agrees_with_the_exact_kl():
  """(The IWAE bound is tested against an analytic log p(x) in tests/test_models_vae.py.)"""
  images = (_blobs(64) > 0.5).astype(np.float32)
  tf_keras.utils.set_random_seed(3)
  exact = build_vae(VAEConfig(posterior="chain", hidden_units=(16,), num_samples=200), IMAGE_SHAPE)
  monte_carlo = build_vae(VAEConfig(posterior="chain", hidden_units=(16,), num_samples=200, analytic_kl=False),
                          IMAGE_SHAPE)
  monte_carlo.set_weights(exact.get_weights())
  np.testing.assert_allclose(monte_carlo.objective_terms(images)["kl"], exact.objective_terms(images)["kl"],
                             rtol=0.05)


def test_warmup_weight_and_gradient_clipping_are_applied():
  model = build_vae(VAEConfig(posterior="diagonal", hidden_units=(16,), warmup_epochs=4, clip_global_norm=1.0),
                    IMAGE_SHAPE)
  assert float(model.beta.numpy()) == 0.0
  assert model.optimizer.global_clipnorm == 1.0
  images = (_blobs(32) > 0.5).astype(np.float32)
  terms = model.objective_terms(images)
  np.testing.assert_allclose(terms["loss"], -terms["reconstruction"], rtol=1e-6)  # beta = 0: no KL


def test_predict_returns_posterior_means():
  model = build_vae(VAEConfig(posterior="extended_grid", hidden_units=(16,)), IMAGE_SHAPE)
  images = _blobs(5)
  # float32 through graph (predict) and eager (encoder) matmuls: equal up to rounding, not bit for bit.
  np.testing.assert_allclose(model.predict(images, verbose=0), model.encoder(images).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("changes,message", [
    (dict(posterior="hexagon"), "unknown posterior"),
    (dict(posterior="grid", latent_dim=10), "not a square"),
    (dict(likelihood="gaussian"), "unknown likelihood"),
    (dict(objective="vimco"), "objective"),
    (dict(alpha=0.7), "alpha"),
    (dict(batch_size=0), "batch_size"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(clip_global_norm=-1.0), "clip_global_norm"),
])
def test_bad_configurations_are_rejected(changes, message):
  with pytest.raises(ConfigError, match=message):
    VAEConfig(**changes)


@pytest.mark.parametrize("likelihood", ["bernoulli", "logit_normal_grid"])
@pytest.mark.parametrize("bad,message", [(np.nan, "NaN"), (1.5, "found x >= 1.0|found x > 1"),
                                         (-0.1, r"found x <= -0.0|found x < 0")])
def test_bad_pixels_fail_the_step_with_a_clear_message(likelihood, bad, message):
  """The configured likelihoods check their data (validate_args): a bad pixel fails the step, not the loss."""
  model = build_vae(VAEConfig(posterior="chain", likelihood=likelihood, hidden_units=(8,)), IMAGE_SHAPE)
  images = np.clip(_blobs(4), 0.1, 0.9)
  images[1, 10] = bad
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    model.fit(images, epochs=1, verbose=0)


def test_images_of_the_wrong_width_are_refused():
  model = build_vae(VAEConfig(posterior="chain", hidden_units=(8,)), IMAGE_SHAPE)
  with pytest.raises(ValueError, match=r"expected shape=\(None, 784\), found shape=\(None, 100\)"):
    model.fit(np.zeros((4, 100), np.float32), epochs=1, verbose=0)


def test_posterior_noise_is_a_function_of_seed_and_step():
  images = (_blobs(8) > 0.5).astype(np.float32)
  config = VAEConfig(posterior="chain", hidden_units=(16,), seed=4)
  model = build_vae(config, IMAGE_SHAPE)
  seed = model.posterior_noise_seed()
  np.testing.assert_array_equal(model.objective_terms(images, seed=seed)["loss"],
                                model.objective_terms(images, seed=seed)["loss"])
  other = build_vae(dataclasses.replace(config, seed=5), IMAGE_SHAPE).posterior_noise_seed()
  model.optimizer.iterations.assign(1)
  later = model.posterior_noise_seed()
  assert len({tuple(s.numpy()) for s in (seed, other, later)}) == 3
  assert model.objective_terms(images, seed=seed)["loss"] != model.objective_terms(images, seed=later)["loss"]
  assert build_vae(config, IMAGE_SHAPE).get_config()["seed"] == 4


@pytest.mark.parametrize("likelihood", ["bernoulli", "logit_normal_grid"])
def test_drawn_images_are_means_or_likelihood_samples(likelihood):
  from tfggm.mnist.images import draw_images
  decoder = build_vae(VAEConfig(posterior="diagonal", likelihood=likelihood, hidden_units=(16,)), IMAGE_SHAPE).decoder
  z = tf.random.stateless_normal([5, 16], seed=[0, 0])
  mean = draw_images(decoder, z, "mean").numpy()
  draws = [draw_images(decoder, z, "sample", seed=s).numpy() for s in ([1, 0], [1, 0], [2, 0])]
  assert mean.shape == draws[0].shape == (5, 784)
  assert 0.0 < mean.min() and mean.max() < 1.0 and 0.0 <= draws[0].min() and draws[0].max() <= 1.0
  np.testing.assert_array_equal(draws[0], draws[1])  # a stateless seed
  assert not np.array_equal(draws[0], draws[2]) and not np.allclose(draws[0], mean, atol=1e-3)
  if likelihood == "bernoulli":
    assert set(np.unique(draws[0])) <= {0.0, 1.0}
  with pytest.raises(ValueError, match="draw must be one of"):
    draw_images(decoder, z, "mode")


@pytest.mark.parametrize("likelihood", ["bernoulli", "logit_normal_grid"])
def test_the_compiled_step_computes_the_plain_steps_loss_and_gradients(likelihood):
  """`jit_compile=True` changes only how the step runs: for the same z, the same loss and gradients.

  (z itself is not compared: TF's default stateless generator differs between XLA and TF kernels, so a
  compiled step draws other noise for the same seed.)
  """
  images = np.clip(_blobs(16) * 0.9 + 0.05, 0, 1).astype(np.float32)
  if likelihood == "bernoulli":
    images = (images > 0.5).astype(np.float32)
  model = build_vae(VAEConfig(posterior="extended_grid", likelihood=likelihood, hidden_units=(32,)), IMAGE_SHAPE)
  noise = tf.random.stateless_normal([1, 16, 16], seed=[4, 2])

  def loss_and_gradients():
    with tf.GradientTape() as tape:
      posterior = model.encoder(images)
      z = posterior.bijector.forward(noise)  # z = mu + L^{-T} noise: what `sample` computes
      kl = tfp.distributions.kl_divergence(posterior, model.prior())
      loss = -tf.reduce_mean(model.log_likelihood(images, z) - kl)
    return loss, tape.gradient(loss, model.trainable_variables)

  plain = tf.function(loss_and_gradients)()
  compiled = tf.function(loss_and_gradients, jit_compile=True)()
  for expected, actual in zip(tf.nest.flatten(plain), tf.nest.flatten(compiled)):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(expected))))


def test_a_compiled_step_trains():
  images = (_blobs(256) > 0.5).astype(np.float32)
  config = VAEConfig(posterior="extended_grid", hidden_units=(32,), warmup_epochs=0, learning_rate=3e-3,
                     jit_compile=True)
  model, history = _fit(config, images)
  assert model.jit_compile
  assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]


@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_initialized_gaussians_start_isotropic_whatever_the_input(zero_init):
  config = VAEConfig(hidden_units=(16,), latent_dim=16, posterior="band4", prior="band4", zero_init_gaussians=zero_init,
                     upper_layers=[dict(latent_dim=8, hidden_units=[8], posterior="band4")])
  model = build_vae(config, IMAGE_SHAPE)
  images = np.random.default_rng(0).random((3, 784)).astype(np.float32)
  layers = model.posteriors_and_samples(images, 1, seed=tf.constant([0, 1]))
  networks = [(layers[0][0], 16), (layers[1][0], 8), (model.conditional_priors[0](layers[1][1][0]), 16)]
  for distribution, n in networks:
    bands = distribution.factor_bands_at_every_lag().numpy()
    isotropic = np.zeros_like(bands)
    isotropic[:, 0, :] = np.log(2.0) + config.diagonal_floor  # softplus(0) + floor
    assert np.allclose(bands, isotropic) == zero_init and bands.shape[-1] == n
    assert np.allclose(distribution.mean(), 0.0) == zero_init


def test_active_units_of_an_upper_layer_average_its_posterior_means_over_samples_of_the_layer_below():
  """E_q[z2 | x] = H E[z1 | x] + h for linear-Gaussian q, so Var_x E_q[z2 | x] is known in closed form."""
  from tfggm.mnist.evaluate import active_units
  rng = np.random.default_rng(0)
  gain_1, gain_2 = rng.normal(size=(6, 10)) * np.linspace(0.01, 1.0, 6)[:, None], rng.normal(size=(4, 6))
  gain_2 *= np.array([0.001, 0.05, 0.3, 1.0])[:, None]

  def linear_gaussian(inputs_size, gain):
    inputs = tf_keras.Input([inputs_size])
    loc = tf_keras.layers.Dense(len(gain), use_bias=False, kernel_initializer=tf_keras.initializers.Constant(gain.T))
    bands = tf.concat([tf.ones([1, len(gain)]), tf.zeros([1, len(gain)])], 0)
    return tf_keras.Model(inputs, tfp.layers.DistributionLambda(
        lambda m: tfggm.GaussianGraphicalModel(m, bands))(loc(inputs)))

  model = tfggm.HierarchicalVAE([linear_gaussian(10, gain_1), linear_gaussian(6, gain_2)],
                                [linear_gaussian(4, np.zeros((6, 4)))], linear_gaussian(6, np.zeros((10, 6))), [6, 4])
  images = rng.normal(size=(4000, 10)).astype(np.float32)
  variances_1 = np.var(images @ gain_1.T, axis=0)
  variances_2 = np.var(images @ gain_1.T @ gain_2.T, axis=0)
  for threshold in (0.005, 0.02, 0.5):
    units = active_units(model, images, threshold=threshold)
    assert units == [int(np.sum(variances_1 > threshold)), int(np.sum(variances_2 > threshold))]
