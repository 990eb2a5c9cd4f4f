"""The MNIST data module: IDX files, finding data, splits, binarization, dequantization, checks."""

import gzip
import hashlib
import math
import pathlib
import shutil
import struct
import sys
import types

import numpy as np
import pytest

from tfggm.mnist import data

REPOSITORY_MNIST = pathlib.Path(__file__).resolve().parents[1] / "data" / "mnist"


def write_idx(path, array, compress=True):
  """Writes `array` as a uint8 IDX file: 0, 0, type 0x08, ndim, big-endian uint32 dims, payload."""
  array = np.asarray(array, dtype=np.uint8)
  content = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  content += array.tobytes()
  path.write_bytes(gzip.compress(content) if compress else content)
  return path


def write_mnist_dir(directory, num_train=20, num_test=7, seed=0, zeros=False):
  """A synthetic MNIST directory with the four canonical file names (random, or zero if `zeros`: quick to
  compress); returns what was written."""
  def draw(high, shape):
    return np.zeros(shape, np.uint8) if zeros else rng.integers(0, high, size=shape, dtype=np.uint8)

  rng = np.random.default_rng(seed)
  arrays = {
      "train_images": draw(256, (num_train, 28, 28)),
      "train_labels": draw(10, num_train),
      "test_images": draw(256, (num_test, 28, 28)),
      "test_labels": draw(10, num_test),
  }
  directory.mkdir(parents=True, exist_ok=True)
  for field, name in data.MNIST_FILES.items():
    write_idx(directory / name, arrays[field])
  return arrays


def epoch(dataset):
  return [batch.numpy() for batch in dataset]


# IDX files.


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, size=5, dtype=np.uint8)
  read_images = data.read_idx(write_idx(tmp_path / "images.idx", images, compress))
  read_labels = data.read_idx(write_idx(tmp_path / "labels.idx", labels, compress))
  assert read_images.dtype == np.uint8 and read_images.shape == (5, 28, 28)
  np.testing.assert_array_equal(read_images, images)
  np.testing.assert_array_equal(read_labels, labels)
  read_images[0, 0, 0] = 7  # The result is an ordinary writable array.


def _idx_bytes(array):
  array = np.asarray(array, dtype=np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.tobytes()


BAD_IDX_FILES = [
    (gzip.compress(_idx_bytes(np.zeros((3, 28, 28)))[:-100]), ["truncated", "2352", "2252"]),
    (gzip.compress(_idx_bytes(np.zeros((3, 28, 28))) + b"\x00"), ["longer", "2352", "2353"]),
    (_idx_bytes(np.zeros(4))[:-1], ["truncated", "4 payload bytes", "3 were found"]),
    (gzip.compress(b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 2) + bytes(4)),
     ["magic number 2050"]),
    (gzip.compress(b"\x00\x00\x0d\x03" + struct.pack(">3I", 1, 1, 1) + bytes(4)), ["magic number"]),
    (b"\x00\x00\x08\x03\x00\x00", ["header"]),
    (b"", ["empty"]),
    (b"this is definitely not an MNIST file", ["neither gzip nor IDX"]),
    (gzip.compress(b"random text, compressed"), ["not IDX"]),
    (gzip.compress(_idx_bytes(np.zeros(10)))[:-6], ["corrupt gzip"]),
]


@pytest.mark.parametrize("content,expected", BAD_IDX_FILES)
def test_read_idx_rejects_bad_files(tmp_path, content, expected):
  path = tmp_path / "broken-file-idx.gz"
  path.write_bytes(content)
  with pytest.raises(data.DataError) as error:
    data.read_idx(path)
  for text in ["broken-file-idx.gz"] + expected:
    assert text in str(error.value)


@pytest.mark.parametrize("content,expected", BAD_IDX_FILES)
def test_load_mnist_rejects_bad_files(tmp_path, content, expected):
  """load_mnist reads each file once, without read_idx, and keeps every one of its checks."""
  write_mnist_dir(tmp_path)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(content)
  with pytest.raises(data.DataError) as error:
    data.load_mnist(tmp_path, allow_nonstandard_counts=True)
  for text in ["t10k-labels-idx1-ubyte.gz"] + expected:
    assert text in str(error.value)


def test_an_unreadable_file_is_a_data_error(tmp_path, monkeypatch):
  write_mnist_dir(tmp_path)
  read_bytes = pathlib.Path.read_bytes

  def refuse_train_images(path):
    if path.name == "train-images-idx3-ubyte.gz":
      raise PermissionError(13, "Permission denied", str(path))  # chmod would not stop root
    return read_bytes(path)

  monkeypatch.setattr(pathlib.Path, "read_bytes", refuse_train_images)
  with pytest.raises(data.DataError, match=r"cannot read IDX file '.*train-images-idx3-ubyte.gz' \(Permission denied"):
    data.load_mnist(tmp_path, allow_nonstandard_counts=True)


