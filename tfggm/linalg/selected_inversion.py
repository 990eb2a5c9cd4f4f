"""Selected inversion: the band of the covariance Sigma = (L L^T)^{-1} from the bands of L."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg.bands import check_bands
from tfggm.linalg.blocks import block_size_for, from_blocks, scan_blocks, shift_blocks, to_blocks
from tfggm.linalg.compilation import xla_kernel

__all__ = ["selected_inversion", "marginal_variances", "congruence_recursion"]


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
  sigma_diag, f = _covariance_diagonal_blocks(factor_bands, block_size_for(n, bandwidth, block_size))
  zero_block = tf.zeros_like(sigma_diag[..., :1, :, :])
  sigma_below = tf.concat([zero_block, -tf.matmul(sigma_diag[..., 1:, :, :], f, adjoint_b=True)], -3)
  return from_blocks(sigma_diag, sigma_below, n, bandwidth)


def marginal_variances(factor_bands: tf.Tensor, block_size: int | None = None) -> tf.Tensor:
  """diag(Sigma) = diag((L L^T)^{-1}), [..., n]: the recursion of `selected_inversion` without the
  blocks below the diagonal and the return to compact bands: O(n B^2), exact."""
  factor_bands = tf.convert_to_tensor(factor_bands)
  n, b = check_bands(factor_bands)
  sigma_diag, _ = _covariance_diagonal_blocks(factor_bands, block_size_for(n, b, block_size))
  diagonal = tf.linalg.diag_part(sigma_diag)  # [..., m, B]
  return tf.reshape(diagonal, tf.concat([tf.shape(diagonal)[:-2], [-1]], 0))[..., :n]


def _covariance_diagonal_blocks(factor_bands: tf.Tensor, block: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(Sigma_{i,i} [..., m, B, B], F_i [..., m - 1, B, B]) of the block recursion of `selected_inversion`.

  The batched triangular solves and products run as TensorFlow ops; only the
  sequential recursion (matmuls) is a compiled loop (`congruence_recursion`).
  """
  diag_blocks, sub_blocks = to_blocks(factor_bands, block)
  identity = tf.eye(block, dtype=factor_bands.dtype)
  diag_inverse = tf.linalg.triangular_solve(diag_blocks, tf.broadcast_to(identity, tf.shape(diag_blocks)),
                                            lower=True)
  f = tf.linalg.matrix_transpose(tf.matmul(sub_blocks[..., 1:, :, :], diag_inverse[..., :-1, :, :]))  # F_0..F_{m-2}
  q = tf.matmul(diag_inverse, diag_inverse, adjoint_a=True)
  return congruence_recursion(f, q), f


def congruence_recursion(f: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
  """S [..., m, B, B] with S_{m-1} = Q_{m-1} and S_i = Q_i + F_i S_{i+1} F_i^T (i = m-2 .. 0).

  For f = F_0..F_{m-2} [..., m - 1, B, B] and q [..., m, B, B]. The m - 1
  steps are an XLA-compiled loop (a loop step as graph ops costs ~0.1 ms),
  with a custom gradient that is the adjoint recursion, forward in i:

  ```none
  G_0 = dS_0,   G_i = dS_i + F_{i-1}^T G_{i-1} F_{i-1}      (G_i: d loss / d S_i in total)
  dQ_i = G_i,   dF_i = G_i F_i S_{i+1}^T + G_i^T F_i S_{i+1}
  ```

  O(m B^3) each way. f and q have the same batch shape. One block (m = 1)
  is S = Q, without a loop. Like every compiled kernel here, it is
  differentiable once: a gradient of this gradient is zero.
  """
  f, q = tf.convert_to_tensor(f), tf.convert_to_tensor(q)
  if q.shape[-3] == 1:
    return q
  padded_f = tf.concat([f, tf.zeros_like(q[..., :1, :, :])], -3)  # F_{m-1} = 0: S_{m-1} = Q_{m-1}

  @tf.custom_gradient
  def recursion_with_adjoint(padded_f, q):
    s = _backward_congruences(padded_f, q)

    def gradient(ds):
      g = _forward_adjoint_congruences(padded_f, ds)
      s_next = shift_blocks(s, +1)  # S_{i+1}, zero for the last block
      d_f = (tf.matmul(tf.matmul(g, padded_f), s_next, adjoint_b=True)
             + tf.matmul(tf.matmul(g, padded_f, adjoint_a=True), s_next))
      return d_f, g

    return s, gradient

  return recursion_with_adjoint(padded_f, q)


@xla_kernel
def _backward_congruences(padded_f: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
  def step(s_next, blocks):
    f_i, q_i = blocks
    return q_i + tf.matmul(tf.matmul(f_i, s_next), f_i, adjoint_b=True)

  return scan_blocks(step, lambda blocks: blocks[1], (padded_f, q), reverse=True)


@xla_kernel
def _forward_adjoint_congruences(padded_f: tf.Tensor, ds: tf.Tensor) -> tf.Tensor:
  def step(g_previous, blocks):
    f_previous, ds_i = blocks
    return ds_i + tf.matmul(tf.matmul(f_previous, g_previous, adjoint_a=True), f_previous)

  return scan_blocks(step, lambda blocks: blocks[1], (shift_blocks(padded_f, -1), ds))
