"""MNIST for the VAEs: IDX files, binarized and dequantized tf.data pipelines, image checks.

Where MNIST comes from, in this order: an explicit `data_dir` (`--data-dir`), then `$TFGGM_DATA_DIR` (either must
hold the four IDX files), then tensorflow_datasets, which downloads MNIST into its own cache on first use (with a
progress bar) when there is a network; else a DataError that says what to pass. The repository carries the four
files in `data/mnist/`. A file of MNIST's size must be byte for byte the canonical one (its sha256 is checked),
a canonical file must be under its own name, and MNIST has 60,000 training and 10,000 test images (other counts
only on request): a corrupt download or a swapped file is an error, not a silent wrong result.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import numbers
import os
import pathlib
import zlib
from collections.abc import Callable

import numpy as np
import tensorflow as tf

__all__ = [
    "DATA_DIR_ENV",
    "IMAGE_SHAPE",
    "MNIST_FILES",
    "MNIST_SHA256",
    "NUM_PIXELS",
    "DataError",
    "MnistArrays",
    "binarize_once",
    "binarized_dataset",
    "check_images",
    "dequantize_once",
    "dequantized_dataset",
    "dequantized_to_discrete_nats",
    "discrete_bits_per_dim",
    "load_mnist",
    "nats_to_bits_per_dim",
    "read_idx",
    "resolve_mnist_dir",
    "split_validation",
]

IMAGE_SHAPE = (28, 28)
NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
DATA_DIR_ENV = "TFGGM_DATA_DIR"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# sha256 of the canonical files (Y. LeCun's distribution): a file of MNIST's size must match its sum.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}
_MNIST_COUNTS = {"train": 60_000, "t10k": 10_000}
_IDX_UINT8 = 0x08
_IDX_NDIM = {2049: 1, 2051: 3}  # magic number -> rank: labels, images.
# Dequantization noise is kept this far from 0 and 1 so that, in float32, pixel + u never
# rounds onto a bin edge: x stays strictly inside (pixel / 256, (pixel + 1) / 256).
_DEQUANTIZE_EDGE = 2.0**-16


class DataError(ValueError):
  """A problem with the data the user supplied or pointed to; the message says how to fix it."""


@dataclasses.dataclass(frozen=True, eq=False)
class MnistArrays:
  """MNIST as numpy arrays: images uint8 [N, 784] (raw 0..255 pixels), labels uint8 [N]."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  @property
  def image_shape(self) -> tuple[int, int]:
    """(height, width) of the images, which are stored flattened: MNIST's (28, 28)."""
    return IMAGE_SHAPE


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one uint8 IDX file (gzip-compressed or not), checking its header against its size.

  MNIST images (magic 2051) come back as [N, 28, 28], labels (magic 2049) as [N].
  """
  path = pathlib.Path(path)
  return _parse_idx(_read_bytes(path), path)


def _read_bytes(path: pathlib.Path) -> bytes:
  """The content of the file at `path`; DataError if it is missing or unreadable."""
  if not path.is_file():
    raise DataError(f"IDX file '{path}' does not exist (or is not a file).")
  try:
    return path.read_bytes()
  except OSError as error:
    raise DataError(f"cannot read IDX file '{path}' ({error.strerror or error}).") from error


def _parse_idx(raw: bytes, path: pathlib.Path) -> np.ndarray:
  """The array of IDX file content `raw` (gzip-compressed or not), read from `path` (named in errors)."""
  if not raw:
    raise DataError(f"IDX file '{path}' is empty; re-download it.")
  compressed = raw[:2] == b"\x1f\x8b"
  if compressed:
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
      raise DataError(
          f"IDX file '{path}' is a corrupt gzip file ({error}); re-download it.") from error
  if len(raw) < 4 or raw[:2] != b"\x00\x00":
    what = "gzip-compressed, but the content is not IDX" if compressed else "neither gzip nor IDX"
    raise DataError(f"'{path}' is {what} (it starts with {raw[:4]!r}); expected one of the "
                    "MNIST files " + ", ".join(MNIST_FILES.values()) + ".")
  magic = int.from_bytes(raw[:4], "big")
  if raw[2] != _IDX_UINT8 or magic not in _IDX_NDIM:
    raise DataError(f"IDX file '{path}' has magic number {magic} (0x{magic:08x}); expected 2051 "
                    "(uint8 images) or 2049 (uint8 labels). Is it an MNIST IDX file?")
  ndim = _IDX_NDIM[magic]
  header_bytes = 4 + 4 * ndim
  if len(raw) < header_bytes:
    raise DataError(f"IDX file '{path}' is truncated inside its header ({len(raw)} bytes); "
                    "re-download it.")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected, found = math.prod(shape), len(raw) - header_bytes
  if found != expected:
    problem = "truncated" if found < expected else "longer than its header says"
    raise DataError(f"IDX file '{path}' is {problem}: its header promises shape {shape} = "
                    f"{expected} payload bytes, but {found} were found; re-download it.")
  return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape).copy()


def _idx_path(directory: pathlib.Path, name: str) -> pathlib.Path | None:
  """The file `name` in `directory`, or its uncompressed twin (without .gz), or None."""
  for candidate in (directory / name, directory / name.removesuffix(".gz")):
    if candidate.is_file():
      return candidate
  return None


def _missing_files(directory: pathlib.Path) -> list[str]:
  return [name for name in MNIST_FILES.values() if _idx_path(directory, name) is None]


def _checked_dir(path: str | os.PathLike, source: str) -> pathlib.Path:
  """`path` resolved, or a DataError if it is not a directory holding all four MNIST files."""
  directory = pathlib.Path(path).expanduser()
  if not directory.is_dir():
    raise DataError(f"{source} = '{directory}' is not a directory; point it at a directory "
                    "containing the four MNIST IDX files " + ", ".join(MNIST_FILES.values()) + ".")
  missing = _missing_files(directory)
  if missing:
    raise DataError(f"{source} = '{directory}' lacks the MNIST files " + ", ".join(missing)
                    + "; put all four IDX .gz files there.")
  return directory.resolve()


def resolve_mnist_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
  """The directory with the four MNIST IDX files, or None (then tensorflow_datasets provides MNIST).

  Order: `data_dir`, then $TFGGM_DATA_DIR; either one, if given, must be complete, else DataError naming the
  missing files.
  """
  if data_dir is not None:
    return _checked_dir(data_dir, "data_dir")
  from_env = os.environ.get(DATA_DIR_ENV)
  if from_env:
    return _checked_dir(from_env, f"${DATA_DIR_ENV}")
  return None


def _check_canonical(raw: bytes, path: pathlib.Path, name: str, count: int) -> None:
  """The content `raw` of the file `name` at `path`, of `count` items, checked by its sha256; else DataError.

  A canonical MNIST file must be under its own name (not swapped with another), and a file of MNIST's size
  must be the canonical `name`. Files of other sizes (subsets, synthetic data) are not MNIST's and pass. An
  uncompressed twin is not checked: only the .gz files have published sums.
  """
  if not path.name.endswith(".gz"):
    return
  digest = hashlib.sha256(raw).hexdigest()
  if digest == MNIST_SHA256[name]:
    return
  swapped = [other for other, value in MNIST_SHA256.items() if value == digest]
  if swapped:
    raise DataError(f"'{path}' is the canonical {swapped[0]} (by its sha256): the MNIST files look swapped; "
                    "give each file its own name.")
  if count == _MNIST_COUNTS[name.split("-")[0]]:
    raise DataError(f"'{path}' has MNIST's size but not its content (sha256 {digest[:16]}..., expected "
                    f"{MNIST_SHA256[name][:16]}...): it is corrupt or not MNIST. Restore the canonical file.")


def _read_mnist_file(directory: pathlib.Path, name: str) -> np.ndarray:
  """The array of MNIST file `name` in `directory` (or its uncompressed twin), read once and checked."""
  path = _idx_path(directory, name)
  raw = _read_bytes(path)
  array = _parse_idx(raw, path)
  _check_canonical(raw, path, name, len(array))
  return array


def _check_counts(source: str, arrays: MnistArrays, allow_nonstandard_counts: bool) -> None:
  """MNIST's 60,000 training and 10,000 test images, else DataError, unless `allow_nonstandard_counts`."""
  counts = (len(arrays.train_images), len(arrays.test_images))
  standard = (_MNIST_COUNTS["train"], _MNIST_COUNTS["t10k"])
  if counts == standard or allow_nonstandard_counts:
    return
  if counts == standard[::-1]:
    raise DataError(f"{source}: 10,000 training and 60,000 test images; the train and test files look swapped "
                    "(MNIST has 60,000 training and 10,000 test images): give each file its own name.")
  raise DataError(f"{source}: {counts[0]:,} training and {counts[1]:,} test images, but MNIST has 60,000 and 10,000. "
                  "To use other data, pass allow_nonstandard_counts=True (the CLI: --allow-nonstandard-counts).")


