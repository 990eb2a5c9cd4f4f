"""The generic VAE over hand-built Keras encoders and decoders: the bounds against a model with a known log p(x),
likelihoods of any support, and the checks that live with them."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tf_keras

import tfggm
from tfggm import stencils

LATENT, DATA = 3, 4  # the linear-Gaussian model: z ~ N(0, I_3), x | z ~ N(W z + b, sigma^2 I_4)
SIGMA = 0.5
FLOOR = 1e-3  # the layers' default diagonal floor: L_ii = softplus(v) + floor


def _inverse_softplus(y: np.ndarray) -> np.ndarray:
  return np.log(np.expm1(y))


class LinearGaussian:
  """A linear-Gaussian VAE whose log p(x) and exact posterior are known in closed form.

  ```none
  p(x)     = N(x; b, W W^T + sigma^2 I)
  p(z | x) = N(S W^T (x - b) / sigma^2, S),   S = (I + W^T W / sigma^2)^{-1}
  ```

  The encoder outputs a diagonal-precision GGM (a chain stencil with zero links) with the exact posterior
  mean and the diagonal of the exact precision: a close but inexact q, so the ELBO lies strictly below
  log p(x) and the IWAE bound closes the gap as k grows.
  """

  def __init__(self, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.w = rng.normal(size=(DATA, LATENT))
    self.b = rng.normal(size=DATA)
    precision = np.eye(LATENT) + self.w.T @ self.w / SIGMA**2
    self.posterior_covariance = np.linalg.inv(precision)
    self.gain = self.posterior_covariance @ self.w.T / SIGMA**2  # posterior mean = gain (x - b)
    self.q_factor_diagonal = np.sqrt(np.diag(precision))  # q's L = sqrt(diag(P)): q's precision diag(P)

  def encoder(self) -> tf_keras.Model:
    stencil = stencils.chain(LATENT)
    x = tf_keras.Input([DATA])
    dense = tf_keras.layers.Dense(tfggm.GaussianGraphicalModelLayer.params_size(stencil))
    q = tfggm.GaussianGraphicalModelLayer(stencil)(dense(x))
    kernel = np.zeros((DATA, LATENT + stencil.num_params))
    kernel[:, :LATENT] = self.gain.T
    bias = np.zeros(LATENT + stencil.num_params)
    bias[:LATENT] = -self.gain @ self.b
    bias[LATENT:2 * LATENT] = _inverse_softplus(self.q_factor_diagonal - FLOOR)  # the chain links stay 0
    dense.set_weights([kernel, bias])
    return tf_keras.Model(x, q)

  def decoder(self) -> tf_keras.Model:
    stencil = stencils.diagonal(DATA)
    z = tf_keras.Input([LATENT])
    dense = tf_keras.layers.Dense(tfggm.GaussianGraphicalModelLayer.params_size(stencil))
    likelihood = tfggm.GaussianGraphicalModelLayer(stencil, validate_args=True)(dense(z))
    kernel = np.concatenate([self.w.T, np.zeros((LATENT, DATA))], axis=1)
    bias = np.concatenate([self.b, np.full(DATA, _inverse_softplus(1.0 / SIGMA - FLOOR))])
    dense.set_weights([kernel, bias])
    return tf_keras.Model(z, likelihood)

  def log_marginal(self, x: np.ndarray) -> np.ndarray:
    covariance = self.w @ self.w.T + SIGMA**2 * np.eye(DATA)
    return scipy.stats.multivariate_normal(self.b, covariance).logpdf(x)

  def data(self, num_points: int, copies: int, seed: int = 1) -> np.ndarray:
    """num_points draws of x, each repeated `copies` times (so bounds average over many z per point)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(num_points, LATENT))
    x = z @ self.w.T + self.b + SIGMA * rng.normal(size=(num_points, DATA))
    return np.repeat(x, copies, axis=0).astype(np.float32)


def _bound(model: tfggm.VAE, x: np.ndarray, seed: int) -> float:
  """The batch mean of the model's bound (-loss; beta = 1) with a stateless seed."""
  return -float(model.objective_terms(x, seed=tf.constant([seed, 0], tf.int32))["loss"])


