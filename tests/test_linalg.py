"""Banded kernels: one registry of kernels (with dense float64 references) run over the registry of cases.

Every kernel of `tfggm.linalg.__all__` (both solve algorithms, both orientations) is checked on every case of
`conftest.CASES` for values against numpy, per kernel for gradients (first and second order) against finite
differences, for compiled == plain graph, and for tf.Variable inputs. A failure names its kernel and case.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf

from conftest import (
  CASES,
  DTYPES,
  Case,
  assert_gradients_match,
  assert_second_derivatives_match,
  at_every_lag,
  band_of,
  dense_lower,
  tolerance,
)
from tfggm import linalg
from tfggm._testing import random_factor_bands
from tfggm.linalg import (
  _bands,
  _blocks,
  _cholesky,
  _column_cholesky,
  _row_selected_inversion,
  _row_substitution,
  _selected_inversion,
  _solve,
)


@dataclasses.dataclass(frozen=True)
class Kernel:
  """A kernel under test: the public function, its inputs on a case, the computation, a dense float64 reference.

  `inputs(case, dtype)` -> numpy arrays (every one differentiable); `compute(case, *tensors)` -> tf.Tensor;
  `reference(case, *float64 arrays)` -> numpy array.
  """
  public: str
  inputs: Callable
  compute: Callable
  reference: Callable


def _normal(shape, dtype, seed=1) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _dense(case: Case, bands: np.ndarray, transpose: bool = False) -> np.ndarray:
  """Dense L (or L^T) of bands at the case's lags."""
  factor = dense_lower(at_every_lag(bands, case.lags))
  return np.swapaxes(factor, -1, -2) if transpose else factor


def _solve_kernel(algorithm: str, transpose: bool) -> Kernel:
  return Kernel(
      "solve",
      inputs=lambda case, dtype: (case.factor_bands(dtype=dtype), _normal(case.other_batch_shape + (case.n, 2), dtype)),
      compute=lambda case, bands, rhs: linalg.solve(bands, rhs, transpose=transpose, block_size=case.block_size,
                                                    algorithm=algorithm, lags=case.lags),
      reference=lambda case, bands, rhs: np.linalg.solve(_dense(case, bands, transpose), rhs))


def _solve_vec_kernel(transpose: bool, num_samples: int | None) -> Kernel:
  """solve_vec with x [..., n] (one column: the single-column path of "rows") or [S, ..., n] (S columns)."""
  samples = () if num_samples is None else (num_samples,)
  return Kernel(
      "solve_vec",
      inputs=lambda case, dtype: (case.factor_bands(dtype=dtype), _normal(samples + case.other_batch_shape + (case.n,),
                                                                          dtype)),
      compute=lambda case, bands, x: linalg.solve_vec(bands, x, transpose=transpose, lags=case.lags),
      reference=lambda case, bands, x: np.linalg.solve(_dense(case, bands, transpose), x[..., None])[..., 0])


def _matvec_kernel(transpose: bool) -> Kernel:
  function = linalg.matvec_transpose if transpose else linalg.matvec
  return Kernel(
      function.__name__,
      inputs=lambda case, dtype: (case.factor_bands(dtype=dtype), _normal(case.other_batch_shape + (case.n,), dtype)),
      compute=lambda case, bands, x: function(bands, x, lags=case.lags),
      reference=lambda case, bands, x: (_dense(case, bands, transpose) @ x[..., None])[..., 0])


def _precision_bands(case: Case, dtype) -> np.ndarray:
  """Lower bands of P = L L^T (the full band 0..b), in float64 arithmetic."""
  factor = dense_lower(case.factor_bands(every_lag=True))
  return band_of(factor @ np.swapaxes(factor, -1, -2), case.bandwidth).astype(dtype)


def _symmetric(precision_bands: np.ndarray) -> np.ndarray:
  lower = dense_lower(precision_bands)
  return lower + np.swapaxes(lower, -1, -2) - np.eye(lower.shape[-1]) * lower


def _covariance(factor_bands: np.ndarray) -> np.ndarray:
  factor = dense_lower(factor_bands)
  return np.linalg.inv(factor @ np.swapaxes(factor, -1, -2))


