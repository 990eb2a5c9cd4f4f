"""The multivariate logit-normal likelihood on continuous MNIST: diagonal vs pixel-grid precisions; resumable.

    python scripts/logitnormal_experiment.py [--epochs 100] [--jobs 2] [--num-samples 1000]

Trains six rows, the decoder likelihood (logit-normal with a diagonal, a
28 x 28 grid or an extended-grid precision) crossed with the posterior
(diagonal, extended grid), on uniformly dequantized MNIST squashed into
(alpha, 1 - alpha), with the Table 1 architecture, optimizer and seed, in
runs/logitnormal/<row>/ (each row resumes from its last epoch when the script
is run again). Each finished row is evaluated on the fixed dequantized test set
(test ELBO and IS log p(x) with K samples, densities of the data in [0, 1]^784,
squashing Jacobian included, in nats and bits/dim), draws 64 images with
`tfggm sample` into docs/figures/logitnormal/<row>.png, and all rows go into
docs/figures/logitnormal_samples.png, docs/results/logitnormal.json and
docs/results/logitnormal.md, with paired differences to the diagonal-likelihood
row of the same posterior on the same test images. The driver is
`scripts/experiments.py`, shared with scripts/reproduce_table1.py.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import experiments
from experiments import Experiment, Row
from tfggm.mnist import files
from tfggm.mnist.data import discrete_bits_per_dim, nats_to_bits_per_dim

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
FIGURES = ROOT / "docs" / "figures"
LIKELIHOODS = ("diagonal", "grid", "extended_grid")  # the precision of logit_normal_<name>
POSTERIORS = ("diagonal", "extended_grid")
CELLS = tuple((likelihood, posterior) for posterior in POSTERIORS for likelihood in LIKELIHOODS)
# Every row trains with the whole step XLA-compiled: 2.2x faster per epoch on this machine for the grid likelihood
# (1 thread; 3.5 vs 1.6 s for an epoch of 6,400 images), the same loss and gradients for the same z
# (tests/test_mnist_networks.py). XLA skips the step's in-graph pixel checks; the pipeline's dequantized uint8
# pixels lie in [0, 1] by construction.
PROTOCOL_FLAGS = ("--jit-compile", *experiments.STEPS_PER_EXECUTION)


def row_name(likelihood: str, posterior: str) -> str:
  return f"ln_{likelihood}-post_{posterior}"


ROWS = tuple(Row(row_name(likelihood, posterior),
                 ("--likelihood", f"logit_normal_{likelihood}", "--posterior", posterior, *PROTOCOL_FLAGS),
                 baseline=None if likelihood == "diagonal" else row_name("diagonal", posterior))
             for likelihood, posterior in CELLS)


def draw_samples(experiment: Experiment, rows: Sequence[Row], figures: pathlib.Path) -> None:
  """`tfggm sample` of every finished row into figures/logitnormal/<row>.png, redrawn when the run is newer.

  Each image is a draw x ~ p(x | z) for z ~ p(z) (`tfggm sample --draw sample`): the likelihood's own pixel
  noise, correlated along the pixel grid for the grid likelihoods. The median image sigmoid(mu(z)) would not
  show the pixel precision at all.
  """
  (figures / "logitnormal").mkdir(parents=True, exist_ok=True)
  for row in rows:
    png = figures / "logitnormal" / f"{row.name}.png"
    weights = experiment.run_dir(row).best_weights
    if experiment.is_finished(row) and (not png.exists() or png.stat().st_mtime < weights.stat().st_mtime):
      experiment.tfggm(row, "sample", str(experiment.run_dir(row).path), "--num", "64", "--draw", "sample",
                       "--out", str(png))


def sample_figure(figures: pathlib.Path) -> None:
  """figures/logitnormal_samples.png: the sample grids of the rows, posteriors down, likelihoods across."""
  if not any((figures / "logitnormal").glob("*.png")):
    return
  figure, axes = plt.subplots(len(POSTERIORS), len(LIKELIHOODS), squeeze=False,
                              figsize=(4 * len(LIKELIHOODS), 4.3 * len(POSTERIORS)))
  for axis_row, posterior in zip(axes, POSTERIORS):
    for axis, likelihood in zip(axis_row, LIKELIHOODS):
      png = figures / "logitnormal" / f"{row_name(likelihood, posterior)}.png"
      axis.axis("off")
      axis.set_title(f"likelihood {likelihood}\nposterior {posterior}", fontsize=10)
      if png.exists():
        axis.imshow(plt.imread(png))
      else:
        axis.text(0.5, 0.5, "not finished", ha="center", va="center", transform=axis.transAxes)
  figure.tight_layout()
  with files.replacing(figures / "logitnormal_samples.png") as temporary:
    figure.savefig(temporary, dpi=110)
  plt.close(figure)


def bits_per_dim(summary: dict, difference: bool = False) -> dict:
  """{"mean", "stderr"} in bits/dim of the 8-bit data, from a {"mean", "stderr"} of log-densities in nats.

  ```none
  bits/dim = -v / (784 ln 2) + 8,   stderr(bits/dim) = stderr(v) / (784 ln 2)
  ```

  A log-density of the dequantized data becomes the bits/dim of the 8-bit data (positive, lower is better:
  the literature's convention); a paired `difference` of log-densities becomes a difference of bits/dim
  (the 8 cancels; negative: the row needs fewer bits than its baseline).
  """
  convert = nats_to_bits_per_dim if difference else discrete_bits_per_dim
  return dict(mean=float(convert(summary["mean"])), stderr=float(-nats_to_bits_per_dim(summary["stderr"])))


def table(results: dict, num_samples: int) -> str:
  """The markdown table: bits/dim (of the 8-bit data) and nats (of the dequantized data) of the ELBO and
  log p(x), the paired Δ bits/dim, cost."""
  header = ["likelihood", "posterior", "test ELBO (bits/dim)", f"IS log p(x) (bits/dim, K = {num_samples})",
            "test ELBO (nats)", "IS log p(x) (nats)", "Δ log p(x) vs diagonal likelihood (bits/dim, paired)",
            "s / epoch", "epochs (best)"]
  lines = []
  for (likelihood, posterior), row in zip(CELLS, ROWS):
    if row.name not in results:
      continue
    e, t = results[row.name]["evaluation"], results[row.name]["training"]
    paired = results[row.name].get(f"paired_vs_{row.baseline}", {}).get("log_likelihood")
    lines.append([
        likelihood, posterior,
        experiments.estimate(bits_per_dim(e["test_elbo"]), digits=4),
        experiments.estimate(bits_per_dim(e["test_log_likelihood"]), digits=4),
        experiments.estimate(e["test_elbo"], digits=1), experiments.estimate(e["test_log_likelihood"], digits=1),
        experiments.estimate(bits_per_dim(paired, difference=True), digits=4, signed=True) if paired else "—",
        f"{t['median_epoch_seconds']:.1f}", f"{t['epochs_run']} ({t['best_epoch']})"])
  return experiments.markdown_table(header, lines)


def build_parser() -> argparse.ArgumentParser:
  return experiments.argument_parser(__doc__.splitlines()[0], ROWS, runs=ROOT / "runs" / "logitnormal", epochs=100,
                                     num_samples=1000)


def main(argv: list[str] | None = None) -> None:
  experiments.main(build_parser().parse_args(argv), ROWS, table, RESULTS, "logitnormal",
                   after_training=lambda experiment: draw_samples(experiment, ROWS, FIGURES),
                   after_results=lambda: sample_figure(FIGURES))


if __name__ == "__main__":
  main()
