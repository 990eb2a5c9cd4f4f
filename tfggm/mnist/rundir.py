"""The run directory of `tfggm train`: every file name in it, its configuration, its history summarized.

```none
<run_dir>/
  config.json                   the VAEConfig, written before training; a resumed run must match it
  history.csv                   one row per epoch (Keras CSVLogger; a resumed epoch appends a new row)
  backup/                       BackupAndRestore state; emptied when training completes
  logs/                         TensorBoard (logs/extras: images and histograms)
  best.weights.h5               the weights of the best validation ELBO
  final.weights.h5              the weights after the last epoch
  tracked_posterior.json        the posterior of one fixed test image after every epoch
  summary.json                  written last: the run completed
  evaluation.json               `tfggm evaluate`: the report
  evaluation_per_example.npz    `tfggm evaluate`: per-image ELBO and log p(x)
  samples.png                   `tfggm sample`: the default output
```
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib

import numpy as np

from tfggm.mnist.config import ConfigError, VAEConfig

__all__ = ["RunDirectory", "WEIGHTS", "summarize_history"]

WEIGHTS = ("best.weights.h5", "final.weights.h5")  # what `evaluate`, `export` and `sample` may load


@dataclasses.dataclass(frozen=True)
class RunDirectory:
  """The paths of a run directory, and what can be read from them."""

  path: pathlib.Path

  def __post_init__(self):
    object.__setattr__(self, "path", pathlib.Path(self.path))

  config = property(lambda self: self.path / "config.json")
  history = property(lambda self: self.path / "history.csv")
  backup = property(lambda self: self.path / "backup")
  logs = property(lambda self: self.path / "logs")
  best_weights = property(lambda self: self.path / WEIGHTS[0])
  final_weights = property(lambda self: self.path / WEIGHTS[1])
  tracked_posterior = property(lambda self: self.path / "tracked_posterior.json")
  summary = property(lambda self: self.path / "summary.json")
  evaluation = property(lambda self: self.path / "evaluation.json")
  per_example = property(lambda self: self.path / "evaluation_per_example.npz")
  samples = property(lambda self: self.path / "samples.png")

  def is_completed(self) -> bool:
    """Whether training finished: the summary is written and the backup emptied."""
    return self.summary.exists() and not (self.backup.exists() and any(self.backup.iterdir()))

  def load_config(self) -> VAEConfig:
    """The stored configuration; ConfigError if this is not a run directory."""
    if not self.config.exists():
      raise ConfigError(f"{self.path} is not a run directory (no config.json); train one with `tfggm train`.")
    return VAEConfig.load(self.config)

  def weights(self, name: str) -> pathlib.Path:
    """The path of the weights file `name` (one of WEIGHTS); ConfigError if it is not there yet."""
    if name not in WEIGHTS:
      raise ConfigError(f"weights must be one of {', '.join(WEIGHTS)}; got {name!r}.")
    path = self.path / name
    if not path.exists():
      raise ConfigError(f"{path} does not exist; has the run finished an epoch?")
    return path

  def claim(self, config: VAEConfig, writer: bool) -> None:
    """Checks that config.json, if there, is the same run; the `writer` then (re)writes it atomically.

    A resumed run may change only execution settings (`VAEConfig.same_run_as`); config.json then records
    the new values. The writer is the chief of a run that will train, so a completed run keeps the record
    of how it ran.
    """
    if writer:
      self.path.mkdir(parents=True, exist_ok=True)
    stored = VAEConfig.load(self.config) if self.config.exists() else None
    if stored is not None and not stored.same_run_as(config):
      differences = {k: (v, getattr(config, k)) for k, v in stored.__dict__.items() if getattr(config, k) != v}
      raise ConfigError(
          f"run directory {self.path} holds a different configuration; differing (stored, given): "
          f"{differences}. Use another run directory, or the stored settings to resume.")
    if writer and stored != config:
      temporary = self.config.with_suffix(".tmp")
      config.save(temporary)
      temporary.replace(self.config)

  def best_val_elbo(self) -> float | None:
    """The best finite val_elbo in the history (None without one), so a resumed run keeps its best checkpoint."""
    if not self.history.exists():
      return None
    with self.history.open() as f:
      values = [float(row["val_elbo"]) for row in csv.DictReader(f) if row.get("val_elbo")]
    values = [v for v in values if np.isfinite(v)]
    return max(values) if values else None

  def training_summary(self) -> dict:
    """The summary of the run: from its history.csv, or its stored summary.json if the history is gone."""
    if self.history.exists():
      return summarize_history(self.history)
    return json.loads(self.summary.read_text())


def summarize_history(history_csv: str | pathlib.Path) -> dict:
  """The summary of a run from its history.csv (one row per epoch; a resumed epoch keeps its last row).

  Timing: `median_epoch_seconds` is what an epoch costs (robust to an epoch
  stretched by a pause, a suspended process or a resume);
  `mean_epoch_seconds` and `total_epoch_seconds` include such stretches.
  """
  with pathlib.Path(history_csv).open() as f:
    rows = list(csv.DictReader(f))
  by_epoch = {int(row["epoch"]): row for row in rows}
  epochs = [by_epoch[e] for e in sorted(by_epoch)]
  finite = [row for row in epochs if np.isfinite(float(row["val_elbo"]))]
  best = max(finite, key=lambda row: float(row["val_elbo"]))
  seconds = np.array([float(row["epoch_seconds"]) for row in epochs])
  return dict(epochs_run=len(epochs), best_epoch=int(best["epoch"]) + 1,
              best_val_elbo=float(best["val_elbo"]), final_val_elbo=float(epochs[-1]["val_elbo"]),
              final_train_elbo=float(epochs[-1]["elbo"]), median_epoch_seconds=float(np.median(seconds)),
              mean_epoch_seconds=float(seconds.mean()), total_epoch_seconds=float(seconds.sum()))
