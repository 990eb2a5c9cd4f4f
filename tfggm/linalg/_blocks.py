"""Compact bands <-> dense B x B block-bidiagonal form, shared by the sequential kernels.

With a block size B >= b, a lower-triangular L of bandwidth b is block lower
bidiagonal. Pad n up to m B (the padding is the identity, decoupled from the
rest) and write, for block j (rows jB .. jB + B - 1):

```none
D_j = L[jB:(j+1)B, jB:(j+1)B]        lower triangular, bandwidth b
C_j = L[jB:(j+1)B, (j-1)B:jB]        non-zero only where c - r >= B - b;  C_0 = 0
```

In band coordinates `D_j[r, c] = bands[r - c, jB + r]` and
`C_j[r, c] = bands[B + r - c, jB + r]`: lag k of block j is sub-diagonal -k of
D_j and super-diagonal B - k of C_j, so both directions are TensorFlow's
diagonal ops (`tf.linalg.diag` / `diag_part`, XLA-compiled, with each other as
gradients): O(n B) time and memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfggm.linalg._bands import check_bands, diagonals_from_matrices, matrices_from_diagonals

ONE_BLOCK_MAX_SIZE = 64


def block_size_for(n: int, bandwidth: int, block_size: int | None = None) -> int:
  """The block size: at least the bandwidth, at most n.

  By default the fewest equal blocks no smaller than B0 = max(b, 16):
  m = floor(n / B0) blocks of B = ceil(n / m), so the padding m B - n stays
  below m rows (n = 784, b = 256: three blocks of 262 rather than four of 256
  padded to 1,024; `scripts/benchmark.py`: Cholesky, variance 1.3-1.5x faster).
  n <= `ONE_BLOCK_MAX_SIZE` is one dense n x n block (B = n): there a
  recursion of 2-4 small blocks costs more in loop and gather overhead than
  the dense block's extra flops (n = 64, b = 28: variance, KL and Cholesky
  2-4x faster as one block).
  """
  if block_size is None:
    if n <= ONE_BLOCK_MAX_SIZE:
      block_size = max(n, bandwidth, 1)
    else:
      num_blocks = max(1, n // max(bandwidth, 16))
      block_size = max(-(-n // num_blocks), bandwidth)  # lags may reach past n
  if block_size < max(bandwidth, 1):
    raise ValueError(f"block_size {block_size} must be >= the bandwidth {bandwidth} (and >= 1).")
  return min(block_size, max(n, bandwidth, 1))


def to_blocks(bands: tf.Tensor, block: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Dense blocks (D, C), each [..., m, B, B], of the matrix with compact `bands`.

  Rows beyond n are padding: diagonal 1, no coupling. Entries
  bands[k, i] with i < k are ignored (C_0 is zero). O(n B) time and memory.
  """
  n, b = check_bands(bands)
  num_blocks = -(-n // block)
  pad = num_blocks * block - n
  rank = bands.shape.rank
  if pad:
    pad_value = np.zeros((b + 1, pad), dtype=bands.dtype.as_numpy_dtype)
    pad_value[0] = 1.0
    pad_value = tf.broadcast_to(pad_value, tf.concat([tf.shape(bands)[:-2], [b + 1, pad]], 0))
    bands = tf.concat([bands, pad_value], axis=-1)
  batch = tf.shape(bands)[:-2]
  per_block = tf.reshape(bands, tf.concat([batch, [b + 1, num_blocks, block]], 0))
  perm = list(range(rank - 2)) + [rank - 1, rank - 2, rank]
  per_block = tf.transpose(per_block, perm)  # [..., m, b + 1, B]
  within = min(b, block - 1)  # lags inside a block's diagonal block
  diag_blocks = matrices_from_diagonals(per_block[..., : within + 1, :], -within, 0, block)
  if b == 0 or num_blocks == 1:  # no coupling: C_0 = 0
    return diag_blocks, tf.zeros_like(diag_blocks)
  # Lags 1..b: super-diagonals B - 1 .. B - b of C_j, each read from the first b rows of the block.
  sub_blocks = matrices_from_diagonals(per_block[..., 1:, :b], block - b, block - 1, block)
  first_block = tf.one_hot(0, num_blocks, on_value=0.0, off_value=1.0, dtype=bands.dtype)
  sub_blocks = sub_blocks * first_block[:, tf.newaxis, tf.newaxis]
  return diag_blocks, sub_blocks


def from_blocks(diag_blocks: tf.Tensor, sub_blocks: tf.Tensor, n: int, bandwidth: int) -> tf.Tensor:
  """Compact bands [..., b + 1, n] of the lower band of a block-bidiagonal matrix.

  The inverse of `to_blocks` on the band: `bands[k, jB + r]` is `D_j[r, r - k]`
  when k <= r, else `C_j[r, B + r - k]`. O(n b).
  """
  block = int(diag_blocks.shape[-1])
  num_blocks = -(-n // block)
  within = min(bandwidth, block - 1)
  per_block = tf.pad(diagonals_from_matrices(diag_blocks, -within, 0),  # [..., m, b + 1, B]
                     [[0, 0]] * (diag_blocks.shape.rank - 2) + [[0, bandwidth - within], [0, 0]])
  if bandwidth > 0 and num_blocks > 1:  # C_0 holds no entry of the band
    from_sub = diagonals_from_matrices(sub_blocks, block - bandwidth, block - 1)  # [..., m, b, b]
    per_block += tf.pad(from_sub, [[0, 0]] * (sub_blocks.shape.rank - 2) + [[1, 0], [0, block - bandwidth]])
  batch = tf.shape(per_block)[:-3]
  rank = per_block.shape.rank
  perm = list(range(rank - 3)) + [rank - 2, rank - 3, rank - 1]
  bands = tf.reshape(tf.transpose(per_block, perm),
                     tf.concat([batch, [bandwidth + 1, num_blocks * block]], 0))
  return bands[..., :n]


def row_blocks(x: tf.Tensor, block: int) -> tf.Tensor:
  """Rows of x [..., n, r], zero-padded to m B, as blocks [..., m, B, r]."""
  n = int(x.shape[-2])
  num_blocks = -(-n // block)
  x = tf.pad(x, [[0, 0]] * (x.shape.rank - 2) + [[0, num_blocks * block - n], [0, 0]])
  return tf.reshape(x, tf.concat([tf.shape(x)[:-2], [num_blocks, block, tf.shape(x)[-1]]], 0))


def shift_blocks(blocks: tf.Tensor, direction: int) -> tf.Tensor:
  """Block j of the result is block j + 1 (direction > 0) or j - 1 (direction < 0) of [..., m, B, B'], zero-filled."""
  zero = tf.zeros_like(blocks[..., :1, :, :])
  if direction > 0:
    return tf.concat([blocks[..., 1:, :, :], zero], -3)
  return tf.concat([zero, blocks[..., :-1, :, :]], -3)


def move_axis(x: tf.Tensor, source: int, destination: int) -> tf.Tensor:
  """tf.transpose that moves one axis (static rank)."""
  rank = x.shape.rank
  perm = list(range(rank))
  perm.insert(destination % rank, perm.pop(source % rank))
  return tf.transpose(x, perm)


def scan_blocks(step: Callable, first: Callable, blocks, reverse: bool = False):
  """The block recursion `carry_j = step(carry_{j-1}, blocks_j)`, started by `carry_0 = first(blocks_0)`.

  `blocks` is a structure of tensors [..., m, B, B'] (blocks along axis -3);
  with `reverse`, the recursion starts at block m - 1 and runs down to 0.
  Returns the carries stacked along axis -3. m - 1 loop steps: a single dense
  block (m = 1, see `block_size_for`) is one call of `first`, without a loop.
  """
  front = tf.nest.map_structure(lambda t: move_axis(t, -3, 0), blocks)
  num_blocks = tf.nest.flatten(front)[0].shape[0]
  initial = first(tf.nest.map_structure(lambda t: t[-1 if reverse else 0], front))
  if num_blocks == 1:
    stacked = tf.nest.map_structure(lambda c: c[tf.newaxis], initial)
  else:
    rest = tf.nest.map_structure(lambda t: t[:-1] if reverse else t[1:], front)
    carries = tf.scan(step, rest, initializer=initial, reverse=reverse)
    stacked = tf.nest.map_structure(
        lambda c, i: tf.concat([c, i[tf.newaxis]] if reverse else [i[tf.newaxis], c], 0), carries, initial)
  return tf.nest.map_structure(lambda t: move_axis(t, 0, -3), stacked)
