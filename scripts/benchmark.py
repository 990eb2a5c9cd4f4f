"""Benchmark the banded kernels against TensorFlow's banded solve, dense Gaussians and the diagonal floor.

    python scripts/benchmark.py [--quick] [--repeats 7] [--jit] [--out docs/results/benchmark]
    python scripts/benchmark.py --from-json          # rebuild the tables and plot from the stored JSON
    python scripts/benchmark.py --vae-steps          # only the VAE training steps (XLA and not)

An interrupted run resumes: each finished shape is stored in <out>.partial.json,
and the same command measures only the shapes still missing.

Every implementation is measured side by side in the same run, as the median of
`--repeats` timed calls of a `tf.function` (after two warm-up calls), with the
peak resident memory of each call (Linux VmHWM, reset before the call). Writes
<out>.json, <out>.md (the tables, with ratios to ours) and <out>.png (log-log
time and memory against n).

Implementations of a GGM with precision factor L (bandwidth b):
  tfggm        GaussianGraphicalModel (our kernels)
  tfggm_blocks our blocked solve (the "blocks" algorithm) for sample; its log_prob is ours
  tf_banded    tf.linalg.banded_triangular_solve for the sample; its log_prob is ours (TF has no banded matvec)
  dense_tril   tfd.MultivariateNormalTriL with a dense n x n triangular scale (same cost as any dense factor)
  precision_linop  tfp.experimental MultivariateNormalPrecisionFactorLinearOperator with dense L
  diagonal     tfd.MultivariateNormalDiag: the floor
  memory_bound bytes of bands read + results written / this machine's measured copy bandwidth
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfggm
from tfggm._testing import random_factor_bands
from tfggm.mnist.config import VAEConfig
from tfggm.mnist.data import IMAGE_SHAPE, NUM_PIXELS
from tfggm.mnist.networks import build_vae

tfd = tfp.distributions
ROOT = pathlib.Path(__file__).resolve().parents[1]
OPERATIONS = ("sample", "log_prob", "sample_log_prob_grad", "kl", "variance", "cholesky")
SOLVE_OPERATIONS = ("sample", "log_prob", "sample_log_prob_grad")
DENSE_LIMIT_BYTES = 2e9
NOISE_RATIO = 1.1  # sub-millisecond calls vary by about this much from run to run
MIN_TIMED_SECONDS, MAX_CALLS = 0.3, 500


# --- memory -------------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field):
        return int(line.split()[1])
  raise KeyError(field)


def measured(call) -> tuple[float, float]:
  """(median seconds, peak bytes above the RSS before the call) of a compiled call.

  At least --repeats timed calls, and more until they add up to MIN_TIMED_SECONDS (at most
  MAX_CALLS): a sub-millisecond call is the median of hundreds, not of a handful swayed by the scheduler.
  """
  call(), call()
  seconds = []
  while len(seconds) < ARGS.repeats or (sum(seconds) < MIN_TIMED_SECONDS and len(seconds) < MAX_CALLS):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), call())
    seconds.append(time.perf_counter() - start)
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
  before = _status_kb("VmRSS:")
  tf.nest.map_structure(lambda t: t.numpy(), call())
  return statistics.median(seconds), (_status_kb("VmHWM:") - before) * 1024.0


MEMORY_TARGET_SHAPE = (65536, 256, 8)  # a 256 x 256 pixel grid, b = 256, batch 8


def first_call_peak(n: int, b: int, batch: int) -> dict:
  """Peak memory of our sample + log_prob + gradient in this (fresh) process, above the RSS with the inputs built:
  the first call (tracing, XLA compilation and the run) and a second call (a run on the memory the first kept)."""
  loc, bands = (tf.constant(a) for a in random_factor(n, b, batch))
  eps = tf.constant(np.random.default_rng(1).normal(size=(batch, n)).astype(np.float32))
  gradient = _sample_log_prob_gradient(implementations(n, b, batch)["tfggm"]["sample"],
                                       implementations(n, b, batch)["tfggm"]["log_prob"])
  call = tf.function(lambda: gradient(loc, bands, eps))
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  before = _status_kb("VmRSS:")
  start = time.perf_counter()
  tf.nest.map_structure(lambda t: t.numpy(), call())
  first_seconds, first_peak = time.perf_counter() - start, (_status_kb("VmHWM:") - before) * 1024.0
  start = time.perf_counter()
  tf.nest.map_structure(lambda t: t.numpy(), call())
  return dict(n=n, b=b, batch=batch, first_call_peak_bytes=first_peak, first_call_seconds=first_seconds,
              process_peak_bytes=_status_kb("VmHWM:") * 1024.0, second_call_seconds=time.perf_counter() - start)


def memory_target() -> dict:
  """`first_call_peak` of MEMORY_TARGET_SHAPE in a fresh Python process (nothing else allocated before it)."""
  import subprocess
  import sys
  command = [sys.executable, __file__, "--first-call-peak", *map(str, MEMORY_TARGET_SHAPE)]
  output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  return json.loads(output.strip().splitlines()[-1])


def copy_bandwidth() -> float:
  """Bytes per second of a large in-memory copy (read + write counted)."""
  x = np.ones(64 * 2**20 // 4, np.float32)
  y = np.empty_like(x)
  best = min(_time(lambda: np.copyto(y, x)) for _ in range(5))
  return 2 * x.nbytes / best


def _time(f) -> float:
  start = time.perf_counter()
  f()
  return time.perf_counter() - start


# --- implementations ----------------------------------------------------------------------------

def random_factor(n: int, b: int, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """loc [batch, n] and a banded L [batch, b + 1, n], float32: the tests' `random_factor_bands` with
  off-diagonals of scale 0.3 / b, diagonally dominant (well conditioned at any n)."""
  bands = random_factor_bands(n, b, (batch,), seed=seed, dtype=np.float32, off_diagonal_scale=0.3 / max(b, 1))
  return np.random.default_rng(seed + 1).normal(size=(batch, n)).astype(np.float32), bands


def _tf_banded_sample(loc, bands, eps):
  return loc + tf.linalg.banded_triangular_solve(bands, eps[..., tf.newaxis], lower=True, adjoint=True)[..., 0]


def implementations(n: int, b: int, batch: int) -> dict:
  """name -> {operation: callable(loc, bands, eps) or None}, skipping dense ones that would not fit."""
  prior = tfd.MultivariateNormalDiag(tf.zeros(n))
  ggm = lambda loc, bands: tfggm.GaussianGraphicalModel(loc, bands)
  impls = {
      "tfggm": dict(
          sample=lambda loc, bands, eps: ggm(loc, bands).bijector.forward(eps),
          log_prob=lambda loc, bands, eps: ggm(loc, bands).log_prob(eps),
          kl=lambda loc, bands, eps: tfd.kl_divergence(ggm(loc, bands), prior),
          variance=lambda loc, bands, eps: ggm(loc, bands).variance(),
          cholesky=lambda loc, bands, eps: tfggm.linalg.cholesky(tfggm.linalg.product_with_transpose(bands))),
      # Two more solves; their log_prob (a matvec, which TensorFlow lacks for bands) is ours.
      "tfggm_blocks": dict(  # the other solve algorithm, to show where each one wins
          sample=lambda loc, bands, eps: loc + tfggm.linalg.solve_vec(bands, eps, transpose=True, algorithm="blocks")),
      "tf_banded": dict(sample=_tf_banded_sample),
      "diagonal": dict(
          sample=lambda loc, bands, eps: loc + eps / bands[:, 0],
          log_prob=lambda loc, bands, eps: tfd.MultivariateNormalDiag(loc, 1 / bands[:, 0]).log_prob(eps),
          kl=lambda loc, bands, eps: tfd.kl_divergence(tfd.MultivariateNormalDiag(loc, 1 / bands[:, 0]), prior),
          variance=lambda loc, bands, eps: tfd.MultivariateNormalDiag(loc, 1 / bands[:, 0]).variance()),
  }
  if 4.0 * batch * n * n * 3 <= DENSE_LIMIT_BYTES:  # dense n x n factors, a product, a result
    dense = lambda bands: tfggm.linalg.dense_from_bands(bands)
    tril = lambda loc, bands: tfd.MultivariateNormalTriL(loc, dense(bands))
    linop = lambda loc, bands: tfp.experimental.distributions.MultivariateNormalPrecisionFactorLinearOperator(
        loc, precision_factor=tf.linalg.LinearOperatorLowerTriangular(dense(bands)))
    impls["dense_tril"] = dict(
        sample=lambda loc, bands, eps: loc + tf.linalg.matvec(dense(bands), eps),
        log_prob=lambda loc, bands, eps: tril(loc, bands).log_prob(eps),
        kl=lambda loc, bands, eps: tfd.kl_divergence(tril(loc, bands), prior),
        variance=lambda loc, bands, eps: tril(loc, bands).variance(),
        cholesky=lambda loc, bands, eps: tf.linalg.cholesky(tf.matmul(dense(bands), dense(bands), adjoint_b=True)))
    impls["precision_linop"] = dict(
        sample=lambda loc, bands, eps: loc + tf.linalg.triangular_solve(
            dense(bands), eps[..., tf.newaxis], lower=True, adjoint=True)[..., 0],
        log_prob=lambda loc, bands, eps: linop(loc, bands).log_prob(eps),
        variance=lambda loc, bands, eps: linop(loc, bands).variance())
  dense_fits = 4.0 * batch * n * n * 3 <= DENSE_LIMIT_BYTES
  for name, ops in impls.items():
    # tf.linalg.banded_triangular_solve's registered gradient forms a dense n x n product per matrix.
    if name != "tf_banded" or dense_fits:
      log_prob = ops.get("log_prob", impls["tfggm"]["log_prob"])
      ops["sample_log_prob_grad"] = _sample_log_prob_gradient(ops["sample"], log_prob)
  return impls


def _sample_log_prob_gradient(sample, log_prob):
  """Gradient w.r.t. loc and bands of sum(sample) + sum(log_prob(sample)): the VAE's reparameterized path."""
  def gradient(loc, bands, eps):
    with tf.GradientTape() as tape:
      tape.watch([loc, bands])
      z = sample(loc, bands, eps)
      value = tf.reduce_sum(z) + tf.reduce_sum(log_prob(loc, bands, z))
    return tape.gradient(value, [loc, bands])
  return gradient


