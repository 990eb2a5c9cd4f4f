"""Reproduce Table 1 of Peste & Malago on dynamically binarized MNIST; resumable.

    python scripts/reproduce_table1.py [--epochs 500] [--jobs 2] [--num-samples 5000]

Trains every row (diagonal, chain, extended_grid, gershgorin_grid, band4) with
the same protocol and seed in runs/table1/<row>/ (each row resumes from its last
epoch when the script is run again), evaluates each finished row on the fixed
test set (test ELBO, IS log p(x) with K samples, active units), exports the
diagonal, chain and extended-grid models to saved_models/mnist-<row>/<version>/,
and writes docs/results/table1.json and docs/results/table1.md, with paired
differences to the diagonal row on the same test images.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = ("diagonal", "chain", "extended_grid", "gershgorin_grid", "band4")
EXPORTED = ("diagonal", "chain", "extended_grid")
PAPER = {"diagonal": (-89.2, -93.4), "chain": (-89.1, -93.4), "extended_grid": (-88.8, -93.0)}


def run_row(row: str, args) -> None:
  """Trains (or resumes) one row in a subprocess, then evaluates it once training is complete."""
  run_dir = args.runs / row
  log = (args.runs / f"{row}.log").open("a")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS=str(args.threads),
             TF_NUM_INTEROP_THREADS="1")
  command = [sys.executable, "-m", "tfggm.cli", "train", str(run_dir), "--posterior", row,
             "--epochs", str(args.epochs), "--seed", str(args.seed), "--verbose", "2"]
  if args.data_dir:
    command += ["--data-dir", args.data_dir]
  start = time.time()
  subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
  print(f"[{row}] trained ({time.time() - start:.0f} s this session)", flush=True)
  evaluation = run_dir / "evaluation.json"
  if not evaluation.exists() or json.loads(evaluation.read_text())["num_importance_samples"] != args.num_samples:
    command = [sys.executable, "-m", "tfggm.cli", "evaluate", str(run_dir), "--num-samples", str(args.num_samples)]
    if args.data_dir:
      command += ["--data-dir", args.data_dir]
    subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    print(f"[{row}] evaluated", flush=True)


def export_rows(args) -> None:
  for row in EXPORTED:
    base = ROOT / "saved_models" / f"mnist-{row}"
    if not base.exists() and (args.runs / row / "evaluation.json").exists():
      subprocess.run([sys.executable, "-m", "tfggm.cli", "export", str(args.runs / row), "--to", str(base)],
                     check=True)


def paired_difference(row_dir: pathlib.Path, base_dir: pathlib.Path, key: str) -> dict:
  """mean and standard error of (row - diagonal) on the same test images."""
  difference = (np.load(row_dir / "evaluation_per_example.npz")[key]
                - np.load(base_dir / "evaluation_per_example.npz")[key])
  return dict(mean=float(difference.mean()), stderr=float(difference.std(ddof=1) / np.sqrt(len(difference))))


def write_tables(args) -> None:
  rows = {}
  for row in ROWS:
    run_dir = args.runs / row
    if not (run_dir / "evaluation.json").exists():
      continue
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    rows[row] = dict(evaluation=evaluation, training=summary)
    if row != "diagonal" and (args.runs / "diagonal" / "evaluation.json").exists():
      rows[row]["paired_vs_diagonal"] = {
          key: paired_difference(run_dir, args.runs / "diagonal", key) for key in ("log_likelihood", "elbo")}
  results = ROOT / "docs" / "results"
  results.mkdir(parents=True, exist_ok=True)
  (results / "table1.json").write_text(json.dumps(dict(protocol=vars_json(args), rows=rows), indent=2) + "\n")
  lines = ["| posterior | log p(x) (K = %d) | ELBO | paper log p(x) | paper ELBO | Δ log p(x) vs diagonal "
           "(paired) | active units | epochs (best) | s / epoch |" % args.num_samples,
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for row, values in rows.items():
    e, t = values["evaluation"], values["training"]
    paper = PAPER.get(row, (None, None))
    paired = values.get("paired_vs_diagonal", {}).get("log_likelihood")
    lines.append(" | ".join([
        f"| {row}", f"{e['test_log_likelihood']['mean']:.2f} ± {e['test_log_likelihood']['stderr']:.2f}",
        f"{e['test_elbo']['mean']:.2f} ± {e['test_elbo']['stderr']:.2f}",
        f"{paper[0]}" if paper[0] else "—", f"{paper[1]}" if paper[1] else "—",
        f"{paired['mean']:+.2f} ± {paired['stderr']:.2f}" if paired else "—",
        f"{e['active_units']} / {e['latent_dim']}", f"{t['epochs_run']} ({t['best_epoch']})",
        f"{t['mean_epoch_seconds']:.1f} |"]))
  (results / "table1.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


def vars_json(args) -> dict:
  return dict(epochs=args.epochs, seed=args.seed, num_importance_samples=args.num_samples,
              command=" ".join(sys.argv))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--epochs", type=int, default=500)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num-samples", type=int, default=5000, help="K of the IS estimate")
  parser.add_argument("--jobs", type=int, default=2, help="rows trained at once")
  parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads per row")
  parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
  parser.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs" / "table1")
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--tables-only", action="store_true", help="only rewrite the tables from finished rows")
  args = parser.parse_args()
  args.runs.mkdir(parents=True, exist_ok=True)
  if not args.tables_only:
    with ThreadPoolExecutor(args.jobs) as pool:
      for future in [pool.submit(run_row, row, args) for row in args.rows]:
        future.result()
    export_rows(args)
  write_tables(args)


if __name__ == "__main__":
  main()