def test_iwae_bound_rises_with_k_and_approaches_the_analytic_log_likelihood():
  """E[IWAE_k] increases with k and tends to log p(x): with k = 1 it is the ELBO, 0.71 nats below log p(x) here;
  the gap then shrinks like 1/k (0.37, 0.17, 0.09 nats at k = 4, 32, 256), asserted < 0.15 nats at k = 256.
  Each bound is a mean over 8 data points x 1,024 draws (SE < 0.02 nats)."""
  truth = LinearGaussian()
  x = truth.data(num_points=8, copies=1024)
  log_px = float(np.mean(truth.log_marginal(x)))
  encoder, decoder = truth.encoder(), truth.decoder()
  bounds = {}
  for k in (1, 4, 32, 256):
    model = tfggm.VAE(encoder, decoder, LATENT, objective="iwae", num_samples=k)
    assert float(model.beta.numpy()) == 1.0  # no warm-up unless a callback asks for it
    bounds[k] = _bound(model, x, seed=k)
  elbo_model = tfggm.VAE(encoder, decoder, LATENT)
  elbo = -float(elbo_model.objective_terms(x, seed=tf.constant([9, 0], tf.int32))["elbo"])
  gaps = {k: log_px - bound for k, bound in bounds.items()}
  assert 0.3 < gaps[1] < 1.5, gaps  # q is inexact: the ELBO is clearly below log p(x)
  assert abs(bounds[1] + elbo) < 0.05, (bounds[1], -elbo)  # IWAE_1 is the ELBO (analytic KL vs sampled)
  assert gaps[1] > gaps[4] > gaps[32] > gaps[256] > -0.02, gaps  # rises with k, stays below log p(x)
  assert gaps[256] < 0.15, gaps