def test_read_idx_missing_file(tmp_path):
  with pytest.raises(data.DataError, match="nowhere.gz.*does not exist"):
    data.read_idx(tmp_path / "nowhere.gz")


# Finding and loading MNIST.


def test_resolve_explicit_dir_lists_missing_files(tmp_path):
  write_mnist_dir(tmp_path)
  (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
  (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
  with pytest.raises(data.DataError) as error:
    data.resolve_mnist_dir(str(tmp_path))
  message = str(error.value)
  assert "train-labels-idx1-ubyte.gz" in message and "t10k-images-idx3-ubyte.gz" in message
  assert "train-images-idx3-ubyte.gz, t10k" not in message  # Only the missing ones are listed.
  with pytest.raises(data.DataError, match="is not a directory"):
    data.load_mnist(str(tmp_path / "absent"))


def test_resolve_order_explicit_then_env_then_none(tmp_path, monkeypatch):
  explicit, from_env = tmp_path / "explicit", tmp_path / "env"
  for directory in (explicit, from_env):
    write_mnist_dir(directory)
  monkeypatch.chdir(tmp_path)  # nothing is looked up relative to the working directory or the package
  monkeypatch.setenv("TFGGM_DATA_DIR", str(from_env))
  assert data.resolve_mnist_dir(str(explicit)) == explicit.resolve()
  assert data.resolve_mnist_dir(None) == from_env.resolve()
  monkeypatch.setenv("TFGGM_DATA_DIR", str(tmp_path / "absent"))
  with pytest.raises(data.DataError, match="TFGGM_DATA_DIR"):
    data.resolve_mnist_dir(None)
  monkeypatch.delenv("TFGGM_DATA_DIR")
  assert data.resolve_mnist_dir(None) is None  # then tensorflow_datasets


def test_load_mnist_synthetic_dir(tmp_path):
  written = write_mnist_dir(tmp_path, num_train=20, num_test=7)
  arrays = data.load_mnist(str(tmp_path), allow_nonstandard_counts=True)
  assert arrays.train_images.shape == (20, 784) and arrays.test_images.shape == (7, 784)
  assert arrays.train_labels.shape == (20,) and arrays.test_labels.shape == (7,)
  for field in ("train_images", "train_labels", "test_images", "test_labels"):
    value = getattr(arrays, field)
    assert value.dtype == np.uint8
    np.testing.assert_array_equal(value, written[field].reshape(value.shape))
  small = data.load_mnist(tmp_path, max_examples=5, allow_nonstandard_counts=True)
  assert small.train_images.shape == (5, 784) and small.test_labels.shape == (5,)
  np.testing.assert_array_equal(small.train_images, arrays.train_images[:5])
  for bad in (0, 2.5, True, "5"):
    with pytest.raises(data.DataError, match="max_examples"):
      data.load_mnist(tmp_path, max_examples=bad, allow_nonstandard_counts=True)


def test_load_mnist_uncompressed_files(tmp_path):
  written = write_mnist_dir(tmp_path)
  for field, name in data.MNIST_FILES.items():
    (tmp_path / name).unlink()
    write_idx(tmp_path / name.removesuffix(".gz"), written[field], compress=False)
  assert data.load_mnist(tmp_path, allow_nonstandard_counts=True).train_images.shape == (20, 784)


def test_load_mnist_count_mismatch_and_swapped_files(tmp_path):
  write_mnist_dir(tmp_path, num_train=20)
  write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19))
  with pytest.raises(data.DataError, match="20 train images but labels of shape"):
    data.load_mnist(tmp_path, allow_nonstandard_counts=True)
  write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((19, 14, 14)))
  with pytest.raises(data.DataError, match="expected 28x28"):
    data.load_mnist(tmp_path, allow_nonstandard_counts=True)


def test_load_mnist_wants_mnists_counts_unless_told_otherwise(tmp_path):
  write_mnist_dir(tmp_path, num_train=20, num_test=7)
  with pytest.raises(data.DataError, match=r"20 training and 7 test images, but MNIST has 60,000 and 10,000\. "
                     r"To use other data, pass allow_nonstandard_counts=True \(the CLI: --allow-nonstandard-counts\)"):
    data.load_mnist(tmp_path)


