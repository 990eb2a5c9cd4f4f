"""Random banded factors for tests and benchmarks (private: not part of the tfggm API, imported by nothing in it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["random_factor_bands"]


def random_factor_bands(structure, bandwidth: int | None = None, batch_shape: Sequence[int] = (), seed: int = 0,
                        dtype=np.float64, lags: Sequence[int] | None = None,
                        off_diagonal_scale: float = 0.3) -> np.ndarray:
  """Bands of a random well-conditioned lower-triangular L: `bands[..., j, i] = L[i, i - lags[j]]`.

  ```none
  L[i, i]     ~ Uniform(0.8, 1.6)
  L[i, i - k] ~ off_diagonal_scale * N(0, 1)     where the structure allows it (k <= i, in the stencil)
  L[i, i - k] = 0                                 elsewhere, entries outside the matrix (k > i) included
  ```

  With the default scale 0.3 and a small bandwidth (b <= 4 or so), the
  triangular solves and L L^T are well conditioned; for wide bands pass a
  scale ~ 0.3 / b, which keeps L diagonally dominant at any n
  (`scripts/benchmark.py`). The draws are made in float64 at every lag
  0..b and then masked, selected and cast, so the same seed gives the same L
  in float32 and float64 and with or without `lags`. O(n b) time and memory.

  Args:
    structure: n (an int; L has lags 0..`bandwidth`, or the given `lags`) or a
      `tfggm.stencils.Stencil` (its n, bandwidth and mask).
    bandwidth: b for an int n; default `lags[-1]`, or 0. Ignored for a stencil.
    batch_shape: leading dims.
    seed: for `np.random.default_rng`.
    dtype: of the result.
    lags: return only these rows, [..., len(lags), n] (L is zero at the other
      lags); default every lag 0..b.
    off_diagonal_scale: standard deviation of the off-diagonal entries.

  Returns:
    [*batch_shape, b + 1 or len(lags), n].
  """
  batch_shape = tuple(int(d) for d in batch_shape)
  if hasattr(structure, "mask"):  # a Stencil
    mask = np.asarray(structure.mask, dtype=bool)
    if lags is not None and lags[-1] > mask.shape[0] - 1:
      mask = np.pad(mask, [(0, lags[-1] + 1 - mask.shape[0]), (0, 0)])
  else:
    n = int(structure)
    if bandwidth is None:
      bandwidth = 0 if lags is None else int(lags[-1])
    if lags is not None and int(lags[-1]) != bandwidth:
      raise ValueError(f"bandwidth {bandwidth} must be the last of the lags {tuple(lags)}.")
    mask = np.ones((bandwidth + 1, n), dtype=bool)
  num_rows, n = mask.shape
  mask = mask & (np.arange(n)[None, :] >= np.arange(num_rows)[:, None])  # L[i, i - k] exists: k <= i
  if lags is not None:
    lags = tuple(int(k) for k in lags)
    every = np.zeros(num_rows, dtype=bool)
    every[list(lags)] = True
    mask = mask & every[:, None]
  rng = np.random.default_rng(seed)
  bands = off_diagonal_scale * rng.normal(size=batch_shape + (num_rows, n))
  bands[..., 0, :] = rng.uniform(0.8, 1.6, size=batch_shape + (n,))
  bands = bands * mask
  if lags is not None:
    bands = bands[..., list(lags), :]
  return bands.astype(dtype)
