"""Importance-sampled log p(x) and the ELBO on a linear-Gaussian VAE, whose log p(x) is known."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from tfggm import GaussianGraphicalModel, linalg
from tfggm.models.evaluation import elbo_per_example, importance_sampled_log_likelihood, summarize

tfd = tfp.distributions

DATA_DIM, LATENT_DIM, NOISE_SCALE = 6, 3, 0.5


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
  """p(z) = N(0, I_n), p(x|z) = N(W z + c, s^2 I_D); so p(x) = N(c, W W^T + s^2 I) and

  p(z|x) = N(m, Lambda^{-1}),  Lambda = I + W^T W / s^2,  m = Lambda^{-1} W^T (x - c) / s^2.
  """

  weights: np.ndarray  # W [D, n]
  offset: np.ndarray  # c [D]
  dtype: type = np.float64

  @property
  def prior(self) -> tfd.Distribution:
    return tfd.MultivariateNormalDiag(tf.zeros(LATENT_DIM, self.dtype))

  def log_likelihood(self, x: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    mean = (tf.einsum("dn,sbn->sbd", self.weights.astype(self.dtype), z)
            + self.offset.astype(self.dtype))
    return tfd.Independent(tfd.Normal(mean, tf.constant(NOISE_SCALE, self.dtype)), 1).log_prob(x)

  def log_marginal(self, x: np.ndarray) -> np.ndarray:
    covariance = self.weights @ self.weights.T + NOISE_SCALE**2 * np.eye(DATA_DIM)
    return stats.multivariate_normal(self.offset, covariance).logpdf(x)

  def encoder(self, loc_shift: float = 0.0, factor_scale: float = 1.0):
    """x -> q(z|x): the exact posterior as a full-band GGM, its mean shifted and L scaled."""
    precision = np.eye(LATENT_DIM) + self.weights.T @ self.weights / NOISE_SCALE**2
    bands = factor_scale * linalg.bands_from_dense(np.linalg.cholesky(precision), LATENT_DIM - 1)
    gain = np.linalg.solve(precision, self.weights.T) / NOISE_SCALE**2  # Lambda^{-1} W^T / s^2

    def encode(x: tf.Tensor) -> tfd.Distribution:
      loc = tf.einsum("nd,bd->bn", gain.astype(self.dtype), x - self.offset.astype(self.dtype))
      return GaussianGraphicalModel(loc + loc_shift, tf.cast(bands, self.dtype))

    return encode

  def sample_data(self, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(count, LATENT_DIM))
    x = z @ self.weights.T + self.offset + NOISE_SCALE * rng.normal(size=(count, DATA_DIM))
    return x.astype(self.dtype)


def make_model(dtype=np.float64) -> LinearGaussian:
  rng = np.random.default_rng(0)
  return LinearGaussian(0.6 * rng.normal(size=(DATA_DIM, LATENT_DIM)),
                        rng.normal(size=DATA_DIM), dtype)


MODEL = make_model()
EXACT_Q = MODEL.encoder()
WRONG_Q = MODEL.encoder(loc_shift=0.3, factor_scale=0.8)  # Mean off by 0.3, covariance 1.56x.
MILD_Q = MODEL.encoder(loc_shift=0.1, factor_scale=0.8)


def estimate(encode, images, **kwargs) -> np.ndarray:
  return importance_sampled_log_likelihood(encode, MODEL.log_likelihood, MODEL.prior, images,
                                           progress=False, **kwargs)


@pytest.mark.parametrize("num_samples,chunk_size", [(1, 500), (7, 3)])
def test_exact_posterior_gives_log_marginal_for_any_sample_count(num_samples, chunk_size):
  images = MODEL.sample_data(10, seed=1)
  result = estimate(EXACT_Q, images, num_samples=num_samples, chunk_size=chunk_size, batch_size=4)
  assert result.shape == (10,) and result.dtype == np.float64
  np.testing.assert_allclose(result, MODEL.log_marginal(images), rtol=1e-10, atol=1e-10)


def test_elbo_of_exact_posterior_is_log_marginal():
  images = MODEL.sample_data(10, seed=2)
  truth = MODEL.log_marginal(images)
  # Monte Carlo KL: every term log p(x|z) + log p(z) - log q(z|x) is log p(x), so exact for any S.
  monte_carlo = elbo_per_example(EXACT_Q, MODEL.log_likelihood, MODEL.prior, images,
                                 num_samples=3, batch_size=4, analytic_kl=False)
  np.testing.assert_allclose(monte_carlo, truth, rtol=1e-10, atol=1e-10)
  # Analytic KL: only E_q[log p(x|z)] is sampled, so exact in expectation; 4000 samples.
  analytic = elbo_per_example(EXACT_Q, MODEL.log_likelihood, MODEL.prior, images,
                              num_samples=4000, batch_size=4)
  np.testing.assert_allclose(analytic, truth, atol=0.05)


def test_wrong_posterior_converges_from_below():
  # For WRONG_Q, Var(w / p(x)) is about 5, so one estimate has standard deviation about
  # sqrt(5 / K): 0.03 at K = 5000. The tolerances below are 4 to 5 of those.
  images = MODEL.sample_data(200, seed=3)
  truth = MODEL.log_marginal(images)
  error_one = estimate(WRONG_Q, images, num_samples=1, batch_size=100) - truth
  # K = 1 is log w, whose expectation log p(x) - KL(q || p(z|x)) is below the truth.
  assert np.mean(error_one) + 3 * summarize(error_one)["stderr"] < 0
  few, few_truth = images[:20], truth[:20]
  error_many = estimate(WRONG_Q, few, num_samples=2000, chunk_size=600, batch_size=10) - few_truth
  assert np.mean(np.abs(error_many)) < 0.2 * np.mean(np.abs(error_one[:20]))
  error_most = estimate(WRONG_Q, few, num_samples=5000, chunk_size=1000, batch_size=10) - few_truth
  assert np.max(np.abs(error_most)) < 0.15
  assert abs(np.mean(error_most)) < 4 * summarize(error_most)["stderr"]
  for analytic_kl in (True, False):
    elbo = elbo_per_example(WRONG_Q, MODEL.log_likelihood, MODEL.prior, few, num_samples=50,
                            analytic_kl=analytic_kl)
    assert np.mean(elbo) < np.mean(few_truth + error_most) - 0.1


def test_chunking_changes_noise_but_not_the_estimate():
  # Chunk c of batch j is seeded by (seed, j, c), so chunk_size = K, K / 3 and 250 (not dividing
  # K) draw different samples: the estimates agree with each other and the truth within tolerance.
  # For MILD_Q, Var(w / p(x)) is about 0.5: one estimate at K = 900 has standard deviation about
  # 0.024, a difference of two about 0.033; the tolerances are over 4 of those.
  images = MODEL.sample_data(20, seed=4)
  truth = MODEL.log_marginal(images)
  results = [estimate(MILD_Q, images, num_samples=900, chunk_size=chunk_size, batch_size=8)
             for chunk_size in (900, 300, 250)]
  assert not np.array_equal(results[0], results[1])
  for result in results:
    np.testing.assert_allclose(result, truth, atol=0.1)
    np.testing.assert_allclose(result, results[0], atol=0.15)
    assert abs(np.mean(result - truth)) < 4 * summarize(result - truth)["stderr"]


def test_seeding_is_reproducible_and_differs_between_batches_and_seeds():
  image = MODEL.sample_data(1, seed=5)
  images = np.repeat(image, 3, axis=0)  # One image per batch: each batch must get new noise.
  first = estimate(WRONG_Q, images, num_samples=5, chunk_size=2, batch_size=1, seed=3)
  np.testing.assert_array_equal(
      first, estimate(WRONG_Q, images, num_samples=5, chunk_size=2, batch_size=1, seed=3))
  assert len(np.unique(first)) == 3
  other_seed = estimate(WRONG_Q, images, num_samples=5, chunk_size=2, batch_size=1, seed=4)
  assert not np.any(np.isin(other_seed, first))


def test_float32_model_gives_float32_accuracy():
  model = make_model(np.float32)
  images = model.sample_data(8, seed=6)
  result = importance_sampled_log_likelihood(model.encoder(), model.log_likelihood, model.prior,
                                             images, num_samples=10, chunk_size=4, progress=False)
  assert result.dtype == np.float64
  np.testing.assert_allclose(result, model.log_marginal(images), rtol=1e-4, atol=1e-4)


def test_progress_bar_reports_every_example(capsys):
  images = MODEL.sample_data(5, seed=7)
  importance_sampled_log_likelihood(EXACT_Q, MODEL.log_likelihood, MODEL.prior, images,
                                    num_samples=2, batch_size=2, progress=True)
  assert "5/5" in capsys.readouterr().out


def test_streaming_logsumexp_survives_huge_and_impossible_weights():
  # Example i's log weights are all log p(x_i) + shift_i: exp() of them under- or overflows for
  # shift = -+1e5, yet the running max keeps the estimate exact; -inf weights give -inf, NaN NaN.
  shifts = np.array([-1e5, 1e5, -np.inf, np.inf, np.nan])
  images = MODEL.sample_data(len(shifts), seed=8)

  def shifted_log_likelihood(x, z):
    return MODEL.log_likelihood(x, z) + shifts

  result = importance_sampled_log_likelihood(EXACT_Q, shifted_log_likelihood, MODEL.prior, images,
                                             num_samples=5, chunk_size=2, progress=False)
  expected = MODEL.log_marginal(images) + shifts
  np.testing.assert_allclose(result, expected, rtol=1e-12)
  np.testing.assert_array_equal(result[2:], expected[2:])


@pytest.mark.parametrize("change,message", [
    (dict(images=np.full((2, DATA_DIM), np.nan)), "NaN or Inf"),
    (dict(images=np.zeros(DATA_DIM)), "2-D"),
    (dict(images=np.zeros((0, DATA_DIM))), "non-empty"),
    (dict(images=np.array([["a"] * DATA_DIM])), "numeric"),
    (dict(num_samples=0), "num_samples = 0"),
    (dict(chunk_size=-1), "chunk_size = -1"),
    (dict(batch_size=2.5), "batch_size = 2.5"),
    (dict(seed=-1), "seed = -1"),
    (dict(log_likelihood=lambda x, z: tf.zeros(tf.concat([tf.shape(z)[:2], [DATA_DIM]], 0),
                                               tf.float64)), "log_likelihood"),
    (dict(log_likelihood=lambda x, z: tf.zeros(tf.shape(z)[:2], tf.float32)), "dtype float64"),
])
def test_bad_inputs_raise_clear_errors(change, message):
  arguments = dict(encode=EXACT_Q, log_likelihood=MODEL.log_likelihood, prior=MODEL.prior,
                   images=MODEL.sample_data(2, seed=9), num_samples=3, chunk_size=2, batch_size=2,
                   seed=0, progress=False)
  arguments.update(change)
  with pytest.raises(ValueError, match=message):
    importance_sampled_log_likelihood(**arguments)
  if "chunk_size" not in change and "log_likelihood" not in change:
    del arguments["chunk_size"], arguments["progress"]
    with pytest.raises(ValueError, match=message):
      elbo_per_example(**arguments)


def test_summarize():
  values = np.array([1.0, 2.0, 3.0, 6.0])
  summary = summarize(values)
  assert summary == {"mean": 3.0, "stderr": pytest.approx(np.std(values, ddof=1) / 2.0),
                     "num_examples": 4}
  single = summarize(np.array([-80.0]))
  assert single["mean"] == -80.0 and np.isnan(single["stderr"]) and single["num_examples"] == 1
  with pytest.raises(ValueError, match="1-D"):
    summarize(np.zeros((2, 2)))
