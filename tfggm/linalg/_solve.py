"""Triangular solves with a banded lower-triangular L: L y = x and L^T z = x.

Two algorithms, chosen by the number of right-hand sides r per matrix:

- "rows" (r <= ROWS_MAX_COLUMNS): row-by-row substitution, vectorized across
  the batch and XLA-compiled (`tfggm.linalg._row_substitution`). n short steps
  of O(b r lanes) work: the band's own arithmetic, no B x B blocks.
- "blocks" (more columns, e.g. thousands of importance samples): blocked
  substitution, n / B steps of dense B x B triangular solves and matmuls whose
  cost is shared by all r columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfggm.linalg._bands import band_of_outer, bands_at_every_lag, check_bands, is_every_lag, resolve_lags, sum_to_shape
from tfggm.linalg._blocks import (
  block_size_for,
  from_blocks,
  move_axis,
  row_blocks,
  scan_blocks,
  shift_blocks,
  to_blocks,
)
from tfggm.linalg._compilation import with_gradient
from tfggm.linalg._row_substitution import row_substitution

SOLVE_ALGORITHMS = ("rows", "blocks")
ROWS_MAX_COLUMNS = 64  # measured: rows win at r = 16 and 64, blocks at r = 500 (n = 16, b = 5, 100 lanes)


def _broadcast_batch(*tensors: tf.Tensor) -> tf.Tensor:
  """The broadcast of the batch shapes (all but the last two dims) of matrices."""
  shape = tf.shape(tensors[0])[:-2]
  for t in tensors[1:]:
    shape = tf.broadcast_dynamic_shape(shape, tf.shape(t)[:-2])
  return shape


def solve_algorithm_for(num_columns: int | None, algorithm: str | None = None) -> str:
  """"rows" for few right-hand sides per matrix, "blocks" for many (or an unknown number)."""
  if algorithm is None:
    return "rows" if num_columns is not None and num_columns <= ROWS_MAX_COLUMNS else "blocks"
  if algorithm not in SOLVE_ALGORITHMS:
    raise ValueError(f"algorithm must be one of {SOLVE_ALGORITHMS} or None; got {algorithm!r}.")
  return algorithm


def _band_of_outer_by(rows: tf.Tensor, columns: tf.Tensor, lags: tuple[int, ...], block: int,
                         algorithm: str) -> tf.Tensor:
  """The band of rows @ columns^T at `lags`: out[..., j, i] = sum_r rows[i, r] columns[i - lags[j], r].

  "rows": `band_of_outer`, O(n len(lags) r) flops and memory. "blocks": the products of block j of `rows`
  with blocks j and j - 1 of `columns` hold every entry of the band (B >= b):
  O(n B r) flops, matmuls shared by all r, then the rows at `lags`. Never n x n.
  """
  if algorithm == "rows":
    return band_of_outer(rows, columns, lags)
  rows_b, columns_b = row_blocks(rows, block), row_blocks(columns, block)
  band = from_blocks(tf.matmul(rows_b, columns_b, adjoint_b=True),
                     tf.matmul(rows_b, shift_blocks(columns_b, -1), adjoint_b=True), int(rows.shape[-2]), lags[-1])
  return band if is_every_lag(lags) else tf.gather(band, lags, axis=-2)


def solve(bands: tf.Tensor, rhs: tf.Tensor, transpose: bool = False,
          block_size: int | None = None, algorithm: str | None = None,
          lags: Sequence[int] | None = None) -> tf.Tensor:
  """Solves L y = rhs (or L^T y = rhs) for banded lower-triangular L, with a banded gradient.

  "rows" substitutes one row at a time (see `row_substitution`): O(n R r) for
  bands with R rows (all b + 1 lags, or only a stencil's active ones).
  "blocks" substitutes blocks of size B >= b (see `tfggm.linalg._blocks`):

  ```none
  L y = x:    y_j = D_j^{-1} (x_j - C_j y_{j-1})           j = 0 .. m-1
  L^T y = x:  y_j = D_j^{-T} (x_j - C_{j+1}^T y_{j+1})     j = m-1 .. 0
  ```

  m = ceil(n / B) sequential steps, each a dense B x B triangular solve:
  O(n B r) flops for r right-hand sides. Both compile with XLA.

  The gradient is one more solve and a banded outer product, O(n b r) or
  O(n B r), instead of differentiating through the m steps. With w the solve
  of the other orientation applied to the incoming gradient g (w = L^{-T} g
  for L y = x, w = L^{-1} g for L^T y = x):

  ```none
  L y = x:     dx = w,  dL[i, i-k] = -w_i y_{i-k}
  L^T y = x:   dx = w,  dL[i, i-k] = -y_i w_{i-k}
  ```

  That gradient calls `solve` again and sees y as a function of (L, x)
  (`with_gradient`), so it is differentiable in turn: second derivatives
  (Hessian-vector products) cost one more such backward pass.

  Args:
    bands: L at `lags`, [..., R, n] (`tfggm.linalg._bands`).
    rhs: right-hand sides [..., n, r]; batch dims broadcast with `bands`.
    transpose: solve with L^T instead of L.
    block_size: B for "blocks" (default: `block_size_for(n, b)`).
    algorithm: "rows", "blocks", or None to choose by r (`solve_algorithm_for`).
    lags: the lag of each row of `bands`; default 0, 1, ..., R - 1.

  Returns:
    y, [broadcast batch..., n, r].
  """
  bands = tf.convert_to_tensor(bands)
  rhs = tf.convert_to_tensor(rhs, dtype=bands.dtype)
  n, _ = check_bands(bands)
  lags = resolve_lags(bands, lags)
  block = block_size_for(n, lags[-1], block_size)
  algorithm = solve_algorithm_for(rhs.shape[-1], algorithm)
  substitute = _row_substitute if algorithm == "rows" else _block_substitute

  def vjp(inputs, y, dy):
    bands, rhs = inputs
    w = solve(bands, dy, not transpose, block, algorithm, lags)
    rows, columns = (y, -w) if transpose else (-w, y)  # negate the n r vectors, not the R n r band
    d_bands = _band_of_outer_by(rows, columns, lags, block, algorithm)
    return sum_to_shape(d_bands, bands), sum_to_shape(w, rhs)

  y = substitute(tf.stop_gradient(bands), tf.stop_gradient(rhs), transpose, block, lags)
  return with_gradient(y, (bands, rhs), vjp)


def _row_substitute(bands: tf.Tensor, rhs: tf.Tensor, transpose: bool, block: int,
                    lags: tuple[int, ...]) -> tf.Tensor:
  """`row_substitution` on the broadcast batch, flattened into one lane axis."""
  del block  # rows need no blocks
  n, _ = check_bands(bands)
  batch = _broadcast_batch(bands, rhs)
  num_columns = tf.shape(rhs)[-1]
  num_rows = len(lags)
  lanes_bands = tf.reshape(tf.broadcast_to(bands, tf.concat([batch, [num_rows, n]], 0)), [-1, num_rows, n])
  lanes_rhs = tf.reshape(tf.broadcast_to(rhs, tf.concat([batch, [n, num_columns]], 0)), [-1, n, rhs.shape[-1]])
  y = tf.reshape(row_substitution(lanes_bands, lanes_rhs, transpose, lags),
                 tf.concat([batch, [n, num_columns]], 0))
  y.set_shape(tf.broadcast_static_shape(bands.shape[:-2], rhs.shape[:-2]).concatenate(rhs.shape[-2:]))
  return y


def _block_substitute(bands: tf.Tensor, rhs: tf.Tensor, transpose: bool, block: int,
                      lags: tuple[int, ...]) -> tf.Tensor:
  """Blocked substitution (the forward pass of `solve` with "blocks") on the full band."""
  bands = bands_at_every_lag(bands, lags)
  n, _ = check_bands(bands)
  num_blocks = -(-n // block)
  diag_blocks, sub_blocks = to_blocks(bands, block)
  num_rhs = tf.shape(rhs)[-1]
  rhs = row_blocks(rhs, block)
  coupling = shift_blocks(sub_blocks, +1) if transpose else sub_blocks

  def step(neighbour, blocks):
    diag, couple, x = blocks
    rest = x - tf.matmul(couple, neighbour, adjoint_a=transpose)
    return tf.linalg.triangular_solve(diag, rest, lower=True, adjoint=transpose)

  def first(blocks):  # the first block solved (the last one for L^T) has no neighbour
    diag, _, x = blocks
    return tf.linalg.triangular_solve(diag, x, lower=True, adjoint=transpose)

  y = scan_blocks(step, first, (diag_blocks, coupling, rhs), reverse=transpose)
  y = tf.reshape(y, tf.concat([tf.shape(y)[:-3], [num_blocks * block, num_rhs]], 0))
  return y[..., :n, :]


def solve_vec(bands: tf.Tensor, x: tf.Tensor, transpose: bool = False,
              block_size: int | None = None, algorithm: str | None = None,
              lags: Sequence[int] | None = None) -> tf.Tensor:
  """`solve` for vectors x [..., n]; leading dims beyond the bands' batch become columns.

  A sample of shape [S..., batch..., n] is solved as S right-hand sides of the
  same factors, so the factors are never tiled S times.
  """
  bands = tf.convert_to_tensor(bands)
  x = tf.convert_to_tensor(x, dtype=bands.dtype)
  extra = x.shape.rank - 1 - (bands.shape.rank - 2)
  if extra <= 0:
    return solve(bands, x[..., tf.newaxis], transpose, block_size, algorithm, lags)[..., 0]
  shape = tf.shape(x)
  columns = tf.reshape(x, tf.concat([[-1], shape[extra:]], 0))
  columns = move_axis(columns, 0, -1)  # [batch..., n, S]
  y = move_axis(solve(bands, columns, transpose, block_size, algorithm, lags), -1, 0)
  return tf.reshape(y, tf.concat([shape[:extra], tf.shape(y)[1:]], 0))
