"""Selected inversion: the band of the covariance Sigma = (L L^T)^{-1} from the bands of L."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg._bands import check_bands
from tfggm.linalg._blocks import block_size_for, from_blocks, scan_blocks, shift_blocks, to_blocks
from tfggm.linalg._compilation import gradient_differentiated_by, with_gradient, xla_kernel
from tfggm.linalg._row_selected_inversion import row_selected_inversion, row_selected_inversion_adjoint

SELECTED_INVERSION_ALGORITHMS = ("rows", "blocks")
# "rows" carries a b' x b' window of Sigma per matrix, all lanes at once, moved by one row and column per step; past
# this many elements in all (128 lanes x 28^2) it leaves the cache, and past this b' one matrix's window costs more to
# move than the blocks' matmuls: "blocks" wins. Measured, forward + gradient (2 busy cores, rough): 1 x 784 x
# b = 28, float64: rows 2.8 ms, blocks 6.6; 1 x 16384 x 28: 46 vs 91; 128 x 784 x 28, float32 (100,352 elements):
# rows 873, blocks 608.
# Variance (forward, float32, quiet): 1 x 784 x 28: rows 0.7 ms, blocks 1.4; 1 x 784 x 256: rows 34, blocks 6.
ROWS_MAX_WINDOW_ELEMENTS = 2**16
ROWS_MAX_BANDWIDTH = 32


def selected_inversion_algorithm_for(num_lanes: int | None, bandwidth: int, algorithm: str | None = None) -> str:
  """"rows" unless b' > `ROWS_MAX_BANDWIDTH` or the windows of all lanes, num_lanes b'^2 elements, exceed
  `ROWS_MAX_WINDOW_ELEMENTS`. An unknown number of lanes (a Keras batch of None) counts as few: "rows"."""
  if algorithm is None:
    wide = bandwidth > ROWS_MAX_BANDWIDTH or (num_lanes is not None and num_lanes * bandwidth**2
                                               > ROWS_MAX_WINDOW_ELEMENTS)
    return "blocks" if wide else "rows"
  if algorithm not in SELECTED_INVERSION_ALGORITHMS:
    raise ValueError(f"algorithm must be one of {SELECTED_INVERSION_ALGORITHMS} or None; got {algorithm!r}.")
  return algorithm


def selected_inversion(factor_bands: tf.Tensor, bandwidth: int | None = None,
                       block_size: int | None = None, algorithm: str | None = None) -> tf.Tensor:
  """Entries of Sigma = (L L^T)^{-1} within a band, without forming Sigma.

  Takahashi's recursion: L^T Sigma = L^{-1} is lower triangular with diagonal
  1 / L_ii, so for j >= i

  ```none
  Sigma_ij = (delta_ij / L_ii - sum_{k=i+1..i+b} L_ki Sigma_kj) / L_ii
  ```

  and every Sigma_kj it needs lies in the band. Two algorithms:

  - "rows": one row of Sigma per step of a compiled loop, the batch as the
    vector lanes (`row_selected_inversion`): O(n b b'). Its gradient is the
    adjoint recursion, O(n b b') (`row_selected_inversion_adjoint`); second
    and higher derivatives go through the gradient of "blocks".
  - "blocks" (blocks of B >= b', D_j diagonal and C_j sub-diagonal blocks of
    L): block row i of L^T Sigma = L^{-1} reads
    `D_i^T Sigma_{i,j} + C_{i+1}^T Sigma_{i+1,j} = [i == j] D_i^{-1}`, so with
    F_i = D_i^{-T} C_{i+1}^T

    ```none
    Sigma_{i,i}   = D_i^{-T} D_i^{-1} + F_i Sigma_{i+1,i+1} F_i^T     i = m-1 .. 0
    Sigma_{i+1,i} = -Sigma_{i+1,i+1} F_i^T
    ```

    m sequential steps of B x B dense work: O(n B^2) = O(n b^2) for B ~ b.

  Both are exact.

  Args:
    factor_bands: bands of L, [..., b + 1, n].
    bandwidth: the band of Sigma to return, b' >= b (default b). A wider band is
      what tr(P_2 Sigma_1) needs when P_2 is wider than L_1.
    block_size: B >= b' for "blocks" (default: `block_size_for(n, b')`).
    algorithm: "rows", "blocks", or None to choose by batch size and b' (`selected_inversion_algorithm_for`).

  Returns:
    `sigma_bands[..., k, i] = Sigma[i, i - k]`, [..., b' + 1, n].
  """
  factor_bands = tf.convert_to_tensor(factor_bands)
  n, b = check_bands(factor_bands)
  bandwidth = b if bandwidth is None else bandwidth
  if bandwidth < b:
    raise ValueError(f"bandwidth {bandwidth} must be >= the factor's bandwidth {b}.")
  block = block_size_for(n, bandwidth, block_size)
  if selected_inversion_algorithm_for(factor_bands.shape[:-2].num_elements(), bandwidth, algorithm) == "rows":
    return _row_inversion(factor_bands, bandwidth)
  if bandwidth > b:
    rank = factor_bands.shape.rank
    factor_bands = tf.pad(factor_bands, [[0, 0]] * (rank - 2) + [[0, bandwidth - b], [0, 0]])
  sigma_diag, f = _covariance_diagonal_blocks(factor_bands, block)
  zero_block = tf.zeros_like(sigma_diag[..., :1, :, :])
  sigma_below = tf.concat([zero_block, -tf.matmul(sigma_diag[..., 1:, :, :], f, adjoint_b=True)], -3)
  return from_blocks(sigma_diag, sigma_below, n, bandwidth)


def marginal_variances(factor_bands: tf.Tensor, block_size: int | None = None, algorithm: str | None = None
                       ) -> tf.Tensor:
  """diag(Sigma) = diag((L L^T)^{-1}), [..., n]: row 0 of `selected_inversion`'s band b.

  "blocks" skips the blocks below the diagonal and the return to compact
  bands: O(n B^2). "rows" computes the band b: O(n b^2). Exact.
  """
  factor_bands = tf.convert_to_tensor(factor_bands)
  n, b = check_bands(factor_bands)
  block = block_size_for(n, b, block_size)
  if selected_inversion_algorithm_for(factor_bands.shape[:-2].num_elements(), b, algorithm) == "rows":
    return _row_inversion(factor_bands, b)[..., 0, :]
  sigma_diag, _ = _covariance_diagonal_blocks(factor_bands, block)
  diagonal = tf.linalg.diag_part(sigma_diag)  # [..., m, B]
  return tf.reshape(diagonal, tf.concat([tf.shape(diagonal)[:-2], [-1]], 0))[..., :n]


def _row_inversion(factor_bands: tf.Tensor, bandwidth: int) -> tf.Tensor:
  """"rows": `row_selected_inversion` over the flattened batch, with the adjoint recursion as its gradient.

  A diagonal L (b = 0) needs no recursion: Sigma = diag(1 / L_ii^2).
  """
  _, b = check_bands(factor_bands)
  rank = factor_bands.shape.rank
  if b == 0:
    return tf.pad(tf.math.reciprocal(tf.square(factor_bands)), [[0, 0]] * (rank - 2) + [[0, bandwidth], [0, 0]])

  second_order = gradient_differentiated_by(
      lambda bands: selected_inversion(bands, bandwidth=bandwidth, algorithm="blocks"))

  def vjp(inputs, sigma, d_sigma):
    (bands,) = inputs
    d_bands = _over_lanes(row_selected_inversion_adjoint, bands, sigma, d_sigma)
    return (with_gradient(d_bands, (bands, d_sigma), second_order),)

  sigma = _over_lanes(lambda bands: row_selected_inversion(bands, bandwidth), factor_bands)
  return with_gradient(sigma, (factor_bands,), vjp)


def _over_lanes(kernel, *bands: tf.Tensor) -> tf.Tensor:
  """`kernel` on bands [..., R, n] with the batch flattened into lanes [lanes, R, n], the result reshaped back."""
  batch = tf.shape(bands[0])[:-2]
  flat = [tf.reshape(x, tf.concat([[-1], tf.shape(x)[-2:]], 0)) for x in bands]
  result = kernel(*flat)
  return tf.reshape(result, tf.concat([batch, tf.shape(result)[-2:]], 0))


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

  For f = F_0..F_{m-2} [..., m - 1, B, B] and q [..., m, B, B] (the same batch
  shape): `congruences` run backward in i. O(m B^3); one block (m = 1) is
  S = Q, without a loop.
  """
  f, q = tf.convert_to_tensor(f), tf.convert_to_tensor(q)
  if q.shape[-3] == 1:
    return q
  return congruences(tf.concat([f, tf.zeros_like(q[..., :1, :, :])], -3), q, reverse=True)


def congruences(f: tf.Tensor, q: tf.Tensor, reverse: bool) -> tf.Tensor:
  """The congruence recursion over blocks [..., m, B, B], backward (`reverse`) or forward in i.

  ```none
  reverse:  S_{m-1} = Q_{m-1},  S_i = Q_i + F_i S_{i+1} F_i^T      i = m-2 .. 0   (F_{m-1} unused)
  forward:  S_0 = Q_0,          S_i = Q_i + F_i S_{i-1} F_i^T      i = 1 .. m-1   (F_0 unused)
  ```

  m - 1 steps of an XLA-compiled loop (a loop step as graph ops costs
  ~0.1 ms). The gradient is the same recursion in the other direction,
  with the F transposed and shifted by one block: for `reverse`, G_i, the
  total d loss / d S_i, is

  ```none
  G_0 = dS_0,   G_i = dS_i + F_{i-1}^T G_{i-1} F_{i-1}               (forward, F'_i = F_{i-1}^T)
  dQ_i = G_i,   dF_i = G_i F_i S_{i+1}^T + G_i^T F_i S_{i+1}          (S_m = 0)
  ```

  and mirrored (F'_i = F_{i+1}^T, S_{i-1}, S_{-1} = 0) for the forward
  recursion. O(m B^3) each way. That gradient calls this function again and
  sees S as a function of (F, Q) (`with_gradient`): derivatives of every order.
  """
  neighbour = +1 if reverse else -1  # S_{i+1} or S_{i-1} enters S_i

  def vjp(inputs, s, ds):
    f, _ = inputs
    adjoint_f = tf.linalg.matrix_transpose(shift_blocks(f, -neighbour))  # F'_i = F_{i-1}^T (reverse)
    g = congruences(adjoint_f, ds, not reverse)
    s_neighbour = shift_blocks(s, neighbour)
    d_f = (tf.matmul(tf.matmul(g, f), s_neighbour, adjoint_b=True)
           + tf.matmul(tf.matmul(g, f, adjoint_a=True), s_neighbour))
    return d_f, g

  s = _congruence_loop(tf.stop_gradient(f), tf.stop_gradient(q), reverse)
  return with_gradient(s, (f, q), vjp)


@xla_kernel
def _congruence_loop(f: tf.Tensor, q: tf.Tensor, reverse: bool) -> tf.Tensor:
  """The loop of `congruences`: carry S_{i+1} (reverse) or S_{i-1}, S_i = Q_i + F_i carry F_i^T."""
  def step(s_neighbour, blocks):
    f_i, q_i = blocks
    return q_i + tf.matmul(tf.matmul(f_i, s_neighbour), f_i, adjoint_b=True)

  return scan_blocks(step, lambda blocks: blocks[1], (f, q), reverse=reverse)
