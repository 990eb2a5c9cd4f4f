"""Banded kernels on the compact band layout `bands[..., j, i] = L[i, i - lags[j]]` (lags 0..b by default)."""

from tfggm.linalg.bands import (bands_at_all_lags, bands_from_dense, dense_from_bands, log_determinant, matvec,
                                matvec_transpose, resolve_lags, shift_rows, zero_outside_matrix)
from tfggm.linalg.cholesky import cholesky, outer_product
from tfggm.linalg.selected_inversion import marginal_variances, selected_inversion
from tfggm.linalg.compilation import plain_graph_kernels
from tfggm.linalg.solve import ROWS_MAX_COLUMNS, SOLVE_ALGORITHMS, solve, solve_algorithm_for, solve_vec

__all__ = [
    "ROWS_MAX_COLUMNS",
    "SOLVE_ALGORITHMS",
    "bands_at_all_lags",
    "bands_from_dense",
    "cholesky",
    "dense_from_bands",
    "log_determinant",
    "marginal_variances",
    "matvec",
    "matvec_transpose",
    "outer_product",
    "plain_graph_kernels",
    "resolve_lags",
    "selected_inversion",
    "shift_rows",
    "solve",
    "solve_algorithm_for",
    "solve_vec",
    "zero_outside_matrix",
]
