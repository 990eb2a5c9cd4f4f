"""Elementwise and shift operations on the compact band layout of a lower-triangular L.

The layout stores one row per lag: `bands[..., j, i] = L[i, i - lags[j]]`.
By default `lags = (0, 1, ..., b)`, every diagonal of the band (the layout of
`tf.linalg.banded_triangular_solve`). A sparse stencil may keep only its
active lags, e.g. `(0, 1, w)` for a grid of width w: the kernels below then
read and compute len(lags) rows instead of b + 1 (3 instead of 29 on 28 x 28).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfggm.linalg._compilation import with_gradient, xla_kernel

# Smaller matvecs run as plain ops (see `xla_kernel`): a few ops per lag, cheaper than launching a compiled cluster
# for a VAE's latents (n = 16, batch 32: 512 elements), dearer from a few thousand elements (n = 784, b = 28).
PLAIN_BELOW_ELEMENTS = 2**12


def check_bands(bands: tf.Tensor) -> tuple[int, int]:
  """Returns (n, b) of compact bands [..., b + 1, n], which must be static, with n >= 1 and at least one row."""
  shape = bands.shape
  if shape.rank is None or shape.rank < 2 or shape[-1] is None or shape[-2] is None:
    raise ValueError(
        f"Compact bands need a static shape [..., b + 1, n]; got {shape}.")
  if shape[-1] < 1 or shape[-2] < 1:
    raise ValueError(f"Compact bands [..., b + 1, n] need n >= 1 and at least the diagonal row; got shape {shape}.")
  return int(shape[-1]), int(shape[-2]) - 1


def resolve_lags(bands: tf.Tensor, lags=None) -> tuple[int, ...]:
  """The lags of the rows of `bands` [..., R, n]: (0, 1, ..., R - 1) if None.

  Raises:
    ValueError: unless lags has R strictly increasing integers (int or numpy integers, not bools) starting at 0.
  """
  num_rows = int(bands.shape[-2])
  if lags is None:
    return tuple(range(num_rows))
  integers = isinstance(lags, Sequence | np.ndarray) and all(
      isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in lags)
  lags = tuple(int(k) for k in lags) if integers else lags
  if (not integers or len(lags) != num_rows or tuple(lags[:1]) != (0,)
      or any(a >= b for a, b in zip(lags, lags[1:]))):
    raise ValueError(f"lags must be {num_rows} strictly increasing integers starting at 0 (one per row of bands "
                     f"of shape {bands.shape}); got {lags!r}.")
  return lags


def check_vector(owner: str, what: str, x: tf.Tensor, n: int, batch_shape: tf.TensorShape,
                 validate_args: bool) -> list:
  """Checks a vector argument x [..., n] (a point, a mean, scales) against an event size n and a batch shape.

  x is not broadcast along the event: its last dimension must be n. Its other dimensions (sample and
  batch dimensions) must broadcast with `batch_shape`, right-aligned.

  Returns:
    the run-time assertion of x's width when it is not static and `validate_args`, else [].

  Raises:
    ValueError: naming the shapes, when the static shapes show a mismatch.
  """
  shape = x.shape
  if shape.rank == 0 or (shape.rank is not None and shape[-1] not in (None, n)):
    raise ValueError(f"{owner}: {what} must have shape [..., {n}] (event size n = {n}); got shape {shape}.")
  try:
    tf.broadcast_static_shape(shape[:-1], batch_shape)
  except ValueError:
    raise ValueError(f"{owner}: {what} of shape {shape} does not broadcast with the batch shape {batch_shape} "
                     f"(its dimensions before the event, {shape[:-1]}, must).") from None
  if validate_args and (shape.rank is None or shape[-1] is None):
    return [tf.debugging.assert_equal(tf.shape(x)[-1], n, message=f"{owner}: {what} must have shape [..., {n}] "
                                                                    f"(event size n = {n})")]
  return []


def assert_finite(x: tf.Tensor, message: str):
  """The assertion that x has no NaN or Inf entry. Like TFP's assertions (and unlike `tf.debugging.assert_all_finite`)
  it is None in eager mode once passed, so that a bijector built eagerly can still run in a tf.function."""
  return tf.debugging.assert_equal(tf.reduce_all(tf.math.is_finite(x)), True, message=message)


def factor_assertions(owner: str, bands: tf.Tensor) -> list:
  """Run-time checks of the bands of L: every entry finite, the diagonal (row 0) positive."""
  return [
      assert_finite(bands, f"{owner}: precision_factor_bands has NaN or Inf entries"),
      tf.debugging.assert_positive(bands[..., 0, :], message=f"{owner}: the diagonal of L "
                                                             "(precision_factor_bands[..., 0, :]) must be positive"),
  ]


def is_every_lag(lags: tuple[int, ...]) -> bool:
  """Whether `lags` is 0, 1, ..., b: the full band, with no lag left out."""
  return lags == tuple(range(len(lags)))


def bands_at_every_lag(bands: tf.Tensor, lags=None) -> tf.Tensor:
  """Bands at the given lags [..., R, n] -> the full layout [..., lags[-1] + 1, n] (zeros at other lags).

  One gather, O(n b) memory; the inverse is `tf.gather(full, lags, axis=-2)`.
  """
  bands = tf.convert_to_tensor(bands)
  lags = resolve_lags(bands, lags)
  if is_every_lag(lags):
    return bands
  row_of_lag = {k: j for j, k in enumerate(lags)}
  index = [row_of_lag.get(k, len(lags)) for k in range(lags[-1] + 1)]  # len(lags): a row of zeros
  return tf.gather(tf.concat([bands, tf.zeros_like(bands[..., :1, :])], axis=-2), index, axis=-2)


def shift_rows(x: tf.Tensor, direction: int, lags=None) -> tf.Tensor:
  """Shifts row j of x [..., R, N] by lags[j] places (right if direction > 0, else left).

  ```none
  right: y[..., j, i] = x[..., j, i - lags[j]]   (zero where i < lags[j])
  left:  y[..., j, i] = x[..., j, i + lags[j]]   (zero where i + lags[j] >= N)
  ```

  With the default lags (0, 1, ..., R - 1): a pad, a reshape and a slice (the
  "skew" trick); with sparse lags, one pad and slice per row. No gather, O(R N)
  memory, compiles with XLA.
  """
  num_rows, size = int(x.shape[-2]), int(x.shape[-1])
  rank = x.shape.rank
  lags = resolve_lags(x, lags)
  if not is_every_lag(lags):
    rows = []
    for j, lag in enumerate(lags):
      lag = min(lag, size)
      kept = x[..., j, : size - lag] if direction > 0 else x[..., j, lag:]
      padding = [lag, 0] if direction > 0 else [0, lag]
      rows.append(tf.pad(kept, [[0, 0]] * (rank - 2) + [padding]))
    return tf.stack(rows, axis=-2)
  batch = tf.shape(x)[:-2]
  padded = tf.pad(x, [[0, 0]] * (rank - 2) + [[0, 0], [0, num_rows]])
  flat = tf.reshape(padded, tf.concat([batch, [num_rows * (size + num_rows)]], axis=0))
  if direction > 0:
    # Flat position k (N + R - 1) + j holds x[k, j - k].
    flat = flat[..., : num_rows * (size + num_rows - 1)]
    skewed = tf.reshape(flat, tf.concat([batch, [num_rows, size + num_rows - 1]], axis=0))
  else:
    # Flat position k (N + R + 1) + j holds x[k, j + k].
    flat = tf.pad(flat, [[0, 0]] * (rank - 2) + [[0, num_rows]])
    skewed = tf.reshape(flat, tf.concat([batch, [num_rows, size + num_rows + 1]], axis=0))
  return skewed[..., :size]


def time_major_columns(bands: tf.Tensor) -> tf.Tensor:
  """`columns[i, k] = bands[k, i + k]` (L[i + k, i], zero past n), [n, R, lanes], from bands [lanes, R, n]."""
  return tf.transpose(shift_rows(bands, -1), [2, 1, 0])


def sum_to_shape(x: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
  """Sums x over the dims along which `like`'s shape was broadcast to x's (a gradient's reduction).

  No op at all where both shapes are static and equal, the common case.
  """
  if x.shape.is_fully_defined() and x.shape == like.shape:
    return x
  _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(x), s1=tf.shape(like))
  return tf.reshape(tf.reduce_sum(x, axis=axes), tf.shape(like))


def _lagged(x: tf.Tensor, lag: int) -> tf.Tensor:
  """x shifted `lag` places along the last axis towards higher indices: out[i] = x[i - lag], zero where i < lag."""
  size = int(x.shape[-1])
  lag = min(lag, size)
  return tf.pad(x[..., :size - lag], [[0, 0]] * (x.shape.rank - 1) + [[lag, 0]])


def _leading(x: tf.Tensor, lag: int) -> tf.Tensor:
  """x shifted `lag` places along the last axis towards lower indices: out[i] = x[i + lag], zero past the end."""
  size = int(x.shape[-1])
  lag = min(lag, size)
  return tf.pad(x[..., lag:], [[0, 0]] * (x.shape.rank - 1) + [[0, lag]])


# Up to this many lags, `band_of_outer` stacks one fused product per lag; past it (a band of 64 or 256), one
# product with the columns shifted by every lag at once (measured: n = 784, b = 256, batch 1, sample + log_prob +
# gradient 2.5 ms against 8 ms stacked).
STACKED_MAX_LAGS = 32


@xla_kernel(plain_below=PLAIN_BELOW_ELEMENTS, differentiable=True)
def band_of_outer(rows: tf.Tensor, columns: tf.Tensor, lags: tuple[int, ...]) -> tf.Tensor:
  """The band of rows @ columns^T at the given lags: out[..., j, i] = sum_r rows[i, r] columns[i - lags[j], r].

  O(n len(lags) r) flops and memory, never n x n; the gradient of every banded kernel w.r.t. L has this form.
  Up to `STACKED_MAX_LAGS` lags: for each lag, rows times the columns shifted by it (a slice), summed over r, the
  results stacked, which XLA fuses into one pass writing the [..., R, n] result. More lags: the columns repeated
  and shifted by every lag at once (`shift_rows`), times rows, summed over r. One compiled kernel either way.
  Loop-free, so TensorFlow differentiates it (the second derivatives of the kernels whose gradient it is).
  """
  n = int(rows.shape[-2])
  columns = tf.convert_to_tensor(columns, rows.dtype)
  if len(lags) > STACKED_MAX_LAGS:
    columns_t = tf.linalg.matrix_transpose(columns)[..., tf.newaxis, :]  # [..., r, 1, n]
    lagged = shift_rows(tf.repeat(columns_t, len(lags), axis=-2), +1, lags)  # [..., r, R, n]: columns[i - lags[j]]
    return tf.reduce_sum(lagged * tf.linalg.matrix_transpose(rows)[..., tf.newaxis, :], axis=-3)
  rank = columns.shape.rank

  def lagged_columns(lag: int) -> tf.Tensor:  # columns[i - lag], zero where i < lag
    lag = min(lag, n)
    return tf.pad(columns[..., :n - lag, :], [[0, 0]] * (rank - 2) + [[lag, 0], [0, 0]])

  return tf.stack([tf.reduce_sum(rows * lagged_columns(lag), axis=-1) for lag in lags], axis=-2)


@xla_kernel(plain_below=PLAIN_BELOW_ELEMENTS, differentiable=True)
def _lower_matvec(bands: tf.Tensor, x: tf.Tensor, lags: tuple[int, ...]) -> tf.Tensor:
  """y[i] = sum_j bands[j, i] x[i - lags[j]]: one fused pass over the bands (each lag a slice of x)."""
  return tf.add_n([bands[..., j, :] * _lagged(x, lag) for j, lag in enumerate(lags)])


@xla_kernel(plain_below=PLAIN_BELOW_ELEMENTS, differentiable=True)
def _upper_matvec(bands: tf.Tensor, x: tf.Tensor, lags: tuple[int, ...]) -> tf.Tensor:
  """y[i] = sum_j bands[j, i + lags[j]] x[i + lags[j]]: one fused pass over the bands."""
  return tf.add_n([_leading(bands[..., j, :] * x, lag) for j, lag in enumerate(lags)])


def _band_of_vector_outer(rows: tf.Tensor, columns: tf.Tensor, lags: tuple[int, ...]) -> tf.Tensor:
  return band_of_outer(rows[..., tf.newaxis], columns[..., tf.newaxis], lags)


def _banded_matvec(bands: tf.Tensor, x: tf.Tensor, transpose: bool, lags) -> tf.Tensor:
  """L x or L^T x with a banded gradient (both XLA-compiled kernels).

  ```none
  y = L x:     dx = L^T dy,  dL[i, i-k] = dy_i x_{i-k}
  y = L^T x:   dx = L dy,    dL[i, i-k] = x_i dy_{i-k}
  ```

  The gradient is this function (the other orientation) and `band_of_outer`,
  both differentiable: derivatives of every order stay banded.
  """
  bands = tf.convert_to_tensor(bands)
  x = tf.convert_to_tensor(x, dtype=bands.dtype)
  check_bands(bands)
  lags = resolve_lags(bands, lags)
  forward = _upper_matvec if transpose else _lower_matvec

  def vjp(inputs, unused_y, dy):
    bands, x = inputs
    d_bands = _band_of_vector_outer(x, dy, lags) if transpose else _band_of_vector_outer(dy, x, lags)
    dx = _banded_matvec(bands, dy, not transpose, lags)
    return sum_to_shape(d_bands, bands), sum_to_shape(dx, x)

  return with_gradient(forward(tf.stop_gradient(bands), tf.stop_gradient(x), lags), (bands, x), vjp)


def matvec(bands: tf.Tensor, x: tf.Tensor, lags=None) -> tf.Tensor:
  """y = L x for bands [..., R, n] at `lags` (default 0..R-1) and x [..., n] (batch dims broadcast).

  y[i] = sum_j bands[j, i] * x[i - lags[j]]  --  O(n R), one XLA-compiled
  kernel; the gradient is banded too (`band_of_outer`).
  """
  return _banded_matvec(bands, x, transpose=False, lags=lags)


def matvec_transpose(bands: tf.Tensor, x: tf.Tensor, lags=None) -> tf.Tensor:
  """y = L^T x for bands [..., R, n] at `lags` (default 0..R-1) and x [..., n] (batch dims broadcast).

  y[i] = sum_k L[i + k, i] x[i + k] = sum_j bands[j, i + lags[j]] * x[i + lags[j]]  --  O(n R).
  """
  return _banded_matvec(bands, x, transpose=True, lags=lags)


def log_determinant(bands: tf.Tensor) -> tf.Tensor:
  """log det L = sum_i log L_ii for bands [..., b + 1, n] (positive diagonal): O(n)."""
  bands = tf.convert_to_tensor(bands)
  return tf.reduce_sum(tf.math.log(bands[..., 0, :]), axis=-1)


def matrices_from_diagonals(diagonals: tf.Tensor, low: int, high: int, size: int) -> tf.Tensor:
  """size x size matrices with diagonals low..high; `diagonals[..., i, :]` is diagonal high - i
  (super-diagonals left-aligned, sub-diagonals right-aligned: `tf.linalg.diag`, XLA-compiled)."""
  if low == high:
    diagonals = diagonals[..., 0, :]
  return tf.linalg.diag(diagonals, k=(low, high), num_rows=size, num_cols=size, align="LEFT_RIGHT")


def diagonals_from_matrices(matrices: tf.Tensor, low: int, high: int) -> tf.Tensor:
  """The inverse of `matrices_from_diagonals` (zeros where a diagonal is shorter than the longest)."""
  diagonals = tf.linalg.diag_part(matrices, k=(low, high), align="LEFT_RIGHT")
  return diagonals[..., tf.newaxis, :] if low == high else diagonals


def dense_from_bands(bands: tf.Tensor) -> tf.Tensor:
  """The dense lower-triangular L [..., n, n] of bands at every lag 0..b (`bands_at_every_lag` expands
  others): O(n^2), for inspection and tests. Lag k is sub-diagonal -k."""
  bands = tf.convert_to_tensor(bands)
  n, b = check_bands(bands)
  within = min(b, n - 1)
  return matrices_from_diagonals(bands[..., : within + 1, :], -within, 0, n)


def bands_from_dense(matrix: tf.Tensor, bandwidth: int) -> tf.Tensor:
  """Compact bands [..., b + 1, n] of the lower band of a dense [..., n, n] matrix (zero where i < k)."""
  matrix = tf.convert_to_tensor(matrix)
  n = int(matrix.shape[-1])
  within = min(bandwidth, n - 1)
  bands = diagonals_from_matrices(matrix, -within, 0)
  return tf.pad(bands, [[0, 0]] * (bands.shape.rank - 2) + [[0, bandwidth - within], [0, 0]])
