"""Sparsity stencils: which entries of a lower-triangular factor L may be non-zero."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "Stencil",
    "from_offsets",
    "diagonal",
    "chain",
    "grid",
    "extended_grid",
    "band",
    "from_config",
]


class Stencil:
  """The pattern of free entries of an n x n lower-triangular factor L.

  The pattern is stored in the *compact band layout* used throughout tfggm (and
  by `tf.linalg.banded_triangular_solve` with `lower=True`):

  ```none
  bands[..., k, i] = L[i, i - k]      0 <= k <= b,  0 <= i < n
  ```

  Row 0 holds the diagonal (always free); entries with `i < k` lie outside the
  matrix and are never free. `mask[k, i]` says whether `L[i, i - k]` is free.

  Free values are ordered as the mask is read row-major, so `values[..., :n]`
  is the diagonal and the off-diagonal values follow lag by lag.
  """

  def __init__(self, mask: np.ndarray, name: str = "stencil", offsets_spec: dict | None = None):
    mask = np.array(mask, dtype=bool)
    if mask.ndim != 2 or min(mask.shape) < 1:
      raise ValueError(f"A stencil mask is a boolean array [b + 1, n] with b + 1 >= 1 and n >= 1; got shape "
                       f"{mask.shape}.")
    num_rows, n = mask.shape
    outside = np.arange(n)[None, :] < np.arange(num_rows)[:, None]
    if np.any(mask & outside):
      raise ValueError("A stencil mask may not mark entries L[i, i - k] with i < k (outside the matrix).")
    mask = mask.copy()
    mask[0] = True
    used_lags = np.flatnonzero(mask.any(axis=1))
    self._mask = mask[: used_lags[-1] + 1]
    self._mask.setflags(write=False)
    self._name = name
    self._offsets_spec = offsets_spec
    # index_map[k, i]: position of L[i, i-k] among the free values, or
    # num_params (a slot that holds zero) where the entry is not free.
    index_map = np.full(self._mask.shape, self.num_params, dtype=np.int32)
    index_map[self._mask] = np.arange(self.num_params, dtype=np.int32)
    self._index_map = index_map
    self._flat_positions = np.flatnonzero(self._mask.ravel()).astype(np.int32)

  @property
  def name(self) -> str:
    return self._name

  @property
  def n(self) -> int:
    """The dimension of the Gaussian (number of nodes)."""
    return self._mask.shape[1]

  @property
  def bandwidth(self) -> int:
    """b: the largest lag k with a free entry L[i, i - k]."""
    return self._mask.shape[0] - 1

  @property
  def num_params(self) -> int:
    """Number of free entries of L, the diagonal included."""
    return int(self._mask.sum())

  @property
  def mask(self) -> np.ndarray:
    """Boolean [b + 1, n]: `mask[k, i]` is True where L[i, i - k] is free."""
    return self._mask

  @property
  def lags(self) -> tuple[int, ...]:
    """The lags k > 0 that have at least one free entry."""
    return tuple(int(k) for k in np.flatnonzero(self._mask[1:].any(axis=1)) + 1)

  @property
  def active_lags(self) -> tuple[int, ...]:
    """0 and `lags`: the rows of the compact bands that can be non-zero (a 28 x 28 grid: (0, 1, 28))."""
    return (0,) + self.lags

  def bands_from_values(self, values: tf.Tensor, active_lags_only: bool = False) -> tf.Tensor:
    """Scatters free values [..., num_params] into compact bands [..., b + 1, n].

    With `active_lags_only`, only the rows at `active_lags` [..., R, n] (pass
    `lags=stencil.active_lags` to the kernels and distributions). Entries
    outside the stencil are exactly zero. One gather: O(n b) (or O(n R)) time
    and memory, differentiable (the gradient is the matching gather-transpose).

    Raises:
      ValueError: when the static width of values is not num_params. A width unknown statically is checked
        when the values arrive (InvalidArgumentError): extra values are never silently dropped.
    """
    values = tf.convert_to_tensor(values)
    width = values.shape[-1] if values.shape.rank else None
    if values.shape.rank == 0 or width not in (None, self.num_params):
      raise ValueError(
          f"Stencil '{self.name}' has {self.num_params} free values; got values of shape "
          f"{values.shape}.")
    if width is None:
      values = tf.ensure_shape(values, values.shape[:-1].concatenate([self.num_params]))
    padded = tf.concat([values, tf.zeros_like(values[..., :1])], axis=-1)
    index_map = self._index_map[list(self.active_lags)] if active_lags_only else self._index_map
    return tf.gather(padded, index_map, axis=-1)

  def values_from_bands(self, bands: tf.Tensor) -> tf.Tensor:
    """Reads the free values [..., num_params] out of compact bands [..., b + 1, n]."""
    bands = tf.convert_to_tensor(bands)
    self.check_bands_shape(bands.shape)
    flat = tf.reshape(bands, tf.concat([tf.shape(bands)[:-2], [-1]], axis=0))
    return tf.gather(flat, self._flat_positions, axis=-1)

  def check_bands_shape(self, shape: tf.TensorShape) -> None:
    """Raises ValueError unless `shape` ends in [b + 1, n] of this stencil."""
    shape = tf.TensorShape(shape)
    if shape.rank is not None and (shape.rank < 2 or shape[-2:] != (self.bandwidth + 1, self.n)):
      raise ValueError(
          f"Stencil '{self.name}' needs bands of shape [..., {self.bandwidth + 1}, {self.n}] "
          f"(b + 1 = {self.bandwidth + 1} rows, n = {self.n}); got {shape}.")

  def get_config(self) -> dict:
    """A JSON-able description; `from_config` rebuilds the stencil from it."""
    if self._offsets_spec is not None:
      return dict(name=self.name, **self._offsets_spec)
    return dict(name=self.name, mask=self._mask.astype(int).tolist())

  def __repr__(self) -> str:
    return (f"Stencil(name={self.name!r}, n={self.n}, bandwidth={self.bandwidth}, "
            f"num_params={self.num_params})")

  def __eq__(self, other) -> bool:
    return isinstance(other, Stencil) and np.array_equal(self._mask, other._mask)

  def __hash__(self) -> int:
    return hash((self._mask.shape, self._mask.tobytes()))


def from_offsets(shape: int | Sequence[int], offsets: Sequence, name: str = "custom") -> Stencil:
  """A stencil that links every node to the neighbours at the given offsets.

  Nodes of a 2-D grid of shape (h, w) are ordered row-major: node (r, c) has
  index r * w + c. An offset (dr, dc) links node (r, c) to (r + dr, c + dc),
  i.e. it frees L[i, i - k] with lag k = -(dr * w + dc), when that neighbour lies
  inside the grid (no wrap-around at the borders). On a 1-D shape (n,), an
  offset is an integer -k.

  The contract: sizes are positive integers; every offset is made of integers
  (int or NumPy integers; not bools, floats or strings), has the dimensionality
  of the shape (an integer for (n,), a pair for (h, w)), and points strictly
  into the past (k > 0: dr < 0, or dr = 0 and dc < 0) so that L stays lower
  triangular; on a grid, |dc| < w. An offset whose neighbour lies outside the
  grid for every node (k >= n, or |dr| >= h) frees nothing; repeated offsets
  count once.

  Args:
    shape: n, (n,) or (h, w).
    offsets: integers (1-D) or pairs (dr, dc) (2-D).
    name: a name for the stencil.

  Raises:
    ValueError: on a bad shape or offset, naming it.
  """
  shape = _checked_shape(shape)
  if isinstance(offsets, str | bytes) or not isinstance(offsets, Iterable):
    raise ValueError(f"offsets must be a sequence of offsets; got {offsets!r}.")
  offsets_2d = [_offset_as_pair(offset, len(shape)) for offset in offsets]
  height, width = (1,) * (2 - len(shape)) + shape
  for offset, (dr, dc) in zip(offsets, offsets_2d):
    if not (dr < 0 or (dr == 0 and dc < 0)):
      raise ValueError(
          f"Offset {offset!r} is not strictly in the past in row-major order: L must stay lower triangular.")
    if len(shape) == 2 and abs(dc) >= width:
      raise ValueError(f"Offset {offset!r} reaches across a whole row of a grid of width {width}.")
  n = height * width
  lags = [-(dr * width + dc) for dr, dc in offsets_2d]
  mask = np.zeros((max(lags, default=0) + 1, n), dtype=bool)
  mask[0] = True
  rows, cols = np.divmod(np.arange(n), width)
  for (dr, dc), lag in zip(offsets_2d, lags):
    inside = (rows + dr >= 0) & (rows + dr < height) & (cols + dc >= 0) & (cols + dc < width)
    mask[lag] |= inside
  spec = dict(shape=list(shape), offsets=[list(o) if len(shape) == 2 else o[1] for o in offsets_2d])
  return Stencil(mask, name=name, offsets_spec=spec)


def _is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _checked_shape(shape) -> tuple[int, ...]:
  """(n,) or (h, w) of positive integers, from n, (n,) or (h, w)."""
  sizes = tuple(shape) if isinstance(shape, Sequence | np.ndarray) else (shape,)
  if len(sizes) not in (1, 2) or not all(_is_integer(size) and size >= 1 for size in sizes):
    raise ValueError(f"Stencil shape must be n, (n,) or (h, w) of integers, with positive sizes; got {shape!r}.")
  return tuple(int(size) for size in sizes)


def _offset_as_pair(offset, ndim: int) -> tuple[int, int]:
  """(dr, dc) of an offset -k (ndim 1: (0, -k)) or (dr, dc) (ndim 2), which must be made of integers."""
  parts = (offset,) if ndim == 1 else tuple(offset) if isinstance(offset, Sequence | np.ndarray) else ()
  if len(parts) != ndim or not all(_is_integer(part) for part in parts):
    form = "-k" if ndim == 1 else "(dr, dc)"
    raise ValueError(f"A {ndim}-D stencil takes offsets {form} made of integers (not bools, floats or strings); "
                     f"got {offset!r}.")
  return (0, int(parts[0])) if ndim == 1 else (int(parts[0]), int(parts[1]))


def from_config(config: dict) -> Stencil:
  """The inverse of `Stencil.get_config`."""
  if "mask" in config:
    return Stencil(np.array(config["mask"], dtype=bool), name=config["name"])
  return from_offsets(config["shape"], config["offsets"], name=config["name"])


def diagonal(n: int) -> Stencil:
  """L diagonal: independent coordinates (the usual diagonal Gaussian)."""
  return from_offsets(n, [], name="diagonal")


def chain(n: int) -> Stencil:
  """L[i, i-1] free: P = L L^T is tridiagonal (a Markov chain, Figure 1 of the paper)."""
  return from_offsets(n, [-1], name="chain")


def grid(height: int, width: int) -> Stencil:
  """L links (r, c) to its left (r, c-1) and upper (r-1, c) neighbours.

  A width-1 grid is a chain (the upper neighbour at lag 1), as is a height-1 grid (the left one).
  """
  return _grid_preset("grid", height, width, [(0, -1), (-1, 0)])


def extended_grid(height: int, width: int) -> Stencil:
  """L links (r, c) to (r, c-1), (r-1, c-1), (r-1, c), (r-1, c+1).

  L is lower-block-bidiagonal in blocks of `width`, so P is block-tridiagonal
  (Figure 3 of the paper).
  """
  return _grid_preset("extended_grid", height, width, [(0, -1), (-1, -1), (-1, 0), (-1, 1)])


def _grid_preset(name: str, height: int, width: int, offsets: list[tuple[int, int]]) -> Stencil:
  """`from_offsets` on an (h, w) grid without the offsets |dc| >= w, which have no neighbour on so narrow a grid."""
  height, width = _checked_shape((height, width))
  return from_offsets((height, width), [(dr, dc) for dr, dc in offsets if abs(dc) < width], name=name)


def band(n: int, bandwidth: int) -> Stencil:
  """Every L[i, i-k] with 1 <= k <= bandwidth free (a full band)."""
  if not _is_integer(bandwidth) or bandwidth < 0:
    raise ValueError(f"bandwidth must be an integer >= 0; got {bandwidth!r}.")
  return from_offsets(n, [-k for k in range(1, bandwidth + 1)], name=f"band{bandwidth}")
