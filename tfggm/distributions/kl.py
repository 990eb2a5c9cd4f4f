"""Exact, linear-time KL divergences from a GaussianGraphicalModel, registered with TFP."""

from __future__ import annotations

import numbers

import tensorflow as tf
import tensorflow_probability as tfp

from tfggm import linalg
from tfggm.distributions.ggm import GaussianGraphicalModel
from tfggm.linalg import _bands

tfd = tfp.distributions

__all__ = ["kl_to_diagonal_normal", "kl_between_ggms", "hutchinson_trace"]


def hutchinson_trace(q: GaussianGraphicalModel, weights: tf.Tensor, num_probes: int,
                     seed: tf.Tensor | tuple[int, int] | None = None) -> tf.Tensor:
  """Unbiased estimate of tr(diag(w) Sigma) with `num_probes` Rademacher probes.

  ```none
  tr(W Sigma) = E_v || L^{-1} W^{1/2} v ||^2,    v_i = +-1 with probability 1/2
  ```

  One banded solve per probe: O(k n b). With A = W^{1/2} Sigma W^{1/2}, the
  variance of the k-probe mean is 2 (||A||_F^2 - sum_i A_ii^2) / k: it vanishes for
  a diagonal Sigma and grows with the off-diagonal mass of Sigma (the stronger
  the correlations, the noisier), shrinking only as 1/k.

  Args:
    q: the GGM.
    weights: w, [..., n], broadcasting with q's batch.
    num_probes: k.
    seed: a stateless seed (pair of ints) or None.

  Returns:
    the estimate, q's batch shape broadcast with weights' batch shape.

  Raises:
    ValueError: when num_probes is not a positive integer, or weights is not [..., n] (static shapes).
  """
  if not isinstance(num_probes, numbers.Integral) or isinstance(num_probes, bool) or num_probes < 1:
    raise ValueError(f"num_probes must be a positive integer; got {num_probes!r}.")
  seed = tfp.random.sanitize_seed(seed)
  weights = _converted(q, "weights", weights)
  with tf.control_dependencies(_vector_assertions("hutchinson_trace", q, "weights", weights, q.validate_args)):
    shape = tf.concat([[num_probes], tf.shape(q.mean())], axis=0)
    probes = tfp.random.rademacher(shape, dtype=q.dtype, seed=seed)
    bands = tf.convert_to_tensor(q.precision_factor_bands)
    columns = linalg.solve_vec(bands, probes * tf.sqrt(weights), lags=q.lags)
    return tf.reduce_mean(tf.reduce_sum(tf.square(columns), axis=-1), axis=0)


def kl_to_diagonal_normal(q: GaussianGraphicalModel, loc: tf.Tensor, scale: tf.Tensor,
                          num_probes: int | None = None,
                          seed: tf.Tensor | tuple[int, int] | None = None) -> tf.Tensor:
  """KL(q || N(loc, diag(scale^2))), exact by default.

  ```none
  KL = sum_i [Sigma_ii + (mu_i - m_i)^2] / (2 s_i^2) + sum_i log s_i + sum_i log L_ii - n/2
  ```

  Sigma_ii comes from selected inversion, O(n b^2) and exact; with
  `num_probes=k`, tr(diag(s^-2) Sigma) is instead the Hutchinson estimate of
  `hutchinson_trace` (the paper's stochastic method), O(k n b).

  loc and scale are [..., n], not broadcast along the event (a width-1 scale would count log s once, not n
  times), with batch dimensions that broadcast with q's.

  Raises:
    TypeError: when loc or scale has another dtype than q.
    ValueError: when loc or scale is not [..., n] or does not broadcast with q's batch (static shapes); with
      q's `validate_args`, a width unknown statically is asserted at run time.
  """
  return _kl_to_diagonal_normal(q, loc, scale, f"KL({type(q).__name__} || N(loc, diag(scale^2)))", q.validate_args,
                                num_probes=num_probes, seed=seed)


def _kl_to_diagonal_normal(q: GaussianGraphicalModel, loc: tf.Tensor, scale: tf.Tensor, owner: str,
                           validate_args: bool, num_probes: int | None = None,
                           seed: tf.Tensor | tuple[int, int] | None = None) -> tf.Tensor:
  """`kl_to_diagonal_normal`, checking the widths unknown statically under `validate_args`; `owner` names the KL in
  the messages."""
  loc, scale = _converted(q, "loc", loc), _converted(q, "scale", scale)
  assertions = (_vector_assertions(owner, q, "loc", loc, validate_args)
                + _vector_assertions(owner, q, "scale", scale, validate_args))
  with tf.control_dependencies(assertions):
    inverse_variance = tf.math.reciprocal(tf.square(scale))
    if num_probes is None:
      trace = tf.reduce_sum(q.variance() * inverse_variance, axis=-1)
    else:
      trace = hutchinson_trace(q, inverse_variance, num_probes, seed=seed)
    mahalanobis = tf.reduce_sum(tf.square(q.mean() - loc) * inverse_variance, axis=-1)
    n = tf.cast(tf.shape(q.mean())[-1], q.dtype)
    return (0.5 * (trace + mahalanobis - n) + tf.reduce_sum(tf.math.log(tf.abs(scale)), axis=-1)
            + _bands.log_determinant(q.precision_factor_bands))