def _mnist_arrays(source: str, train_images: np.ndarray, train_labels: np.ndarray,
                  test_images: np.ndarray, test_labels: np.ndarray) -> MnistArrays:
  """Checks shapes, counts and label range, and flattens the images to [N, 784] uint8."""
  arrays = {}
  for split, images, labels in (("train", train_images, train_labels),
                                ("test", test_images, test_labels)):
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim < 2 or math.prod(images.shape[1:]) != NUM_PIXELS:
      raise DataError(f"{source}: the {split} images have shape {images.shape}; expected 28x28 "
                      "images. Are the image and label files swapped?")
    if labels.ndim != 1 or len(labels) != len(images):
      raise DataError(f"{source}: {len(images)} {split} images but labels of shape {labels.shape}; "
                      "the files do not belong together, re-download them.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
      raise DataError(f"{source}: the {split} labels span {labels.min()}..{labels.max()}; "
                      "MNIST labels are 0..9.")
    arrays[f"{split}_images"] = images.reshape(len(images), NUM_PIXELS).astype(np.uint8, copy=False)
    arrays[f"{split}_labels"] = labels.astype(np.uint8, copy=False)
  return MnistArrays(**arrays)


def _load_from_tfds() -> MnistArrays:
  """MNIST from tensorflow_datasets: its prepared copy, or a download into its cache (progress shown)."""
  try:
    import tensorflow_datasets as tfds  # Lazy: slow to import, and only needed without a data directory.
    train, test = tfds.load("mnist", split=["train", "test"], batch_size=-1, download=True)
  except Exception as error:  # Not installed, offline, a failed download: no MNIST from here.
    raise DataError(
        "MNIST not found. Pass --data-dir DIR (data_dir=DIR in Python) or set "
        f"{DATA_DIR_ENV}=DIR, with DIR a directory holding the four IDX .gz files ("
        + ", ".join(MNIST_FILES.values()) + "); a clone of the tfggm repository has them in data/mnist. "
        f"tensorflow_datasets could not provide MNIST either ({type(error).__name__}: {error}); "
        "it downloads MNIST only when there is a network.") from error
  return _mnist_arrays("tensorflow_datasets", train["image"], train["label"],
                       test["image"], test["label"])


def load_mnist(data_dir: str | os.PathLike | None = None, max_examples: int | None = None, *,
               allow_nonstandard_counts: bool = False) -> MnistArrays:
  """MNIST from `resolve_mnist_dir(data_dir)`, else from tensorflow_datasets (downloading), else DataError.

  Each file is read once and checked (header, size, sha256, see `read_idx`); the splits must hold MNIST's
  60,000 training and 10,000 test images, with as many labels, unless `allow_nonstandard_counts` (subsets,
  synthetic data). `max_examples` then keeps only the first that many examples of every split (quick runs).

  Raises:
    DataError: no MNIST found; a missing, unreadable, corrupt or swapped file; labels that do not match the
      images; other counts than MNIST's without `allow_nonstandard_counts`; a bad `max_examples`.
  """
  if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, numbers.Integral)
                                   or max_examples < 1):
    raise DataError(f"max_examples = {max_examples!r}; it must be a positive integer or None.")
  directory = resolve_mnist_dir(data_dir)
  if directory is None:
    source, arrays = "tensorflow_datasets", _load_from_tfds()
  else:
    source = str(directory)
    arrays = _mnist_arrays(source, **{field: _read_mnist_file(directory, name) for field, name in MNIST_FILES.items()})
  _check_counts(source, arrays, allow_nonstandard_counts)
  if max_examples is None:
    return arrays
  return MnistArrays(**{field.name: getattr(arrays, field.name)[:max_examples]
                        for field in dataclasses.fields(arrays)})