def memory_bound_seconds(operation: str, n: int, b: int, batch: int, bandwidth: float) -> float:
  """The time to read the bands (and loc, eps) and write the result once: a floor for any kernel."""
  reads = batch * n * (b + 1) + 2 * batch * n
  writes = {"sample_log_prob_grad": batch * n * (b + 2), "cholesky": batch * n * (b + 1)}.get(operation, batch * n)
  return 4.0 * (reads + writes) / bandwidth


# --- one VAE training step ------------------------------------------------------------------------

VAE_ROWS = {  # name -> (posterior, likelihood); ratios are taken to the first row of each group
    "posterior": [("diagonal", "bernoulli"), ("chain", "bernoulli"), ("extended_grid", "bernoulli"),
                  ("full", "bernoulli")],
    "likelihood": [("diagonal", "logit_normal_diagonal"), ("diagonal", "logit_normal_grid"),
                   ("diagonal", "logit_normal_extended_grid")],
}


def _warm_vae(posterior: str, likelihood: str, jit: bool, batch: int, steps: int):
  """A compiled VAE (paper architecture) and its synthetic dataset, after two epochs of warm-up."""
  config = VAEConfig(posterior=posterior, likelihood=likelihood, batch_size=batch, jit_compile=jit)
  model = build_vae(config, IMAGE_SHAPE)
  images = np.random.default_rng(0).uniform(0.02, 0.98, size=(batch * steps, NUM_PIXELS)).astype(np.float32)
  if likelihood == "bernoulli":
    images = (images > 0.5).astype(np.float32)
  dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch).cache().repeat()
  model.fit(dataset, epochs=2, steps_per_epoch=steps, verbose=0)  # traces, compiles, warms up
  return model, dataset


