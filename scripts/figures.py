"""Figures 4 and 5 of the paper from the tracked test image of each Table 1 run.

    python scripts/figures.py [--runs runs/table1] [--out docs/figures] [--rows diagonal chain]

Figure 4: the diagonal entries L_ii of the posterior's Cholesky factor over
training, for the chain and the grid (extended grid) posteriors. Figure 5: the
posterior means over training for the diagonal, chain and grid posteriors. All
rows track the same test image (index 0 of the fixed-binarized test set).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tfggm.mnist import files
from tfggm.mnist.rundir import RunDirectory

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = ("diagonal", "chain", "extended_grid")


def load_tracked(run_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(epochs, means [E, n], diagonals of L [E, n]) of a run's tracked posterior."""
  record = json.loads(RunDirectory(run_dir).tracked_posterior.read_text())
  epochs = np.array(sorted(int(e) for e in record))
  means = np.array([record[str(e)]["loc"] for e in epochs])
  diagonals = np.array([record[str(e)]["bands"][0] for e in epochs])
  return epochs + 1, means, diagonals


def plot_over_training(panels: dict, ylabel: str, title: str, path: pathlib.Path) -> None:
  figure, axes = plt.subplots(1, len(panels), figsize=(max(7, 5 * len(panels)), 3.6), sharey=True, squeeze=False)
  for axis, (name, (epochs, values)) in zip(axes[0], panels.items()):
    for unit in range(values.shape[1]):
      axis.plot(epochs, values[:, unit], lw=1)
    axis.set(title=name, xlabel="epoch", xscale="log")
    axis.grid(alpha=0.3)
  axes[0, 0].set_ylabel(ylabel)
  figure.suptitle(title)
  figure.tight_layout()
  with files.replacing(path) as temporary:
    figure.savefig(temporary, dpi=110)
  plt.close(figure)
  print(f"wrote {path}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs" / "table1")
  parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "figures")
  parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS),
                      help="the runs to draw (those with a tracked posterior); e.g. only the finished ones")
  args = parser.parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  tracked = {row: load_tracked(args.runs / row) for row in args.rows
             if RunDirectory(args.runs / row).tracked_posterior.exists()}
  if not tracked:
    raise SystemExit(f"no tracked posteriors under {args.runs}; run scripts/reproduce_table1.py first.")
  structured = {row: (e, d) for row, (e, _, d) in tracked.items() if row != "diagonal"}
  if structured:  # Figure 4 shows the structured posteriors only
    plot_over_training(structured, "L_ii", "Figure 4: diagonal of the posterior's Cholesky factor L over training",
                       args.out / "figure4_cholesky_diagonal.png")
  plot_over_training({row: (e, m) for row, (e, m, _) in tracked.items()},
                     "posterior mean", "Figure 5: posterior means over training",
                     args.out / "figure5_posterior_means.png")


if __name__ == "__main__":
  main()
