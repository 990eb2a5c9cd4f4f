"""Scale check: a GGM with n = 200,000 (chain, band-8): sample, log_prob, variance, KL; time and memory.

    python scripts/scale.py [--n 200000] [--stencil chain|band8] [--batch 1]

Prints one JSON line: seconds per operation (after one warm-up call in a
tf.function) and the process's peak resident memory while the operations run,
above what it held before them: the warm-up calls (tracing and XLA compilation,
whose memory is returned to the allocator but stays in the peak) come first, then
the peak is reset (Linux `clear_refs`) and the timed calls are measured. The
peak including compilation is reported too. A dense Sigma at this n would take
8 n^2 bytes (320 GB in float64).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfggm

tfd = tfp.distributions


def peak_rss_bytes() -> int:
  """VmHWM: the peak resident set since the start or the last `reset_peak_rss`."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def reset_peak_rss() -> None:
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def current_rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * resource.getpagesize()


def measure(n: int, stencil_name: str, batch: int) -> dict:
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
      "log_prob": tf.function(lambda z: distribution().log_prob(z)),
      "variance": tf.function(lambda: distribution().variance()),
      "kl": tf.function(lambda: tfd.kl_divergence(distribution(), prior)),
  }
  baseline = current_rss_bytes()
  z = operations["sample"]()
  for name, op in operations.items():
    op(*((z,) if name == "log_prob" else ()))  # trace, compile and warm up
  peak_with_compilation = peak_rss_bytes() - baseline
  baseline = current_rss_bytes()
  reset_peak_rss()
  seconds = {}
  for name, op in operations.items():
    args = (z,) if name == "log_prob" else ()
    start = time.perf_counter()
    result = op(*args)
    result.numpy()
    seconds[name] = time.perf_counter() - start
    if not np.all(np.isfinite(result.numpy())):
      raise FloatingPointError(f"{name} is not finite")
  total = sum(seconds[k] for k in ("sample", "log_prob", "kl"))
  return dict(n=n, stencil=stencil_name, batch=batch, seconds=seconds,
              sample_log_prob_kl_seconds=total,
              peak_bytes_above_baseline=peak_rss_bytes() - baseline,
              peak_bytes_with_compilation=peak_with_compilation,
              peak_process_bytes=peak_rss_bytes())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--n", type=int, default=200_000)
  parser.add_argument("--stencil", choices=["chain", "band8"], default="chain")
  parser.add_argument("--batch", type=int, default=1)
  args = parser.parse_args()
  print(json.dumps(measure(args.n, args.stencil, args.batch)))


if __name__ == "__main__":
  main()
