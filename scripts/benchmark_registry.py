"""The benchmark's implementations of a GGM's kernels, their operands, and banded-matrices' layout.

`implementations()` is the one registry: name -> `Implementation`, a dict of forward operations on `Inputs`
(in the implementation's own layout) with their gradients derived alike for all (`GRADIENTS`). Names:
  tfggm            ours
  tfggm_blocks     our blocked solve for sample; its log_prob is ours
  tf_banded        tf.linalg.banded_triangular_solve for sample; its log_prob is ours (TF has no banded matvec)
  banded_matrices  the banded-matrices package (its own C++ ops), where installed; its layout is converted
                   outside the timed calls, and its results are checked against ours before any is timed
  dense_tril       tfd.MultivariateNormalTriL with a dense n x n triangular scale (same cost as any dense factor)
  precision_linop  tfp.experimental MultivariateNormalPrecisionFactorLinearOperator with dense L
  diagonal         tfd.MultivariateNormalDiag: the floor
  memory_bound     not code: bytes of bands read + results written / the machine's copy bandwidth
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfggm
from tfggm._testing import random_factor_bands

tfd = tfp.distributions
KERNEL_OPERATIONS = ("sample", "log_prob", "sample_log_prob_grad", "kl", "variance", "cholesky")
PEER_OPERATIONS = ("cholesky", "cholesky_grad", "selected_inversion", "selected_inversion_grad", "solve",
                   "solve_grad", "matvec", "matvec_grad", "sample_log_prob_grad")
GRADIENTS = {  # operation -> (its forward operation, the Inputs field differentiated, the cotangent of the result)
    "cholesky_grad": ("cholesky", "precision", "band_cotangent"),
    "selected_inversion_grad": ("selected_inversion", "factor", "band_cotangent"),
    "solve_grad": ("solve", "factor", "vector_cotangent"),
    "matvec_grad": ("matvec", "factor", "vector_cotangent"),
}
# Each result of an operation, flattened: "b" bands in the implementation's layout, "v" anything else.
FORWARD_RESULTS = dict(sample="v", log_prob="v", kl="v", variance="v", solve="v", matvec="v", cholesky="b",
                       selected_inversion="b")
RESULT_KINDS = dict(FORWARD_RESULTS, sample_log_prob_grad="vb",
                    **{name: FORWARD_RESULTS[forward] + "b" for name, (forward, _, _) in GRADIENTS.items()})
AGREEMENT_RTOL = dict(float64=1e-10, float32=1e-3)  # max |theirs - ours| <= rtol * max |ours|, per result
DENSE_LIMIT_BYTES = 2e9
NAMES = ("tfggm", "tfggm_blocks", "tf_banded", "banded_matrices", "dense_tril", "precision_linop", "diagonal",
         "memory_bound")


class Shape(NamedTuple):
  n: int
  b: int
  batch: int
  dtype: str = "float32"


def shape_of(record: dict) -> Shape:
  return Shape(record["n"], record["b"], record["batch"], record.get("dtype", "float32"))


# --- layouts ------------------------------------------------------------------------------------------------

def theirs_from_ours(bands: np.ndarray) -> np.ndarray:
  """banded-matrices' lower-band layout from ours: row k shifted left by k, zeros past the end.

  ```none
  ours:   bands[..., k, i] = L[i, i - k]     (by rows; zero where i - k < 0)
  theirs: band[..., k, j]  = L[j + k, j]     (by columns; zero where j + k >= n)
  band[..., k, j] = bands[..., k, j + k]
  ```
  """
  n = bands.shape[-1]
  band = np.zeros_like(bands)
  for k in range(bands.shape[-2]):
    band[..., k, :max(n - k, 0)] = bands[..., k, k:]
  return band


def ours_from_theirs(band: np.ndarray) -> np.ndarray:
  """Our layout from banded-matrices' (the inverse of `theirs_from_ours`): row k shifted right by k."""
  n = band.shape[-1]
  bands = np.zeros_like(band)
  for k in range(band.shape[-2]):
    bands[..., k, k:] = band[..., k, :max(n - k, 0)]
  return bands


def inside_matrix(bands: np.ndarray) -> np.ndarray:
  """Our bands with the entries outside the matrix (i - k < 0) set to zero."""
  return ours_from_theirs(theirs_from_ours(bands))


