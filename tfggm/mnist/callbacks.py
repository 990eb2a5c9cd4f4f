"""Training callbacks: KL warm-up, epoch timing, TensorBoard images and histograms, a tracked data point,
the history and the best weights, each file written whole or not at all."""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfggm.mnist import files
from tfggm.mnist.images import decode_images
from tfggm.mnist.rundir import read_history

__all__ = ["KLWarmup", "EpochTimer", "TensorBoardExtras", "PosteriorTracker", "HistoryLog", "BestWeights"]


class KLWarmup(tf_keras.callbacks.Callback):
  """beta = min(1, epoch / warmup_epochs) on the KL term, logged as `kl_weight`."""

  def __init__(self, warmup_epochs: int):
    super().__init__()
    self.warmup_epochs = warmup_epochs

  def on_epoch_begin(self, epoch, logs=None):
    beta = 1.0 if self.warmup_epochs == 0 else min(1.0, epoch / self.warmup_epochs)
    self.model.beta.assign(beta)

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs["kl_weight"] = float(self.model.beta.numpy())


class EpochTimer(tf_keras.callbacks.Callback):
  """Adds the wall-clock seconds of each epoch (training + validation) to the logs: `epoch_seconds`."""

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs["epoch_seconds"] = time.perf_counter() - self._start


class TensorBoardExtras(tf_keras.callbacks.Callback):
  """Per-epoch image summaries (reconstructions, prior samples) and histograms of L's entries.

  Histograms are over the posteriors of a fixed batch: `L_diagonal` holds
  L_ii, `L_off_diagonal` the free entries L[i, i-k], k > 0, of the stencil.
  """

  def __init__(self, log_dir: str | os.PathLike, images: np.ndarray, image_shape: tuple[int, int],
               num_samples: int = 16, seed: int = 0):
    super().__init__()
    self.image_shape = tuple(image_shape)
    self.writer = tf.summary.create_file_writer(str(pathlib.Path(log_dir) / "extras"))
    self.images = tf.constant(images)
    self.seed = seed
    self.num_samples = num_samples

  def on_epoch_end(self, epoch, logs=None):
    posterior = self.model.encoders[0](self.images)
    reconstructions = decode_images(self.model.decoder, posterior.mean())
    # The same top-layer noise every epoch, through this epoch's conditional priors (if any).
    samples = decode_images(self.model.decoder, self.model.sample_first_latents(self.num_samples, [self.seed, 0]))
    bands = posterior.factor_bands_at_every_lag()
    mask = self.model.encoders[0].layers[-1].stencil.mask
    with self.writer.as_default(step=epoch):
      as_images = lambda x: tf.reshape(x, [-1, *self.image_shape, 1])
      tf.summary.image("inputs", as_images(self.images), max_outputs=8)
      tf.summary.image("reconstructions", as_images(reconstructions), max_outputs=8)
      tf.summary.image("prior_samples", as_images(samples), max_outputs=self.num_samples)
      tf.summary.histogram("L_diagonal", bands[:, 0, :])
      if mask.shape[0] > 1:
        tf.summary.histogram("L_off_diagonal", tf.boolean_mask(bands[:, 1:, :], mask[1:], axis=1))
    self.writer.flush()


class PosteriorTracker(tf_keras.callbacks.Callback):
  """Saves the posterior of one fixed data point after every epoch (Figures 4 and 5 of the paper).

  `path` holds {"<epoch>": {"loc": [...], "bands": [[...], ...]}}, rewritten
  atomically each epoch; an epoch rerun after a resume overwrites its entry.
  """

  def __init__(self, image: np.ndarray, path: str | os.PathLike):
    super().__init__()
    self.image = tf.constant(image.reshape(1, -1))
    self.path = pathlib.Path(path)

  def on_epoch_end(self, epoch, logs=None):
    record = json.loads(self.path.read_text()) if self.path.exists() else {}
    posterior = self.model.encoders[0](self.image)
    record[str(epoch)] = dict(loc=posterior.mean().numpy()[0].tolist(),
                              bands=posterior.factor_bands_at_every_lag().numpy()[0].tolist())
    files.write_text(self.path, json.dumps(record))


class HistoryLog(tf_keras.callbacks.Callback):
  """Rewrites history.csv whole after every epoch: one row per epoch, `epoch` then the logs' keys, sorted.

  An epoch run again after a resume replaces its row (and any later rows), so the file never holds a
  partial row, a second header or an epoch twice. A few kilobytes per hundred epochs.
  """

  def __init__(self, path: str | os.PathLike):
    super().__init__()
    self.path = pathlib.Path(path)

  def on_epoch_end(self, epoch, logs=None):
    rows = read_history(self.path) if self.path.exists() else []
    rows = [row for row in rows if int(row["epoch"]) < epoch]
    rows.append({"epoch": str(epoch), **{key: _csv_value(value) for key, value in (logs or {}).items()}})
    keys = ["epoch", *sorted({key for row in rows for key in row} - {"epoch"})]
    text = io.StringIO()
    writer = csv.DictWriter(text, keys, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(self.path, text.getvalue())


def _csv_value(value) -> str:
  try:
    return str(float(value))
  except (TypeError, ValueError):
    return str(value)


class BestWeights(tf_keras.callbacks.Callback):
  """Saves the weights of the epoch with the highest finite `monitor` so far, whole or not at all.

  `best` is the value to beat (a resumed run's best so far; None: any finite value).
  """

  def __init__(self, path: str | os.PathLike, monitor: str = "val_elbo", best: float | None = None):
    super().__init__()
    self.path = pathlib.Path(path)
    self.monitor = monitor
    self.best = best

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None or not np.isfinite(value) or (self.best is not None and value <= self.best):
      return
    with files.replacing(self.path) as temporary:
      self.model.save_weights(str(temporary))
    self.best = float(value)
