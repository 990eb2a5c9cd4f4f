"""Elementwise and shift operations on the compact band layout of a lower-triangular L."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfggm.linalg.compilation import xla_kernel

__all__ = [
    "banded_outer",
    "check_bands",
    "shift_rows",
    "sum_to_shape",
    "matvec",
    "matvec_transpose",
    "dense_from_bands",
    "bands_from_dense",
    "zero_outside_matrix",
    "log_determinant",
]


def check_bands(bands: tf.Tensor) -> tuple[int, int]:
  """Returns (n, b) of compact bands [..., b + 1, n], which must be static."""
  shape = bands.shape
  if shape.rank is None or shape.rank < 2 or shape[-1] is None or shape[-2] is None:
    raise ValueError(
        f"Compact bands need a static shape [..., b + 1, n]; got {shape}.")
  return int(shape[-1]), int(shape[-2]) - 1


def shift_rows(x: tf.Tensor, direction: int) -> tf.Tensor:
  """Shifts row k of x [..., R, N] by k places (right if direction > 0, else left).

  ```none
  right: y[..., k, j] = x[..., k, j - k]   (zero where j < k)
  left:  y[..., k, j] = x[..., k, j + k]   (zero where j + k >= N)
  ```

  A pad, a reshape and a slice (the "skew" trick): no gather, O(R N) memory,
  compiles with XLA.
  """
  num_rows, size = int(x.shape[-2]), int(x.shape[-1])
  batch = tf.shape(x)[:-2]
  rank = x.shape.rank
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


def sum_to_shape(x: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
  """Sums x over the dims along which `shape` was broadcast to x's shape (a gradient's reduction)."""
  _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(x), s1=shape)
  return tf.reshape(tf.reduce_sum(x, axis=axes), shape)


def banded_outer(rows: tf.Tensor, columns: tf.Tensor, bandwidth: int) -> tf.Tensor:
  """The band of rows @ columns^T: out[..., k, i] = sum_r rows[i, r] columns[i - k, r].

  Columns skewed by k (`shift_rows`) times rows, summed over r: O(n b r) flops
  and memory, never n x n. The gradient of every banded kernel w.r.t. L has
  this form.
  """
  columns_t = tf.linalg.matrix_transpose(columns)[..., tf.newaxis, :]  # [..., r, 1, n]
  lagged = shift_rows(tf.repeat(columns_t, bandwidth + 1, axis=-2), +1)  # [..., r, b + 1, n]: columns[i - k]
  return tf.reduce_sum(lagged * tf.linalg.matrix_transpose(rows)[..., tf.newaxis, :], axis=-3)


@xla_kernel
def _lower_matvec(bands: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
  """y[i] = sum_k bands[k, i] x[i - k]."""
  b = int(bands.shape[-2]) - 1
  shifted = shift_rows(tf.repeat(x[..., tf.newaxis, :], b + 1, axis=-2), +1)  # x[i - k]
  return tf.reduce_sum(bands * shifted, axis=-2)


@xla_kernel
def _upper_matvec(bands: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
  """y[j] = sum_k bands[k, j + k] x[j + k]."""
  return tf.reduce_sum(shift_rows(bands * x[..., tf.newaxis, :], -1), axis=-2)


@xla_kernel
def _band_of_outer(rows: tf.Tensor, columns: tf.Tensor, bandwidth: int) -> tf.Tensor:
  return banded_outer(rows[..., tf.newaxis], columns[..., tf.newaxis], bandwidth)


def _banded_matvec(bands: tf.Tensor, x: tf.Tensor, transpose: bool) -> tf.Tensor:
  """L x or L^T x with a banded gradient (both XLA-compiled kernels).

  ```none
  y = L x:     dx = L^T dy,  dL[i, i-k] = dy_i x_{i-k}
  y = L^T x:   dx = L dy,    dL[i, i-k] = x_i dy_{i-k}
  ```
  """
  bands = tf.convert_to_tensor(bands)
  x = tf.convert_to_tensor(x, dtype=bands.dtype)
  _, b = check_bands(bands)
  forward, backward = (_upper_matvec, _lower_matvec) if transpose else (_lower_matvec, _upper_matvec)

  @tf.custom_gradient
  def matvec_with_banded_gradient(bands, x):
    def gradient(dy):
      d_bands = _band_of_outer(x, dy, b) if transpose else _band_of_outer(dy, x, b)
      return sum_to_shape(d_bands, tf.shape(bands)), sum_to_shape(backward(bands, dy), tf.shape(x))
    return forward(bands, x), gradient

  return matvec_with_banded_gradient(bands, x)


def matvec(bands: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
  """y = L x for bands [..., b + 1, n] and x [..., n] (batch dims broadcast).

  y[i] = sum_k bands[k, i] * x[i - k]  --  O(n b), one XLA-compiled skew;
  the gradient is banded too (`banded_outer`).
  """
  return _banded_matvec(bands, x, transpose=False)


def matvec_transpose(bands: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
  """y = L^T x for bands [..., b + 1, n] and x [..., n] (batch dims broadcast).

  y[j] = sum_k L[j + k, j] x[j + k] = sum_k bands[k, j + k] * x[j + k]  --  O(n b).
  """
  return _banded_matvec(bands, x, transpose=True)


def log_determinant(bands: tf.Tensor) -> tf.Tensor:
  """log det L = sum_i log L_ii for bands [..., b + 1, n] (positive diagonal): O(n)."""
  bands = tf.convert_to_tensor(bands)
  return tf.reduce_sum(tf.math.log(bands[..., 0, :]), axis=-1)


def zero_outside_matrix(bands: tf.Tensor) -> tf.Tensor:
  """Sets bands[..., k, i] = 0 where i < k (entries that lie outside L)."""
  bands = tf.convert_to_tensor(bands)
  n, b = check_bands(bands)
  inside = np.arange(n)[None, :] >= np.arange(b + 1)[:, None]
  return tf.where(inside, bands, tf.zeros([], bands.dtype))


def _dense_index(n: int, b: int) -> np.ndarray:
  """index[i, j] = position of L[i, j] in flattened bands, or (b + 1) n for zero."""
  i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
  k = i - j
  return np.where((k >= 0) & (k <= b), k * n + i, (b + 1) * n).astype(np.int32)


def dense_from_bands(bands: tf.Tensor) -> tf.Tensor:
  """The dense lower-triangular L [..., n, n]: O(n^2), for inspection and tests."""
  bands = tf.convert_to_tensor(bands)
  n, b = check_bands(bands)
  bands = zero_outside_matrix(bands)
  flat = tf.reshape(bands, tf.concat([tf.shape(bands)[:-2], [(b + 1) * n]], axis=0))
  flat = tf.concat([flat, tf.zeros_like(flat[..., :1])], axis=-1)
  return tf.gather(flat, _dense_index(n, b), axis=-1)


def bands_from_dense(matrix: tf.Tensor, bandwidth: int) -> tf.Tensor:
  """Compact bands [..., b + 1, n] of the lower band of a dense [..., n, n] matrix."""
  matrix = tf.convert_to_tensor(matrix)
  n = int(matrix.shape[-1])
  k = np.arange(bandwidth + 1)[:, None]
  i = np.arange(n)[None, :]
  flat_index = np.where(i >= k, i * n + (i - k), n * n).astype(np.int32)
  flat = tf.reshape(matrix, tf.concat([tf.shape(matrix)[:-2], [n * n]], axis=0))
  flat = tf.concat([flat, tf.zeros_like(flat[..., :1])], axis=-1)
  return tf.gather(flat, flat_index, axis=-1)
