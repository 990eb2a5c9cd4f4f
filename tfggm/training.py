"""Training runs: a run directory, its data, `model.fit` with callbacks, resumable at any moment."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import tensorflow as tf
import tf_keras

from tfggm import data
from tfggm.callbacks import EpochTimer, KLWarmup, PosteriorTracker, TensorBoardExtras
from tfggm.config import ConfigError, VAEConfig
from tfggm.vae import build_vae

__all__ = ["RunData", "TrainingDiverged", "train", "BEST_WEIGHTS", "FINAL_WEIGHTS", "TEST_SEED"]

BEST_WEIGHTS = "best.weights.h5"
FINAL_WEIGHTS = "final.weights.h5"
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
  """

  def __init__(self, config: VAEConfig, data_dir: str | None = None):
    arrays = data.load_mnist(data_dir, max_examples=config.max_examples)
    num_validation = min(10_000, len(arrays.train_images) // 6)
    self.train_images, validation = data.split_validation(arrays.train_images, num_validation)
    fix = data.dequantize_once if config.continuous else data.binarize_once
    self.validation = fix(validation, seed=VALIDATION_SEED)
    self.test = fix(arrays.test_images, seed=TEST_SEED)
    self.config = config

  def train_dataset(self) -> tf.data.Dataset:
    make = data.dequantized_dataset if self.config.continuous else data.binarized_dataset
    return make(self.train_images, self.config.batch_size, shuffle=True, seed=self.config.seed)

  def validation_dataset(self) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(self.validation).batch(500).prefetch(tf.data.AUTOTUNE)


def _claim_run_dir(run_dir: pathlib.Path, config: VAEConfig) -> None:
  """Writes config.json, or checks that the one already there is the same configuration."""
  run_dir.mkdir(parents=True, exist_ok=True)
  path = run_dir / "config.json"
  if path.exists():
    stored = VAEConfig.load(path)
    if stored != config:
      differences = {k: (v, getattr(config, k)) for k, v in stored.__dict__.items() if getattr(config, k) != v}
      raise ConfigError(
          f"run directory {run_dir} holds a different configuration; differing (stored, given): "
          f"{differences}. Use another run directory, or the stored settings to resume.")
  else:
    config.save(path)


def _best_so_far(history_csv: pathlib.Path) -> float | None:
  """The best val_elbo recorded before an interruption, so a resumed run keeps its best checkpoint."""
  if not history_csv.exists():
    return None
  with history_csv.open() as f:
    values = [float(row["val_elbo"]) for row in csv.DictReader(f) if row.get("val_elbo")]
  values = [v for v in values if np.isfinite(v)]
  return max(values) if values else None


def train(config: VAEConfig, run_dir: str | pathlib.Path, data_dir: str | None = None,
          verbose: int = 1, callbacks: tuple = ()) -> dict:
  """Trains (or resumes) the run in `run_dir`; returns its summary.

  The run directory holds config.json, TensorBoard logs (logs/), the
  BackupAndRestore state (backup/, emptied when training completes),
  best.weights.h5 (best validation ELBO), final.weights.h5, history.csv,
  tracked_posterior.json and summary.json. Running the same command again after
  an interruption resumes from the last completed epoch; on a completed run it
  returns the stored summary without training. `callbacks` run after the
  library's own and before the backup, so an epoch is backed up only once all
  its records are written.

  Raises:
    TrainingDiverged: the loss became NaN (training stopped; best.weights.h5 is
      the best epoch before it).
  """
  run_dir = pathlib.Path(run_dir)
  run_data = RunData(config, data_dir)  # before claiming the directory: bad data leaves no trace
  _claim_run_dir(run_dir, config)
  summary_path = run_dir / "summary.json"
  backup_dir = run_dir / "backup"
  if summary_path.exists() and not (backup_dir.exists() and any(backup_dir.iterdir())):
    return json.loads(summary_path.read_text())
  model = build_vae(config)
  model(tf.zeros([1, data.NUM_PIXELS]))
  history_csv = run_dir / "history.csv"
  checkpoint = tf_keras.callbacks.ModelCheckpoint(
      str(run_dir / BEST_WEIGHTS), monitor="val_elbo", mode="max", save_best_only=True,
      save_weights_only=True, initial_value_threshold=_best_so_far(history_csv))
  callbacks = [
      EpochTimer(),
      KLWarmup(config.warmup_epochs),
      tf_keras.callbacks.TerminateOnNaN(),
      checkpoint,
      TensorBoardExtras(run_dir / "logs", run_data.validation[:8], seed=config.seed),
      PosteriorTracker(run_data.test[TRACKED_TEST_INDEX], run_dir / "tracked_posterior.json"),
      tf_keras.callbacks.TensorBoard(str(run_dir / "logs")),
      tf_keras.callbacks.CSVLogger(str(history_csv), append=True),
      *callbacks,
      tf_keras.callbacks.BackupAndRestore(str(backup_dir)),
  ]
  history = model.fit(run_data.train_dataset(), validation_data=run_data.validation_dataset(),
                      epochs=config.epochs, callbacks=callbacks, verbose=verbose)
  losses = history.history.get("loss", [])
  if losses and not np.isfinite(losses[-1]):
    raise TrainingDiverged(f"the loss became NaN in epoch {history.epoch[-1] + 1}; training stopped. "
                           f"{run_dir / BEST_WEIGHTS} holds the best epoch before it.")
  model.save_weights(str(run_dir / FINAL_WEIGHTS))
  summary = _summarize_history(history_csv)
  summary_path.write_text(json.dumps(summary, indent=2) + "\n")
  return summary


def _summarize_history(history_csv: pathlib.Path) -> dict:
  with history_csv.open() as f:
    rows = list(csv.DictReader(f))
  by_epoch = {int(row["epoch"]): row for row in rows}  # a resumed epoch keeps its last record
  epochs = [by_epoch[e] for e in sorted(by_epoch)]
  finite = [row for row in epochs if np.isfinite(float(row["val_elbo"]))]
  best = max(finite, key=lambda row: float(row["val_elbo"]))
  return dict(epochs_run=len(epochs), best_epoch=int(best["epoch"]) + 1,
              best_val_elbo=float(best["val_elbo"]), final_val_elbo=float(epochs[-1]["val_elbo"]),
              final_train_elbo=float(epochs[-1]["elbo"]),
              mean_epoch_seconds=float(np.mean([float(row["epoch_seconds"]) for row in epochs])))