# --- inputs and implementations -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Inputs:
  """One shape's operands in one layout: loc and eps (the noise of a sample, and the point of log_prob)
  [batch..., n]; `factor`, the bands of L, and `precision`, the lower bands of P = L L^T, [batch..., b + 1, n];
  the fixed cotangents that turn a band result or a vector result into the scalar loss of a gradient."""
  loc: tf.Tensor
  eps: tf.Tensor
  factor: tf.Tensor
  precision: tf.Tensor
  band_cotangent: tf.Tensor
  vector_cotangent: tf.Tensor


def make_inputs(shape: Shape, seed: int = 0) -> Inputs:
  """Random operands of `shape` in our layout: L is `random_factor_bands` with off-diagonals of scale 0.3 / b,
  diagonally dominant (well conditioned at any n); P = L L^T. Made in float64, then cast."""
  n, b, batch, dtype = shape
  batch_shape = () if batch == 1 else (batch,)
  factor = random_factor_bands(n, b, batch_shape, seed=seed, off_diagonal_scale=0.3 / max(b, 1))
  precision = tfggm.linalg.product_with_transpose(tf.constant(factor)).numpy()
  rng = np.random.default_rng(seed + 1)
  loc, eps, vector_cotangent = rng.normal(size=(3, *batch_shape, n))
  band_cotangent = inside_matrix(rng.normal(size=factor.shape))
  return Inputs(*(tf.constant(a.astype(dtype)) for a in (loc, eps, factor, precision, band_cotangent,
                                                          vector_cotangent)))


def _identity(value):
  return value


@dataclasses.dataclass(frozen=True)
class Implementation:
  """Forward operations on `Inputs` in this implementation's layout, which `prepare` makes from ours outside the
  timed calls and `bands_to_ours` undoes on a band result. The `dense` operations form n x n matrices: they run
  only where those fit in DENSE_LIMIT_BYTES. `checked`: its results are compared with ours before timing."""
  operations: dict[str, Callable[[Inputs], object]]
  prepare: Callable[[Inputs], Inputs] = _identity
  bands_to_ours: Callable[[np.ndarray], np.ndarray] = _identity
  dense: frozenset = frozenset()
  checked: bool = False

  def runs(self, operation: str, shape: Shape) -> bool:
    dense_bytes = 3.0 * np.dtype(shape.dtype).itemsize * shape.batch * shape.n ** 2  # two factors and a result
    return operation in self.operations and (operation not in self.dense or dense_bytes <= DENSE_LIMIT_BYTES)


def _gradient(forward: Callable, field: str, cotangent: str) -> Callable:
  """(value, d loss / d field) of loss = sum(forward(x) * cotangent): one forward and one reverse pass."""
  def value_and_gradient(x: Inputs):
    with tf.GradientTape() as tape:
      tape.watch(getattr(x, field))
      value = forward(x)
      loss = tf.reduce_sum(value * getattr(x, cotangent))
    return value, tape.gradient(loss, getattr(x, field))
  return value_and_gradient


def _sample_log_prob_gradient(sample: Callable, log_prob: Callable) -> Callable:
  """Gradient w.r.t. loc and L of sum(z) + sum(log_prob(z)), z = sample(eps): the VAE's reparameterized path."""
  def gradient(x: Inputs):
    with tf.GradientTape() as tape:
      tape.watch([x.loc, x.factor])
      z = sample(x)
      value = tf.reduce_sum(z) + tf.reduce_sum(log_prob(dataclasses.replace(x, eps=z)))
    return tape.gradient(value, [x.loc, x.factor])
  return gradient


def _with_gradients(operations: dict, log_prob: Callable) -> dict:
  """`operations` and the gradient of each that has one (GRADIENTS, and sample_log_prob_grad for a sample,
  with `log_prob` where the implementation has none)."""
  completed = dict(operations)
  for name, (forward, field, cotangent) in GRADIENTS.items():
    if forward in operations:
      completed[name] = _gradient(operations[forward], field, cotangent)
  if "sample" in operations:
    completed["sample_log_prob_grad"] = _sample_log_prob_gradient(operations["sample"],
                                                                  operations.get("log_prob", log_prob))
  return completed


def _ggm(x: Inputs) -> tfggm.GaussianGraphicalModel:
  return tfggm.GaussianGraphicalModel(x.loc, x.factor)


def _standard_normal(x: Inputs) -> tfd.Distribution:
  return tfd.MultivariateNormalDiag(tf.zeros_like(x.loc))


def _diagonal(x: Inputs) -> tfd.Distribution:
  return tfd.MultivariateNormalDiag(x.loc, 1 / x.factor[..., 0, :])


