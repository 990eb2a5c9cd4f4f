"""A run's history.csv, summarized: epochs run, the best validation epoch, time per epoch."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

__all__ = ["summarize_history", "run_summary"]


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


def run_summary(run_dir: str | pathlib.Path) -> dict:
  """The summary of a run directory: from its history.csv, or its stored summary.json if the history is gone."""
  run_dir = pathlib.Path(run_dir)
  history = run_dir / "history.csv"
  return summarize_history(history) if history.exists() else json.loads((run_dir / "summary.json").read_text())
