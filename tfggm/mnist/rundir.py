"""The run directory of `tfggm train`: every file name in it, its configuration, its history summarized.

```none
<run_dir>/
  .lock                         the owner: one process at a time (`owned`)
  config.json                   the VAEConfig, written before training; a resumed run must match it
  history.csv                   one row per epoch (a resumed epoch replaces its row)
  backup/                       BackupAndRestore state; removed once summary.json is written
  logs/                         TensorBoard (logs/extras: images and histograms)
  best.weights.h5               the weights of the best validation ELBO
  final.weights.h5              the weights after the last epoch
  tracked_posterior.json        the posterior of one fixed test image after every epoch
  summary.json                  written after final.weights.h5: the run completed (or diverged)
  evaluation.json               `tfggm evaluate`: the report, with the sha256 of the per-image values
  evaluation_per_example.npz    `tfggm evaluate`: per-image ELBO and log p(x)
  samples.png                   `tfggm sample`: the default output
```

Every file is written whole or not at all (`tfggm.mnist.files`), by the one owner of the directory. The
state of training is read from the files: no summary.json, or a backup/ still there, means training
is not finished, and running it again resumes from the last backed-up epoch (zero epochs left when
only the summary was missing).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import pathlib
from collections.abc import Iterator

import numpy as np

from tfggm.mnist import files
from tfggm.mnist.config import ConfigError, VAEConfig

__all__ = ["RunDirectory", "RunDirectoryError", "WEIGHTS", "summarize_history", "read_history"]

WEIGHTS = ("best.weights.h5", "final.weights.h5")  # what `evaluate`, `export` and `sample` may load


class RunDirectoryError(ValueError):
  """A run directory whose files cannot be used as they are; the message says which and why."""


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

  @contextlib.contextmanager
  def owned(self) -> Iterator[RunDirectory]:
    """Owns the directory (made if needed) for the block; DirectoryBusy if a live process owns it.

    See `tfggm.mnist.files.owned_directory`: a lock left by a killed process is taken over, and the
    temporaries it left are removed.
    """
    with files.owned_directory(self.path):
      yield self

  def is_completed(self) -> bool:
    """Whether training finished: the summary is written and the backup removed."""
    return self.summary.exists() and not self.backup.exists()

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
    of how it ran. The writer must own the directory (`owned`).
    """
    stored = VAEConfig.load(self.config) if self.config.exists() else None
    if stored is not None and not stored.same_run_as(config):
      differences = {k: (v, getattr(config, k)) for k, v in stored.__dict__.items() if getattr(config, k) != v}
      raise ConfigError(
          f"run directory {self.path} holds a different configuration; differing (stored, given): "
          f"{differences}. Use another run directory, or the stored settings to resume.")
    if writer and stored != config:
      files.write_text(self.config, config.to_json() + "\n")

  def best_val_elbo(self) -> float | None:
    """The best finite val_elbo in the history (None without one), so a resumed run keeps its best checkpoint."""
    if not self.history.exists():
      return None
    values = [float(row["val_elbo"]) for row in read_history(self.history)]
    values = [v for v in values if np.isfinite(v)]
    return max(values) if values else None

  def training_summary(self) -> dict:
    """The summary of the run: from its history.csv, or its stored summary.json if the history is gone.

    A run that diverged has `diverged_in_epoch` (recorded only in summary.json).
    """
    stored = _read_json(self.summary) if self.summary.exists() or not self.history.exists() else {}
    if not self.history.exists():
      return stored
    diverged = {key: stored[key] for key in ("diverged_in_epoch",) if key in stored}
    return {**summarize_history(self.history), **diverged}

  def write_evaluation(self, report: dict, per_example: dict[str, np.ndarray]) -> None:
    """Writes the per-image values, then the report naming their sha256 (see `evaluation_results`).

    Each file is written whole or not at all; a full disk or a kill before the report is renamed
    leaves the previous report, which `evaluation_results` then finds paired with the wrong values.
    """
    buffer = io.BytesIO()
    np.savez(buffer, **per_example)
    values = buffer.getvalue()
    with files.replacing(self.per_example) as temporary:
      temporary.write_bytes(values)
    files.write_json(self.evaluation, {**report, "per_example_sha256": hashlib.sha256(values).hexdigest()})

  def evaluation_results(self) -> tuple[dict, dict[str, np.ndarray]]:
    """(evaluation.json, the per-image arrays), checked to be one evaluation; RunDirectoryError if not."""
    report = _read_json(self.evaluation)
    try:
      values = self.per_example.read_bytes()
    except FileNotFoundError:
      raise RunDirectoryError(f"{self.per_example} is missing; run `tfggm evaluate` again.") from None
    recorded = report.get("per_example_sha256")  # absent from evaluations written before it was recorded
    if recorded is not None and hashlib.sha256(values).hexdigest() != recorded:
      raise RunDirectoryError(f"{self.per_example} is not the one {self.evaluation} was computed with (an "
                              "interrupted evaluation?); run `tfggm evaluate` again.")
    with np.load(io.BytesIO(values)) as arrays:
      return report, dict(arrays)