def _dense(bands: tf.Tensor) -> tf.Tensor:
  return tfggm.linalg.dense_from_bands(bands)


def _dense_tril(x: Inputs) -> tfd.Distribution:
  return tfd.MultivariateNormalTriL(x.loc, _dense(x.factor))


def _precision_linop(x: Inputs) -> tfd.Distribution:
  return tfp.experimental.distributions.MultivariateNormalPrecisionFactorLinearOperator(
      x.loc, precision_factor=tf.linalg.LinearOperatorLowerTriangular(_dense(x.factor)))


def _gaussian_log_prob(diagonal: tf.Tensor, whitened: tf.Tensor) -> tf.Tensor:
  """log N(z; mu, (L L^T)^{-1}) = sum(log L_ii) - n/2 log(2 pi) - |w|^2 / 2, with w = L^T (z - mu)."""
  n = tf.cast(tf.shape(whitened)[-1], whitened.dtype)
  return (tf.reduce_sum(tf.math.log(diagonal), -1) - 0.5 * n * np.log(2 * np.pi)
          - 0.5 * tf.reduce_sum(tf.square(whitened), -1))


def _ours() -> dict[str, Callable]:
  return dict(
      sample=lambda x: _ggm(x).bijector.forward(x.eps),
      log_prob=lambda x: _ggm(x).log_prob(x.eps),
      kl=lambda x: tfd.kl_divergence(_ggm(x), _standard_normal(x)),
      variance=lambda x: _ggm(x).variance(),
      cholesky=lambda x: tfggm.linalg.cholesky(x.precision),
      selected_inversion=lambda x: tfggm.linalg.selected_inversion(x.factor),
      solve=lambda x: tfggm.linalg.solve_vec(x.factor, x.eps),
      matvec=lambda x: tfggm.linalg.matvec(x.factor, x.eps))


def _banded_matrices() -> Implementation | None:
  """banded-matrices' ops, or None where the package is not installed. Its matrix-vector ops take [n, 1]
  columns and loop over a batch with `tf.map_fn`; its Cholesky and selected inversion batch in C++."""
  try:
    from banded_matrices import banded
  except ImportError:
    return None

  def column_op(op: Callable, bands: tf.Tensor, vector: tf.Tensor, **options) -> tf.Tensor:
    return op(bands, vector[..., tf.newaxis], **options)[..., 0]

  def transposed_matvec(x: Inputs, vector: tf.Tensor) -> tf.Tensor:  # L^T v
    return column_op(banded.product_band_mat, x.factor, vector, left_lower_bandwidth=x.factor.shape[-2] - 1,
                     left_upper_bandwidth=0, transpose_left=True)

  def prepare(x: Inputs) -> Inputs:
    theirs = lambda t: tf.constant(theirs_from_ours(t.numpy()))
    return dataclasses.replace(x, factor=theirs(x.factor), precision=theirs(x.precision),
                               band_cotangent=theirs(x.band_cotangent))

  @tf.custom_gradient
  def copying_gradient(t: tf.Tensor):
    """t, with its incoming gradient copied (O(n b)) before it flows on: banded-matrices 0.2.1's Cholesky
    gradient (CholeskyBandGradOp) overwrites the gradient it is given, which may be a buffer still in use."""
    return tf.identity(t), lambda dy: tf.raw_ops.DeepCopy(x=dy)

  operations = dict(
      cholesky=lambda x: copying_gradient(banded.cholesky_band(x.precision, should_check_result=False)),
      selected_inversion=lambda x: banded.inverse_from_cholesky_band(x.factor),
      solve=lambda x: column_op(banded.solve_triang_mat, x.factor, x.eps),
      matvec=lambda x: column_op(banded.product_band_mat, x.factor, x.eps,
                                 left_lower_bandwidth=x.factor.shape[-2] - 1, left_upper_bandwidth=0),
      sample=lambda x: x.loc + column_op(banded.solve_triang_mat, x.factor, x.eps, transpose_left=True),
      log_prob=lambda x: _gaussian_log_prob(x.factor[..., 0, :], transposed_matvec(x, x.eps - x.loc)))
  return Implementation(_with_gradients(operations, operations["log_prob"]), prepare, ours_from_theirs,
                        checked=True)


