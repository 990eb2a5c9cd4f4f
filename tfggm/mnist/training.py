"""Training runs: a run directory, its data, `model.fit` with callbacks, resumable at any moment."""

from __future__ import annotations

import contextlib
import json
import pathlib
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

from tfggm.mnist import data
from tfggm.mnist.callbacks import EpochTimer, KLWarmup, PosteriorTracker, TensorBoardExtras
from tfggm.mnist.config import VAEConfig
from tfggm.mnist.distribute import is_chief, task_of
from tfggm.mnist.networks import build_vae
from tfggm.mnist.rundir import RunDirectory, summarize_history

__all__ = ["RunData", "TrainingDiverged", "train", "TEST_SEED"]

TEST_SEED = 0          # the test set is binarized / dequantized once, with this seed
VALIDATION_SEED = 1
TRACKED_TEST_INDEX = 0  # the test image whose posterior is saved every epoch


class TrainingDiverged(RuntimeError):
  """The loss became NaN; the best checkpoint so far is kept."""


class RunData:
  """Train / validation / test images of a configuration (uint8 train, fixed float32 evaluation sets).

  Validation is the last 10,000 training images (fewer when `max_examples`
  truncates: a sixth of them). Evaluation sets are binarized, or dequantized,
  once with fixed seeds so every estimate sees the same images.

  The datasets yield global batches of `config.batch_size` images; under
  tf.distribute `model.fit` splits each one across the replicas.
  """

  def __init__(self, config: VAEConfig, data_dir: str | None = None):
    arrays = data.load_mnist(data_dir, max_examples=config.max_examples)
    num_validation = min(10_000, len(arrays.train_images) // 6)
    self.train_images, validation = data.split_validation(arrays.train_images, num_validation)
    fix = data.dequantize_once if config.continuous else data.binarize_once
    self.validation = fix(validation, seed=VALIDATION_SEED)
    self.test = fix(arrays.test_images, seed=TEST_SEED)
    self.image_shape = arrays.image_shape
    self.config = config

  def train_dataset(self) -> tf.data.Dataset:
    make = data.dequantized_dataset if self.config.continuous else data.binarized_dataset
    return _sharded_by_data(make(self.train_images, self.config.batch_size, shuffle=True,
                                 seed=self.config.seed))

  def validation_dataset(self) -> tf.data.Dataset:
    return _sharded_by_data(
        tf.data.Dataset.from_tensor_slices(self.validation).batch(500).prefetch(tf.data.AUTOTUNE))


def _sharded_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """`dataset`, split across the workers of a cluster by data rather than by files.

  In-memory arrays have no files to divide: every worker runs the same seeded
  pipeline (same shuffle, same binarization noise) and keeps its part of each
  global batch.
  """
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return dataset.with_options(options)


def train(config: VAEConfig, run_dir: str | pathlib.Path, data_dir: str | None = None,
          verbose: int = 1, callbacks: tuple = (), strategy: tf.distribute.Strategy | None = None) -> dict:
  """Trains (or resumes) the run in `run_dir`; returns its summary.

  The run directory holds config.json, TensorBoard logs (logs/), the
  BackupAndRestore state (backup/, emptied when training completes),
  best.weights.h5 (best validation ELBO), final.weights.h5, history.csv,
  tracked_posterior.json and summary.json. Running the same command again after
  an interruption resumes from the last completed epoch; on a completed run it
  returns the stored summary without training. `callbacks` run after the
  library's own and before the backup, so an epoch is backed up only once all
  its records are written.

  With a `strategy` (`tfggm.mnist.distribute.make_strategy`) the model is built and
  compiled in its scope and `model.fit` splits each global batch of
  `config.batch_size` images across the replicas. In a cluster every worker
  calls `train` with the same arguments; only the chief writes the run
  directory, the others write their copies to a temporary directory that is
  deleted at the end (so a non-chief's summary covers the epochs it ran). All of
  them resume from run_dir/backup, which must therefore be on a file system
  that every worker sees.

  Raises:
    TrainingDiverged: the loss became NaN (training stopped; best.weights.h5 is
      the best epoch before it).
  """
  strategy = strategy or tf.distribute.get_strategy()
  run = RunDirectory(run_dir)
  run_data = RunData(config, data_dir)  # before claiming the directory: bad data leaves no trace
  completed = run.is_completed()
  run.claim(config, writer=is_chief(strategy) and not completed)
  if completed:
    return run.training_summary()  # the summary of its records
  with _output_dir(run, strategy) as out:
    model = _vae_in_scope(config, run_data.image_shape, strategy)
    callbacks = [*_library_callbacks(config, run_data, run, out), *callbacks,
                 tf_keras.callbacks.BackupAndRestore(str(run.backup))]
    history = model.fit(run_data.train_dataset(), validation_data=run_data.validation_dataset(),
                        epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
      raise TrainingDiverged(f"the loss became NaN in epoch {history.epoch[-1] + 1}; training stopped. "
                             f"{run.best_weights} holds the best epoch before it.")
    model.save_weights(str(out.final_weights))
    summary = summarize_history(out.history)
    out.summary.write_text(json.dumps(summary, indent=2) + "\n")
  return summary


@contextlib.contextmanager
def _output_dir(run: RunDirectory, strategy: tf.distribute.Strategy):
  """Where this process writes the run's files: the run directory on the chief, else a temporary one.

  The Keras multi-worker pattern: every worker runs the same callbacks (saving
  may need all of them), but only the chief's files are kept.
  """
  if is_chief(strategy):
    yield run
    return
  with tempfile.TemporaryDirectory(prefix=f"tfggm-{task_of(strategy).replace(' ', '')}-") as temporary:
    yield RunDirectory(pathlib.Path(temporary))


def _vae_in_scope(config: VAEConfig, image_shape: tuple[int, int],
                  strategy: tf.distribute.Strategy) -> tf_keras.Model:
  """The VAE built and compiled in `strategy.scope()`, so its variables are mirrored on the replicas.

  Under tf.distribute the training step runs as a plain graph: XLA cannot
  compile a step whose replicas' variables live on other devices, linked by
  collective all-reduces (the banded kernels keep their own XLA functions).
  """
  with strategy.scope():
    model = build_vae(config, image_shape)
    model(tf.zeros([1, *model.encoder.inputs[0].shape[1:]]))
    if tf.distribute.has_strategy():
      model.jit_compile = False
  return model


def _library_callbacks(config: VAEConfig, run_data: RunData, run: RunDirectory,
                       out: RunDirectory) -> list[tf_keras.callbacks.Callback]:
  """Warm-up, NaN stop, best checkpoint, TensorBoard, tracked posterior and history, writing into `out`."""
  checkpoint = tf_keras.callbacks.ModelCheckpoint(
      str(out.best_weights), monitor="val_elbo", mode="max", save_best_only=True,
      save_weights_only=True, initial_value_threshold=run.best_val_elbo())
  return [
      EpochTimer(),
      KLWarmup(config.warmup_epochs),
      tf_keras.callbacks.TerminateOnNaN(),
      checkpoint,
      TensorBoardExtras(out.logs, run_data.validation[:8], run_data.image_shape, seed=config.seed),
      PosteriorTracker(run_data.test[TRACKED_TEST_INDEX], out.tracked_posterior),
      tf_keras.callbacks.TensorBoard(str(out.logs)),
      tf_keras.callbacks.CSVLogger(str(out.history), append=True),
  ]