def test_train_and_test_files_of_swapped_counts_look_swapped(tmp_path):
  write_mnist_dir(tmp_path, num_train=10_000, num_test=60_000, zeros=True)
  with pytest.raises(data.DataError, match="10,000 training and 60,000 test images; the train and test files look "
                     "swapped"):
    data.load_mnist(tmp_path)
  assert len(data.load_mnist(tmp_path, allow_nonstandard_counts=True).test_images) == 60_000  # not MNIST's


@pytest.mark.parametrize("swaps", [{"train-images-idx3-ubyte.gz": "t10k-images-idx3-ubyte.gz",
                                    "t10k-images-idx3-ubyte.gz": "train-images-idx3-ubyte.gz"},
                                   {"train-images-idx3-ubyte.gz": "train-labels-idx1-ubyte.gz",
                                    "train-labels-idx1-ubyte.gz": "train-images-idx3-ubyte.gz"}])
def test_canonical_files_under_each_others_names_are_refused(tmp_path, swaps):
  """Even with other counts allowed: a canonical file's sha256 gives it away."""
  for name in data.MNIST_FILES.values():
    shutil.copy(REPOSITORY_MNIST / swaps.get(name, name), tmp_path / name)
  first = next(iter(swaps))
  with pytest.raises(data.DataError, match=f"{first}' is the canonical {swaps[first]} \\(by its sha256\\): the "
                     "MNIST files look swapped"):
    data.load_mnist(tmp_path, allow_nonstandard_counts=True)


def test_without_a_data_directory_tensorflow_datasets_downloads_mnist(monkeypatch):
  """The tfds builder is stubbed (no network here): it is asked for MNIST with download allowed."""
  monkeypatch.delenv("TFGGM_DATA_DIR", raising=False)

  def fake_load(name, split, batch_size, download):
    assert (name, split, batch_size, download) == ("mnist", ["train", "test"], -1, True)
    return [{"image": np.full((n, 28, 28, 1), 3, np.uint8), "label": np.arange(n) % 10}
            for n in (12, 4)]

  monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(load=fake_load))
  arrays = data.load_mnist(max_examples=10, allow_nonstandard_counts=True)
  assert arrays.train_images.shape == (10, 784) and arrays.test_images.shape == (4, 784)
  assert arrays.train_labels.dtype == np.uint8 and arrays.train_images.dtype == np.uint8
  with pytest.raises(data.DataError, match="tensorflow_datasets: 12 training and 4 test images.*"
                     "allow_nonstandard_counts=True"):
    data.load_mnist(max_examples=10)


@pytest.mark.parametrize("tfds", ["offline", "not installed"])
def test_without_any_source_the_error_says_what_to_pass(monkeypatch, tfds):
  monkeypatch.delenv("TFGGM_DATA_DIR", raising=False)
  if tfds == "offline":
    def offline_load(*args, **kwargs):
      raise ConnectionError("Failed to establish a new connection: Name or service not known")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(load=offline_load))
  else:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Import fails.
  with pytest.raises(data.DataError) as error:
    data.load_mnist()
  message = str(error.value)
  for text in ("--data-dir", "TFGGM_DATA_DIR", "train-images-idx3-ubyte.gz", "data/mnist", "tensorflow_datasets",
               "network"):
    assert text in message
  assert ("ConnectionError" if tfds == "offline" else "ModuleNotFoundError") in message


def test_a_file_of_mnists_size_must_be_the_canonical_file(tmp_path):
  """60,000 labels that are not MNIST's (a corrupt or foreign file under MNIST's name) are refused by sha256."""
  write_mnist_dir(tmp_path, num_train=60_000, num_test=10)
  with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz' has MNIST's size but not its content"):
    data.load_mnist(tmp_path)
  shutil.copy(REPOSITORY_MNIST / "train-images-idx3-ubyte.gz", tmp_path)  # now the images are MNIST's
  with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz' has MNIST's size"):
    data.load_mnist(tmp_path)


def test_the_repositorys_mnist_is_the_canonical_mnist():
  """data/mnist in the repository: the four canonical files (sha256), 60,000 + 10,000 images, the known mean."""
  assert REPOSITORY_MNIST.is_dir(), (
      f"{REPOSITORY_MNIST} is missing: the repository carries MNIST there (a partial checkout?)")
  for name, digest in data.MNIST_SHA256.items():
    assert hashlib.sha256((REPOSITORY_MNIST / name).read_bytes()).hexdigest() == digest, name
  arrays = data.load_mnist(REPOSITORY_MNIST)
  assert arrays.train_images.shape == (60000, 784) and arrays.test_images.shape == (10000, 784)
  assert arrays.train_labels.shape == (60000,) and arrays.test_labels.shape == (10000,)
  assert abs(arrays.train_images.mean() / 255.0 - 0.13066) < 1e-4
  train, validation = data.split_validation(arrays.train_images)
  assert train.shape == (50000, 784) and validation.shape == (10000, 784)


