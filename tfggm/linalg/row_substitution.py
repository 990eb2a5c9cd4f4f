"""Row-by-row substitution for banded triangular systems, vectorized across the batch (XLA-compiled)."""

from __future__ import annotations

import tensorflow as tf

from tfggm.linalg.bands import check_bands, shift_rows
from tfggm.linalg.compilation import xla_kernel

__all__ = ["row_substitution"]


@xla_kernel
def row_substitution(bands: tf.Tensor, rhs: tf.Tensor, transpose: bool, lags: tuple[int, ...]) -> tf.Tensor:
  """Solves L y = rhs (or L^T y = rhs) one row at a time, all matrices and columns at once.

  ```none
  L y = x:    y_i = (x_i - sum_{k=1..b} L[i, i-k] y_{i-k}) / L_ii      i = 0 .. n-1
  L^T y = x:  y_j = (x_j - sum_{k=1..b} L[j+k, j] y_{j+k}) / L_jj      j = n-1 .. 0
  ```

  where k runs over the lags of the rows of `bands`. n sequential steps, each a
  dot product over the len(lags) - 1 off-diagonal lags for every matrix and
  column: O(n R r) flops per matrix, the arithmetic of the band itself. The
  batch is the vector axis (time-major layout [n, ..., lanes]) and the last b
  solutions ride along as a window, so a step touches O(b lanes) memory. The
  transposed system is the same recurrence run backwards on the rows shifted
  left by their lags, `bands[j, i + lags[j]]`.

  Args:
    bands: L at the given lags, [lanes, R, n] (batch already flattened).
    rhs: [lanes, n, r].
    transpose: solve with L^T.
    lags: the lag of each row of bands (see `tfggm.linalg.bands`); b = lags[-1].

  Returns:
    y, [lanes, n, r].
  """
  n, _ = check_bands(bands)
  b = lags[-1]
  if b == 0:
    return rhs / bands[:, 0, :, tf.newaxis]
  coefficients = shift_rows(bands, -1, lags) if transpose else bands  # coefficient of y_{i -/+ k}
  coefficients = tf.transpose(coefficients, [2, 1, 0])  # [n, b + 1, lanes]
  x = tf.transpose(rhs, [1, 0, 2])  # [n, lanes, r]
  single_column = rhs.shape[-1] == 1  # then lanes is the innermost axis: about 30% faster
  x = x[..., 0] if single_column else x
  coefficients = coefficients if single_column else coefficients[..., tf.newaxis]
  if transpose:
    coefficients, x = tf.reverse(coefficients, [0]), tf.reverse(x, [0])
  diagonal = coefficients[:, 0]
  lagged = tf.reverse(coefficients[:, 1:], [1])  # lagged[i, m] multiplies window[positions[m]]
  positions = [b - k for k in reversed(lags[1:])]  # window[b - k] holds y_{i-k}
  every_position = positions == list(range(b))

  def step(i, window, solutions):
    terms = window if every_position else tf.gather(window, positions, axis=0)
    y_i = (x[i] - tf.reduce_sum(lagged[i] * terms, axis=0)) / diagonal[i]
    return i + 1, tf.concat([window[1:], y_i[tf.newaxis]], axis=0), solutions.write(i, y_i)

  window = tf.zeros(tf.concat([[b], tf.shape(x)[1:]], 0), x.dtype)
  solutions = tf.TensorArray(x.dtype, size=n, element_shape=x.shape[1:])
  _, _, solutions = tf.while_loop(lambda i, *_: i < n, step, (tf.constant(0), window, solutions),
                                  maximum_iterations=n)
  y = solutions.stack()
  if transpose:
    y = tf.reverse(y, [0])
  y = y[..., tf.newaxis] if single_column else y
  return tf.transpose(y, [1, 0, 2])
