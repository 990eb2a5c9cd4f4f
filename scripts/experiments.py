"""Resumable experiments: rows of `tfggm train` runs, evaluated once trained, compared pairwise in tables.

An experiment is a list of rows (one configuration each, one run directory
each) trained under one protocol (epochs, seed, K of the IS estimate).
`run_rows` trains the rows in parallel `tfggm` subprocesses, each limited to a
few TensorFlow threads. Running it again resumes every unfinished row from its
last epoch (`tfggm train` restores its BackupAndRestore state), leaves
completed runs alone, and evaluates a row once, on the fixed test set, after
its training completes; a row already in the archive under the protocol is
not rerun on any machine unless named with --rows. `archive_rows` copies each
finished row's results (report, training summary, per-image values) into a
committed archive, `<results>/<name>/<row>/`; `main` does so as soon as a row
is evaluated, not only at its end. The run directories (checkpoints, logs)
stay out of git and may be lost with the machine; the archive is not.
`collect_results` gathers the archived rows and the paired differences to each
row's baseline on the same test images; `write_results` writes them as
`<name>.json` and `<name>.md`.

The driver itself only starts processes and reads their files; each row's
training and evaluation run in their own process, so the rows share no
TensorFlow state and each gets its own thread limits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfggm.mnist import files
from tfggm.mnist.rundir import RunDirectory

__all__ = ["Row", "Experiment", "tfggm_command", "argument_parser", "experiment_from", "run_rows",
           "archive_rows", "is_archived", "paired_difference", "collect_results", "estimate", "markdown_table",
           "write_results", "main", "PAIRED_KEYS", "STEPS_PER_EXECUTION"]

# `tfggm train` flags of the experiments' rows: 64 steps per call of the step function, the same updates
# (tests/test_mnist_training.py) with Keras' per-batch callbacks once per call, which at batch 32 cost about as much as
# the step (band-4: 8.6 s instead of 17.1 s per epoch; grid logit-normal under XLA: 4.9 s instead of 7.3 s for
# 16,667 images). Rows archived before the flag existed ran one step per call.
STEPS_PER_EXECUTION = ("--steps-per-execution", "64")
PAIRED_KEYS = ("log_likelihood", "elbo")  # the per-example arrays of evaluation_per_example.npz
PER_EXAMPLE = "evaluation_per_example.npz"  # an archived row's per-image values (a copy of the run's)
RESULT = "result.json"  # an archived row: {"evaluation": report, "training": summary[, "paired_vs_<baseline>"]}


@dataclasses.dataclass(frozen=True)
class Row:
  """One configuration: its name (also its run directory), its `tfggm train` flags, its baseline row.

  `baseline` names the row it is compared with pairwise (None: none); the
  comparison appears in the results as `paired_vs_<baseline>`.
  """

  name: str
  train_args: tuple[str, ...]
  baseline: str | None = None


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The protocol every row shares, and where the runs live.

  `extra_train_args` are `tfggm train` flags appended to every row's (e.g.
  `--max-examples 200 --hidden-units 8` for a quick run); they are part of each
  run's stored configuration, so a resumed run must be given the same ones.
  """

  runs: pathlib.Path
  epochs: int
  num_samples: int
  seed: int = 0
  threads: int = 1
  data_dir: str | None = None
  allow_nonstandard_counts: bool = False
  extra_train_args: tuple[str, ...] = ()

  def run_dir(self, row: Row) -> RunDirectory:
    return RunDirectory(self.runs / row.name)

  def train_arguments(self, row: Row) -> list[str]:
    """`tfggm train` of a row: its own flags, then the protocol's."""
    return ["train", str(self.run_dir(row).path), *row.train_args, "--epochs", str(self.epochs),
            "--seed", str(self.seed), "--progress", "line", *self._data_args(), *self.extra_train_args]

  def evaluate_arguments(self, row: Row) -> list[str]:
    return ["evaluate", str(self.run_dir(row).path), "--num-samples", str(self.num_samples), *self._data_args()]

  def tfggm(self, row: Row, *arguments: str) -> None:
    """Runs `tfggm *arguments` for a row, with the thread limits, its output appended to runs/<row>.log.

    Raises:
      subprocess.CalledProcessError: the command failed (its message is in the log).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS=str(self.threads),
               TF_NUM_INTEROP_THREADS="1")
    self.runs.mkdir(parents=True, exist_ok=True)
    with (self.runs / f"{row.name}.log").open("a") as log:
      subprocess.run(tfggm_command(*arguments), stdout=log, stderr=subprocess.STDOUT, env=env, check=True)

  def is_finished(self, row: Row) -> bool:
    """Whether the row is trained and evaluated (with any K)."""
    return self.run_dir(row).evaluation.exists()

  def is_evaluated(self, row: Row) -> bool:
    """Whether the row is evaluated with this protocol's K."""
    path = self.run_dir(row).evaluation
    return path.exists() and json.loads(path.read_text())["num_importance_samples"] == self.num_samples

  def protocol(self) -> dict:
    """What the results were produced with, for the JSON report."""
    return dict(epochs=self.epochs, seed=self.seed, num_importance_samples=self.num_samples,
                command=shlex.join(sys.argv))

  def _data_args(self) -> list[str]:
    directory = ["--data-dir", str(self.data_dir)] if self.data_dir else []
    return [*directory, *(["--allow-nonstandard-counts"] if self.allow_nonstandard_counts else [])]