def _wider_block(case: Case, width: int) -> int | None:
  return None if case.block_size is None else max(case.block_size, width)


def _cholesky_kernel(algorithm: str) -> Kernel:
  return Kernel(
      "cholesky",
      inputs=lambda case, dtype: (_precision_bands(case, dtype),),
      compute=lambda case, p: linalg.cholesky(p, block_size=case.block_size, algorithm=algorithm),
      reference=lambda case, p: band_of(np.linalg.cholesky(_symmetric(p)), case.bandwidth))


def _full_factor(case, dtype):
  return (case.factor_bands(dtype=dtype, every_lag=True),)


def _selected_inversion_kernel(algorithm: str | None, extra_width: int = 0) -> Kernel:
  """The band b + extra_width of Sigma (a wider band is what tr(P_2 Sigma_1) needs for a wider P_2)."""
  def compute(case, bands):
    width = case.bandwidth + extra_width
    return linalg.selected_inversion(bands, bandwidth=width, block_size=_wider_block(case, width), algorithm=algorithm)

  return Kernel("selected_inversion", inputs=_full_factor, compute=compute,
                reference=lambda case, bands: band_of(_covariance(bands), case.bandwidth + extra_width))


def _marginal_variances_kernel(algorithm: str | None) -> Kernel:
  return Kernel(
      "marginal_variances",
      inputs=_full_factor,
      compute=lambda case, bands: linalg.marginal_variances(bands, block_size=case.block_size, algorithm=algorithm),
      reference=lambda case, bands: np.diagonal(_covariance(bands), axis1=-2, axis2=-1))


KERNELS = {
    "solve_rows": _solve_kernel("rows", transpose=False),
    "solve_rows_transpose": _solve_kernel("rows", transpose=True),
    "solve_blocks": _solve_kernel("blocks", transpose=False),
    "solve_blocks_transpose": _solve_kernel("blocks", transpose=True),
    "solve_vec": _solve_vec_kernel(transpose=False, num_samples=None),
    "solve_vec_transpose": _solve_vec_kernel(transpose=True, num_samples=None),
    "solve_vec_transpose_samples": _solve_vec_kernel(transpose=True, num_samples=3),
    "matvec": _matvec_kernel(transpose=False),
    "matvec_transpose": _matvec_kernel(transpose=True),
    "cholesky_columns": _cholesky_kernel("columns"),
    "cholesky_blocks": _cholesky_kernel("blocks"),
    "product_with_transpose": Kernel(
        "product_with_transpose",
        inputs=_full_factor,
        compute=lambda case, bands: linalg.product_with_transpose(bands, block_size=case.block_size),
        reference=lambda case, bands: band_of(dense_lower(bands) @ np.swapaxes(dense_lower(bands), -1, -2),
                                              case.bandwidth)),
    "selected_inversion": _selected_inversion_kernel(None),
    "selected_inversion_rows": _selected_inversion_kernel("rows"),
    "selected_inversion_rows_wider": _selected_inversion_kernel("rows", extra_width=2),
    "selected_inversion_blocks": _selected_inversion_kernel("blocks"),
    "selected_inversion_blocks_wider": _selected_inversion_kernel("blocks", extra_width=2),
    "marginal_variances": _marginal_variances_kernel(None),
    "marginal_variances_blocks": _marginal_variances_kernel("blocks"),
    "dense_from_bands": Kernel(
        "dense_from_bands",
        inputs=_full_factor,
        compute=lambda case, bands: linalg.dense_from_bands(bands),
        reference=lambda case, bands: dense_lower(bands)),
    "bands_from_dense": Kernel(  # a full random matrix: the upper triangle and entries beyond the band are dropped
        "bands_from_dense",
        inputs=lambda case, dtype: (_normal(case.batch_shape + (case.n, case.n), dtype),),
        compute=lambda case, matrix: linalg.bands_from_dense(matrix, case.bandwidth),
        reference=lambda case, matrix: band_of(matrix, case.bandwidth)),
    "bands_at_every_lag": Kernel(
        "bands_at_every_lag",
        inputs=lambda case, dtype: (case.factor_bands(dtype=dtype),),
        compute=lambda case, bands: linalg.bands_at_every_lag(bands, case.lags),
        reference=lambda case, bands: at_every_lag(bands, case.lags)),
}

