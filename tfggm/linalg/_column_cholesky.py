"""Column-by-column banded Cholesky and its reverse mode, vectorized across the batch (XLA-compiled loops)."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg._bands import check_bands, shift_rows, time_major_columns
from tfggm.linalg._compilation import xla_kernel


def inside(bands: tf.Tensor) -> tf.Tensor:
  """bands [..., b + 1, n] with the entries outside the matrix (bands[k, i], i < k) set to zero."""
  n, b = check_bands(bands)
  is_inside = tf.range(n)[tf.newaxis, :] >= tf.range(b + 1)[:, tf.newaxis]
  return tf.where(is_inside, bands, tf.zeros_like(bands))


def _time_major(bands: tf.Tensor) -> tf.Tensor:
  """[lanes, R, n] <-> [n, R, lanes] (its own inverse)."""
  return tf.transpose(bands, [2, 1, 0])


def _identity(count: int, like: tf.Tensor) -> tf.Tensor:
  """`count` rows (or columns) of the identity in band layout, [count, b + 1, lanes] for `like` [N, b + 1, lanes]."""
  unit = tf.concat([tf.ones_like(like[0, :1]), tf.zeros_like(like[0, 1:])], 0)
  return tf.tile(unit[tf.newaxis], [count, 1, 1])


def _loop(step, num_steps: int, initial: tf.Tensor, element: tf.Tensor) -> tf.Tensor:
  """`carry, out_t = step(t, carry)` for t = 0 .. num_steps-1; returns the outputs stacked, [num_steps, ...]."""
  def body(t, carry, outputs):
    carry, out = step(t, carry)
    return t + 1, carry, outputs.write(t, out)

  outputs = tf.TensorArray(element.dtype, size=num_steps, element_shape=element.shape)
  _, _, outputs = tf.while_loop(lambda t, *_: t < num_steps, body, (tf.constant(0), initial, outputs),
                                maximum_iterations=num_steps)
  return outputs.stack()


@xla_kernel
def column_cholesky(precision_bands: tf.Tensor) -> tf.Tensor:
  """Bands of L, [lanes, b + 1, n], from the lower bands of P = L L^T, one column of L per step.

  Right-looking (LAPACK's unblocked pbtrf): W_j, the b x b block of rows and
  columns j .. j+b-1 of P minus the columns of L before j, takes row j+b of P
  (q = P[j+b, j:j+b], p = P[j+b, j+b]) and gives column j of L:

  ```none
  S = [[W_j, q], [q^T, p]]                                  (b+1) x (b+1)
  L[j, j] = sqrt(S[0, 0]),   l = L[j+1:j+b+1, j] = S[1:, 0] / L[j, j]
  W_{j+1} = S[1:, 1:] - l l^T                               j = -b .. n-1
  ```

  Steps j < 0 start from W_{-b} = I, the identity rows -b .. -1, decoupled
  from the matrix (P[i, i-k] = 0 for i < k), so column j >= 0 sees only P.
  n + b steps of O(b^2) work per lane, none of it a sequential inner loop:
  O(n b^2). The batch is the vector axis (the layout of `row_substitution`).
  """
  n, b = check_bands(precision_bands)
  rows = _time_major(inside(precision_bands))
  rows = tf.concat([rows, tf.zeros_like(rows[:b])], 0)  # row j+b of P, j = -b .. n-1 (rows past n: never pivots)
  reversed_rows = tf.reverse(rows, [1])  # reversed_rows[i, c] = P[i, i-b+c]

  def step(t, window):
    new = reversed_rows[t]  # [q, p]
    s = tf.concat([tf.concat([window, new[:b, tf.newaxis]], 1), new[tf.newaxis]], 0)
    diagonal = tf.sqrt(s[0, 0])
    below = s[1:, 0] / diagonal
    return s[1:, 1:] - below[:, tf.newaxis] * below[tf.newaxis], tf.concat([diagonal[tf.newaxis], below], 0)

  identity = tf.eye(b, dtype=rows.dtype)[:, :, tf.newaxis] * tf.ones_like(rows[0, 0])  # W_{-b}, [b, b, lanes]
  columns = _loop(step, n + b, identity, rows[0])[b:]  # columns[j, k] = L[j+k, j]
  return shift_rows(_time_major(columns), +1)  # bands[k, i] = L[i, i-k] = columns[i-k, k]


@xla_kernel
def column_cholesky_gradient(factor_bands: tf.Tensor, d_factor_bands: tf.Tensor) -> tf.Tensor:
  """d loss / d P (lower bands, [lanes, b + 1, n]) from L and G = d loss / d L: `column_cholesky` in reverse.

  Step j = n-1 .. -b, with V = d loss / d W_{j+1} (b x b) and g the adjoint
  of column j of L (G read by columns; l, L_jj as in the forward):

  ```none
  l_bar   = g[1:] - (V + V^T) l                             (W_{j+1} = S[1:, 1:] - l l^T)
  S_bar   = [[(g[0] - l_bar.l / L_jj) / (2 L_jj), 0], [l_bar / L_jj, V]]
  d W_j   = S_bar[:b, :b],     d P[j+b, j:j+b+1] = S_bar[b]
  ```

  (the unblocked reverse mode of Murray 2016, "Differentiation of the Cholesky
  decomposition", on the band). The forward reads only the lower triangle of
  S, so V and S_bar are lower triangular, and each band entry of P, which
  stands for both P[i, j] and P[j, i], gets its gradient from S_bar[b] alone.
  The loop carries the symmetric U = V + V^T (no transpose per step; V is
  its strict lower triangle and half its diagonal). n + b steps of O(b^2)
  per lane: O(n b^2).
  """
  n, b = check_bands(factor_bands)
  columns = time_major_columns(factor_bands)  # columns[j, k] = L[j+k, j]; the left shift reads no entry outside
  d_columns = time_major_columns(d_factor_bands)
  columns = tf.concat([_identity(b, columns), columns], 0)  # columns[j + b], j = -b .. n-1
  d_columns = tf.concat([tf.zeros_like(columns[:b]), d_columns], 0)

  def step(t, sym):
    """sym = U = V + V^T."""
    j_plus_b = n + b - 1 - t
    column, d_column = columns[j_plus_b], d_columns[j_plus_b]
    diagonal, below = column[0], column[1:]
    d_below = d_column[1:] - tf.reduce_sum(sym * below[:, tf.newaxis], 0)
    d_corner = (d_column[0] - tf.reduce_sum(d_below * below, 0) / diagonal) / (2 * diagonal)
    first = tf.concat([d_corner[tf.newaxis], d_below / diagonal], 0)  # S_bar[:, 0]
    new_row = tf.concat([first[b:], sym[b - 1, :b - 1], sym[b - 1, b - 1:] / 2], 0)  # S_bar[b] = [., V[b-1]]
    edge = tf.concat([2 * first[:1], first[1:b]], 0)  # U_j[:, 0] = U_j[0, :]
    return tf.concat([edge[tf.newaxis], tf.concat([edge[1:, tf.newaxis], sym[:b - 1, :b - 1]], 1)], 0), new_row

  sym = tf.zeros([b, b, 1], columns.dtype) + tf.zeros_like(columns[0, 0])  # nothing reads W_n
  rows = tf.reverse(_loop(step, n + b, sym, columns[0]), [0, 1])[:n]  # step t: row n+b-1-t, by c = b - lag
  return _time_major(rows)  # zero outside the matrix: columns j < 0 get no adjoint