def tfggm_command(*arguments: str) -> list[str]:
  """The command line of `tfggm *arguments` in this interpreter."""
  return [sys.executable, "-m", "tfggm", *arguments]


def argument_parser(description: str, rows: Sequence[Row], runs: pathlib.Path, epochs: int,
                    num_samples: int) -> argparse.ArgumentParser:
  """An experiment script's parser: the driver's flags with the script's defaults (budget, K, rows, paths)."""
  parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--epochs", type=int, default=epochs, help="training epochs of every row")
  parser.add_argument("--seed", type=int, default=0, help="seed of every row")
  parser.add_argument("--num-samples", type=int, default=num_samples, help="K of the IS estimate")
  parser.add_argument("--jobs", type=int, default=2, help="rows trained at once")
  parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads per row")
  names = [row.name for row in rows]
  parser.add_argument("--rows", nargs="+", default=None, choices=names,
                      help="rows to train and evaluate, archived or not (default: every row not yet in the archive "
                           "under this protocol); the tables show every archived row")
  parser.add_argument("--runs", type=pathlib.Path, default=runs, help="one run directory per row in here")
  parser.add_argument("--data-dir", default=None,
                      help="directory of the MNIST IDX files (None: where `tfggm train` looks)")
  parser.add_argument("--allow-nonstandard-counts", action="store_true",
                      help="accept MNIST files with other numbers of images than 60,000 and 10,000")
  parser.add_argument("--train-args", default="",
                      help="extra `tfggm train` flags for every row, quoted, e.g. --train-args='--max-examples "
                           "2000'; part of each run's configuration, so resume with the same ones; a trial's tables "
                           "and archive go to <runs>/results/, not over the committed ones")
  parser.add_argument("--tables-only", action="store_true", help="only rewrite the tables from finished rows")
  return parser


def experiment_from(args: argparse.Namespace) -> Experiment:
  """The Experiment of the flags of `argument_parser`."""
  return Experiment(runs=args.runs, epochs=args.epochs, num_samples=args.num_samples, seed=args.seed,
                    threads=args.threads, data_dir=args.data_dir,
                    allow_nonstandard_counts=args.allow_nonstandard_counts,
                    extra_train_args=tuple(shlex.split(args.train_args)))


def _run_row(experiment: Experiment, row: Row) -> None:
  """Trains (or resumes, or finds complete) one row, then evaluates it unless already evaluated with K."""
  start = time.time()
  experiment.tfggm(row, *experiment.train_arguments(row))
  print(f"[{row.name}] trained ({time.time() - start:.0f} s this session)", flush=True)
  if not experiment.is_evaluated(row):
    experiment.tfggm(row, *experiment.evaluate_arguments(row))
    print(f"[{row.name}] evaluated", flush=True)