# Cases for the slower checks. Derivatives: blocks of B = b at every lag, padded blocks at a grid's sparse lags
# with a 2-D batch, broadcast batch dims (the gradients' reductions), n = 1, lags beyond n. Compilation (an XLA
# compile of each kernel and its gradient, 1-3 s): the grid alone, sparse lags and padded blocks.
GRADIENT_CASES = ["band3", "grid", "broadcast", "n1", "lags_past_n"]
SECOND_ORDER_CASES = ["band3", "grid"]
COMPILED_CASES = ["grid"]


def _run(name: str, case_name: str, dtype=np.float64):
  kernel, case = KERNELS[name], CASES[case_name]
  return kernel, case, kernel.inputs(case, dtype)


def test_every_public_kernel_is_in_the_registry():
  assert {kernel.public for kernel in KERNELS.values()} | {"plain_graph_kernels"} == set(linalg.__all__)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case_name", CASES)
@pytest.mark.parametrize("name", KERNELS)
def test_values_match_the_dense_reference(name, case_name, dtype):
  kernel, case, inputs = _run(name, case_name, dtype)
  got = kernel.compute(case, *inputs)
  want = kernel.reference(case, *[x.astype(np.float64) for x in inputs])
  assert got.dtype == dtype and got.shape == want.shape
  np.testing.assert_allclose(got, want, **tolerance(dtype))


@pytest.mark.parametrize("case_name", GRADIENT_CASES)
@pytest.mark.parametrize("name", KERNELS)
def test_gradients_match_finite_differences(name, case_name):
  kernel, case, inputs = _run(name, case_name)
  assert_gradients_match(lambda *xs: kernel.compute(case, *xs), inputs, graph=False)


@pytest.mark.parametrize("case_name", SECOND_ORDER_CASES)
@pytest.mark.parametrize("name", KERNELS)
def test_second_derivatives_match_finite_differences(name, case_name):
  kernel, case, inputs = _run(name, case_name)
  assert_second_derivatives_match(lambda *xs: kernel.compute(case, *xs), inputs)


def _value_and_gradients(kernel: Kernel, case: Case, weights: np.ndarray):
  def run(*xs):
    with tf.GradientTape() as tape:
      tape.watch(xs)
      y = kernel.compute(case, *xs)
      total = tf.reduce_sum(weights * y)
    return y, tape.gradient(total, xs)
  return run


@pytest.mark.parametrize("case_name", COMPILED_CASES)
@pytest.mark.parametrize("name", KERNELS)
def test_compiled_equals_plain_graph_and_plain_has_no_xla_cluster(name, case_name):
  kernel, case, inputs = _run(name, case_name, np.float32)
  inputs = [tf.constant(x) for x in inputs]
  weights = _normal(kernel.compute(case, *inputs).shape, np.float32, seed=2)
  run = _value_and_gradients(kernel, case, weights)
  compiled = tf.function(run, jit_compile=True)(*inputs)
  with linalg.plain_graph_kernels():
    plain_function = tf.function(run)
    plain = plain_function(*inputs)
    assert not _has_xla_cluster(plain_function.get_concrete_function(*inputs).graph)
  for got, want in zip(tf.nest.flatten(compiled), tf.nest.flatten(plain)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", KERNELS)
def test_variables_give_the_gradients_of_tensors(name):
  """A tf.Variable passed straight to a kernel, in eager mode and in a tf.function, as a tensor would be."""
  kernel, case, inputs = _run(name, "band3")
  weights = _normal(kernel.compute(case, *inputs).shape, np.float64, seed=2)
  want_value, want_gradients = _value_and_gradients(kernel, case, weights)(*[tf.constant(x) for x in inputs])
  variables = [tf.Variable(x) for x in inputs]

  def run():
    with tf.GradientTape() as tape:
      y = kernel.compute(case, *variables)
      total = tf.reduce_sum(weights * y)
    return y, tape.gradient(total, variables)

  for value, gradients in (run(), tf.function(run)()):
    np.testing.assert_allclose(value, want_value, rtol=1e-12, atol=1e-12)
    for got, want in zip(gradients, want_gradients):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["solve_rows_transpose", "selected_inversion", "cholesky_columns"])