def vae_steps(jit: bool, batch: int = 100, steps: int = 50) -> list[dict]:
  """Seconds per `model.fit` step over --repeats epochs of `steps`, the rows of a group interleaved
  (one epoch of each row per round), so that a drift of the machine's speed hits every row alike.

  Each row reports the median and the fastest epoch: on this 2-vCPU virtual machine whole epochs run at
  either of two speeds, about 2x apart, for any row (a thread descheduled for the epoch), so a median
  of few epochs can land on either; the fastest epoch is the cost of the step itself.
  """
  records = []
  for group, rows in VAE_ROWS.items():
    warm = [_warm_vae(posterior, likelihood, jit, batch, steps) for posterior, likelihood in rows]
    seconds = [[] for _ in rows]
    for _ in range(ARGS.repeats):
      for (model, dataset), times in zip(warm, seconds):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        times.append((time.perf_counter() - start) / steps)
    for (posterior, likelihood), times in zip(rows, seconds):
      records.append(dict(group=group, posterior=posterior, likelihood=likelihood, jit=jit,
                          seconds=statistics.median(times), fastest_seconds=min(times), epoch_seconds=times))
      print(f"  VAE step {posterior:14s} {likelihood:28s} jit={int(jit)} median {1e3 * records[-1]['seconds']:8.2f} "
            f"ms, fastest {1e3 * records[-1]['fastest_seconds']:8.2f} ms", flush=True)
  return records


