"""Takahashi's recursion one row at a time, and its adjoint, vectorized across the batch (XLA-compiled)."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg._bands import check_bands, shift_rows, time_major_columns
from tfggm.linalg._compilation import xla_kernel


@xla_kernel
def row_selected_inversion(bands: tf.Tensor, bandwidth: int) -> tf.Tensor:
  """The band b' of Sigma = (L L^T)^{-1}, one row of Sigma per loop step, all matrices at once.

  With d = L_ii and l = (L[i+1, i], ..., L[i+b, i]) the column of L below its
  diagonal, row i of L^T Sigma = L^{-1} (lower triangular, diagonal 1 / L_ii) gives

  ```none
  u_r = Sigma[i, i+1+r] = -(sum_k l_k Sigma[i+1+k, i+1+r]) / d        r = 0 .. b'-1,  k = 0 .. b-1
  s   = Sigma[i, i]     = (1 / d - sum_k l_k u_k) / d                  i = n-1 .. 0
  ```

  Every Sigma entry on the right lies in the window M = Sigma[i+1 .. i+b', i+1 .. i+b'],
  a dense b' x b' block carried from row to row: row i enters it as its first row
  and column, the last row and column leave. O(b b') flops and O(b'^2) moves per
  row: O(n b b'). The batch is the vector axis (lanes), time-major like
  `row_substitution`.

  Args:
    bands: L, [lanes, b + 1, n] (batch already flattened), b >= 1.
    bandwidth: b' >= b.

  Returns:
    `sigma_bands[:, k, i] = Sigma[i, i - k]`, [lanes, b' + 1, n].
  """
  n, b = check_bands(bands)
  columns = time_major_columns(bands)
  diagonal, below = columns[:, 0], columns[:, 1:]  # d [n, lanes], l [n, b, lanes]

  def body(t, window, rows):
    i = n - 1 - t
    u = -tf.reduce_sum(below[i][:, tf.newaxis] * window[:b], axis=0) / diagonal[i]  # [b', lanes]
    s = (1.0 / diagonal[i] - tf.reduce_sum(below[i] * u[:b], axis=0)) / diagonal[i]
    row = tf.concat([s[tf.newaxis], u], axis=0)  # Sigma[i, i .. i+b']
    inner = tf.concat([u[: bandwidth - 1, tf.newaxis], window[: bandwidth - 1, : bandwidth - 1]], axis=1)
    return t + 1, tf.concat([row[tf.newaxis, :bandwidth], inner], axis=0), rows.write(i, row)

  window = tf.zeros([bandwidth, bandwidth, tf.shape(bands)[0]], bands.dtype)
  rows = tf.TensorArray(bands.dtype, size=n, element_shape=[bandwidth + 1, bands.shape[0]])
  _, _, rows = tf.while_loop(lambda t, *_: t < n, body, (tf.constant(0), window, rows), maximum_iterations=n)
  return shift_rows(tf.transpose(rows.stack(), [2, 1, 0]), +1)  # Sigma[i, i + k] -> sigma_bands[k, i + k]


@xla_kernel
def row_selected_inversion_adjoint(bands: tf.Tensor, sigma_bands: tf.Tensor, d_sigma_bands: tf.Tensor) -> tf.Tensor:
  """d loss / d bands of L for `row_selected_inversion`, given Sigma's band and its cotangent: O(n b b').

  Reverse mode through the rows, run forward (i = 0 .. n-1): row i of Sigma
  feeds only rows i' < i, so at step i the total adjoint of (s, u) is complete.
  G, the adjoint accumulated so far on Sigma[i .. i+b', i .. i+b'] (a dense
  window; G[p, q] and G[q, p] are the same symmetric entry), and the window N of
  Sigma itself, W = N[1 .. b, 1 .. b'], give

  ```none
  s_bar = dSigma[i, i] + G[0, 0]
  u_bar = dSigma[i, i+1 ..] + G[0, 1 ..] + G[1 .., 0] - s_bar l / d          (u's use in s included)
  column_bar = -(s_bar u[:b] + W u_bar) / d
  d_bar = s_bar (l . u[:b] / d^2 - 2 / d^3) - (u_bar . u) / d
  G <- G[1 .., 1 ..] (zero-extended) - l u_bar^T / d   on rows 0 .. b-1   (the adjoint of W)
  ```

  d_bar lands on bands[0, i], column_bar on bands[1 .., i + 1 ..] (the column of L).

  Args:
    bands: L, [lanes, b + 1, n], b >= 1.
    sigma_bands: Sigma's band, [lanes, b' + 1, n].
    d_sigma_bands: its cotangent, [lanes, b' + 1, n].

  Returns:
    d loss / d bands, [lanes, b + 1, n].
  """
  n, b = check_bands(bands)
  bandwidth = int(sigma_bands.shape[-2]) - 1
  columns = time_major_columns(bands)
  diagonal, below = columns[:, 0], columns[:, 1:]
  d_rows = time_major_columns(d_sigma_bands)  # d_rows[i, k] = dSigma[i, i + k]
  # Sigma's band, time-major and padded by b' + 1 rows of zeros: the window's next row and column at step i.
  sigma = tf.pad(tf.transpose(sigma_bands, [2, 1, 0]), [[0, bandwidth + 1], [0, 0], [0, 0]])

  def body(i, window, adjoint, d_columns):
    d, column = diagonal[i], below[i]
    u, w = window[0, 1:], window[1: b + 1, 1:]
    column_dot_u = tf.reduce_sum(column * u[:b], axis=0)
    d_row = d_rows[i]  # one index, then slices: d_rows[i, 1:] lost its static shape and read zeros under XLA
    s_bar = d_row[0] + adjoint[0, 0]
    u_bar = d_row[1:] + adjoint[0, 1:] + adjoint[1:, 0] - tf.pad(s_bar * column / d, [[0, bandwidth - b], [0, 0]])
    column_bar = -(s_bar * u[:b] + tf.reduce_sum(w * u_bar[tf.newaxis], axis=1)) / d
    d_bar = (s_bar * (column_dot_u - 2.0 / d) / d - tf.reduce_sum(u_bar * u, axis=0)) / d
    w_bar = tf.pad(-column[:, tf.newaxis] * u_bar[tf.newaxis] / d, [[0, bandwidth + 1 - b], [0, 1], [0, 0]])
    adjoint = tf.pad(adjoint[1:, 1:], [[0, 1], [0, 1], [0, 0]]) + w_bar
    entering = tf.reverse(sigma[i + bandwidth + 1], [0])  # Sigma[i+1+b', i+1 .. i+1+b']
    window = tf.concat([tf.concat([window[1:, 1:], entering[:-1, tf.newaxis]], axis=1), entering[tf.newaxis]], 0)
    return i + 1, window, adjoint, d_columns.write(i, tf.concat([d_bar[tf.newaxis], column_bar], axis=0))

  window = _first_window(sigma, bandwidth)
  adjoint = tf.zeros_like(window)
  d_columns = tf.TensorArray(bands.dtype, size=n, element_shape=[b + 1, bands.shape[0]])
  _, _, _, d_columns = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), window, adjoint, d_columns),
                                     maximum_iterations=n)
  return shift_rows(tf.transpose(d_columns.stack(), [2, 1, 0]), +1)  # column i of L -> bands[k, i + k]


def _first_window(sigma: tf.Tensor, bandwidth: int) -> tf.Tensor:
  """Sigma[0 .. b', 0 .. b'], dense [b' + 1, b' + 1, lanes], from Sigma's band time-major [n + ..., b' + 1, lanes]:
  Sigma[p, q] = sigma[max(p, q), |p - q|]."""
  indices = [[[max(p, q), abs(p - q)] for q in range(bandwidth + 1)] for p in range(bandwidth + 1)]
  return tf.gather_nd(sigma, indices)