def test_second_derivatives_in_compiled_functions_equal_eager_ones(name):
  """Hessian-vector products (a tape over a tape) inside tf.function and jit_compile give the eager values."""
  kernel, case, inputs = _run(name, "grid")
  inputs = [tf.constant(x) for x in inputs]
  weights = _normal(kernel.compute(case, *inputs).shape, np.float64, seed=2)
  vectors = [tf.constant(_normal(x.shape, np.float64, seed=3)) for x in inputs]

  def hessian_vector_products(*xs):
    with tf.GradientTape() as outer:
      outer.watch(xs)
      with tf.GradientTape() as inner:
        inner.watch(xs)
        total = tf.reduce_sum(weights * kernel.compute(case, *xs))
      gradients = inner.gradient(total, xs)
      directional = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(gradients, vectors)])
    return outer.gradient(directional, xs)

  eager = hessian_vector_products(*inputs)
  for compiled in (tf.function(hessian_vector_products), tf.function(hessian_vector_products, jit_compile=True)):
    for got, want in zip(compiled(*inputs), eager):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


# --- the compiled kernels behind the public ones ----------------------------------------------------------------

LOOP_KERNELS = {
    "row_substitution": (lambda bands, rhs: _row_substitution.row_substitution(bands, rhs, False, (0, 1, 2, 3)),
                         lambda: (random_factor_bands(10, 3, (2,)), _normal((2, 10, 1), np.float64))),
    "congruence_loop": (lambda f, q: _selected_inversion._congruence_loop(f, q, True),
                        lambda: (_normal((3, 2, 2), np.float64), _normal((3, 2, 2), np.float64))),
    "row_selected_inversion": (lambda bands: _row_selected_inversion.row_selected_inversion(bands, 4),
                               lambda: (random_factor_bands(10, 3, (2,)),)),
    "row_selected_inversion_adjoint": (
        lambda bands, sigma, d_sigma: _row_selected_inversion.row_selected_inversion_adjoint(bands, sigma, d_sigma),
        lambda: (random_factor_bands(10, 3, (2,)), _normal((2, 5, 10), np.float64), _normal((2, 5, 10), np.float64))),
    "column_cholesky": (_column_cholesky.column_cholesky,
                        lambda: (np.asarray(linalg.product_with_transpose(random_factor_bands(10, 3, (2,)))),)),
    "column_cholesky_gradient": (_column_cholesky.column_cholesky_gradient,
                                 lambda: (random_factor_bands(10, 3, (2,)), _normal((2, 4, 10), np.float64))),
}


@pytest.mark.parametrize("as_variable", [False, True], ids=["tensor", "variable"])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("name", LOOP_KERNELS)
def test_compiled_loops_refuse_to_be_differentiated_with_a_clear_error(name, graph, as_variable):
  """An XLA loop cannot be differentiated by TensorFlow: asking for it raises, naming the kernel (not None,
  not "TensorList crossing the XLA/TF boundary"); its value is unchanged."""
  function, make_inputs = LOOP_KERNELS[name]
  inputs = [tf.Variable(x) if as_variable else tf.constant(x) for x in make_inputs()]

  def gradients():
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      total = tf.reduce_sum(function(*inputs))
    return tape.gradient(total, inputs)

  with pytest.raises(NotImplementedError, match=f"{name}.*XLA-compiled loop"):
    (tf.function(gradients) if graph else gradients)()
  np.testing.assert_allclose(function(*inputs), function(*[tf.constant(x) for x in make_inputs()]))


