"""From unconstrained network outputs to valid bands of L, for a given stencil."""

from __future__ import annotations

import tensorflow as tf

from tfggm import linalg
from tfggm.linalg import _bands
from tfggm.stencils import Stencil

__all__ = ["factor_bands_from_values", "precision_bands_from_values",
           "factor_bands_from_precision_values"]


def check_diagonal_floor(diagonal_floor: float) -> float:
  """The floor as a Python float, which must be finite and >= 0 (a negative one lets L_ii reach 0 or below)."""
  try:
    value = float(diagonal_floor)
  except TypeError:
    raise TypeError(f"diagonal_floor must be a number >= 0; got {diagonal_floor!r}.") from None
  if not 0.0 <= value < float("inf"):
    raise ValueError(f"diagonal_floor must be finite and >= 0; got {diagonal_floor!r}.")
  return value


def _floating(values: tf.Tensor) -> tf.Tensor:
  values = tf.convert_to_tensor(values)
  if not values.dtype.is_floating:
    raise TypeError(f"values must be floating (float32 or float64); got dtype {values.dtype.name}.")
  return values


def factor_bands_from_values(stencil: Stencil, values: tf.Tensor,
                             diagonal_floor: float = 1e-3, active_lags_only: bool = False) -> tf.Tensor:
  """(a) Factor values: free entries of L, the diagonal made positive.

  ```none
  L_ii = softplus(v_i) + floor          (values[..., :n])
  L[i, i - k] = v                       (values[..., n:], stencil order)
  ```

  The floor bounds L_ii away from 0, so the log-determinant -sum log L_ii and
  the variances stay finite. O(n b).

  Args:
    stencil: which entries of L are free.
    values: [..., stencil.num_params].
    diagonal_floor: the floor added after the softplus.
    active_lags_only: return only the rows at `stencil.active_lags`.

  Returns:
    compact bands of L, [..., b + 1, n] (or [..., len(stencil.active_lags), n]).

  Raises:
    TypeError: on values that are not floating.
    ValueError: on a negative diagonal_floor, or values of another width (`Stencil.bands_from_values`).
  """
  values = _floating(values)
  n = stencil.n
  diagonal = tf.nn.softplus(values[..., :n]) + tf.constant(check_diagonal_floor(diagonal_floor), values.dtype)
  return stencil.bands_from_values(tf.concat([diagonal, values[..., n:]], axis=-1), active_lags_only)


def precision_bands_from_values(stencil: Stencil, values: tf.Tensor,
                                diagonal_floor: float = 1e-3) -> tf.Tensor:
  """(b) Precision values: a P that is positive definite by Gershgorin's theorem.

  The stencil marks which P_ij (i > j) are free; P is symmetric and

  ```none
  P_ij = v                                    off-diagonal (values[..., n:])
  P_ii = sum_{j != i} |P_ij| + softplus(s_i) + floor     (s = values[..., :n])
  ```

  Every Gershgorin disc lies in (0, inf), so P is positive definite. In compact
  layout the absolute row sum has a left part sum_k |P[i, i-k]| and a right part
  sum_k |P[i+k, i]|, the latter a row shift: O(n b).

  Returns:
    lower bands of P, [..., b + 1, n].

  Raises:
    TypeError: on values that are not floating.
    ValueError: on a negative diagonal_floor, or values of another width (`Stencil.bands_from_values`).
  """
  values = _floating(values)
  n = stencil.n
  off_diagonal = stencil.bands_from_values(
      tf.concat([tf.zeros_like(values[..., :n]), values[..., n:]], axis=-1))
  magnitude = tf.abs(off_diagonal)
  row_sums = (tf.reduce_sum(magnitude, axis=-2)
              + tf.reduce_sum(_bands.shift_rows(magnitude, -1), axis=-2))
  diagonal = (row_sums + tf.nn.softplus(values[..., :n])
              + tf.constant(check_diagonal_floor(diagonal_floor), values.dtype))
  return tf.concat([diagonal[..., tf.newaxis, :], off_diagonal[..., 1:, :]], axis=-2)


def factor_bands_from_precision_values(stencil: Stencil, values: tf.Tensor,
                                       diagonal_floor: float = 1e-3) -> tf.Tensor:
  """L from Gershgorin precision values: banded Cholesky of P, O(n b^2).

  The Cholesky factor fills in the band (a grid's P has lags 1 and w; its L has
  every lag up to w), so L has the full band b of the stencil.
  """
  return linalg.cholesky(precision_bands_from_values(stencil, values, diagonal_floor))
