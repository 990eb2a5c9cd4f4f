"""VAE evaluation: importance-sampled log p(x) with a streaming logsumexp, the ELBO, summaries."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

tfd = tfp.distributions

__all__ = ["elbo_per_example", "importance_sampled_log_likelihood", "log_likelihood_from_weights",
           "bound_per_example", "summarize"]

Encoder = Callable[[tf.Tensor], tfd.Distribution]
LogLikelihood = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
LogWeights = Callable[[tf.Tensor, int, tf.Tensor], tf.Tensor]  # (x [B, D], k, seed) -> log w [k, B]
Bound = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (x [B, D], seed) -> the bound [B]


def _check_count(name: str, value: int) -> int:
  """`value` as an int, or a ValueError unless it is a positive integer."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} = {value!r}; it must be a positive integer.")
  return int(value)


def _check_images(images: np.ndarray, dtype: tf.DType) -> np.ndarray:
  """`images` as a non-empty, finite [N, D] array of `dtype`, or a ValueError saying why not."""
  array = np.asarray(images)
  if array.dtype.kind not in "biuf":
    raise ValueError(f"images have dtype {array.dtype}; expected a numeric array of shape [N, D].")
  if array.ndim != 2 or not array.size:
    raise ValueError(f"images have shape {array.shape}; expected a non-empty 2-D array [N, D] "
                     "(flatten each image with images.reshape(len(images), -1)).")
  num_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
  if num_bad:
    raise ValueError(f"images have {num_bad} NaN or Inf entries (of {array.size}); "
                     "every pixel must be finite.")
  return array.astype(dtype.as_numpy_dtype)


