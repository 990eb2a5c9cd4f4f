"""Banded Cholesky P = L L^T and its inverse map, the banded outer product L -> L L^T."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg.bands import check_bands
from tfggm.linalg.blocks import block_size_for, from_blocks, move_axis, shift_blocks, to_blocks

__all__ = ["cholesky", "outer_product"]


def cholesky(precision_bands: tf.Tensor, block_size: int | None = None) -> tf.Tensor:
  """The lower Cholesky factor L (compact bands) of a symmetric banded P.

  A band matrix keeps its bandwidth under Cholesky (no fill-in outside the
  band), so L has the bandwidth b of P. With blocks of size B >= b, P is block
  tridiagonal (A_j on the diagonal, E_j below) and L block bidiagonal:

  ```none
  C_j = E_j D_{j-1}^{-T}
  D_j = chol(A_j - C_j C_j^T)            j = 0 .. m-1,  C_0 = 0
  ```

  m sequential steps of B x B dense work: O(n B^2), never an n x n matrix.

  Args:
    precision_bands: lower bands of P, [..., b + 1, n] (`bands[k, i] = P[i, i-k]`).
    block_size: B (default: `block_size_for(n, b)`).

  Returns:
    bands of L, [..., b + 1, n].
  """
  precision_bands = tf.convert_to_tensor(precision_bands)
  n, b = check_bands(precision_bands)
  block = block_size_for(n, b, block_size)
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

  full_f, below_f = move_axis(full, -3, 0), move_axis(below, -3, 0)
  identity = tf.eye(block, batch_shape=tf.shape(full_f)[1:-2], dtype=full.dtype)
  diag_blocks, sub_blocks = tf.scan(step, (full_f, below_f),
                                    initializer=(identity, tf.zeros_like(identity)))
  return from_blocks(move_axis(diag_blocks, 0, -3), move_axis(sub_blocks, 0, -3), n, b)


def outer_product(factor_bands: tf.Tensor, block_size: int | None = None) -> tf.Tensor:
  """Lower bands of P = L L^T from the bands of L (the same bandwidth b).

  Blockwise: A_j = D_j D_j^T + C_j C_j^T and E_j = C_j D_{j-1}^T, all blocks at
  once: O(n B^2).
  """
  factor_bands = tf.convert_to_tensor(factor_bands)
  n, b = check_bands(factor_bands)
  block = block_size_for(n, b, block_size)
  diag_blocks, sub_blocks = to_blocks(factor_bands, block)
  previous = shift_blocks(diag_blocks, -1)
  a = (tf.matmul(diag_blocks, diag_blocks, adjoint_b=True)
       + tf.matmul(sub_blocks, sub_blocks, adjoint_b=True))
  e = tf.matmul(sub_blocks, previous, adjoint_b=True)
  return from_blocks(a, e, n, b)
