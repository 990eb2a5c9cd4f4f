"""Banded kernels against dense float64 numpy: values, block edges, broadcasting, gradients, XLA."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_gradients_match, band_of, dense_lower, tolerance
from tfggm import linalg

# (n, b, block_size): n a multiple of B or not, n < B, b = n - 1, n = 1, b = 0.
SHAPES = [(1, 0, None), (6, 0, None), (9, 1, None), (10, 3, None), (10, 3, 3), (10, 3, 4),
          (7, 6, None), (40, 5, 8), (33, 2, 5), (100, 3, None)]  # n = 100: the default 6 blocks of 17, 2 rows padded
BATCHES = [(), (2, 3)]


def random_factor(n, b, batch=(), seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  bands = 0.3 * rng.normal(size=tuple(batch) + (b + 1, n))
  bands[..., 0, :] = rng.uniform(0.8, 1.6, size=tuple(batch) + (n,))
  inside = np.arange(n)[None, :] >= np.arange(b + 1)[:, None]
  return (bands * inside).astype(dtype)


@pytest.mark.parametrize("algorithm", linalg.SOLVE_ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n,b,block", SHAPES)
@pytest.mark.parametrize("num_columns", [1, 3])
def test_solve_matches_numpy(n, b, block, batch, dtype, algorithm, num_columns):
  bands = random_factor(n, b, batch, dtype=dtype)
  dense = dense_lower(bands.astype(np.float64))
  rhs = np.random.default_rng(1).normal(size=tuple(batch) + (n, num_columns)).astype(dtype)
  for transpose in (False, True):
    matrix = np.swapaxes(dense, -1, -2) if transpose else dense
    got = linalg.solve(bands, rhs, transpose=transpose, block_size=block, algorithm=algorithm)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, np.linalg.solve(matrix, rhs), **tolerance(dtype))


@pytest.mark.parametrize("n,b,block", SHAPES)
def test_matvecs_and_dense_round_trip(n, b, block):
  bands = random_factor(n, b, (2,))
  dense = dense_lower(bands)
  x = np.random.default_rng(2).normal(size=(2, n))
  np.testing.assert_allclose(linalg.matvec(bands, x), np.einsum("...ij,...j->...i", dense, x),
                             rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(linalg.matvec_transpose(bands, x),
                             np.einsum("...ji,...j->...i", dense, x), rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(linalg.dense_from_bands(bands), dense)
  np.testing.assert_array_equal(linalg.bands_from_dense(dense, b), bands)


def test_solve_vec_broadcasts_sample_dims_without_tiling():
  bands = random_factor(10, 3, (3,))
  x = np.random.default_rng(3).normal(size=(4, 2, 3, 10))  # [S1, S2, batch, n]
  dense_t = np.swapaxes(dense_lower(bands), -1, -2)
  got = linalg.solve_vec(bands, x, transpose=True)
  want = np.linalg.solve(dense_t, x[..., None])[..., 0]
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
  # Batch dims of size 1 on either side broadcast too.
  got = linalg.solve(bands[None], np.ones((2, 1, 10, 1)))
  assert got.shape == (2, 3, 10, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n,b,block", SHAPES)
def test_cholesky_and_outer_product_match_numpy(n, b, block, batch, dtype):
  bands = random_factor(n, b, batch, dtype=dtype)
  dense = dense_lower(bands.astype(np.float64))
  precision = dense @ np.swapaxes(dense, -1, -2)
  precision_bands = band_of(precision, b)
  np.testing.assert_allclose(linalg.outer_product(bands, block_size=block), precision_bands,
                             **tolerance(dtype))
  factor = linalg.cholesky(precision_bands.astype(dtype), block_size=block)
  np.testing.assert_allclose(factor, band_of(np.linalg.cholesky(precision), b), **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n,b,block", SHAPES)
@pytest.mark.parametrize("extra_width", [0, 2])
def test_selected_inversion_matches_numpy(n, b, block, batch, dtype, extra_width):
  bands = random_factor(n, b, batch, dtype=dtype)
  dense = dense_lower(bands.astype(np.float64))
  covariance = np.linalg.inv(dense @ np.swapaxes(dense, -1, -2))
  width = b + extra_width
  if block is not None and block < width:
    block = width
  got = linalg.selected_inversion(bands, bandwidth=width, block_size=block)
  np.testing.assert_allclose(got, band_of(covariance, width), **tolerance(dtype))
  variances = linalg.marginal_variances(bands, block_size=None if block is None else max(block, b))
  np.testing.assert_allclose(variances, np.diagonal(covariance, axis1=-2, axis2=-1), **tolerance(dtype))


@pytest.mark.parametrize("algorithm", linalg.SOLVE_ALGORITHMS)
@pytest.mark.parametrize("n,b,block", [(7, 2, 3), (9, 1, None), (5, 4, None), (20, 3, 4), (1, 0, None)])
def test_gradients_match_finite_differences(n, b, block, algorithm):
  bands = random_factor(n, b, (2,))
  inside = (np.arange(n)[None, :] >= np.arange(b + 1)[:, None]).astype(float)
  rhs = np.random.default_rng(4).normal(size=(2, n, 2))
  precision = linalg.outer_product(bands).numpy()
  assert_gradients_match(
      lambda l, p, x: (linalg.solve(l * inside, x, block_size=block, algorithm=algorithm),
                       linalg.solve(l * inside, x, transpose=True, block_size=block, algorithm=algorithm),
                       linalg.selected_inversion(l * inside, block_size=block),
                       linalg.marginal_variances(l * inside, block_size=block),
                       linalg.cholesky(p * inside, block_size=block),
                       linalg.outer_product(l * inside, block_size=block),
                       linalg.matvec(l, x[..., 0]), linalg.matvec_transpose(l, x[..., 0])),
      [bands, precision, rhs])


def test_kernels_compile_with_xla_and_agree():
  bands = random_factor(30, 4, (2,), dtype=np.float32)
  rhs = np.random.default_rng(5).normal(size=(2, 30, 3)).astype(np.float32)
  precision = linalg.outer_product(bands)
  kernels = {
      **{f"solve_{algorithm}": lambda a=algorithm: linalg.solve(bands, rhs, algorithm=a)
         for algorithm in linalg.SOLVE_ALGORITHMS},
      **{f"solve_transpose_{algorithm}": lambda a=algorithm: linalg.solve(bands, rhs, transpose=True, algorithm=a)
         for algorithm in linalg.SOLVE_ALGORITHMS},
      "matvec": lambda: linalg.matvec(bands, rhs[..., 0]),
      "matvec_transpose": lambda: linalg.matvec_transpose(bands, rhs[..., 0]),
      "cholesky": lambda: linalg.cholesky(precision),
      "outer_product": lambda: linalg.outer_product(bands),
      "selected_inversion": lambda: linalg.selected_inversion(bands),
      # Several blocks: the compiled loops of the block recursions (n = 30 is one block by default).
      "solve_blocks_of_8": lambda: linalg.solve(bands, rhs, algorithm="blocks", block_size=8),
      "cholesky_blocks_of_8": lambda: linalg.cholesky(precision, block_size=8),
      "selected_inversion_blocks_of_8": lambda: linalg.selected_inversion(bands, block_size=8),
      "marginal_variances_blocks_of_8": lambda: linalg.marginal_variances(bands, block_size=8),
  }
  for name, kernel in kernels.items():
    compiled = tf.function(kernel, jit_compile=True)
    with linalg.plain_graph_kernels():
      plain = tf.function(kernel)()
    np.testing.assert_allclose(compiled(), plain, rtol=1e-5, atol=1e-5, err_msg=name)


def test_bands_need_static_shape():
  with pytest.raises(ValueError, match="static shape"):
    linalg.matvec(tf.zeros([3]), tf.zeros([3]))


@pytest.mark.parametrize("algorithm", linalg.SOLVE_ALGORITHMS)
def test_solve_gradient_reduces_broadcast_batch_dims(algorithm):
  bands = random_factor(11, 3, (3,))
  inside = (np.arange(11)[None, :] >= np.arange(4)[:, None]).astype(float)
  rhs = np.random.default_rng(6).normal(size=(2, 1, 11, 2))
  for transpose in (False, True):
    assert_gradients_match(
        lambda l, x: linalg.solve(l * inside, x, transpose=transpose, block_size=4, algorithm=algorithm),
        [bands, rhs])
    assert_gradients_match(lambda l, x: linalg.solve_vec(l * inside, x, transpose=transpose),
                           [bands, rhs[..., 0]])


def test_solve_picks_rows_for_few_columns_and_rejects_unknown_algorithms():
  assert linalg.solve_algorithm_for(1) == "rows"
  assert linalg.solve_algorithm_for(linalg.ROWS_MAX_COLUMNS + 1) == "blocks"
  assert linalg.solve_algorithm_for(None) == "blocks"
  with pytest.raises(ValueError, match="algorithm"):
    linalg.solve(random_factor(4, 1), np.ones((4, 1)), algorithm="dense")


def test_plain_graph_kernels_trace_no_xla_cluster():
  bands = random_factor(12, 2, (2,), dtype=np.float32)
  rhs = np.ones((2, 12, 1), np.float32)
  with linalg.plain_graph_kernels():
    assert not _has_xla_cluster(lambda: linalg.solve(bands, rhs))
  assert _has_xla_cluster(lambda: linalg.solve(bands, rhs))


def _has_xla_cluster(function) -> bool:
  graph = tf.function(function).get_concrete_function().graph
  return any(op.get_attr("_XlaMustCompile") for op in graph.get_operations() if "_XlaMustCompile" in op.node_def.attr)


def _banded_matvecs(bands, x):
  """numpy references of L x and L^T x from the bands: (L x)_i = sum_k L[i, i-k] x_{i-k}, (L^T x)_j = sum_k L[j+k, j] x_{j+k}."""
  n = x.shape[-1]
  lower, upper = np.zeros_like(x), np.zeros_like(x)
  for k in range(bands.shape[-2]):
    lower[..., k:] += bands[..., k, k:] * x[..., : n - k]
    upper[..., : n - k] += bands[..., k, k:] * x[..., k:]
  return lower, upper


@pytest.mark.parametrize("n,batch", [(12, 2), (700, 100)])
def test_matvecs_run_plain_below_the_size_threshold_and_compiled_above_it(n, batch):
  from tfggm.linalg.bands import PLAIN_BELOW_ELEMENTS
  b = 3
  bands = random_factor(n, b, (batch,), dtype=np.float32)
  x = np.random.default_rng(3).normal(size=(batch, n)).astype(np.float32)
  large = bands.size + x.size >= PLAIN_BELOW_ELEMENTS
  for matvec, reference in zip((linalg.matvec, linalg.matvec_transpose), _banded_matvecs(bands.astype(np.float64), x)):
    assert _has_xla_cluster(lambda: matvec(bands, x)) == large
    with tf.GradientTape() as tape:
      bands_t = tf.constant(bands)
      tape.watch(bands_t)
      y = matvec(bands_t, x)
      total = tf.reduce_sum(y)
    np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-4)
    # d sum(y) / d L[i, i-k]: x_{i-k} for L x, x_i for L^T x (zero outside the matrix).
    lag, i = np.arange(b + 1)[:, None], np.arange(n)[None, :]
    shifted = np.where(i >= lag, np.take(x, np.clip(i - lag, 0, None), axis=-1), 0.0)
    expected = shifted if matvec is linalg.matvec else np.where(i >= lag, x[:, None, :], 0.0)
    np.testing.assert_allclose(tape.gradient(total, bands_t), expected, rtol=1e-5, atol=1e-5)


def test_default_blocks_are_balanced_and_cover_bands_wider_than_n():
  from tfggm.linalg.blocks import block_size_for
  assert [block_size_for(n, b) for n, b in [(784, 256), (784, 28), (100, 3), (64, 28), (70, 90)]] == [262, 28, 17, 64, 90]
  bands = random_factor(70, 2, (2,))
  wide = np.concatenate([bands, np.zeros((2, 88, 70))], axis=-2)  # lags up to 90 > n, all zero
  dense = dense_lower(bands)
  covariance = np.linalg.inv(dense @ np.swapaxes(dense, -1, -2))
  np.testing.assert_allclose(linalg.selected_inversion(wide), band_of(covariance, 90), rtol=1e-9, atol=1e-9)
  rhs = np.ones((2, 70, 1))
  np.testing.assert_allclose(linalg.solve(wide, rhs, algorithm="blocks"), np.linalg.solve(dense, rhs), rtol=1e-9)


# (n, lags): sparse lags as a grid's (0, 1, w), a gap at the start, lags reaching past n.
LAGGED = [(12, (0, 1, 4)), (13, (0, 3, 4, 5)), (5, (0, 2, 7)), (9, (0,)), (1, (0, 1))]


def random_lagged_factor(n, lags, batch=(), seed=0):
  """Bands at `lags` [..., len(lags), n] and the same L at every lag [..., b + 1, n]."""
  full = random_factor(n, lags[-1], batch, seed=seed)
  absent = [k for k in range(lags[-1] + 1) if k not in lags]
  full[..., absent, :] = 0.0
  return full[..., list(lags), :], full


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n,lags", LAGGED)
def test_kernels_at_sparse_lags_match_numpy(n, lags, batch):
  bands, full = random_lagged_factor(n, lags, batch)
  np.testing.assert_array_equal(linalg.bands_at_all_lags(bands, lags), full)
  dense = dense_lower(full)
  rng = np.random.default_rng(7)
  x = rng.normal(size=tuple(batch) + (n,))
  np.testing.assert_allclose(linalg.matvec(bands, x, lags=lags), np.einsum("...ij,...j->...i", dense, x),
                             rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(linalg.matvec_transpose(bands, x, lags=lags),
                             np.einsum("...ji,...j->...i", dense, x), rtol=1e-12, atol=1e-12)
  for algorithm in linalg.SOLVE_ALGORITHMS:
    for num_columns in (1, 3):
      rhs = rng.normal(size=tuple(batch) + (n, num_columns))
      for transpose in (False, True):
        matrix = np.swapaxes(dense, -1, -2) if transpose else dense
        got = linalg.solve(bands, rhs, transpose=transpose, algorithm=algorithm, lags=lags)
        np.testing.assert_allclose(got, np.linalg.solve(matrix, rhs), rtol=1e-10, atol=1e-10,
                                   err_msg=f"{algorithm} r={num_columns} transpose={transpose}")


@pytest.mark.parametrize("algorithm", linalg.SOLVE_ALGORITHMS)
@pytest.mark.parametrize("n,lags", LAGGED[:3])
def test_gradients_at_sparse_lags_match_finite_differences(n, lags, algorithm):
  bands, _ = random_lagged_factor(n, lags, (2,))
  rhs = np.random.default_rng(8).normal(size=(2, n, 2))
  inside = (np.arange(n)[None, :] >= np.array(lags)[:, None]).astype(float)  # L[i, i - k] exists
  assert_gradients_match(
      lambda l, x: (linalg.solve(l * inside, x, algorithm=algorithm, lags=lags),
                    linalg.solve(l * inside, x, transpose=True, algorithm=algorithm, lags=lags),
                    linalg.matvec(l, x[..., 0], lags=lags), linalg.matvec_transpose(l, x[..., 0], lags=lags),
                    linalg.bands_at_all_lags(l, lags)),
      [bands, rhs])


def test_sparse_lags_compile_with_xla_and_agree():
  lags = (0, 1, 5)
  bands, _ = random_lagged_factor(30, lags, (2,))
  bands = bands.astype(np.float32)
  rhs = np.random.default_rng(9).normal(size=(2, 30, 1)).astype(np.float32)
  kernels = {
      "solve": lambda: linalg.solve(bands, rhs, lags=lags),
      "solve_transpose": lambda: linalg.solve(bands, rhs, transpose=True, lags=lags),
      "matvec": lambda: linalg.matvec(bands, rhs[..., 0], lags=lags),
      "matvec_transpose": lambda: linalg.matvec_transpose(bands, rhs[..., 0], lags=lags),
  }
  for name, kernel in kernels.items():
    compiled = tf.function(kernel, jit_compile=True)
    with linalg.plain_graph_kernels():
      plain = tf.function(kernel)()
    np.testing.assert_allclose(compiled(), plain, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("lags", [(1, 2), (0, 2, 2), (0, 3, 1), (0, 1)])
def test_bad_lags_are_rejected(lags):
  with pytest.raises(ValueError, match="lags must be 3 strictly increasing"):
    linalg.matvec(np.ones((3, 6)), np.ones(6), lags=lags)