LOOP_FREE_KERNELS = {
    "band_of_outer": lambda rows, columns: _bands.band_of_outer(rows, columns, (0, 1, 3)),
    "lower_matvec": lambda bands, x: _bands._lower_matvec(bands, x[..., 0], (0, 1, 3)),
    "upper_matvec": lambda bands, x: _bands._upper_matvec(bands, x[..., 0], (0, 1, 3)),
}


@pytest.mark.parametrize("name", LOOP_FREE_KERNELS)
def test_loop_free_compiled_kernels_are_differentiable_directly(name):
  rng = np.random.default_rng(4)
  first, second = (rng.normal(size=(2, 3, 10)), rng.normal(size=(2, 10, 1))) if name != "band_of_outer" else (
      rng.normal(size=(2, 10, 2)), rng.normal(size=(2, 10, 2)))
  assert_gradients_match(LOOP_FREE_KERNELS[name], [first, second], graph=False)
  assert_second_derivatives_match(LOOP_FREE_KERNELS[name], [first, second])


@pytest.mark.parametrize("num_lags", [_bands.STACKED_MAX_LAGS, _bands.STACKED_MAX_LAGS + 1])
def test_band_of_outer_either_side_of_the_stacked_limit_matches_the_dense_product(num_lags):
  """Stacked per lag up to STACKED_MAX_LAGS lags, shifted all at once past it: both the band of rows @ columns^T,
  lags reaching past n included, with gradients."""
  rng = np.random.default_rng(6)
  n = num_lags - 3  # the last lags lie past n
  rows, columns = rng.normal(size=(2, 2, n, 3))
  lags = tuple(range(num_lags))
  dense = rows @ np.swapaxes(columns, -1, -2)  # [2, n, n]
  want = np.stack([[dense[:, i, i - k] if i >= k else np.zeros(2) for i in range(n)] for k in lags]).transpose(2, 0, 1)
  np.testing.assert_allclose(_bands.band_of_outer(rows, columns, lags), want, rtol=1e-12, atol=1e-12)
  assert_gradients_match(lambda r, c: _bands.band_of_outer(r, c, lags), [rows, columns], graph=False)


# --- layouts, algorithm choice, compilation ---------------------------------------------------------------------

def test_random_factor_bands_are_zero_outside_the_structure_and_agree_across_layouts():
  """The one generator: diagonal in [0.8, 1.6], zero outside the matrix and the stencil, the same L at sparse lags
  and at every lag, and in float32 and float64."""
  bands = random_factor_bands(9, 3, (2,), seed=5)
  assert np.all((bands[..., 0, :] >= 0.8) & (bands[..., 0, :] <= 1.6))
  np.testing.assert_array_equal(band_of(dense_lower(bands), 3), bands)  # nothing outside the matrix
  np.testing.assert_array_equal(random_factor_bands(9, 3, (2,), seed=5, lags=(0, 2, 3)), bands[..., [0, 2, 3], :])
  np.testing.assert_array_equal(random_factor_bands(9, 3, (2,), seed=5, dtype=np.float32), bands.astype(np.float32))
  case = CASES["random_custom"]
  on_stencil = case.factor_bands(every_lag=True)
  np.testing.assert_array_equal(on_stencil[..., ~case.stencil.mask], 0.0)
  assert np.all(on_stencil[..., case.stencil.mask] != 0.0)


def test_bands_need_static_shape():
  with pytest.raises(ValueError, match="static shape"):
    linalg.matvec(tf.zeros([3]), tf.zeros([3]))


@pytest.mark.parametrize("lags", [(1, 2), (0, 2, 2), (0, 3, 1), (0, 1)])
def test_bad_lags_are_rejected(lags):
  with pytest.raises(ValueError, match="lags must be 3 strictly increasing"):
    linalg.matvec(np.ones((3, 6)), np.ones(6), lags=lags)


def test_solve_picks_rows_for_few_columns_and_rejects_unknown_algorithms():
  assert _solve.solve_algorithm_for(1) == "rows"
  assert _solve.solve_algorithm_for(_solve.ROWS_MAX_COLUMNS) == "rows"
  assert _solve.solve_algorithm_for(_solve.ROWS_MAX_COLUMNS + 1) == "blocks"
  assert _solve.solve_algorithm_for(None) == "blocks"
  with pytest.raises(ValueError, match="algorithm"):
    linalg.solve(random_factor_bands(4, 1), np.ones((4, 1)), algorithm="dense")