def kl_between_ggms(q: GaussianGraphicalModel, p: GaussianGraphicalModel) -> tf.Tensor:
  """KL(q || p) for two GGMs, exact, without n x n matrices.

  ```none
  KL = 1/2 [tr(P_p Sigma_q) + (mu_p - mu_q)^T P_p (mu_p - mu_q) - n]
       + sum_i log Lq_ii - sum_i log Lp_ii
  tr(P_p Sigma_q) = sum_{|i-j| <= b_p} (P_p)_ij (Sigma_q)_ij
  ```

  P_p only has entries within its bandwidth b_p, so Sigma_q is needed only
  there: selected inversion of L_q to bandwidth max(b_q, b_p). The quadratic
  form is ||L_p^T (mu_p - mu_q)||^2. O(n max(b_q, b_p)^2).

  Raises:
    TypeError: when q and p have different dtypes.
    ValueError: when their event sizes n differ or their batch shapes do not broadcast.
  """
  _check_pair(q, p)
  q_bands, p_bands = q.factor_bands_at_every_lag(), p.factor_bands_at_every_lag()
  width = p.bandwidth
  sigma_q = linalg.selected_inversion(q_bands, bandwidth=max(q.bandwidth, width))[..., : width + 1, :]
  precision_p = linalg.product_with_transpose(p_bands)
  products = tf.reduce_sum(sigma_q * precision_p, axis=-1)  # [..., b_p + 1]
  trace = 2.0 * tf.reduce_sum(products, axis=-1) - products[..., 0]
  quadratic = tf.reduce_sum(tf.square(linalg.matvec_transpose(p.precision_factor_bands, p.mean() - q.mean(),
                                                              lags=p.lags)), -1)
  n = tf.cast(tf.shape(q.mean())[-1], q.dtype)
  return 0.5 * (trace + quadratic - n) + _bands.log_determinant(q_bands) - _bands.log_determinant(p_bands)


def _converted(q: GaussianGraphicalModel, what: str, x) -> tf.Tensor:
  """x as a tensor of q's dtype (NumPy arrays and Python numbers are cast, as TFP does); a tensor of another
  dtype raises TypeError naming both."""
  if tf.is_tensor(x) and x.dtype != q.dtype:
    raise TypeError(f"{what} has dtype {x.dtype.name} and the {type(q).__name__} dtype {q.dtype.name}; both need "
                    "the same dtype.")
  return tf.convert_to_tensor(x, dtype=q.dtype)


def _vector_assertions(owner: str, q: GaussianGraphicalModel, what: str, x: tf.Tensor, validate_args: bool) -> list:
  """x [..., n] for q's event size n and batch shape (`_bands.check_vector`)."""
  return _bands.check_vector(owner, what, x, q.event_shape[-1], q.batch_shape, validate_args)


def _check_pair(q: GaussianGraphicalModel, p: tfd.Distribution) -> None:
  """Static checks that KL(q || p) is defined: one dtype (TypeError), the same event shape [n] and broadcasting
  batch shapes (ValueError), each message naming both. An event size of p unknown statically is left to the
  run-time checks of the vectors that p's KL reads."""
  pair = _pair_name(q, p)
  if q.dtype != p.dtype:
    raise TypeError(f"{pair}: q has dtype {q.dtype.name} and p dtype {p.dtype.name}; both need the same dtype.")
  if not q.event_shape.is_compatible_with(p.event_shape):
    raise ValueError(f"{pair}: q has event shape {q.event_shape} and p event shape {p.event_shape}; both need "
                     f"the same event size n.")
  try:
    tf.broadcast_static_shape(q.batch_shape, p.batch_shape)
  except ValueError:
    raise ValueError(f"{pair}: q has batch shape {q.batch_shape} and p batch shape {p.batch_shape}, which do not "
                     "broadcast.") from None


def _pair_name(q: tfd.Distribution, p: tfd.Distribution) -> str:
  return f"KL({type(q).__name__} || {type(p).__name__})"


def _kl_to_diagonal_target(q: GaussianGraphicalModel, p: tfd.Distribution) -> tf.Tensor:
  """KL(q || p) for a p with a diagonal Gaussian density: its mean and stddev, checked under either's
  validate_args (TFP's convention for KLs)."""
  _check_pair(q, p)
  return _kl_to_diagonal_normal(q, p.mean(), p.stddev(), _pair_name(q, p), q.validate_args or p.validate_args)


@tfd.RegisterKL(GaussianGraphicalModel, tfd.MultivariateNormalDiag)
def _kl_ggm_mvn_diag(q, p, name=None):
  with tf.name_scope(name or "kl_ggm_mvn_diag"):
    return _kl_to_diagonal_target(q, p)


@tfd.RegisterKL(GaussianGraphicalModel, tfd.Independent)
def _kl_ggm_independent_normal(q, p, name=None):
  if not (isinstance(p.distribution, tfd.Normal) and p.reinterpreted_batch_ndims == 1):
    raise NotImplementedError(
        "KL(GaussianGraphicalModel || Independent) is implemented for Independent(Normal, "
        f"reinterpreted_batch_ndims=1) only; got {p}.")
  with tf.name_scope(name or "kl_ggm_independent_normal"):
    return _kl_to_diagonal_target(q, p)


@tfd.RegisterKL(GaussianGraphicalModel, GaussianGraphicalModel)
def _kl_ggm_ggm(q, p, name=None):
  with tf.name_scope(name or "kl_ggm_ggm"):
    return kl_between_ggms(q, p)
