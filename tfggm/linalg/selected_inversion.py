"""Selected inversion: the band of the covariance Sigma = (L L^T)^{-1} from the bands of L."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg.bands import check_bands
from tfggm.linalg.blocks import block_size_for, from_blocks, scan_blocks, to_blocks

__all__ = ["selected_inversion"]


def selected_inversion(factor_bands: tf.Tensor, bandwidth: int | None = None,
                       block_size: int | None = None) -> tf.Tensor:
  """Entries of Sigma = (L L^T)^{-1} within a band, without forming Sigma.

  Takahashi's recursion: L^T Sigma = L^{-1} is lower triangular with diagonal
  1 / L_ii, so for j >= i

  ```none
  Sigma_ij = (delta_ij / L_ii - sum_{k=i+1..i+b} L_ki Sigma_kj) / L_ii
  ```

  and every Sigma_kj it needs lies in the band. Blockwise (blocks of B >= b,
  D_j diagonal and C_j sub-diagonal blocks of L), block row i of L^T Sigma = L^{-1}
  reads `D_i^T Sigma_{i,j} + C_{i+1}^T Sigma_{i+1,j} = [i == j] D_i^{-1}`, so with
  F_i = D_i^{-T} C_{i+1}^T:

  ```none
  Sigma_{i,i}   = D_i^{-T} D_i^{-1} + F_i Sigma_{i+1,i+1} F_i^T     i = m-1 .. 0
  Sigma_{i+1,i} = -Sigma_{i+1,i+1} F_i^T
  ```

  m sequential steps of B x B dense work: O(n B^2) = O(n b^2) for B ~ b; exact.

  Args:
    factor_bands: bands of L, [..., b + 1, n].
    bandwidth: the band of Sigma to return, b' >= b (default b). A wider band is
      what tr(P_2 Sigma_1) needs when P_2 is wider than L_1.
    block_size: B >= b' (default: `block_size_for(n, b')`).

  Returns:
    `sigma_bands[..., k, i] = Sigma[i, i - k]`, [..., b' + 1, n].
  """
  factor_bands = tf.convert_to_tensor(factor_bands)
  n, b = check_bands(factor_bands)
  bandwidth = b if bandwidth is None else bandwidth
  if bandwidth < b:
    raise ValueError(f"bandwidth {bandwidth} must be >= the factor's bandwidth {b}.")
  if bandwidth > b:
    rank = factor_bands.shape.rank
    factor_bands = tf.pad(factor_bands, [[0, 0]] * (rank - 2) + [[0, bandwidth - b], [0, 0]])
  block = block_size_for(n, bandwidth, block_size)
  diag_blocks, sub_blocks = to_blocks(factor_bands, block)
  identity = tf.eye(block, dtype=factor_bands.dtype)
  diag_inverse = tf.linalg.triangular_solve(diag_blocks, tf.broadcast_to(identity, tf.shape(diag_blocks)),
                                            lower=True)
  f = tf.linalg.matrix_transpose(tf.matmul(sub_blocks[..., 1:, :, :], diag_inverse[..., :-1, :, :]))  # F_0..F_{m-2}
  q = tf.matmul(diag_inverse, diag_inverse, adjoint_a=True)
  zero_block = tf.zeros_like(q[..., :1, :, :])

  def step(sigma_next, blocks):
    f_i, q_i = blocks
    return q_i + tf.matmul(tf.matmul(f_i, sigma_next), f_i, adjoint_b=True)

  # Sigma_{m-1,m-1} = Q_{m-1} starts the recursion (F_{m-1} = 0 is never used).
  sigma_diag = scan_blocks(step, lambda blocks: blocks[1], (tf.concat([f, zero_block], -3), q), reverse=True)
  sigma_below = tf.concat([zero_block, -tf.matmul(sigma_diag[..., 1:, :, :], f, adjoint_b=True)], -3)
  return from_blocks(sigma_diag, sigma_below, n, bandwidth)
