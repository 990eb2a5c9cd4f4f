"""Banded Cholesky P = L L^T and its inverse map, the banded outer product L -> L L^T."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg._bands import check_bands
from tfggm.linalg._blocks import block_size_for, from_blocks, scan_blocks, to_blocks
from tfggm.linalg._column_cholesky import column_cholesky, column_cholesky_gradient
from tfggm.linalg._compilation import gradient_differentiated_by, with_gradient

CHOLESKY_ALGORITHMS = ("columns", "blocks")


COLUMNS_MAX_BANDWIDTH = 64


def cholesky_algorithm_for(bandwidth: int, algorithm: str | None = None) -> str:
  """"columns" up to b = `COLUMNS_MAX_BANDWIDTH`, "blocks" past it; checks an explicit choice.

  Measured (forward + gradient, CPU, 2 busy cores): "columns" beats "blocks" at
  every benchmarked shape with b in {1, 4, 28}, n in {16, 784, 16384, 65536},
  batch 1 to 128 (n = 65536, b = 4: 74 ms against 4.9 s; batch 128, n = 784,
  b = 28: 0.27 s against 0.58 s). Forward, quiet: at b = 64 they tie (batch 128,
  n = 784: 228 ms against 245 ms), at b = 256 the blocks' matmuls win (batch 1,
  n = 784: 14 ms against 29 ms), where the b x b window moved at every step is
  256 x 256. "blocks" also serves the second derivatives of "columns".
  """
  if algorithm is None:
    return "columns" if bandwidth <= COLUMNS_MAX_BANDWIDTH else "blocks"
  if algorithm not in CHOLESKY_ALGORITHMS:
    raise ValueError(f"algorithm must be one of {CHOLESKY_ALGORITHMS} or None; got {algorithm!r}.")
  return algorithm


def cholesky(precision_bands: tf.Tensor, block_size: int | None = None, algorithm: str | None = None) -> tf.Tensor:
  """The lower Cholesky factor L (compact bands) of a symmetric banded P.

  A band matrix keeps its bandwidth under Cholesky (no fill-in outside the
  band), so L has the bandwidth b of P. Entries bands[k, i] with i < k lie
  outside the matrix and are ignored. Two algorithms, both O(n b^2):

  - "columns" (`column_cholesky`): one column of L per step, an XLA-compiled loop of
    n + b steps with the batch as the vector axis; its gradient is the reverse
    recurrence, n + b more steps (`column_cholesky_gradient`). A P that is not
    positive definite gives NaN (the square root of a negative pivot), where
    "blocks" outside XLA raises TensorFlow's Cholesky error. Second and higher
    derivatives differentiate the gradient of "blocks" (the same function).
  - "blocks" (`_block_cholesky`): m = n / B steps of B x B dense work, a plain
    `tf.scan` that TensorFlow differentiates to every order.

  Args:
    precision_bands: lower bands of P, [..., b + 1, n] (`bands[k, i] = P[i, i-k]`).
    block_size: B for "blocks" (default: `block_size_for(n, b)`).
    algorithm: "columns", "blocks", or None to choose by b (`cholesky_algorithm_for`).

  Returns:
    bands of L, [..., b + 1, n].
  """
  precision_bands = tf.convert_to_tensor(precision_bands)
  n, b = check_bands(precision_bands)
  block = block_size_for(n, b, block_size)
  algorithm = cholesky_algorithm_for(b, algorithm)
  if b == 0:
    return tf.sqrt(precision_bands)
  if algorithm == "blocks":
    return _block_cholesky(precision_bands, block)
  return _cholesky_by_columns(precision_bands)


def _cholesky_by_columns(precision_bands: tf.Tensor) -> tf.Tensor:
  """`column_cholesky` on the batch flattened into lanes, with `column_cholesky_gradient` as its gradient."""
  shape = tf.shape(precision_bands)

  def lanes(bands):
    return tf.reshape(bands, tf.concat([[-1], shape[-2:]], 0))

  def vjp(inputs, factor_bands, d_factor_bands):
    (precision,) = inputs
    d_precision = tf.reshape(column_cholesky_gradient(lanes(factor_bands), lanes(d_factor_bands)), shape)
    return [with_gradient(d_precision, (precision, d_factor_bands), _SECOND_ORDER)]

  factor_bands = tf.reshape(column_cholesky(lanes(tf.stop_gradient(precision_bands))), shape)
  factor_bands.set_shape(precision_bands.shape)
  return with_gradient(factor_bands, (precision_bands,), vjp)


_SECOND_ORDER = gradient_differentiated_by(lambda precision: cholesky(precision, algorithm="blocks"))


def _block_cholesky(precision_bands: tf.Tensor, block: int) -> tf.Tensor:
  """Blockwise Cholesky: with blocks of size B >= b, P is block tridiagonal
  (A_j on the diagonal, E_j below) and L block bidiagonal:

  ```none
  C_j = E_j D_{j-1}^{-T}
  D_j = chol(A_j - C_j C_j^T)            j = 0 .. m-1,  C_0 = 0
  ```

  m sequential steps of B x B dense work: O(n B^2), never an n x n matrix.
  The steps are a plain `tf.scan` of dense ops (not a compiled loop), which
  TensorFlow differentiates to every order.
  """
  n, b = check_bands(precision_bands)
  lower, below = to_blocks(precision_bands, block)
  diagonal = tf.linalg.diag(tf.linalg.diag_part(lower))
  full = lower + tf.linalg.matrix_transpose(lower) - diagonal

  def step(previous, blocks):
    previous_diag, _ = previous
    a, e = blocks
    coupling = tf.linalg.matrix_transpose(
        tf.linalg.triangular_solve(previous_diag, tf.linalg.matrix_transpose(e), lower=True))
    diag = tf.linalg.cholesky(a - tf.matmul(coupling, coupling, adjoint_b=True))
    return diag, coupling

  def first(blocks):
    a, e = blocks  # e = C_0 = 0
    return tf.linalg.cholesky(a), e

  diag_blocks, sub_blocks = scan_blocks(step, first, (full, below))
  return from_blocks(diag_blocks, sub_blocks, n, b)


def product_with_transpose(factor_bands: tf.Tensor, block_size: int | None = None) -> tf.Tensor:
  """Lower bands of P = L L^T from the bands of L (the same bandwidth b).

  Blockwise: A_j = D_j D_j^T + C_j C_j^T and E_j = C_j D_{j-1}^T, all blocks at
  once (C_0 = 0, so E_0 = 0 and A_0 = D_0 D_0^T): O(n B^2).
  """
  factor_bands = tf.convert_to_tensor(factor_bands)
  n, b = check_bands(factor_bands)
  block = block_size_for(n, b, block_size)
  diag_blocks, sub_blocks = to_blocks(factor_bands, block)
  coupled = sub_blocks[..., 1:, :, :]  # C_1 .. C_{m-1}
  zero_block = tf.zeros_like(diag_blocks[..., :1, :, :])
  a = (tf.matmul(diag_blocks, diag_blocks, adjoint_b=True)
       + tf.concat([zero_block, tf.matmul(coupled, coupled, adjoint_b=True)], -3))
  e = tf.concat([zero_block, tf.matmul(coupled, diag_blocks[..., :-1, :, :], adjoint_b=True)], -3)
  return from_blocks(a, e, n, b)