def run_rows(experiment: Experiment, rows: Iterable[Row], jobs: int,
             on_finished: Callable[[Row], None] = lambda row: None) -> list[str]:
  """Trains and evaluates rows, `jobs` at a time; returns the names of the rows that failed.

  A failing row (e.g. a diverged run) does not stop the others; its output is
  in runs/<row>.log. `on_finished(row)` runs as soon as a row is trained and
  evaluated, one call at a time (e.g. to archive it before the others end).
  """
  lock = threading.Lock()

  def run_and_report(row: Row) -> None:
    _run_row(experiment, row)
    with lock:
      on_finished(row)

  with ThreadPoolExecutor(jobs) as pool:
    futures = {row.name: pool.submit(run_and_report, row) for row in rows}
  failed = [name for name, future in futures.items() if future.exception() is not None]
  for name in failed:
    print(f"[{name}] failed: {futures[name].exception()}; see {experiment.runs / name}.log", flush=True)
  return failed


def archive_rows(experiment: Experiment, rows: Iterable[Row], archive: pathlib.Path) -> None:
  """Copies the results of every row finished under the protocol from its run directory into archive/<row>/.

  A row counts when it is evaluated with the protocol's K and trained for the
  protocol's epochs; its archive/<row>/ is then rewritten from the run
  directory: its per-image values (evaluation_per_example.npz, 2 x 8 bytes per
  test image), then `result.json` ({"evaluation": its evaluation.json,
  "training": the summary of its history}). A row archived once stays in the
  tables after its run directory is gone, and its per-image values still pair
  with rows that finish later.
  """
  for row in rows:
    run, target = experiment.run_dir(row), archive / row.name
    if not experiment.is_evaluated(row):
      continue
    training = run.training_summary()
    if training["epochs_run"] != experiment.epochs:
      continue
    report, per_example = run.evaluation_results()
    target.mkdir(parents=True, exist_ok=True)
    with files.replacing(target / PER_EXAMPLE) as temporary:
      np.savez(temporary, **per_example)
    files.write_json(target / RESULT, dict(evaluation=report, training=training))


def is_archived(experiment: Experiment, row: Row, archive: pathlib.Path) -> bool:
  """Whether archive/<row>/ holds the row's results under the protocol (its epochs and K), from any machine."""
  result = _load_result(archive / row.name)
  return (result is not None and result["training"].get("epochs_run") == experiment.epochs
          and result["evaluation"].get("num_importance_samples") == experiment.num_samples)


def paired_difference(row_dir: pathlib.Path, base_dir: pathlib.Path, key: str) -> dict:
  """Mean and standard error of (row - base) per test image, from the two evaluation_per_example.npz.

  ```none
  d_i = v_i(row) - v_i(base),   mean = 1/N sum_i d_i,   stderr = std(d, ddof=1) / sqrt(N)
  ```

  Both rows see the same fixed test images, so the shared per-image difficulty
  cancels and the standard error is far smaller than that of either mean.
  """
  difference = np.load(row_dir / PER_EXAMPLE)[key] - np.load(base_dir / PER_EXAMPLE)[key]
  return dict(mean=float(difference.mean()), stderr=float(difference.std(ddof=1) / np.sqrt(len(difference))))


def _load_result(row_dir: pathlib.Path) -> dict | None:
  path = row_dir / RESULT
  return json.loads(path.read_text()) if path.exists() else None


def _paired(archive: pathlib.Path, row: Row, recorded: dict | None) -> dict | None:
  """The paired differences of an archived row to its archived baseline, or None.

  Computed from the per-image values of both when both are there; else
  `recorded` (what the row's result.json holds) if it was computed against the
  baseline as archived now (its `baseline_log_likelihood` is the baseline's
  test log p(x)), so a retrained baseline never meets stale differences.
  """
  row_dir, base_dir = archive / row.name, archive / row.baseline
  base = _load_result(base_dir)
  if base is None:
    return None
  base_log_likelihood = base["evaluation"]["test_log_likelihood"]["mean"]
  if (row_dir / PER_EXAMPLE).exists() and (base_dir / PER_EXAMPLE).exists():
    return dict({key: paired_difference(row_dir, base_dir, key) for key in PAIRED_KEYS},
                baseline_log_likelihood=base_log_likelihood)
  if recorded is not None and recorded.get("baseline_log_likelihood") == base_log_likelihood:
    return recorded
  return None


