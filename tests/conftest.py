"""Shared cases: one registry of stencils and banded structures, dense float64 references, gradient checks."""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tf_keras

from tfggm import stencils
from tfggm._testing import random_factor_bands


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


@dataclasses.dataclass(frozen=True)
class Case:
  """Banded factors of one structure: n, the lags of the stored rows, batch shapes and a block size.

  `rhs_batch_shape` is the batch shape of the second operand of a kernel (right-hand sides, x, loc); by default
  `batch_shape`. `stencil`, when set, restricts the entries of L to its mask.
  """
  n: int
  lags: tuple
  batch_shape: tuple = ()
  block_size: int | None = None
  rhs_batch_shape: tuple | None = None
  stencil: stencils.Stencil | None = None

  @classmethod
  def of(cls, stencil: stencils.Stencil, **kwargs) -> "Case":
    """L on a stencil, stored at its active lags."""
    return cls(stencil.n, stencil.active_lags, stencil=stencil, **kwargs)

  @property
  def bandwidth(self) -> int:
    return self.lags[-1]

  @property
  def other_batch_shape(self) -> tuple:
    return self.batch_shape if self.rhs_batch_shape is None else self.rhs_batch_shape

  @property
  def broadcast_batch_shape(self) -> tuple:
    return np.broadcast_shapes(self.batch_shape, self.other_batch_shape)

  def factor_bands(self, seed: int = 0, dtype=np.float64, every_lag: bool = False) -> np.ndarray:
    """Random L (`random_factor_bands`) at the case's lags [..., R, n], or at every lag 0..b [..., b + 1, n]."""
    structure = self.n if self.stencil is None else self.stencil
    bandwidth = None if self.stencil is not None else self.bandwidth
    bands = random_factor_bands(structure, bandwidth, self.batch_shape, seed=seed, dtype=dtype, lags=self.lags)
    return at_every_lag(bands, self.lags) if every_lag else bands


# One registry of banded structures for every kernel and distribution test: the stencils of STENCILS at their
# active lags (sparse where a stencil skips lags, as a grid's (0, 1, w)), then block edges no stencil has.
# Batch shapes () and (2, 3) and broadcasting are spread over the cases; dtypes are a separate axis (DTYPES).
CASES = {
    "diagonal": Case.of(STENCILS["diagonal"](), batch_shape=(2, 3)),  # b = 0
    "chain": Case.of(STENCILS["chain"]()),
    "grid": Case.of(STENCILS["grid"](), batch_shape=(2, 3), block_size=5),  # lags (0, 1, 4); 3 blocks, 3 rows padded
    "extended_grid": Case.of(STENCILS["extended_grid"](), block_size=6),  # lags (0, 1, 3, 4, 5); n = 2 blocks exactly
    "band3": Case.of(STENCILS["band3"](), batch_shape=(2,), block_size=3),  # B = b; 4 blocks, 2 rows padded
    "random_custom": Case.of(STENCILS["random_custom"](), batch_shape=(2, 3)),  # lags (0, 3, 5, 9)
    "n1": Case(1, (0,)),  # n = 1, b = 0
    "b_is_n_minus_1": Case(7, tuple(range(7)), batch_shape=(2, 3)),
    "lags_past_n": Case(5, (0, 2, 7)),  # b > n: one block B = b wider than n
    "n100": Case(100, (0, 1, 2, 3), batch_shape=(2,)),  # default blocks: 6 of 17, 2 rows padded
    "broadcast": Case(11, (0, 1, 2, 3), batch_shape=(1, 3), block_size=4, rhs_batch_shape=(2, 1)),
}
STENCIL_CASES = [name for name, case in CASES.items() if case.stencil is not None]
DTYPES = {"float32": np.float32, "float64": np.float64}


def at_every_lag(bands: np.ndarray, lags) -> np.ndarray:
  """Bands at `lags` [..., R, n] -> every lag 0..lags[-1], zeros elsewhere (numpy, independent of the library)."""
  full = np.zeros(bands.shape[:-2] + (lags[-1] + 1, bands.shape[-1]), dtype=bands.dtype)
  full[..., list(lags), :] = bands
  return full


def dense_lower(bands: np.ndarray) -> np.ndarray:
  """Dense L from compact bands, written independently of the library: L[i, i-k] = bands[k, i]."""
  b1, n = bands.shape[-2:]
  dense = np.zeros(bands.shape[:-2] + (n, n), dtype=bands.dtype)
  for k in range(min(b1, n)):
    for i in range(k, n):
      dense[..., i, i - k] = bands[..., k, i]
  return dense


def band_of(matrix: np.ndarray, bandwidth: int) -> np.ndarray:
  """Compact lower bands of a dense matrix: out[k, i] = M[i, i-k] (0 where i < k)."""
  n = matrix.shape[-1]
  out = np.zeros(matrix.shape[:-2] + (bandwidth + 1, n), dtype=matrix.dtype)
  for k in range(min(bandwidth + 1, n)):
    for i in range(k, n):
      out[..., k, i] = matrix[..., i, i - k]
  return out


def dense_reference(loc: np.ndarray, bands: np.ndarray, lags=None):
  """(tfd.MultivariateNormalTriL with covariance (L L^T)^{-1}, that covariance), dense and float64."""
  import tensorflow_probability as tfp
  bands = np.asarray(bands, dtype=np.float64)
  factor = dense_lower(bands if lags is None else at_every_lag(bands, lags))
  covariance = np.linalg.inv(factor @ np.swapaxes(factor, -1, -2))
  scale = np.linalg.cholesky(covariance)
  return tfp.distributions.MultivariateNormalTriL(np.asarray(loc, dtype=np.float64), scale), covariance