def test_selected_inversion_picks_an_algorithm_by_shape_and_rejects_unknown_ones():
  pick = _selected_inversion.selected_inversion_algorithm_for
  assert pick(1, 28) == pick(128, 4) == pick(None, 28) == pick(1, 32) == "rows"
  assert pick(128, 28) == pick(1, 33) == pick(None, 64) == "blocks"
  assert pick(128, 28, "rows") == "rows" and pick(1, 3, "blocks") == "blocks"
  wide = random_factor_bands(24, 20, (170,), off_diagonal_scale=0.02)  # 170 x 20^2 > 2^16: "blocks", exactly
  chosen = linalg.selected_inversion(wide)
  np.testing.assert_array_equal(chosen, linalg.selected_inversion(wide, algorithm="blocks"))
  np.testing.assert_allclose(chosen, band_of(_covariance(wide), 20), rtol=1e-9, atol=1e-12)
  with pytest.raises(ValueError, match="algorithm"):
    linalg.selected_inversion(random_factor_bands(4, 1), algorithm="dense")
  with pytest.raises(ValueError, match="algorithm"):
    linalg.marginal_variances(random_factor_bands(4, 1), algorithm="dense")
  for compute in (linalg.selected_inversion, linalg.marginal_variances):  # checked whichever algorithm runs
    with pytest.raises(ValueError, match="block_size"):
      compute(random_factor_bands(8, 3), block_size=1)


def test_cholesky_picks_columns_up_to_b_64_and_blocks_past_it():
  pick = _cholesky.cholesky_algorithm_for
  assert pick(1) == pick(_cholesky.COLUMNS_MAX_BANDWIDTH) == "columns"
  assert pick(_cholesky.COLUMNS_MAX_BANDWIDTH + 1) == "blocks" and pick(1, "blocks") == "blocks"
  factor = random_factor_bands(80, 65, (2,), off_diagonal_scale=0.01)
  precision = linalg.product_with_transpose(factor)
  chosen = linalg.cholesky(precision)
  np.testing.assert_array_equal(chosen, linalg.cholesky(precision, algorithm="blocks"))
  np.testing.assert_allclose(chosen, factor, rtol=1e-9, atol=1e-12)
  with pytest.raises(ValueError, match="algorithm"):
    linalg.cholesky(precision, algorithm="dense")
  with pytest.raises(ValueError, match="algorithm"):  # a diagonal P too, which needs no algorithm
    linalg.cholesky(np.ones((1, 5)), algorithm="dense")


@pytest.mark.parametrize("name", ["solve_rows", "solve_vec", "matvec", "bands_at_every_lag"])
@pytest.mark.parametrize("case_name", ["grid", "lags_past_n"])
def test_sparse_lags_give_what_every_lag_gives(name, case_name):
  """The rows at a stencil's active lags compute what the full layout with zero rows computes."""
  kernel, case, inputs = _run(name, case_name)
  every = Case(case.n, tuple(range(case.bandwidth + 1)), case.batch_shape, case.block_size, case.rhs_batch_shape)
  sparse = kernel.compute(case, *inputs)
  full = kernel.compute(every, at_every_lag(inputs[0], case.lags), *inputs[1:])
  if name == "bands_at_every_lag":
    np.testing.assert_array_equal(sparse, full)
  else:
    np.testing.assert_allclose(sparse, full, rtol=1e-12, atol=1e-12)


def _has_xla_cluster(graph) -> bool:
  return any(op.get_attr("_XlaMustCompile") for op in graph.get_operations() if "_XlaMustCompile" in op.node_def.attr)


def test_plain_graph_kernels_trace_no_xla_cluster_and_the_default_does():
  bands = random_factor_bands(12, 2, (2,), dtype=np.float32)
  rhs = np.ones((2, 12, 1), np.float32)
  def trace():
    return tf.function(lambda: linalg.solve(bands, rhs)).get_concrete_function().graph

  with linalg.plain_graph_kernels():
    assert not _has_xla_cluster(trace())
  assert _has_xla_cluster(trace())