def vae_table(records: list[dict]) -> str:
  lines = ["\n### One VAE training step (784-200-200-16 ELU, batch 100, `model.fit`)\n",
           "| group | posterior | likelihood | XLA step | ms / step, fastest epoch | ratio to the group's first row "
           "| ms / step, median epoch | ratio |", "|---|---|---|---|---|---|---|---|"]
  for (group, jit), rows in _grouped(records, lambda r: (r["group"], r["jit"])).items():
    first = rows[0]
    for r in rows:
      lines.append(f"| {group} | {r['posterior']} | {r['likelihood']} | {'yes' if jit else 'no'} | "
                   f"{1e3 * r['fastest_seconds']:.2f} | {r['fastest_seconds'] / first['fastest_seconds']:.2f}× | "
                   f"{1e3 * r['seconds']:.2f} | {r['seconds'] / first['seconds']:.2f}× |")
  return "\n".join(lines) + "\n"


def _grouped(records: list[dict], key) -> dict:
  groups = {}
  for r in records:
    groups.setdefault(key(r), []).append(r)
  return groups


def slopes(records: list[dict], low: int = 784) -> list[dict]:
  """Least-squares log-log slope of our time against n >= `low`, per operation, b and batch."""
  ours = [r for r in records if r["implementation"] == "tfggm" and r["n"] >= low]
  out = []
  for (operation, b, batch), rows in _grouped(ours, lambda r: (r["operation"], r["b"], r["batch"])).items():
    if len(rows) >= 3:
      n = np.log([r["n"] for r in rows])
      t = np.log([r["seconds"] for r in rows])
      out.append(dict(operation=operation, b=b, batch=batch, slope=float(np.polyfit(n, t, 1)[0]),
                      n_range=[int(min(r["n"] for r in rows)), int(max(r["n"] for r in rows))]))
  return out


def slope_table(fits: list[dict]) -> str:
  lines = ["\n### Log-log slope of our time against n (fixed b and batch; 1 = linear)\n",
           "| operation | b | batch | n range | slope |", "|---|---|---|---|---|"]
  for f in sorted(fits, key=lambda f: (f["operation"], f["b"], f["batch"])):
    lines.append(f"| {f['operation']} | {f['b']} | {f['batch']} | {f['n_range'][0]}–{f['n_range'][1]} | "
                 f"{f['slope']:.2f} |")
  return "\n".join(lines) + "\n"


# --- the run -------------------------------------------------------------------------------------

def shapes(quick: bool, only_sizes=None) -> list[tuple[int, int, int]]:
  sizes = (16, 784, 4096) if quick else (16, 64, 784, 4096, 16384, 65536)
  sizes = [n for n in sizes if not only_sizes or n in only_sizes]
  widths = (1, 28) if quick else (1, 4, 28, 64, 256)
  out = []
  for n in sizes:
    for b in widths:
      if b >= n:
        continue
      for batch in (1, 128):
        while batch > 1 and 4.0 * batch * n * (b + 1) > 256e6:
          batch //= 2  # keep the bands under 256 MB
        if (n, b, batch) not in out:
          out.append((n, b, batch))
  if not quick and 65536 in sizes:
    out.append(MEMORY_TARGET_SHAPE)
  return out


