"""Scale check: a GGM with n = 200,000 (chain, band-8): sample, log_prob, variance, KL; time and memory.

    python scripts/scale.py [--n 200000] [--stencil chain|band8] [--batch 1] [--repeats 3]

Prints one JSON line: seconds per operation (the median of at least --repeats
calls of a tf.function after one warm-up call, `measure.median_seconds`) and the
process's peak resident memory while the operations run,
above what it held before them: the warm-up calls (tracing and XLA compilation,
whose memory is returned to the allocator but stays in the peak) come first, then
the peak is reset (Linux `clear_refs`) and the timed calls are measured. The
peak including compilation is reported too. A dense Sigma at this n would take
8 n^2 bytes (320 GB in float64).
"""

from __future__ import annotations

import argparse
import json

import measure
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfggm

tfd = tfp.distributions


def scale_check(n: int, stencil_name: str, batch: int, repeats: int) -> dict:
  """Seconds (`measure.median_seconds`) and peak memory of sample, log_prob, variance and KL at this n."""
  stencil = tfggm.stencils.chain(n) if stencil_name == "chain" else tfggm.stencils.band(n, 8)
  rng = np.random.default_rng(0)
  # Diagonally dominant L (L_ii ~ 2.1, |L_ij| ~ 0.08): well conditioned at any n.
  values = 0.1 * rng.normal(size=(batch, stencil.num_params))
  values[:, :n] += 2.0
  values = tf.constant(values.astype(np.float32))
  loc = tf.constant(rng.normal(size=(batch, n)).astype(np.float32))
  prior = tfd.MultivariateNormalDiag(tf.zeros(n))

  def distribution():
    return tfggm.GaussianGraphicalModel(
        loc, tfggm.parameterizations.factor_bands_from_values(stencil, values))

  operations = {
      "sample": tf.function(lambda: distribution().sample(seed=1)),
      "log_prob": tf.function(lambda: distribution().log_prob(z)),
      "variance": tf.function(lambda: distribution().variance()),
      "kl": tf.function(lambda: tfd.kl_divergence(distribution(), prior)),
  }
  baseline = measure.current_rss_bytes()
  z = operations["sample"]()
  for name, op in operations.items():  # trace, compile and warm up
    if not np.all(np.isfinite(op().numpy())):
      raise FloatingPointError(f"{name} is not finite")
  peak_with_compilation = measure.peak_rss_bytes() - baseline
  baseline = measure.current_rss_bytes()
  measure.reset_peak_rss()
  seconds = {name: measure.median_seconds(op, repeats) for name, op in operations.items()}
  return dict(n=n, stencil=stencil_name, batch=batch, seconds=seconds,
              sample_log_prob_kl_seconds=sum(seconds[k] for k in ("sample", "log_prob", "kl")),
              peak_bytes_above_baseline=measure.peak_rss_bytes() - baseline,
              peak_bytes_with_compilation=peak_with_compilation,
              peak_process_bytes=measure.peak_rss_bytes())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--n", type=int, default=200_000)
  parser.add_argument("--stencil", choices=["chain", "band8"], default="chain")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per operation (more for fast ones)")
  args = parser.parse_args()
  print(json.dumps(scale_check(args.n, args.stencil, args.batch, args.repeats)))


if __name__ == "__main__":
  main()
