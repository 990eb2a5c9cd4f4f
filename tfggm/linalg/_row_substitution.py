"""Row-by-row substitution for banded triangular systems, vectorized across the batch (XLA-compiled)."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg._bands import check_bands, is_every_lag
from tfggm.linalg._compilation import xla_kernel


@xla_kernel
def row_substitution(bands: tf.Tensor, rhs: tf.Tensor, transpose: bool, lags: tuple[int, ...]) -> tf.Tensor:
  """Solves L y = rhs (or L^T y = rhs) one row at a time, all matrices and columns at once.

  Both directions read L row by row, `bands[:, i] = (L[i, i - k])_k`, the
  layout the bands are stored in:

  ```none
  L y = x:    y_i = (x_i - sum_k L[i, i-k] y_{i-k}) / L_ii          i = 0 .. n-1  (dot product)
  L^T y = x:  y_i = (x_i - w_i) / L_ii,  then w_{i-k} += L[i, i-k] y_i     i = n-1 .. 0  (axpy)
  ```

  where k runs over the off-diagonal lags of `bands`. n sequential steps of
  O(R r) work per matrix: O(n R r) flops, the arithmetic of the band itself.
  The batch is the vector axis: the rows of L are laid out time-major,
  [R, n, lanes], by one 2-D transpose (the only pass over the bands besides
  the loop's own read), and the last b solutions (L y = x) or the next b
  pending sums w (L^T y = x) ride along as a window of O(b lanes) memory.

  Args:
    bands: L at the given lags, [lanes, R, n] (batch already flattened).
    rhs: [lanes, n, r].
    transpose: solve with L^T.
    lags: the lag of each row of bands (see `tfggm.linalg._bands`); b = lags[-1].

  Returns:
    y, [lanes, n, r].
  """
  n, _ = check_bands(bands)
  num_rows, b = len(lags), lags[-1]
  if b == 0:
    return rhs / bands[:, 0, :, tf.newaxis]
  single_column = rhs.shape[-1] == 1  # then lanes is the innermost axis: about 30% faster
  rows = tf.reshape(tf.transpose(tf.reshape(bands, [-1, num_rows * n])), [num_rows, n, -1])  # [R, n, lanes]
  x = tf.transpose(rhs[..., 0]) if single_column else tf.transpose(rhs, [1, 0, 2])  # [n, lanes(, r)]
  rows = rows if single_column else rows[..., tf.newaxis]
  if transpose:
    rows, x = tf.reverse(rows, [1]), tf.reverse(x, [0])  # step t solves for y_{n-1-t}
  diagonal, lagged = rows[0], rows[1:]
  full_band = is_every_lag(lags)

  def dot_step(i, window):
    """window[k - 1] = y_{i-k}."""
    terms = window if full_band else tf.gather(window, [k - 1 for k in lags[1:]], axis=0)
    y_i = (x[i] - tf.reduce_sum(lagged[:, i] * terms, axis=0)) / diagonal[i]
    return y_i, tf.concat([y_i[tf.newaxis], window[:-1]], axis=0)

  def axpy_step(i, window):
    """window[k - 1] = w of the row k steps ahead."""
    y_i = (x[i] - window[0]) / diagonal[i]
    shifted = tf.concat([window[1:], tf.zeros_like(window[:1])], axis=0)
    updates = lagged[:, i] * y_i
    if full_band:
      return y_i, shifted + updates
    return y_i, tf.tensor_scatter_nd_add(shifted, [[k - 1] for k in lags[1:]], updates)

  step = axpy_step if transpose else dot_step

  def body(i, window, solutions):
    y_i, window = step(i, window)
    return i + 1, window, solutions.write(i, y_i)

  window = tf.zeros(tf.concat([[b], tf.shape(x)[1:]], 0), x.dtype)
  solutions = tf.TensorArray(x.dtype, size=n, element_shape=x.shape[1:])
  _, _, solutions = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), window, solutions),
                                  maximum_iterations=n)
  y = solutions.stack()
  if transpose:
    y = tf.reverse(y, [0])
  return tf.transpose(y)[..., tf.newaxis] if single_column else tf.transpose(y, [1, 0, 2])