def run(args, partial: pathlib.Path) -> list[dict]:
  """Measures every shape; after each one the records so far go to `partial`, from which a rerun resumes."""
  stored = json.loads(partial.read_text()) if partial.exists() else dict(records=[], bandwidth=copy_bandwidth())
  records, bandwidth = stored["records"], stored["bandwidth"]
  done = {(r["n"], r["b"], r["batch"]) for r in records if r["operation"] in args.operations}
  print(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s; {len(done)} shapes already measured in {partial}", flush=True)
  for n, b, batch in shapes(args.quick, args.sizes):
    if (n, b, batch) in done:
      continue
    loc, bands = (tf.constant(a) for a in random_factor(n, b, batch))
    eps = tf.constant(np.random.default_rng(1).normal(size=(batch, n)).astype(np.float32))
    for name, ops in implementations(n, b, batch).items():
      if args.implementations and name not in args.implementations:
        continue
      for operation in args.operations:
        if operation not in ops:
          continue
        call = tf.function(lambda f=ops[operation], loc=loc, bands=bands, eps=eps: f(loc, bands, eps),
                           jit_compile=args.jit)
        try:
          seconds, peak = measured(call)
        except (tf.errors.ResourceExhaustedError, tf.errors.InvalidArgumentError, MemoryError) as error:
          print(f"  {name} {operation} n={n} b={b} batch={batch}: failed ({type(error).__name__})")
          continue
        records.append(dict(implementation=name, operation=operation, n=n, b=b, batch=batch,
                            seconds=seconds, peak_bytes=peak))
        print(f"  {name:16s} {operation:22s} {1e3 * seconds:10.3f} ms  {peak / 1e6:8.1f} MB", flush=True)
    for operation in args.operations:
      records.append(dict(implementation="memory_bound", operation=operation, n=n, b=b, batch=batch,
                          seconds=memory_bound_seconds(operation, n, b, batch, bandwidth), peak_bytes=None))
    print(f"n={n} b={b} batch={batch} done", flush=True)
    partial.write_text(json.dumps(dict(records=records, bandwidth=bandwidth)))
  return records


def tables(records: list[dict]) -> str:
  """One markdown table per operation: time of each implementation and its ratio to ours."""
  names = ["tfggm", "tfggm_blocks", "tf_banded", "dense_tril", "precision_linop", "diagonal", "memory_bound"]
  lines = []
  for operation in OPERATIONS:
    rows = [r for r in records if r["operation"] == operation]
    if not rows:
      continue
    lines += [f"\n### {operation}\n", "| n | b | batch | " + " | ".join(names) + " | ours peak MB |",
              "|---" * (len(names) + 4) + "|"]
    for key in sorted({(r["n"], r["b"], r["batch"]) for r in rows}):
      by_name = {r["implementation"]: r for r in rows if (r["n"], r["b"], r["batch"]) == key}
      ours = by_name.get("tfggm")
      cells = []
      for name in names:
        if name not in by_name:
          cells.append("—")
        elif name == "tfggm" or ours is None:
          cells.append(f"{1e3 * by_name[name]['seconds']:.3g} ms")
        else:
          cells.append(f"{1e3 * by_name[name]['seconds']:.3g} ms ({by_name[name]['seconds'] / ours['seconds']:.2g}×)")
      peak = f"{ours['peak_bytes'] / 1e6:.0f}" if ours else "—"
      lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + f" | {peak} |")
  return "\n".join(lines) + "\n"


def _find(records: list[dict], implementation: str, operation: str, shape: tuple) -> dict | None:
  return next((r for r in records if r["implementation"] == implementation and r["operation"] == operation
               and (r["n"], r["b"], r["batch"]) == shape), None)


def slower_than_best(records: list[dict], operations) -> list[tuple[float, str, tuple]]:
  """(our time / the best of TF banded and the dense ones, operation, shape) where above 1, worst first."""
  worst = []
  for r in records:
    if r["implementation"] != "tfggm" or r["operation"] not in operations:
      continue
    key = (r["n"], r["b"], r["batch"])
    others = [o["seconds"] for name in ("tf_banded", "dense_tril", "precision_linop")
              if (o := _find(records, name, r["operation"], key))]
    if others and r["seconds"] > min(others):
      worst.append((r["seconds"] / min(others), r["operation"], key))
  return sorted(worst, reverse=True)


