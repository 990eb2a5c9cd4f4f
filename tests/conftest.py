"""Shared cases: one registry of stencils, random well-conditioned factors, dense references."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from tfggm import stencils


def _random_custom() -> stencils.Stencil:
  rng = np.random.default_rng(7)
  candidates = [(0, -1), (0, -2), (-1, -1), (-1, 0), (-1, 2), (-2, 1)]
  chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), size=3, replace=False))]
  return stencils.from_offsets((4, 5), chosen, name="random_custom")


STENCILS = {
    "diagonal": lambda: stencils.diagonal(6),
    "chain": lambda: stencils.chain(9),
    "grid": lambda: stencils.grid(3, 4),
    "extended_grid": lambda: stencils.extended_grid(3, 4),
    "band3": lambda: stencils.band(10, 3),
    "random_custom": _random_custom,
}


@pytest.fixture(params=sorted(STENCILS))
def stencil(request) -> stencils.Stencil:
  return STENCILS[request.param]()


def random_bands(stencil: stencils.Stencil, batch_shape=(), seed: int = 0,
                 dtype=np.float64) -> np.ndarray:
  """Bands of a well-conditioned random L on the stencil: diagonal in [0.8, 1.6], off-diagonal ~ 0.3 N(0, 1)."""
  rng = np.random.default_rng(seed)
  b, n = stencil.bandwidth, stencil.n
  bands = 0.3 * rng.normal(size=tuple(batch_shape) + (b + 1, n))
  bands[..., 0, :] = rng.uniform(0.8, 1.6, size=tuple(batch_shape) + (n,))
  return (bands * stencil.mask).astype(dtype)


def dense_lower(bands: np.ndarray) -> np.ndarray:
  """Dense L from compact bands, written independently of the library: L[i, i-k] = bands[k, i]."""
  b1, n = bands.shape[-2:]
  dense = np.zeros(bands.shape[:-2] + (n, n), dtype=bands.dtype)
  for k in range(b1):
    for i in range(k, n):
      dense[..., i, i - k] = bands[..., k, i]
  return dense


def band_of(matrix: np.ndarray, bandwidth: int) -> np.ndarray:
  """Compact lower bands of a dense matrix: out[k, i] = M[i, i-k] (0 where i < k)."""
  n = matrix.shape[-1]
  out = np.zeros(matrix.shape[:-2] + (bandwidth + 1, n), dtype=matrix.dtype)
  for k in range(bandwidth + 1):
    for i in range(k, n):
      out[..., k, i] = matrix[..., i, i - k]
  return out


def tolerance(dtype) -> dict:
  return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)


def assert_gradients_match(function, args, num_directions: int = 3, delta: float = 1e-5,
                           seed: int = 0, rtol: float = 1e-6):
  """Checks autodiff against central differences along random directions, in float64.

  For the scalar s(x) = sum(w * f(x)) with fixed random weights w, compares
  <grad s, d> with (s(x + h d) - s(x - h d)) / 2h for random directions d: a few
  evaluations instead of a full numerical Jacobian.
  """
  import tensorflow as tf
  rng = np.random.default_rng(seed)
  args = [tf.constant(np.asarray(a, dtype=np.float64)) for a in args]
  outputs = tf.nest.flatten(function(*args))
  weights = [tf.constant(rng.normal(size=o.shape)) for o in outputs]

  @tf.function
  def scalar(*xs):
    return tf.add_n([tf.reduce_sum(w * o) for w, o in zip(weights, tf.nest.flatten(function(*xs)))])

  @tf.function
  def gradient(*xs):
    with tf.GradientTape() as tape:
      tape.watch(xs)
      value = scalar(*xs)
    return tape.gradient(value, xs)

  grads = gradient(*args)
  for _ in range(num_directions):
    directions = [tf.constant(rng.normal(size=a.shape)) for a in args]
    plus = scalar(*[a + delta * d for a, d in zip(args, directions)])
    minus = scalar(*[a - delta * d for a, d in zip(args, directions)])
    numerical = float((plus - minus) / (2 * delta))
    analytic = float(sum(tf.reduce_sum(g * d) for g, d in zip(grads, directions)))
    np.testing.assert_allclose(analytic, numerical, rtol=rtol, atol=rtol)


def write_idx(path, array: np.ndarray) -> None:
  """Writes a gzip IDX file (uint8): 0, 0, type 0x08, ndim, big-endian dims, payload."""
  import gzip
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory):
  """A synthetic MNIST directory: 240 train and 40 test 28 x 28 images of bright blobs."""
  directory = tmp_path_factory.mktemp("tiny_mnist")
  rng = np.random.default_rng(0)

  def images(count):
    rows, cols = np.mgrid[:28, :28]
    centres = rng.uniform(8, 20, size=(count, 2))
    distance = (rows[None] - centres[:, 0, None, None])**2 + (cols[None] - centres[:, 1, None, None])**2
    return (255 * np.exp(-distance / 30.0)).astype(np.uint8)

  write_idx(directory / "train-images-idx3-ubyte.gz", images(240))
  write_idx(directory / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 240))
  write_idx(directory / "t10k-images-idx3-ubyte.gz", images(40))
  write_idx(directory / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 40))
  return directory