def _read_json(path: pathlib.Path) -> dict:
  """The JSON object in `path`; RunDirectoryError naming the file if it is missing or not a JSON object."""
  try:
    value = json.loads(path.read_text())
  except FileNotFoundError:
    raise RunDirectoryError(f"{path} is missing.") from None
  except (ValueError, UnicodeDecodeError) as error:
    raise RunDirectoryError(f"{path} is not valid JSON ({error}); remove it and run the command again.") from None
  if not isinstance(value, dict):
    raise RunDirectoryError(f"{path} does not hold a JSON object; remove it and run the command again.")
  return value


def read_history(history_csv: str | pathlib.Path) -> list[dict[str, str]]:
  """The rows of history.csv, one per epoch in order (a resumed epoch keeps its last row).

  Header lines repeated inside the file (older versions appended one per resumed process) are skipped;
  any other row whose epoch is not an integer is a RunDirectoryError naming the line.
  """
  path = pathlib.Path(history_csv)
  with path.open(newline="") as f:
    lines = list(csv.reader(f))
  if not lines:
    return []
  header, by_epoch = lines[0], {}
  for number, line in enumerate(lines[1:], start=2):
    if line == header or not line:
      continue
    row = dict(zip(header, line))
    try:
      epoch = int(row["epoch"])
      if len(line) != len(header):
        raise ValueError
    except (KeyError, ValueError):
      raise RunDirectoryError(f"{path}, line {number}, is not a row of the history: {line}.") from None
    by_epoch[epoch] = row
  return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def summarize_history(history_csv: str | pathlib.Path) -> dict:
  """The summary of a run from its history.csv (one row per epoch; a resumed epoch keeps its last row).

  Timing: `median_epoch_seconds` is what an epoch costs (robust to an epoch
  stretched by a pause, a suspended process or a resume);
  `mean_epoch_seconds` and `total_epoch_seconds` include such stretches.
  `best_epoch` and `best_val_elbo` are None when no epoch had a finite validation ELBO.
  """
  epochs = read_history(history_csv)
  if not epochs:
    raise RunDirectoryError(f"{history_csv} has no epochs.")
  finite = [row for row in epochs if np.isfinite(float(row["val_elbo"]))]
  best = max(finite, key=lambda row: float(row["val_elbo"])) if finite else None
  seconds = np.array([float(row["epoch_seconds"]) for row in epochs])
  return dict(epochs_run=len(epochs), best_epoch=int(best["epoch"]) + 1 if best else None,
              best_val_elbo=float(best["val_elbo"]) if best else None,
              final_val_elbo=float(epochs[-1]["val_elbo"]), final_train_elbo=float(epochs[-1]["elbo"]),
              median_epoch_seconds=float(np.median(seconds)), mean_epoch_seconds=float(seconds.mean()),
              total_epoch_seconds=float(seconds.sum()))