def collect_results(archive: pathlib.Path, rows: Sequence[Row]) -> dict:
  """{row name: evaluation, training, paired_vs_<baseline>} of the rows in the archive, in the order given.

  `paired_vs_<baseline>` holds the paired differences (in nats) of each of
  PAIRED_KEYS and the baseline's test log p(x) they were computed against;
  see `_paired` for when a row has them.
  """
  results = {}
  for row in rows:
    result = _load_result(archive / row.name)
    if result is None:
      continue
    if row.baseline:
      key = f"paired_vs_{row.baseline}"
      paired = _paired(archive, row, result.pop(key, None))
      if paired is not None:
        result[key] = paired
    results[row.name] = result
  return results


def estimate(summary: dict, digits: int = 2, signed: bool = False) -> str:
  """'mean ± stderr' of a {"mean", "stderr", ...} dict for a table cell; `signed` shows a difference's sign."""
  return f"{summary['mean']:{'+' if signed else ''}.{digits}f} ± {summary['stderr']:.{digits}f}"


def markdown_table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
  """A markdown table: the header, the separator, one line per sequence of cells."""
  rows = [header, ["---"] * len(header), *lines]
  return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


def write_results(experiment: Experiment, results: dict, table: str, directory: pathlib.Path,
                  name: str) -> None:
  """Writes directory/name.json ({protocol, rows}) and directory/name.md (the table), and prints the table."""
  directory.mkdir(parents=True, exist_ok=True)
  report = dict(protocol=experiment.protocol(), rows=results)
  files.write_json(directory / f"{name}.json", report)
  files.write_text(directory / f"{name}.md", table + "\n")
  print(table)


def _rows_to_run(experiment: Experiment, rows: Sequence[Row], named: Sequence[str] | None,
                 archive: pathlib.Path) -> list[Row]:
  """The rows named (--rows), else every row not yet archived under the protocol (on whatever machine)."""
  if named is not None:
    return [row for row in rows if row.name in named]
  archived = [row.name for row in rows if is_archived(experiment, row, archive)]
  if archived:
    print(f"archived under this protocol in {archive}, not rerun: {', '.join(archived)}", flush=True)
  return [row for row in rows if row.name not in archived]


def main(args: argparse.Namespace, rows: Sequence[Row], table: Callable[[dict, int], str],
         directory: pathlib.Path, name: str, after_training: Callable[[Experiment], None] = lambda _: None,
         after_results: Callable[[], None] = lambda: None) -> None:
  """An experiment script's whole run: train and evaluate the chosen rows (unless --tables-only), publishing
  the results each time a row finishes and once at the end.

  Publishing runs `after_training` (exports, samples: they must skip what is
  done; not with --tables-only), `after_results` (figures), then writes the
  archive (directory/name/) and the tables (directory/name.{json,md}) from
  every row finished so far, so a machine lost mid-run loses no finished row.
  With extra train args (a trial) the archive and tables go to <runs>/results/
  instead. Exits 1 if a row failed.
  """
  experiment = experiment_from(args)
  if experiment.extra_train_args:  # a trial: its archive and tables stay beside its runs
    directory = experiment.runs / "results"

  def publish(_: Row | None = None) -> None:
    if not args.tables_only:
      after_training(experiment)
    after_results()
    archive_rows(experiment, rows, directory / name)
    results = collect_results(directory / name, rows)
    write_results(experiment, results, table(results, args.num_samples), directory, name)

  failed = []
  if not args.tables_only:
    failed = run_rows(experiment, _rows_to_run(experiment, rows, args.rows, directory / name), args.jobs,
                      on_finished=publish)
  publish()
  if failed:
    sys.exit(f"rows {', '.join(failed)} failed; see their logs in {experiment.runs}")