def test_load_mnist_reads_each_file_once_and_truncates_mnist(monkeypatch):
  reads = []
  read_bytes = pathlib.Path.read_bytes
  monkeypatch.setattr(pathlib.Path, "read_bytes", lambda path: reads.append(path.name) or read_bytes(path))
  arrays = data.load_mnist(REPOSITORY_MNIST, max_examples=100)  # MNIST's counts; the truncation comes after
  assert sorted(reads) == sorted(data.MNIST_FILES.values())
  assert arrays.train_images.shape == (100, 784) and arrays.test_labels.shape == (100,)


# Splits.


def test_split_validation_takes_the_last_images():
  images = np.arange(12, dtype=np.uint8).repeat(784).reshape(12, 784)
  train, validation = data.split_validation(images, num_validation=3)
  np.testing.assert_array_equal(train[:, 0], np.arange(9))
  np.testing.assert_array_equal(validation[:, 0], [9, 10, 11])
  for bad in (12, 13, 0):
    with pytest.raises(data.DataError, match="num_validation"):
      data.split_validation(images, num_validation=bad)


# Binarization.


def test_binarized_dataset_shapes_values_and_batches():
  images = np.random.default_rng(0).integers(0, 256, size=(10, 784), dtype=np.uint8)
  batches = epoch(data.binarized_dataset(images, batch_size=4, seed=0))
  assert [b.shape for b in batches] == [(4, 784), (4, 784), (2, 784)]
  assert all(b.dtype == np.float32 and set(np.unique(b)) <= {0.0, 1.0} for b in batches)
  dropped = epoch(data.binarized_dataset(images, batch_size=4, drop_remainder=True))
  assert [b.shape for b in dropped] == [(4, 784), (4, 784)]


def test_binarized_dataset_bernoulli_mean():
  images = np.full((2000, 784), 128, dtype=np.uint8)
  draws = np.concatenate(epoch(data.binarized_dataset(images, batch_size=500, seed=1)))
  p = 128 / 255
  assert abs(draws.mean() - p) < 5 * math.sqrt(p * (1 - p) / draws.size)
  extremes = np.repeat(np.array([[0], [255]], dtype=np.uint8), 784, axis=1)
  (batch,) = epoch(data.binarized_dataset(extremes, batch_size=2, shuffle=False))
  np.testing.assert_array_equal(batch, [[0.0] * 784, [1.0] * 784])


def test_binarized_dataset_redraws_each_epoch_and_is_seeded():
  images = np.full((8, 784), 128, dtype=np.uint8)
  dataset = data.binarized_dataset(images, batch_size=8, shuffle=False, seed=5)
  first, second = epoch(dataset)[0], epoch(dataset)[0]
  assert np.mean(first != second) > 0.3  # Same images, fresh Bernoulli draws.
  again = epoch(data.binarized_dataset(images, batch_size=8, shuffle=False, seed=5))[0]
  np.testing.assert_array_equal(first, again)
  other = epoch(data.binarized_dataset(images, batch_size=8, shuffle=False, seed=6))[0]
  assert not np.array_equal(first, other)


def test_binarized_dataset_shuffles_each_epoch_reproducibly():
  # Rows of 0/255 pixels binarize deterministically, so row i encodes image i.
  index = np.arange(64)
  images = (((index[:, None] >> np.arange(784)[None, :] % 6) & 1) * 255).astype(np.uint8)
  def order(batches):
    return [int((row[:6] * 2**np.arange(6)).sum()) for batch in batches for row in batch]

  dataset = data.binarized_dataset(images, batch_size=16, seed=3)
  first, second = order(epoch(dataset)), order(epoch(dataset))
  assert sorted(first) == sorted(second) == list(range(64))
  assert first != second
  assert order(epoch(data.binarized_dataset(images, batch_size=16, seed=3))) == first
  unshuffled = data.binarized_dataset(images, batch_size=16, shuffle=False)
  assert order(epoch(unshuffled)) == list(range(64))


def test_binarize_once_is_deterministic():
  images = np.random.default_rng(2).integers(0, 256, size=(50, 784), dtype=np.uint8)
  once = data.binarize_once(images, seed=4)
  assert once.dtype == np.float32 and once.shape == (50, 784)
  assert set(np.unique(once)) == {0.0, 1.0}
  np.testing.assert_array_equal(once, data.binarize_once(images, seed=4))
  assert not np.array_equal(once, data.binarize_once(images, seed=5))
  assert abs(once.mean() - images.mean() / 255) < 0.01