def implementations() -> dict[str, Implementation]:
  """The registry: name -> Implementation (banded_matrices only where installed)."""
  ours = _ours()
  complete = lambda operations: _with_gradients(operations, ours["log_prob"])
  dense = frozenset(KERNEL_OPERATIONS + PEER_OPERATIONS)
  registry = {
      "tfggm": Implementation(complete(ours)),
      "tfggm_blocks": Implementation(complete(dict(  # the other solve algorithm, to show where each one wins
          sample=lambda x: x.loc + tfggm.linalg.solve_vec(x.factor, x.eps, transpose=True, algorithm="blocks")))),
      # tf.linalg.banded_triangular_solve's registered gradient forms a dense n x n product per matrix.
      "tf_banded": Implementation(complete(dict(sample=lambda x: x.loc + tf.linalg.banded_triangular_solve(
          x.factor, x.eps[..., tf.newaxis], lower=True, adjoint=True)[..., 0])),
          dense=frozenset({"sample_log_prob_grad"})),
      "banded_matrices": _banded_matrices(),
      "dense_tril": Implementation(complete(dict(
          sample=lambda x: x.loc + tf.linalg.matvec(_dense(x.factor), x.eps),
          log_prob=lambda x: _dense_tril(x).log_prob(x.eps),
          kl=lambda x: tfd.kl_divergence(_dense_tril(x), _standard_normal(x)),
          variance=lambda x: _dense_tril(x).variance(),
          cholesky=lambda x: tf.linalg.cholesky(_dense(x.precision)))), dense=dense),  # reads the lower triangle
      "precision_linop": Implementation(complete(dict(
          sample=lambda x: x.loc + tf.linalg.triangular_solve(
              _dense(x.factor), x.eps[..., tf.newaxis], lower=True, adjoint=True)[..., 0],
          log_prob=lambda x: _precision_linop(x).log_prob(x.eps),
          variance=lambda x: _precision_linop(x).variance())), dense=dense),
      "diagonal": Implementation(complete(dict(
          sample=lambda x: x.loc + x.eps / x.factor[..., 0, :],
          log_prob=lambda x: _diagonal(x).log_prob(x.eps),
          kl=lambda x: tfd.kl_divergence(_diagonal(x), _standard_normal(x)),
          variance=lambda x: _diagonal(x).variance()))),
  }
  return {name: implementation for name, implementation in registry.items() if implementation is not None}


class Disagreement(AssertionError):
  """An implementation's result differs from ours beyond AGREEMENT_RTOL: its times would compare different math."""


def check_agreement(name: str, operation: str, shape: Shape, implementation: Implementation, ours, theirs) -> None:
  """Raises Disagreement unless every result of `theirs` (converted to our layout) is within AGREEMENT_RTOL of
  ours, relative to the largest of ours; band results are compared inside the matrix only."""
  rtol = AGREEMENT_RTOL[shape.dtype]
  for kind, mine, other in zip(RESULT_KINDS[operation], tf.nest.flatten(ours), tf.nest.flatten(theirs)):
    mine, other = np.asarray(mine), np.asarray(other)
    if kind == "b":
      mine, other = inside_matrix(mine), implementation.bands_to_ours(other)
    error, scale = np.max(np.abs(other - mine)), np.max(np.abs(mine))
    if not error <= rtol * scale:
      raise Disagreement(f"{name} {operation} at {shape}: max |difference| {error:.3g} against max |ours| "
                         f"{scale:.3g} (relative tolerance {rtol:g}); not timed.")


def numpy_copy(x: Inputs) -> dict[str, np.ndarray]:
  return {field.name: np.array(getattr(x, field.name)) for field in dataclasses.fields(x)}


def check_unchanged(name: str, shape: Shape, before: dict[str, np.ndarray], x: Inputs) -> None:
  """Raises Disagreement where an implementation overwrote one of its inputs: its later calls saw other ones."""
  changed = [field for field, value in before.items() if not np.array_equal(value, np.asarray(getattr(x, field)))]
  if changed:
    raise Disagreement(f"{name} overwrote its inputs {changed} at {shape}; its times are discarded.")


def memory_bound_seconds(operation: str, shape: Shape, bandwidth: float) -> float:
  """The time to read the bands (and loc, eps) and write the result once: a floor for any kernel."""
  n, b, batch, dtype = shape
  reads = batch * n * (b + 1) + 2 * batch * n
  writes = {"sample_log_prob_grad": batch * n * (b + 2), "cholesky": batch * n * (b + 1)}.get(operation, batch * n)
  return np.dtype(dtype).itemsize * (reads + writes) / bandwidth
