"""Training runs: a run directory, its data, `model.fit` with callbacks, resumable at any moment."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

from tfggm.mnist import data, files
from tfggm.mnist.callbacks import BestWeights, EpochTimer, HistoryLog, KLWarmup, PosteriorTracker, TensorBoardExtras
from tfggm.mnist.config import VAEConfig, learning_rate_at
from tfggm.mnist.distribute import is_chief, task_of
from tfggm.mnist.networks import build_vae, set_output_bias_from_data
from tfggm.mnist.rundir import RunDirectory, read_history, summarize_history

__all__ = ["RunData", "TrainingDiverged", "train", "TEST_SEED"]

TEST_SEED = 0          # the test set is binarized / dequantized once, with this seed
VALIDATION_SEED = 1
TRACKED_TEST_INDEX = 0  # the test image whose posterior is saved every epoch


class TrainingDiverged(RuntimeError):
  """The loss became NaN; the best checkpoint so far is kept, and the run directory records the divergence."""


class RunData:
  """Train / validation / test images of a configuration (uint8 train, fixed float32 evaluation sets).

  Validation is the last 10,000 training images (fewer when `max_examples`
  truncates: a sixth of them). Evaluation sets are binarized, or dequantized,
  once with fixed seeds so every estimate sees the same images.

  The datasets yield global batches of `config.batch_size` images; under
  tf.distribute `model.fit` splits each one across the replicas.
  """

  def __init__(self, config: VAEConfig, data_dir: str | None = None, allow_nonstandard_counts: bool = False):
    arrays = data.load_mnist(data_dir, max_examples=config.max_examples,
                             allow_nonstandard_counts=allow_nonstandard_counts)
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
          verbose: int = 1, callbacks: tuple = (), strategy: tf.distribute.Strategy | None = None,
          allow_nonstandard_counts: bool = False) -> dict:
  """Trains (or resumes) the run in `run_dir`; returns its summary.

  The run directory (`tfggm.mnist.rundir`) holds config.json, TensorBoard logs
  (logs/), the BackupAndRestore state (backup/), best.weights.h5 (best
  validation ELBO), final.weights.h5, history.csv, tracked_posterior.json and
  summary.json. The data are loaded and the model built before anything is
  written, so a bad input leaves no trace. Then the process owns the directory
  (a second process is refused) until it returns.

  A kill at any instant loses at most the epoch in progress: every file is
  written whole or not at all, an epoch's records are written before its backup,
  and the backup is removed only after final.weights.h5 and summary.json are
  written. Running the same command again resumes from the last backed-up epoch
  (with no epochs left, it only writes what was missing); on a completed run it
  returns the stored summary without training. `callbacks` run after the
  library's own and before the backup. `allow_nonstandard_counts` accepts MNIST
  files with other numbers of images than 60,000 and 10,000.

  With a `strategy` (`tfggm.mnist.distribute.make_strategy`) the model is built and
  compiled in its scope and `model.fit` splits each global batch of
  `config.batch_size` images across the replicas. In a cluster every worker
  calls `train` with the same arguments; only the chief owns and writes the run
  directory, the others write their copies to a temporary directory that is
  deleted at the end (so a non-chief's summary covers the epochs it ran). All of
  them resume from run_dir/backup, which must therefore be on a file system
  that every worker sees.

  Raises:
    TrainingDiverged: the loss became NaN (training stopped; best.weights.h5 is
      the best epoch before it, if any). Running the command again raises it again.
    DirectoryBusy: another live process owns the run directory.
  """
  strategy = strategy or tf.distribute.get_strategy()
  run = RunDirectory(run_dir)
  run_data = RunData(config, data_dir, allow_nonstandard_counts)
  model = _vae_in_scope(config, run_data.image_shape, strategy)
  if config.output_bias_from_data:  # a resumed run's backup then restores the trained bias
    set_output_bias_from_data(model, run_data.train_images)
  with _output_dir(run, strategy) as out:
    if run.is_completed():
      run.claim(config, writer=False)
      return _completed_summary(run)
    run.claim(config, writer=is_chief(strategy))
    callbacks = [*_library_callbacks(config, run_data, run, out), *callbacks,
                 tf_keras.callbacks.BackupAndRestore(str(run.backup), delete_checkpoint=False)]
    summary = _record_the_end(model, out, diverged_in_epoch=_fit(model, run_data, config.epochs, callbacks, verbose))
    if is_chief(strategy):
      shutil.rmtree(run.backup, ignore_errors=True)  # the end of training: the summary is written
  return _completed_summary(run) if is_chief(strategy) else summary


def _record_the_end(model: tf_keras.Model, out: RunDirectory, diverged_in_epoch: int | None) -> dict:
  """Writes final.weights.h5 (unless training diverged), then summary.json; returns the summary.

  A NaN loss in the last epoch of the history is a divergence too: also when a resume found every epoch
  done and fit ran none.
  """
  epochs = read_history(out.history) if out.history.exists() else []
  if diverged_in_epoch is None and epochs and not np.isfinite(float(epochs[-1]["loss"])):
    diverged_in_epoch = int(epochs[-1]["epoch"]) + 1
  summary = summarize_history(out.history) if epochs else dict(epochs_run=0, best_epoch=None, best_val_elbo=None)
  if diverged_in_epoch is not None:
    summary["diverged_in_epoch"] = diverged_in_epoch
  else:
    with files.replacing(out.final_weights) as temporary:
      model.save_weights(str(temporary))
  files.write_json(out.summary, summary)
  return summary


class _CurrentEpoch(tf_keras.callbacks.Callback):
  def on_epoch_begin(self, epoch, logs=None):
    self.epoch = epoch


# What a likelihood layer built with validate_args=True (the decoders of `networks`) says of NaN parameters.
_NON_FINITE_PARAMETERS = "the parameters have NaN or Inf entries"


def _fit(model: tf_keras.Model, run_data: RunData, epochs: int, callbacks: list, verbose: int) -> int | None:
  """Runs `model.fit`; returns the epoch (from 1) in which the network produced NaN parameters, else None.

  A decoder that checks its arguments fails the step on NaN parameters where an unchecked one would give
  a NaN loss (which TerminateOnNaN stops at): either way training diverged.
  """
  current = _CurrentEpoch()
  try:
    model.fit(run_data.train_dataset(), validation_data=run_data.validation_dataset(), epochs=epochs,
              callbacks=[current, *callbacks], verbose=verbose)
  except tf.errors.InvalidArgumentError as error:
    if _NON_FINITE_PARAMETERS not in error.message:
      raise
    return current.epoch + 1
  return None


def _completed_summary(run: RunDirectory) -> dict:
  """The summary of a completed run; TrainingDiverged if it diverged."""
  summary = run.training_summary()
  if "diverged_in_epoch" in summary:
    kept = (f"{run.best_weights} holds the best epoch before it (epoch {summary['best_epoch']})"
            if run.best_weights.exists() else "no epoch had a finite validation ELBO, so no weights were kept")
    raise TrainingDiverged(f"the loss became NaN in epoch {summary['diverged_in_epoch']}; training stopped. "
                           f"{kept}. Train again in another run directory, e.g. with a smaller learning rate.")
  return summary


@contextlib.contextmanager
def _output_dir(run: RunDirectory, strategy: tf.distribute.Strategy):
  """Where this process writes the run's files: the run directory, owned, on the chief; else a temporary one.

  The Keras multi-worker pattern: every worker runs the same callbacks (saving
  may need all of them), but only the chief's files are kept.
  """
  if is_chief(strategy):
    with run.owned():
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
    model(tf.zeros([1, *model.encoders[0].inputs[0].shape[1:]]))
    if tf.distribute.has_strategy():
      model.jit_compile = False
  return model


def _library_callbacks(config: VAEConfig, run_data: RunData, run: RunDirectory,
                       out: RunDirectory) -> list[tf_keras.callbacks.Callback]:
  """Warm-up, learning-rate schedule, NaN stop, best checkpoint, TensorBoard, tracked posterior and history,
  writing into `out`."""
  schedule = [] if config.learning_rate_schedule == "constant" else [
      tf_keras.callbacks.LearningRateScheduler(lambda epoch, _: learning_rate_at(config, epoch))]
  return [
      EpochTimer(),
      KLWarmup(config.warmup_epochs),
      *schedule,
      tf_keras.callbacks.TerminateOnNaN(),
      BestWeights(out.best_weights, "val_elbo", best=run.best_val_elbo()),
      TensorBoardExtras(out.logs, run_data.validation[:8], run_data.image_shape, seed=config.seed),
      PosteriorTracker(run_data.test[TRACKED_TEST_INDEX], out.tracked_posterior),
      tf_keras.callbacks.TensorBoard(str(out.logs)),
      HistoryLog(out.history),
  ]
