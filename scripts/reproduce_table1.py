"""Reproduce Table 1 of Peste & Malago on dynamically binarized MNIST; resumable.

    python scripts/reproduce_table1.py [--epochs 500] [--jobs 2] [--num-samples 5000]

Trains every row (diagonal, chain, extended_grid, gershgorin_grid, band4) with
the same protocol and seed in runs/table1/<row>/ (each row resumes from its last
epoch when the script is run again), evaluates each finished row on the fixed
test set (test ELBO, IS log p(x) with K samples, active units), exports the
diagonal, chain and extended-grid models to saved_models/mnist-<row>/<version>/,
and writes docs/results/table1.json and docs/results/table1.md, with paired
differences to the diagonal row on the same test images. The driver is
`scripts/experiments.py`, shared with scripts/logitnormal_experiment.py.
"""

from __future__ import annotations

import argparse
import pathlib

import experiments
from experiments import Experiment, Row

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
POSTERIORS = ("diagonal", "chain", "extended_grid", "gershgorin_grid", "band4")
ROWS = tuple(Row(name, ("--posterior", name, *experiments.STEPS_PER_EXECUTION),
                 baseline=None if name == "diagonal" else "diagonal")
             for name in POSTERIORS)
EXPORTED = ("diagonal", "chain", "extended_grid")
PAPER = {"diagonal": (-89.2, -93.4), "chain": (-89.1, -93.4), "extended_grid": (-88.8, -93.0)}


def export_rows(experiment: Experiment) -> None:
  """Exports the evaluated rows of EXPORTED that have no SavedModel yet to saved_models/mnist-<row>/."""
  for row in ROWS:
    base = ROOT / "saved_models" / f"mnist-{row.name}"
    if row.name in EXPORTED and not base.exists() and experiment.is_finished(row):
      experiment.tfggm(row, "export", str(experiment.run_dir(row).path), "--to", str(base))


def table(results: dict, num_samples: int) -> str:
  """The markdown Table 1: log p(x), ELBO (nats), the paper's values, the paired Δ log p(x), cost."""
  header = ["posterior", f"log p(x) (K = {num_samples})", "ELBO", "paper log p(x)", "paper ELBO",
            "Δ log p(x) vs diagonal (paired)", "active units", "epochs (best)", "s / epoch"]
  lines = []
  for name, values in results.items():
    e, t = values["evaluation"], values["training"]
    paper = PAPER.get(name, (None, None))
    paired = values.get("paired_vs_diagonal", {}).get("log_likelihood")
    lines.append([
        name, experiments.estimate(e["test_log_likelihood"]), experiments.estimate(e["test_elbo"]),
        f"{paper[0]}" if paper[0] else "—", f"{paper[1]}" if paper[1] else "—",
        experiments.estimate(paired, signed=True) if paired else "—",
        f"{e['active_units']} / {e['latent_dim']}", f"{t['epochs_run']} ({t['best_epoch']})",
        f"{t['median_epoch_seconds']:.1f}"])
  return experiments.markdown_table(header, lines)


def build_parser() -> argparse.ArgumentParser:
  return experiments.argument_parser(__doc__.splitlines()[0], ROWS, runs=ROOT / "runs" / "table1", epochs=500,
                                     num_samples=5000)


def main(argv: list[str] | None = None) -> None:
  experiments.main(build_parser().parse_args(argv), ROWS, table, RESULTS, "table1", after_training=export_rows)


if __name__ == "__main__":
  main()