def test_noisy_inputs_are_checked():
  with pytest.raises(data.DataError, match="uint8"):
    data.binarized_dataset(np.zeros((4, 784), np.float32), batch_size=2)
  with pytest.raises(data.DataError, match="reshape"):
    data.binarize_once(np.zeros((4, 28, 28), np.uint8))
  with pytest.raises(data.DataError, match="batch_size"):
    data.dequantized_dataset(np.zeros((4, 784), np.uint8), batch_size=0)
  with pytest.raises(data.DataError, match="no batches"):
    data.dequantized_dataset(np.zeros((4, 784), np.uint8), batch_size=5, drop_remainder=True)


# Dequantization.


def _all_pixel_values():
  return (np.arange(16 * 784) % 256).astype(np.uint8).reshape(16, 784)


def test_dequantized_dataset_stays_inside_the_pixel_bins():
  images = _all_pixel_values()
  dataset = data.dequantized_dataset(images, batch_size=5, shuffle=False, seed=0)
  first, second = np.concatenate(epoch(dataset)), np.concatenate(epoch(dataset))
  for x in (first, second):
    assert x.dtype == np.float32 and x.shape == (16, 784)
    assert x.min() > 0 and x.max() < 1
    np.testing.assert_array_equal(np.floor(x * 256), images)
  assert not np.array_equal(first, second)  # u is redrawn every epoch.
  same = data.dequantized_dataset(images, batch_size=5, shuffle=False, seed=0)
  np.testing.assert_array_equal(first, np.concatenate(epoch(same)))
  assert abs((first * 256 - images).mean() - 0.5) < 0.02


def test_dequantize_once():
  images = _all_pixel_values()
  x = data.dequantize_once(images, seed=1)
  assert x.dtype == np.float32 and x.min() > 0 and x.max() < 1
  np.testing.assert_array_equal(np.floor(x * 256), images)
  np.testing.assert_array_equal(x, data.dequantize_once(images, seed=1))
  assert not np.array_equal(x, data.dequantize_once(images, seed=2))


def test_likelihood_unit_conversions():
  assert data.nats_to_bits_per_dim(-784 * math.log(2)) == pytest.approx(1.0)
  assert data.nats_to_bits_per_dim(-10 * math.log(2), num_dims=5) == pytest.approx(2.0)
  np.testing.assert_allclose(data.nats_to_bits_per_dim(np.array([0.0, -784 * math.log(8)])), [0, 3])
  discrete = data.dequantized_to_discrete_nats(0.0)
  assert discrete == pytest.approx(-784 * math.log(256))
  assert data.nats_to_bits_per_dim(discrete) == pytest.approx(8.0)  # Uniform density: 8 bits/dim.
  assert data.discrete_bits_per_dim(0.0) == pytest.approx(8.0)
  np.testing.assert_allclose(data.discrete_bits_per_dim(np.array([3193.8, -784 * math.log(2)])),
                             [8 - 3193.8 / (784 * math.log(2)), 9.0])


# User-supplied images.


def test_check_images_accepts_and_flattens():
  x = np.random.default_rng(0).uniform(size=(3, 28, 28))
  checked = data.check_images(x, "x")
  assert checked.dtype == np.float32 and checked.shape == (3, 784)
  binary = data.check_images(np.ones((2, 784), bool), "b", binary=True)
  assert binary.dtype == np.float32 and binary.shape == (2, 784)


@pytest.mark.parametrize("x,binary,expected", [
    (np.where(np.arange(784) < 3, np.nan, 0.5)[None].repeat(2, 0), False, "has 6 NaN or Inf"),
    (np.full((2, 784), np.inf), False, "has 1568 NaN or Inf"),
    (np.full((2, 784), 1.5), False, r"\[1.5, 1.5\]"),
    (np.full((2, 784), -0.1), False, r"\[-0.1, -0.1\]"),
    (np.full((2, 784), 255.0), False, "Divide by 255"),
    (np.zeros((2, 783)), False, "shape"),
    (np.zeros((2, 28, 27)), False, "shape"),
    (np.zeros((784,)), False, "shape"),
    (np.zeros((0, 784)), False, "no images"),
    (np.full((2, 784), 0.5), True, "1568 entries that are neither 0 nor 1"),
    (np.array([["a"] * 784]), False, "dtype"),
])
def test_check_images_rejects(x, binary, expected):
  with pytest.raises(data.DataError, match=expected) as error:
    data.check_images(x, "my_images", binary=binary)
  assert "my_images" in str(error.value)