def test_the_elbo_of_the_exact_posterior_is_the_analytic_log_likelihood():
  """With q = p(z|x) (a full band over 3 latents holds the exact posterior) the ELBO is log p(x) for every z."""
  truth = LinearGaussian()
  stencil = stencils.band(LATENT, LATENT - 1)
  x_in = tf_keras.Input([DATA])
  dense = tf_keras.layers.Dense(tfggm.GaussianGraphicalModelLayer.params_size(stencil))
  encoder = tf_keras.Model(x_in, tfggm.GaussianGraphicalModelLayer(stencil)(dense(x_in)))
  factor = np.linalg.cholesky(np.linalg.inv(truth.posterior_covariance))
  values = stencil.values_from_bands(tfggm.linalg.bands_from_dense(factor, LATENT - 1)).numpy()
  values[:LATENT] = _inverse_softplus(values[:LATENT] - FLOOR)
  kernel = np.zeros((DATA, LATENT + stencil.num_params))
  kernel[:, :LATENT] = truth.gain.T
  dense.set_weights([kernel, np.concatenate([-truth.gain @ truth.b, values])])
  x = truth.data(num_points=6, copies=1)
  for objective in ("elbo", "iwae"):
    model = tfggm.VAE(encoder, truth.decoder(), LATENT, objective=objective, num_samples=3, analytic_kl=False)
    log_weights = (model.log_likelihood(x, encoder(x).sample(3, seed=[1, 2]))
                   + model.prior().log_prob(encoder(x).sample(3, seed=[1, 2]))
                   - encoder(x).log_prob(encoder(x).sample(3, seed=[1, 2])))
    np.testing.assert_allclose(log_weights, np.broadcast_to(truth.log_marginal(x), (3, 6)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_bound(model, x, seed=3), np.mean(truth.log_marginal(x)), rtol=1e-5, atol=1e-4)


def test_iwae_training_climbs_the_iwae_bound():
  """A few IWAE steps from a poor encoder raise the bound; fit reports -loss = the bound (beta = 1)."""
  truth = LinearGaussian()
  x = truth.data(num_points=64, copies=4)
  encoder = truth.encoder()
  encoder.set_weights([0.1 * w for w in encoder.get_weights()])  # a poor posterior
  model = tfggm.VAE(encoder, truth.decoder(), LATENT, objective="iwae", num_samples=8)
  model.decoder.trainable = False
  model.compile(tf_keras.optimizers.Adam(0.05))
  before = _bound(model, x, seed=1)
  history = model.fit(x, batch_size=256, epochs=30, verbose=0, shuffle=False).history
  after = _bound(model, x, seed=1)
  assert after > before + 1.0, (before, after)
  assert after < float(np.mean(truth.log_marginal(x))) + 0.05
  assert history["loss"][-1] < history["loss"][0]


def _real_valued_vae(stencil: stencils.Stencil, validate_args: bool = True) -> tfggm.VAE:
  """A VAE over real-valued x with a GGM likelihood on `stencil` and a chain posterior over 2 latents."""
  posterior = stencils.chain(2)
  x = tf_keras.Input([stencil.n])
  hidden = tf_keras.layers.Dense(16, activation="tanh")(x)
  q = tfggm.GaussianGraphicalModelLayer(posterior)(
      tf_keras.layers.Dense(tfggm.GaussianGraphicalModelLayer.params_size(posterior))(hidden))
  z = tf_keras.Input([2])
  hidden = tf_keras.layers.Dense(16, activation="tanh")(z)
  likelihood = tfggm.GaussianGraphicalModelLayer(stencil, validate_args=validate_args)(
      tf_keras.layers.Dense(tfggm.GaussianGraphicalModelLayer.params_size(stencil))(hidden))
  return tfggm.VAE(tf_keras.Model(x, q), tf_keras.Model(z, likelihood), latent_dim=2)


def _correlated_fields(count: int, height: int = 3, width: int = 4, seed: int = 0) -> np.ndarray:
  """Real-valued 'images' (negative values too) whose neighbouring entries are strongly correlated."""
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[:height, :width]
  phase = rng.uniform(0, 2 * np.pi, size=(count, 1, 1))
  fields = 3.0 * np.sin(rows[None] + 0.7 * cols[None] + phase) + 0.1 * rng.normal(size=(count, height, width))
  return fields.reshape(count, -1).astype(np.float32)


def test_a_ggm_likelihood_models_real_valued_data():
  """The GGM itself as p(x|z): a grid likelihood over real values trains, and its log p(x|z) has shape [S, B]."""
  x = _correlated_fields(256)
  assert x.min() < -1.0  # real values, outside any pixel range
  model = _real_valued_vae(stencils.grid(3, 4))
  model.compile(tf_keras.optimizers.Adam(1e-2))
  history = model.fit(x, batch_size=64, epochs=15, verbose=0).history
  assert history["elbo"][-1] > history["elbo"][0] + 5.0, history["elbo"]
  z = model.encoder(x[:5]).sample(7, seed=[0, 1])
  assert model.log_likelihood(x[:5], z).shape == (7, 5)


@pytest.mark.parametrize("layer,bad,message", [
    ("ggm", np.nan, "GaussianGraphicalModel: x has NaN"),
    ("bernoulli", np.nan, "IndependentBernoulli: x has NaN"),
    ("bernoulli", 1.5, r"x must be in \[0, 1\], found x > 1"),
    ("bernoulli", -0.1, r"x must be in \[0, 1\], found x < 0"),
])
def test_the_likelihood_checks_the_support_of_the_data(layer, bad, message):
  """The VAE checks no values itself; a likelihood built with validate_args=True rejects data outside its
  support with a message that says so (not a NaN loss)."""
  if layer == "ggm":
    model = _real_valued_vae(stencils.chain(6))
    x = _correlated_fields(4, 2, 3)
  else:
    posterior = stencils.diagonal(2)
    x_in = tf_keras.Input([6])
    q = tfggm.GaussianGraphicalModelLayer(posterior)(tf_keras.layers.Dense(4)(x_in))
    z_in = tf_keras.Input([2])
    likelihood = tfggm.IndependentBernoulliLayer(6, validate_args=True)(tf_keras.layers.Dense(6)(z_in))
    model = tfggm.VAE(tf_keras.Model(x_in, q), tf_keras.Model(z_in, likelihood), latent_dim=2)
    x = np.full((4, 6), 0.5, np.float32)  # grey levels in [0, 1] are soft targets: accepted
    model.objective_terms(x)
  x[1, 2] = bad
  z = model.prior().sample([3, 4], seed=[0, 0])
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    model.log_likelihood(x, z)
  if layer == "bernoulli":  # and in training, where a NaN pixel makes the encoder's q, z and so the logits NaN:
    model.compile(tf_keras.optimizers.Adam())  # the likelihood layer's check of its parameters reports it first
    in_training = r"IndependentBernoulliLayer .*: the parameters have NaN or Inf entries" if np.isnan(bad) else message
    with pytest.raises(tf.errors.InvalidArgumentError, match=in_training):
      model.fit(x, epochs=1, verbose=0)


def test_bad_vae_arguments_are_rejected():
  truth = LinearGaussian()
  with pytest.raises(ValueError, match="objective"):
    tfggm.VAE(truth.encoder(), truth.decoder(), LATENT, objective="vimco")
  with pytest.raises(ValueError, match="num_samples must be a positive integer; got 0"):
    tfggm.VAE(truth.encoder(), truth.decoder(), LATENT, num_samples=0)
  with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
    tfggm.VAE(truth.encoder(), truth.decoder(), 2.5)