def target_table(records: list[dict], fits: list[dict], memory: dict | None) -> str:
  """The issue's targets, each with the value this run measured."""
  lines = ["\n### Against the targets\n", "| target | measured |", "|---|---|"]
  gradient = lambda name, shape: (_find(records, name, "sample_log_prob_grad", shape) or {}).get("seconds")
  shape = (784, 28, 128)
  ours, banded = gradient("tfggm", shape), gradient("tf_banded", shape)
  dense = min(filter(None, (gradient(name, shape) for name in ("dense_tril", "precision_linop"))), default=None)
  if ours and banded and dense:
    lines.append(f"| n = 784, b = 28, batch 128, sample + log_prob + gradient: ≥ 5× faster than the TF banded solve "
                 f"and than dense | {banded / ours:.1f}× and {dense / ours:.1f}× |")
  for label, operations in (("the solve and its gradient (sample, log_prob, sample + log_prob + gradient)",
                               SOLVE_OPERATIONS),
                              ("every operation (KL, variance, Cholesky too)", OPERATIONS)):
    worst = slower_than_best(records, operations)
    if worst:
      ratio, operation, key = worst[0]
      beyond_noise = [w for w in worst if w[0] > NOISE_RATIO]
      lines.append(f"| {label}: at no shape slower than the best of TF banded / dense | worst: {operation} at "
                   f"n, b, batch = {key}: {ratio:.2f}× the best other time; {len(worst)} comparisons above 1×, "
                   f"{len(beyond_noise)} above {NOISE_RATIO}× |")
  if fits:
    steepest = max(fits, key=lambda f: f["slope"])
    lines.append(f"| log-log slope ≤ 1.1 from n = 784 to 65,536 | steepest: {steepest['slope']:.2f} "
                 f"({steepest['operation']}, b = {steepest['b']}, batch {steepest['batch']}); "
                 f"{sum(f['slope'] <= 1.1 for f in fits)} of {len(fits)} fits ≤ 1.1 |")
  big = _find(records, "tfggm", "sample_log_prob_grad", MEMORY_TARGET_SHAPE)
  if big and memory:
    lines.append(f"| n = 65,536, b = 256, batch 8: sample + log_prob + gradient under 2 GB peak | "
                 f"{memory['first_call_peak_bytes'] / 1e9:.2f} GB above the RSS with the inputs built, first call "
                 f"in a fresh process (tracing and XLA compilation included; the gradient alone is "
                 f"{4 * 8 * 257 * 65536 / 1e9:.2f} GB); {big['seconds']:.2f} s per call |")
  return "\n".join(lines) + "\n"