@pytest.mark.parametrize("n,batch,compiled", [(12, 2, False), (700, 100, True)])
def test_matvecs_run_plain_below_the_size_threshold_and_compiled_above_it(n, batch, compiled):
  """60 elements run as plain ops, 350,000 (batch 100 at n = 700, b = 3) as one compiled kernel."""
  bands = random_factor_bands(n, 3, (batch,), dtype=np.float32)
  x = np.random.default_rng(3).normal(size=(batch, n)).astype(np.float32)
  assert (bands.size + x.size >= _bands.PLAIN_BELOW_ELEMENTS) == compiled
  dense = dense_lower(bands.astype(np.float64))
  for matvec, matrix in ((linalg.matvec, dense), (linalg.matvec_transpose, np.swapaxes(dense, -1, -2))):
    assert _has_xla_cluster(tf.function(lambda f=matvec: f(bands, x)).get_concrete_function().graph) == compiled
    np.testing.assert_allclose(matvec(bands, x), (matrix @ x[..., None])[..., 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algorithm", _cholesky.CHOLESKY_ALGORITHMS)
def test_cholesky_ignores_entries_outside_the_matrix(algorithm):
  """bands[k, i] with i < k name no entry of P: changing them changes neither L nor the other gradients, and their
  own gradient is zero."""
  case = CASES["band3"]
  clean = _precision_bands(case, np.float64)
  outside = np.arange(case.n) < np.arange(case.bandwidth + 1)[:, None]
  dirty = np.where(outside, 7.0, clean)
  weights = _normal(clean.shape, np.float64, seed=2)
  kernel = _cholesky_kernel(algorithm)
  (want, want_gradient), (got, got_gradient) = [
      _value_and_gradients(kernel, case, weights)(tf.constant(p)) for p in (clean, dirty)]
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(got_gradient[0], np.where(outside, 0.0, want_gradient[0]), rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(np.asarray(got_gradient[0])[..., outside], 0.0)


@pytest.mark.parametrize("algorithm", _cholesky.CHOLESKY_ALGORITHMS)
@pytest.mark.parametrize("n,bandwidth", [(1, 2), (2, 5), (3, 1)])
def test_cholesky_of_bands_wider_than_the_matrix(algorithm, n, bandwidth):
  """n = 1 and n <= b with a non-zero band row: values against the dense reference, gradients against finite
  differences (the column loop's padding steps and the rows past n)."""
  case = Case(n, tuple(range(bandwidth + 1)), batch_shape=(2,))
  kernel = _cholesky_kernel(algorithm)
  (precision,) = kernel.inputs(case, np.float64)
  np.testing.assert_allclose(kernel.compute(case, precision), kernel.reference(case, precision), rtol=1e-12,
                             atol=1e-12)
  assert_gradients_match(lambda p: kernel.compute(case, p), [precision], graph=False)


def test_cholesky_rejects_unknown_algorithms():
  with pytest.raises(ValueError, match="algorithm"):
    linalg.cholesky(np.ones((2, 4)), algorithm="rows")


def test_default_blocks_are_balanced_and_cover_bands_wider_than_n():
  assert [_blocks.block_size_for(n, b) for n, b in [(784, 256), (784, 28), (100, 3), (64, 28), (70, 90)]] == [
      262, 28, 17, 64, 90]
  bands = random_factor_bands(70, 2, (2,))
  wide = np.concatenate([bands, np.zeros((2, 88, 70))], axis=-2)  # lags up to 90 > n, all zero
  np.testing.assert_allclose(linalg.selected_inversion(wide), band_of(_covariance(bands), 90), rtol=1e-9, atol=1e-9)
  rhs = np.ones((2, 70, 1))
  np.testing.assert_allclose(linalg.solve(wide, rhs, algorithm="blocks"), np.linalg.solve(dense_lower(bands), rhs),
                             rtol=1e-9)