def tolerance(dtype) -> dict:
  return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)


def assert_gradients_match(function, args, num_directions: int = 3, delta: float = 1e-5,
                           seed: int = 0, rtol: float = 1e-6, graph: bool = True):
  """Checks autodiff against central differences along random directions, in float64.

  For the scalar s(x) = sum(w * f(x)) with fixed random weights w, compares
  <grad s, d> with (s(x + h d) - s(x - h d)) / 2h for random directions d: a few
  evaluations instead of a full numerical Jacobian. `graph`: inside `tf.function` (else eagerly).
  """
  import tensorflow as tf
  rng = np.random.default_rng(seed)
  args = [tf.constant(np.asarray(a, dtype=np.float64)) for a in args]
  outputs = tf.nest.flatten(function(*args))
  weights = [tf.constant(rng.normal(size=o.shape)) for o in outputs]
  wrap = tf.function if graph else (lambda f: f)

  @wrap
  def scalar(*xs):
    return tf.add_n([tf.reduce_sum(w * o) for w, o in zip(weights, tf.nest.flatten(function(*xs)))])

  @wrap
  def gradient(*xs):
    with tf.GradientTape() as tape:
      tape.watch(xs)
      value = scalar(*xs)
    return tape.gradient(value, xs)

  grads = gradient(*args)
  for g, a in zip(grads, args):  # (a broadcast gradient would pass the inner products below)
    assert g is not None and g.shape == a.shape, f"gradient {g} for an argument of shape {a.shape}"
  for _ in range(num_directions):
    _assert_directional_derivative(scalar, args, grads, rng, delta, rtol)


def _assert_directional_derivative(scalar, args, gradients, rng, delta: float, rtol: float) -> None:
  """<gradients, d> against the central difference (scalar(x + h d) - scalar(x - h d)) / 2h, d random."""
  import tensorflow as tf
  directions = [tf.constant(rng.normal(size=a.shape)) for a in args]
  plus = scalar(*[a + delta * d for a, d in zip(args, directions)])
  minus = scalar(*[a - delta * d for a, d in zip(args, directions)])
  numerical = float((plus - minus) / (2 * delta))
  analytic = float(sum(tf.reduce_sum(g * d) for g, d in zip(gradients, directions)))
  np.testing.assert_allclose(analytic, numerical, rtol=rtol, atol=rtol)


def assert_second_derivatives_match(function, args, delta: float = 1e-5, seed: int = 0, rtol: float = 1e-6):
  """Checks Hessian-vector products from nested tapes against central differences of the gradient, in float64.

  With s(x) = sum(w * f(x)) and t(x) = <grad s(x), v> for random w, v, compares <grad t, d> (a tape over the
  backward pass of another) with (t(x + h d) - t(x - h d)) / 2h, where t uses first-order gradients only. A
  second derivative that is None counts as zero, so a silently dropped one fails unless the true one is zero.
  """
  import tensorflow as tf
  rng = np.random.default_rng(seed)
  args = [tf.constant(np.asarray(a, dtype=np.float64)) for a in args]
  weights = [tf.constant(rng.normal(size=o.shape)) for o in tf.nest.flatten(function(*args))]
  vectors = [tf.constant(rng.normal(size=a.shape)) for a in args]

  def first_derivative(*xs):
    with tf.GradientTape() as tape:
      tape.watch(xs)
      value = tf.add_n([tf.reduce_sum(w * o) for w, o in zip(weights, tf.nest.flatten(function(*xs)))])
    gradients = tape.gradient(value, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.add_n([tf.reduce_sum(g * v) for g, v in zip(gradients, vectors)])

  with tf.GradientTape() as outer:
    outer.watch(args)
    value = first_derivative(*args)
  second = outer.gradient(value, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  _assert_directional_derivative(first_derivative, args, second, rng, delta, rtol)


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


# --- training runs on the tiny synthetic MNIST -------------------------------------------------------------------

SMALL_NETWORK = dict(hidden_units=(16,), batch_size=50, warmup_epochs=1)  # VAEConfig fields of a fast test run


def tiny(data_dir) -> dict:
  """The arguments of `train` that read the tiny synthetic MNIST (240 / 40 images, not 60,000 / 10,000)."""
  return dict(data_dir=data_dir, allow_nonstandard_counts=True)


def tiny_flags(data_dir) -> list:
  """The `tfggm train` / `evaluate` flags that read the tiny synthetic MNIST."""
  return ["--data-dir", str(data_dir), "--allow-nonstandard-counts"]


class FirstEpoch(tf_keras.callbacks.Callback):
  """Records the first epoch a (resumed) run trains, and the weights it starts that epoch with."""

  def on_epoch_begin(self, epoch, logs=None):
    if not hasattr(self, "epoch"):
      self.epoch, self.weights = epoch, [w.copy() for w in self.model.get_weights()]


class PoisonWeights(tf_keras.callbacks.Callback):
  """Sets every weight to NaN when epoch `epoch` begins, as a diverging run would."""

  def __init__(self, epoch: int):
    super().__init__()
    self.poisoned_epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.poisoned_epoch:
      self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])
