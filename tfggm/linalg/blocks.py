"""Compact bands <-> dense B x B block-bidiagonal form, shared by the sequential kernels.

With a block size B >= b, a lower-triangular L of bandwidth b is block lower
bidiagonal. Pad n up to m B (the padding is the identity, decoupled from the
rest) and write, for block j (rows jB .. jB + B - 1):

```none
D_j = L[jB:(j+1)B, jB:(j+1)B]        lower triangular, bandwidth b
C_j = L[jB:(j+1)B, (j-1)B:jB]        non-zero only where c - r >= B - b;  C_0 = 0
```

In band coordinates `D_j[r, c] = bands[r - c, jB + r]` and
`C_j[r, c] = bands[B + r - c, jB + r]`. Both directions are single gathers:
O(n B) time and memory.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfggm.linalg.bands import check_bands

__all__ = ["block_size_for", "to_blocks", "from_blocks", "row_blocks", "shift_blocks", "move_axis"]


def block_size_for(n: int, bandwidth: int, block_size: int | None = None) -> int:
  """The block size: at least the bandwidth, at most n; by default max(b, min(n, 16))."""
  if block_size is None:
    block_size = max(bandwidth, min(n, 16), 1)
  if block_size < max(bandwidth, 1):
    raise ValueError(f"block_size {block_size} must be >= the bandwidth {bandwidth} (and >= 1).")
  return max(1, min(block_size, max(n, bandwidth, 1)))


def _block_gather_index(block: int, bandwidth: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions of D_j and C_j entries in a block's bands [b + 1, B] flattened (+1 zero slot)."""
  r, c = np.meshgrid(np.arange(block), np.arange(block), indexing="ij")
  zero_slot = (bandwidth + 1) * block
  lag_d = r - c
  index_d = np.where((lag_d >= 0) & (lag_d <= bandwidth), lag_d * block + r, zero_slot)
  lag_c = block + r - c
  index_c = np.where(lag_c <= bandwidth, lag_c * block + r, zero_slot)
  return index_d.astype(np.int32), index_c.astype(np.int32)


def to_blocks(bands: tf.Tensor, block: int, pad_diagonal: float = 1.0) -> tuple[tf.Tensor, tf.Tensor]:
  """Dense blocks (D, C), each [..., m, B, B], of the matrix with compact `bands`.

  Rows beyond n are padding: diagonal `pad_diagonal`, no coupling. Entries
  bands[k, i] with i < k are ignored (C_0 is zero). O(n B) time and memory.
  """
  n, b = check_bands(bands)
  num_blocks = -(-n // block)
  pad = num_blocks * block - n
  rank = bands.shape.rank
  if pad:
    pad_value = np.zeros((b + 1, pad), dtype=bands.dtype.as_numpy_dtype)
    pad_value[0] = pad_diagonal
    pad_value = tf.broadcast_to(pad_value, tf.concat([tf.shape(bands)[:-2], [b + 1, pad]], 0))
    bands = tf.concat([bands, pad_value], axis=-1)
  batch = tf.shape(bands)[:-2]
  per_block = tf.reshape(bands, tf.concat([batch, [b + 1, num_blocks, block]], 0))
  perm = list(range(rank - 2)) + [rank - 1, rank - 2, rank]
  per_block = tf.transpose(per_block, perm)  # [..., m, b + 1, B]
  flat = tf.reshape(per_block, tf.concat([batch, [num_blocks, (b + 1) * block]], 0))
  flat = tf.concat([flat, tf.zeros_like(flat[..., :1])], axis=-1)
  index_d, index_c = _block_gather_index(block, b)
  diag_blocks = tf.gather(flat, index_d, axis=-1)
  sub_blocks = tf.gather(flat, index_c, axis=-1)
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
  k, r = np.meshgrid(np.arange(bandwidth + 1), np.arange(block), indexing="ij")
  index = np.where(k <= r, r * block + (r - k), block * block + r * block + (block + r - k))
  both = tf.concat([diag_blocks, sub_blocks], axis=-2)  # [..., m, 2B, B]
  batch = tf.shape(both)[:-3]
  flat = tf.reshape(both, tf.concat([batch, [num_blocks, 2 * block * block]], 0))
  per_block = tf.gather(flat, index.astype(np.int32), axis=-1)  # [..., m, b + 1, B]
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