def _base_seed(seed: int) -> tf.Tensor:
  """A stateless seed [2] (int32) mixed from a non-negative integer `seed`."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed = {seed!r}; it must be a non-negative integer.")
  return tf.constant(np.random.SeedSequence(int(seed)).generate_state(2).view(np.int32))


def _checked_per_sample(name: str, value: tf.Tensor, num_samples: int,
                        dtype: tf.DType) -> tf.Tensor:
  """`value` if it has shape [num_samples, B] and `dtype`, else a ValueError naming `name`."""
  if value.shape.rank != 2 or value.shape[0] not in (None, num_samples) or value.dtype != dtype:
    raise ValueError(f"{name} gave shape {value.shape} and dtype {value.dtype.name}; expected "
                     f"one value per sample and example, [S, B] = [{num_samples}, B], of the "
                     f"computation's dtype {dtype.name} (the prior's, or the one given).")
  return value


def _log_weights(log_likelihood: LogLikelihood, prior: tfd.Distribution, q: tfd.Distribution,
                 x: tf.Tensor, num_samples: int, seed: tf.Tensor) -> tf.Tensor:
  """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): [S, B], O(S B (n + D))."""
  z = q.sample(num_samples, seed=seed)
  dtype = prior.dtype
  return (_checked_per_sample("log_likelihood(x, z)", log_likelihood(x, z), num_samples, dtype)
          + _checked_per_sample("prior.log_prob(z)", prior.log_prob(z), num_samples, dtype)
          - _checked_per_sample("q.log_prob(z)", q.log_prob(z), num_samples, dtype))


def _finite_or_zero(running_max: tf.Tensor) -> tf.Tensor:
  """The shift for exp(): the running max, or 0 where it is +-inf (e.g. no finite weight yet)."""
  return tf.where(tf.math.is_finite(running_max), running_max, tf.zeros_like(running_max))


def _accumulate(running_max: tf.Tensor, scaled_sum: tf.Tensor,
                log_weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """One step of the streaming logsumexp over the sample axis 0, O(S B).

  ```none
  invariant:  scaled_sum = sum_{k seen} exp(log w_k - shift(m)),  m = running max,
              shift(m) = m if finite else 0
  m'         = max(m, max_k log w_k)
  scaled_sum' = scaled_sum exp(shift(m) - shift(m')) + sum_k exp(log w_k - shift(m'))
  ```

  Every exponent is <= 0 once m' is finite, so nothing overflows, and the largest
  term is exp(0) = 1, so the sum never underflows to 0; before any finite weight
  (m = -inf) the sum is 0. -inf weights contribute 0, a +inf or NaN weight makes
  the estimate +inf or NaN.
  """
  new_max = tf.maximum(running_max, tf.reduce_max(log_weights, axis=0))
  new_shift = _finite_or_zero(new_max)
  # Before the first finite weight the sum is 0, and its rescaling exp(0 - shift') may be inf.
  rescaled = tf.where(running_max == -np.inf, tf.zeros_like(scaled_sum),
                      scaled_sum * tf.exp(_finite_or_zero(running_max) - new_shift))
  return new_max, rescaled + tf.reduce_sum(tf.exp(log_weights - new_shift), axis=0)


def _batches(images: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
  """(start, images[start:start + batch_size]) for start = 0, batch_size, ..."""
  for start in range(0, len(images), batch_size):
    yield start, images[start:start + batch_size]


def _progress_bar(num_examples: int, progress: bool) -> tf_keras.utils.Progbar | None:
  return tf_keras.utils.Progbar(num_examples, unit_name="example") if progress else None


def importance_sampled_log_likelihood(
    encode: Encoder, log_likelihood: LogLikelihood, prior: tfd.Distribution, images: np.ndarray,
    num_samples: int = 5000, chunk_size: int = 500, batch_size: int = 100, seed: int = 0,
    progress: bool = True) -> np.ndarray:
  """Per-example importance-sampled estimates of log p(x) of a one-layer model, streamed in chunks of samples.

  ```none
  log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,
  z_k ~ q(z|x), k = 1..K
  ```

  `log_likelihood_from_weights` with these weights (see it for the streaming, the seeds and the cost); q(z|x)
  is encoded once per chunk of samples (a pass of the encoder over B images, next to the decoder's over S B).

  Args:
    encode: x [B, D] -> q(z|x), batch shape [B], event shape [n].
    log_likelihood: (x [B, D], z [S, B, n]) -> log p(x|z), [S, B].
    prior: p(z), event shape [n], broadcasting over [S, B]. Its dtype is the
      dtype of the computation: images are cast to it, and log p(x|z) and
      log q(z|x) must have it.
    images: x, [N, D], finite.
    num_samples: K.
    chunk_size: samples drawn at a time (capped at K).
    batch_size: examples per batch.
    seed: a non-negative integer.
    progress: show a tf_keras Progbar over the examples.

  Returns:
    the estimates of log p(x), float64 [N].

  Raises:
    ValueError: as `log_likelihood_from_weights`; also log p(x|z), log p(z) or log q(z|x) not of shape
      [S, B] and the prior's dtype.
  """
  def log_weights(x: tf.Tensor, count: int, chunk_seed: tf.Tensor) -> tf.Tensor:
    return _log_weights(log_likelihood, prior, encode(x), x, count, chunk_seed)

  return _streamed_log_likelihood(log_weights, images, prior.dtype, num_samples, chunk_size, batch_size, seed,
                                  progress)


def log_likelihood_from_weights(
    log_weights: LogWeights, images: np.ndarray, dtype: tf.DType = tf.float32, num_samples: int = 5000,
    chunk_size: int = 500, batch_size: int = 100, seed: int = 0, progress: bool = True) -> np.ndarray:
  """Per-example importance-sampled estimates of log p(x) from any model's log-weights, streamed in chunks.

  ```none
  log p(x) ~= logsumexp_k log w_k - log K,   log w_k = log p(x, z_k) - log q(z_k|x),  z_k ~ q(z|x)
  ```

  `log_weights(x, k, seed)` draws k samples of the proposal and returns their log w, [k, B]: for a
  hierarchical VAE, `HierarchicalVAE.log_importance_weights`, whose proposal is q of every layer.
  The estimate is consistent (it tends to log p(x) as K grows) and, by Jensen's
  inequality, a lower bound in expectation that tightens with K; with q the exact
  posterior every weight equals p(x) and it is exact for any K. K = num_samples
  samples are drawn chunk_size at a time (the last chunk may be smaller) and
  combined by a streaming logsumexp that keeps the running max (`_accumulate`),
  so memory is that of one chunk whatever K; time is O(N K (cost of one weight)).

  Each batch runs in one `tf.function`. Chunk c of batch j draws its samples with
  the stateless seed fold_in(fold_in(mix(seed), j), c): results are reproducible
  for a given seed, batch_size and chunk_size, every batch and chunk sees new
  noise, and changing chunk_size changes the noise (not the distribution of the
  estimate).

  Args:
    log_weights: (x [B, D], k, stateless seed [2]) -> log w [k, B] of `dtype`.
    images: x, [N, D], finite; cast to `dtype`.
    dtype: of the computation.
    num_samples: K.
    chunk_size: samples drawn at a time (capped at K).
    batch_size: examples per batch.
    seed: a non-negative integer.
    progress: show a tf_keras Progbar over the examples.

  Returns:
    the estimates of log p(x), float64 [N].

  Raises:
    ValueError: images not a finite non-empty [N, D] array; a count or the seed
      not a positive (seed: non-negative) integer; log w not of shape [k, B] and `dtype`.
  """
  def checked_log_weights(x: tf.Tensor, count: int, chunk_seed: tf.Tensor) -> tf.Tensor:
    return _checked_per_sample("log_weights(x, k, seed)", log_weights(x, count, chunk_seed), count, dtype)

  return _streamed_log_likelihood(checked_log_weights, images, dtype, num_samples, chunk_size, batch_size, seed,
                                  progress)


def _streamed_log_likelihood(log_weights: LogWeights, images: np.ndarray, dtype: tf.DType, num_samples: int,
                             chunk_size: int, batch_size: int, seed: int, progress: bool) -> np.ndarray:
  """logsumexp_k log w_k - log K per example; `log_weights(x, k, seed)` gives a chunk's [k, B]."""
  num_samples = _check_count("num_samples", num_samples)
  chunk_size = min(_check_count("chunk_size", chunk_size), num_samples)
  batch_size = _check_count("batch_size", batch_size)
  images = _check_images(images, dtype)
  base_seed = _base_seed(seed)
  num_full_chunks, last_chunk_size = divmod(num_samples, chunk_size)
  log_num_samples = tf.constant(math.log(num_samples), dtype)

  @tf.function(input_signature=[tf.TensorSpec([None, images.shape[1]], dtype), tf.TensorSpec([], tf.int32)])
  def estimate_batch(x: tf.Tensor, batch_index: tf.Tensor) -> tf.Tensor:
    batch_seed = tf.random.experimental.stateless_fold_in(base_seed, batch_index)
    running_max = tf.fill(tf.shape(x)[:1], tf.constant(-np.inf, dtype))
    scaled_sum = tf.zeros_like(running_max)
    for chunk in tf.range(num_full_chunks):
      # One chunk at a time: parallel iterations would hold several chunks in memory at once.
      tf.autograph.experimental.set_loop_options(parallel_iterations=1)
      chunk_seed = tf.random.experimental.stateless_fold_in(batch_seed, chunk)
      running_max, scaled_sum = _accumulate(running_max, scaled_sum, log_weights(x, chunk_size, chunk_seed))
    if last_chunk_size:  # Static: the smaller last chunk gets its own static shape.
      chunk_seed = tf.random.experimental.stateless_fold_in(batch_seed, num_full_chunks)
      running_max, scaled_sum = _accumulate(running_max, scaled_sum,
                                            log_weights(x, last_chunk_size, chunk_seed))
    return tf.math.log(scaled_sum) + _finite_or_zero(running_max) - log_num_samples

  progress_bar = _progress_bar(len(images), progress)
  estimates = []
  for batch_index, (start, batch) in enumerate(_batches(images, batch_size)):
    estimates.append(estimate_batch(batch, batch_index).numpy())
    if progress_bar is not None:
      progress_bar.update(start + len(batch))
  return np.concatenate(estimates).astype(np.float64)


def elbo_per_example(encode: Encoder, log_likelihood: LogLikelihood, prior: tfd.Distribution,
                     images: np.ndarray, num_samples: int = 1, batch_size: int = 100,
                     seed: int = 0, analytic_kl: bool = True) -> np.ndarray:
  """Per-example ELBO of a one-layer model, a lower bound on log p(x), with S = num_samples samples of q.

  ```none
  ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) ~= 1/S sum_k log p(x|z_k) - KL,  z_k ~ q(z|x)
  KL   = tfd.kl_divergence(q, prior)                      if analytic_kl (exact)
       ~= 1/S sum_k [log q(z_k|x) - log p(z_k)]           otherwise (Monte Carlo)
  ```

  All S samples of a batch are drawn at once, O(batch_size S (n + D)) memory, through
  `bound_per_example`. The analytic KL needs a KL registered for (type(q), type(prior)), e.g.
  GaussianGraphicalModel vs MultivariateNormalDiag; it has lower variance.

  Args:
    encode: x [B, D] -> q(z|x), batch shape [B], event shape [n].
    log_likelihood: (x [B, D], z [S, B, n]) -> log p(x|z), [S, B].
    prior: p(z), event shape [n]; its dtype is the dtype of the computation.
    images: x, [N, D], finite.
    num_samples: S.
    batch_size: examples per batch.
    seed: a non-negative integer.
    analytic_kl: the exact KL if True, else the Monte Carlo one.

  Raises:
    ValueError: as in `importance_sampled_log_likelihood`.
    NotImplementedError: analytic_kl with no KL registered for q and the prior.

  Returns:
    the ELBO per example, float64 [N].
  """
  num_samples = _check_count("num_samples", num_samples)
  dtype = prior.dtype

  def elbo(x: tf.Tensor, batch_seed: tf.Tensor) -> tf.Tensor:
    q = encode(x)
    z = q.sample(num_samples, seed=batch_seed)
    expected_log_likelihood = tf.reduce_mean(_checked_per_sample(
        "log_likelihood(x, z)", log_likelihood(x, z), num_samples, dtype), axis=0)
    if analytic_kl:
      kl = tfd.kl_divergence(q, prior)
    else:
      kl = tf.reduce_mean(
          _checked_per_sample("q.log_prob(z)", q.log_prob(z), num_samples, dtype)
          - _checked_per_sample("prior.log_prob(z)", prior.log_prob(z), num_samples, dtype),
          axis=0)
    return expected_log_likelihood - kl

  return bound_per_example(elbo, images, dtype, batch_size, seed)


def bound_per_example(bound: Bound, images: np.ndarray, dtype: tf.DType = tf.float32, batch_size: int = 100,
                      seed: int = 0) -> np.ndarray:
  """Any model's per-example bound (e.g. `HierarchicalVAE.elbo`), batch by batch with reproducible noise.

  Batch j runs `bound(x_j, fold_in(mix(seed), j))` in one `tf.function`: O(cost of the bound) per batch.

  Args:
    bound: (x [B, D], stateless seed [2]) -> the bound per example, [B] of `dtype`.
    images: x, [N, D], finite; cast to `dtype`.
    dtype: of the computation.
    batch_size: examples per batch.
    seed: a non-negative integer.

  Returns:
    the bound per example, float64 [N].

  Raises:
    ValueError: bad images, batch_size or seed (as `log_likelihood_from_weights`); a bound not of shape [B].
  """
  batch_size = _check_count("batch_size", batch_size)
  images = _check_images(images, dtype)
  base_seed = _base_seed(seed)

  @tf.function(input_signature=[tf.TensorSpec([None, images.shape[1]], dtype), tf.TensorSpec([], tf.int32)])
  def bound_batch(x: tf.Tensor, batch_index: tf.Tensor) -> tf.Tensor:
    value = bound(x, tf.random.experimental.stateless_fold_in(base_seed, batch_index))
    if value.shape.rank != 1 or value.dtype != dtype:
      raise ValueError(f"bound(x, seed) gave shape {value.shape} and dtype {value.dtype.name}; expected one "
                       f"value per example, [B], of dtype {dtype.name}.")
    return value

  return np.concatenate([bound_batch(batch, batch_index).numpy() for batch_index, (_, batch)
                         in enumerate(_batches(images, batch_size))]).astype(np.float64)


def summarize(per_example: np.ndarray) -> dict:
  """{"mean", "stderr", "num_examples"} of per-example values (e.g. log p(x) estimates).

  ```none
  mean = 1/N sum_i v_i,   stderr = std(v, ddof=1) / sqrt(N)     O(N)
  ```

  stderr is the standard error of the mean over examples (NaN for N = 1); it
  does not include the Monte Carlo error within each example.

  Raises:
    ValueError: per_example is not a non-empty 1-D array.
  """
  values = np.asarray(per_example, dtype=np.float64)
  if values.ndim != 1 or not values.size:
    raise ValueError(f"per_example has shape {values.shape}; expected a non-empty 1-D array [N].")
  count = values.size
  stderr = float(np.std(values, ddof=1) / math.sqrt(count)) if count > 1 else math.nan
  return {"mean": float(np.mean(values)), "stderr": stderr, "num_examples": count}