def plot(records: list[dict], path: pathlib.Path) -> None:
  """Sample + log_prob + gradient against n (log-log), at b = 1 and b = 28, at the largest batch measured for
  each shape: time per example, and the peak memory of the call per example. One colour per implementation."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = ["tfggm", "tfggm_blocks", "tf_banded", "dense_tril", "precision_linop", "diagonal", "memory_bound"]
  colours = dict(zip(names, plt.get_cmap("tab10").colors))
  chosen = [r for r in records if r["operation"] == "sample_log_prob_grad"]
  largest = {}
  for r in chosen:
    key = (r["implementation"], r["n"], r["b"])
    if r["batch"] >= largest.get(key, r)["batch"]:
      largest[key] = r
  figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  panels = [(axes[0], 1, "seconds"), (axes[1], 28, "seconds"), (axes[2], 28, "peak_bytes")]
  for axis, b, field in panels:
    for name in names:
      points = sorted((n, r[field] / r["batch"]) for (impl, n, width), r in largest.items()
                      if impl == name and width == b and r[field] is not None)
      if points and not (field == "peak_bytes" and name == "memory_bound"):
        n, values = zip(*points)
        values = [v if field == "seconds" else max(v / 1e6, 1e-3) for v in values]
        axis.loglog(n, values, marker="o", color=colours[name], label=name)
    unit = "seconds per example" if field == "seconds" else "peak MB per example (floor 1e-3)"
    axis.set(xlabel="n", ylabel=unit, title=f"sample + log_prob + gradient, b = {b}"
             + (", peak memory" if field == "peak_bytes" else ""))
    axis.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize=8)
  figure.suptitle("largest batch measured per shape (128, fewer where the bands would pass 256 MB)", fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=110)


def main() -> None:
  global ARGS
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="a few shapes only")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--jit", action="store_true", help="compile every call with XLA")
  parser.add_argument("--operations", nargs="+", default=list(OPERATIONS), choices=OPERATIONS)
  parser.add_argument("--implementations", nargs="+", default=None,
                      help="only these (tfggm, tfggm_blocks, tf_banded, dense_tril, precision_linop, diagonal)")
  parser.add_argument("--vae-steps", action="store_true", help="only the VAE training steps (XLA and not)")
  parser.add_argument("--sizes", type=int, nargs="+", metavar="N", default=None,
                      help="only the shapes with these n (e.g. after a change to the small-n kernels)")
  parser.add_argument("--remeasure", action="store_true",
                      help="start from OUT.json and measure only --operations again (after a change to their kernels)")
  parser.add_argument("--from-json", action="store_true",
                      help="measure nothing: rebuild the tables and the plot from OUT.json (or OUT.partial.json)")
  parser.add_argument("--memory-target", action="store_true",
                      help="only measure the memory target in a fresh process, into OUT.json")
  parser.add_argument("--first-call-peak", type=int, nargs=3, metavar=("N", "B", "BATCH"), default=None,
                      help=argparse.SUPPRESS)  # internal: the fresh process of `memory_target`
  parser.add_argument("--out", type=pathlib.Path, default=None,
                      help="output stem (default docs/results/benchmark, or docs/results/vae_steps)")
  ARGS = parser.parse_args()
  if ARGS.first_call_peak:
    print(json.dumps(first_call_peak(*ARGS.first_call_peak)))
    return
  ARGS.out = ARGS.out or ROOT / "docs" / "results" / ("vae_steps" if ARGS.vae_steps else "benchmark")
  meta = dict(command="python scripts/benchmark.py " + " ".join(os.sys.argv[1:]), cores=os.cpu_count(),
              tensorflow=tf.__version__)
  ARGS.out.parent.mkdir(parents=True, exist_ok=True)
  if ARGS.vae_steps:
    steps = vae_steps(jit=False) + vae_steps(jit=True)
    ARGS.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, vae_steps=steps), indent=1) + "\n")
    text = vae_table(steps)
  else:
    if ARGS.memory_target:
      stored = json.loads(ARGS.out.with_suffix(".json").read_text())
      stored["memory_target"] = memory_target()
      ARGS.out.with_suffix(".json").write_text(json.dumps(stored, indent=1) + "\n")
    # The finished run's JSON, or else the shapes an unfinished run has measured so far:
    if ARGS.from_json or ARGS.memory_target:
      finished = ARGS.out.with_suffix(".json")
      stored = json.loads((finished if finished.exists() else ARGS.out.with_suffix(".partial.json")).read_text())
      records, memory = stored["records"], stored.get("memory_target")
      fits = stored.get("slopes") or slopes(records)
    else:
      partial = ARGS.out.with_suffix(".partial.json")
      if ARGS.remeasure:  # keep the other operations' records of the finished run
        stored = json.loads(ARGS.out.with_suffix(".json").read_text())
        if not partial.exists():
          kept = [r for r in stored["records"] if r["operation"] not in ARGS.operations]
          partial.write_text(json.dumps(dict(records=kept, bandwidth=copy_bandwidth())))
        meta["remeasured"] = dict(stored["meta"].get("remeasured", {}),
                                  **{operation: time.strftime("%Y-%m-%d") for operation in ARGS.operations})
        meta["command"] = stored["meta"]["command"] + " ; then " + meta["command"]
      records = run(ARGS, partial)
      fits = slopes(records)
      # A remeasure keeps the stored peak (`--memory-target` measures it again); a quick run has none.
      memory = stored.get("memory_target") if ARGS.remeasure else None if ARGS.quick else memory_target()
      ARGS.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, records=records, slopes=fits,
                                                               memory_target=memory), indent=1) + "\n")
      partial.unlink()
    text = target_table(records, fits, memory) + tables(records) + slope_table(fits)
    plot(records, ARGS.out.with_suffix(".png"))
  ARGS.out.with_suffix(".md").write_text(text)
  print(text)


if __name__ == "__main__":
  main()