def split_validation(train_images: np.ndarray,
                     num_validation: int = 10000) -> tuple[np.ndarray, np.ndarray]:
  """(first N - num_validation, last num_validation) rows: the usual 50k/10k MNIST split.

  Works on labels as well, so images and labels can be split alike.
  """
  count = len(train_images)
  if not 0 < num_validation < count:
    raise DataError(f"num_validation = {num_validation} but there are {count} training examples; "
                    f"it must be between 1 and {count - 1} to leave some for training.")
  return train_images[:-num_validation], train_images[-num_validation:]


def _check_pixels(images: np.ndarray) -> np.ndarray:
  """`images` as a non-empty uint8 [N, D] array of raw 0..255 pixels, or a DataError."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise DataError(f"expected raw uint8 pixels (0..255) as given by load_mnist, got dtype "
                    f"{images.dtype}; this function binarizes or dequantizes them itself.")
  if images.ndim != 2 or not len(images):
    raise DataError(f"expected images of shape [N, {NUM_PIXELS}] with N >= 1, got {images.shape}; "
                    "flatten with images.reshape(len(images), -1).")
  return images


def _check_batching(num_images: int, batch_size: int, drop_remainder: bool) -> None:
  if batch_size < 1:
    raise DataError(f"batch_size = {batch_size}; it must be a positive integer.")
  if drop_remainder and batch_size > num_images:
    raise DataError(f"batch_size = {batch_size} > {num_images} images with drop_remainder=True "
                    "gives no batches at all; lower batch_size.")


def _noisy_dataset(images: np.ndarray, batch_size: int, shuffle: bool, seed: int | None,
                   drop_remainder: bool,
                   transform: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.data.Dataset:
  """Shuffled batches of `images`, each mapped by transform(uint8 batch, stateless seed [2]).

  The per-batch seeds come from `Dataset.random(rerandomize_each_iteration=True)`, so the
  noise is new every epoch yet the first epoch is reproducible for a given `seed`.
  """
  images = _check_pixels(images)
  _check_batching(len(images), batch_size, drop_remainder)
  shuffle_seed = noise_seed = None
  if seed is not None:  # Two independent streams from one seed.
    shuffle_seed, noise_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
  dataset = tf.data.Dataset.from_tensor_slices(images)
  if shuffle:
    dataset = dataset.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  seeds = tf.data.Dataset.random(seed=noise_seed, rerandomize_each_iteration=True).batch(2)
  dataset = tf.data.Dataset.zip((dataset, seeds))
  return dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _binarize_batch(pixels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  probs = tf.cast(pixels, tf.float32) / 255.0
  return tf.cast(tf.random.stateless_uniform(tf.shape(probs), seed) < probs, tf.float32)


def _dequantize_batch(pixels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  noise = tf.random.stateless_uniform(tf.shape(pixels), seed, minval=_DEQUANTIZE_EDGE,
                                      maxval=1.0 - _DEQUANTIZE_EDGE)
  return (tf.cast(pixels, tf.float32) + noise) / 256.0


def binarized_dataset(images_uint8: np.ndarray, batch_size: int, shuffle: bool = True,
                      seed: int | None = None, drop_remainder: bool = False) -> tf.data.Dataset:
  """Dynamic binarization for training: batches x float32 [batch, 784] in {0, 1}.

  Each pixel is Bernoulli(pixel / 255), drawn afresh every epoch (less overfitting than one
  fixed binarization). The order is reshuffled every epoch; the first epoch is
  reproducible for a given `seed`.
  """
  return _noisy_dataset(images_uint8, batch_size, shuffle, seed, drop_remainder, _binarize_batch)


def binarize_once(images_uint8: np.ndarray, seed: int = 0) -> np.ndarray:
  """Fixed binarization for evaluation: float32 {0, 1}, Bernoulli(pixel / 255), same for a seed."""
  images = _check_pixels(images_uint8)
  uniform = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
  return (uniform < images.astype(np.float32) / 255.0).astype(np.float32)


def dequantized_dataset(images_uint8: np.ndarray, batch_size: int, shuffle: bool = True,
                        seed: int | None = None, drop_remainder: bool = False) -> tf.data.Dataset:
  """Uniform dequantization for continuous likelihoods: x = (pixel + u) / 256, u ~ U(0, 1).

  Yields float32 [batch, 784] strictly inside (0, 1), as a logit-normal likelihood needs,
  with floor(256 x) == pixel. u is redrawn every epoch (and kept 2^-16 from 0 and 1 so that
  float32 rounding never reaches a bin edge). Shuffling and seeding as in binarized_dataset.
  """
  return _noisy_dataset(images_uint8, batch_size, shuffle, seed, drop_remainder,
                        _dequantize_batch)


def dequantize_once(images_uint8: np.ndarray, seed: int = 0) -> np.ndarray:
  """Fixed dequantization for evaluation: float32 (pixel + u) / 256, the same for a seed."""
  images = _check_pixels(images_uint8)
  noise = np.random.default_rng(seed).uniform(_DEQUANTIZE_EDGE, 1.0 - _DEQUANTIZE_EDGE,
                                              images.shape).astype(np.float32)
  return (images.astype(np.float32) + noise) / np.float32(256.0)


def nats_to_bits_per_dim(nats: float | np.ndarray,
                         num_dims: int = NUM_PIXELS) -> float | np.ndarray:
  """Bits per dimension of a log-likelihood: -log p(x) / (num_dims ln 2).

  The input is log p(x) in nats (normally negative); the output is the positive
  bits/dim, the usual way to report density-model results.
  """
  return -nats / (num_dims * math.log(2.0))


def dequantized_to_discrete_nats(log_px: float | np.ndarray,
                                 num_dims: int = NUM_PIXELS) -> float | np.ndarray:
  """log p(x) - num_dims log 256: a density on [0, 1]^D turned into discrete-pixel nats.

  x = (pixel + u) / 256 squeezes each 256-level pixel into a bin of width 1/256, so
  P(pixels) = integral of p over the bin, and by Jensen's inequality
  log P(pixels) >= E_u[log p(x)] - D log 256. Averaged over u (or the test set), this
  is therefore a lower bound on the discrete log-likelihood, comparable across models.
  """
  return log_px - num_dims * math.log(256.0)


def discrete_bits_per_dim(log_px: float | np.ndarray,
                          num_dims: int = NUM_PIXELS) -> float | np.ndarray:
  """The bits/dim of the 8-bit data from log p(x) of its dequantized version on [0, 1]^D, in nats.

  ```none
  bits/dim = -(log p(x) - D log 256) / (D ln 2) = -log2 p(x) / D + 8
  ```

  The convention of the density-modelling literature (RealNVP, MAF, Glow, FFJORD): positive, lower is
  better, 8 for the uniform density; by `dequantized_to_discrete_nats` an upper bound on the bits/dim of the
  discrete pixels. A difference of two log-densities converts with `nats_to_bits_per_dim` alone (the 8 cancels).
  """
  return nats_to_bits_per_dim(dequantized_to_discrete_nats(log_px, num_dims), num_dims)


def check_images(x: np.ndarray, name: str, binary: bool = False) -> np.ndarray:
  """Validates user images, returning float32 [N, 784]; DataError on a bad shape or value.

  Accepts [N, 784] or [N, 28, 28]; the values must be finite, in [0, 1], and in {0, 1}
  if `binary`.
  """
  array = np.asarray(x)
  if array.dtype.kind not in "biuf":
    raise DataError(f"{name} has dtype {array.dtype}; expected a numeric array of images.")
  if array.ndim == 3 and array.shape[1:] == (28, 28):
    array = array.reshape(len(array), NUM_PIXELS)
  if array.ndim != 2 or array.shape[1] != NUM_PIXELS:
    raise DataError(f"{name} has shape {array.shape}; expected images of shape "
                    f"[N, {NUM_PIXELS}] or [N, 28, 28].")
  if not len(array):
    raise DataError(f"{name} holds no images (shape {array.shape}).")
  num_bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
  if num_bad:
    raise DataError(f"{name} has {num_bad} NaN or Inf entries (of {array.size}); "
                    "remove or fix them before use.")
  low, high = array.min(), array.max()
  if low < 0 or high > 1:
    hint = " Raw 0..255 pixels? Divide by 255." if high > 1 else ""
    raise DataError(f"{name} has values in [{low}, {high}]; expected values in [0, 1].{hint}")
  if binary:
    num_other = int(np.count_nonzero((array != 0) & (array != 1)))
    if num_other:
      raise DataError(f"{name} has {num_other} entries that are neither 0 nor 1 but a binary "
                      "likelihood needs {0, 1}; binarize them (binarize_once) first.")
  return array.astype(np.float32)
