"""Banded kernels on the compact band layout `bands[..., j, i] = L[i, i - lags[j]]` (lags 0..b by default).

Every kernel is linear in n, batched over leading dimensions, float32 or float64, differentiable with banded
gradients, and compiles under `jit_compile=True`. The gradients are built from the kernels themselves, so they
are differentiable in turn (second derivatives, Hessian-vector products: each order one more banded backward
pass; the compiled gradients of `cholesky` and `selected_inversion` are differentiated through their block forms),
and
`tf.Variable` arguments are read like tensors. The layout, block and compilation helpers behind them are private
(`tfggm.linalg._*`); their compiled loops refuse to be differentiated directly, with an error.

| function | computes | cost |
| --- | --- | --- |
| `solve`, `solve_vec` | L^{-1} x or L^{-T} x | O(n b r) |
| `matvec`, `matvec_transpose` | L x or L^T x | O(n b) |
| `cholesky` | bands of L from the lower bands of a symmetric banded P = L L^T | O(n b^2) |
| `product_with_transpose` | lower bands of L L^T from the bands of L (the inverse of `cholesky`) | O(n b^2) |
| `selected_inversion` | the band of Sigma = (L L^T)^{-1} | O(n b^2) |
| `marginal_variances` | diag(Sigma) | O(n b^2) |
| `dense_from_bands`, `bands_from_dense`, `bands_at_every_lag` | layout converters | |
| `plain_graph_kernels` | a context: trace the kernels as plain TF ops (no XLA), for serving | |
"""

from tfggm.linalg._bands import bands_at_every_lag, bands_from_dense, dense_from_bands, matvec, matvec_transpose
from tfggm.linalg._cholesky import cholesky, product_with_transpose
from tfggm.linalg._compilation import plain_graph_kernels
from tfggm.linalg._selected_inversion import marginal_variances, selected_inversion
from tfggm.linalg._solve import solve, solve_vec

__all__ = [
    "bands_at_every_lag",
    "bands_from_dense",
    "cholesky",
    "dense_from_bands",
    "marginal_variances",
    "matvec",
    "matvec_transpose",
    "plain_graph_kernels",
    "product_with_transpose",
    "selected_inversion",
    "solve",
    "solve_vec",
]
