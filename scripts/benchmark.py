"""Benchmark the banded kernels against banded-matrices, TF's banded solve, dense Gaussians and the diagonal floor.

    python scripts/benchmark.py kernels [--quick] [--repeats 7] [--jit] [--operations ...] [--sizes N ...]
    python scripts/benchmark.py kernels --remeasure --operations kl variance  # only these again, after a change
    python scripts/benchmark.py peer [--quick]          # banded-matrices against ours (pip install -e '.[bench]')
    python scripts/benchmark.py vae-steps [--repeats 21]  # one VAE training step per posterior / likelihood
    python scripts/benchmark.py memory-target           # the 65,536 / 256 / 8 peak, in a fresh process
    python scripts/benchmark.py tables                  # rebuild OUT.md and OUT.png from OUT.json

Each subcommand stores its measurements in its own section of OUT.json (default docs/results/benchmark; with
--quick, build/benchmark-quick/benchmark), then rebuilds from the whole file its summary (the ratios, in OUT.json
too), OUT.md (the ratios, then every table) and OUT.png (log-log time and memory against n), and prints the
ratios. It reports; it judges nothing (the targets are in the README). `kernels` and `peer` resume: each finished
shape goes to OUT.<section>.partial.json, and the same command measures only the shapes still missing.

Every implementation (the registry: scripts/benchmark_registry.py) is measured side by side at each shape, as the
median of at least --repeats timed calls of a `tf.function` after two warm-up calls (`measure.measured`), with the
peak resident memory of one call. Batch 1 is a single matrix, without a batch dimension. banded-matrices' results
are checked against ours before it is timed at a shape, and its inputs after.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import measure
import numpy as np
import tensorflow as tf
from benchmark_registry import (
  KERNEL_OPERATIONS,
  NAMES,
  PEER_OPERATIONS,
  Inputs,
  Shape,
  check_agreement,
  check_unchanged,
  implementations,
  make_inputs,
  memory_bound_seconds,
  numpy_copy,
  shape_of,
)
from benchmark_report import load, store, write_report

from tfggm.mnist import files
from tfggm.mnist.config import VAEConfig
from tfggm.mnist.data import IMAGE_SHAPE, NUM_PIXELS
from tfggm.mnist.networks import build_vae

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT, QUICK_OUT = ROOT / "docs" / "results" / "benchmark", ROOT / "build" / "benchmark-quick" / "benchmark"
MEMORY_TARGET_SHAPE = (65536, 256, 8)  # a 256 x 256 pixel grid, b = 256, batch 8


def copy_bandwidth() -> float:
  """Bytes per second of a large in-memory copy (read + write counted), the best of five."""
  x = np.ones(64 * 2**20 // 4, np.float32)
  y = np.empty_like(x)
  best = np.inf
  for _ in range(5):
    start = time.perf_counter()
    np.copyto(y, x)
    best = min(best, time.perf_counter() - start)
  return 2 * x.nbytes / best


# --- the shapes ---------------------------------------------------------------------------------------------

def kernel_shapes(quick: bool, sizes: Sequence[int] | None = None) -> list[Shape]:
  """float32; n up to 65,536, b up to 256 (below n), batch 1 and 128 (halved until the bands fit in 256 MB)."""
  all_sizes = (16, 784, 4096) if quick else (16, 64, 784, 4096, 16384, 65536)
  widths = (1, 28) if quick else (1, 4, 28, 64, 256)
  out = []
  for n in (n for n in all_sizes if not sizes or n in sizes):
    for b in (b for b in widths if b < n):
      for batch in (1, 128):
        while batch > 1 and 4.0 * batch * n * (b + 1) > 256e6:
          batch //= 2
        if Shape(n, b, batch) not in out:
          out.append(Shape(n, b, batch))
  if not quick and (not sizes or MEMORY_TARGET_SHAPE[0] in sizes):
    out.append(Shape(*MEMORY_TARGET_SHAPE))
  return out


def peer_shapes(quick: bool) -> list[Shape]:
  """float64 single matrices, and float32 batches of a few sizes."""
  if quick:
    return [Shape(16, 1, 1, "float64"), Shape(64, 4, 1, "float64"), Shape(16, 1, 4, "float32")]
  return ([Shape(n, b, 1, "float64") for n in (784, 16384, 65536) for b in (1, 4, 28)]
          + [Shape(16, b, 32) for b in (1, 4)] + [Shape(784, b, 128) for b in (1, 4, 28)] + [Shape(16384, 4, 8)])


# --- measuring sections -------------------------------------------------------------------------------------

def compiled(operation: Callable, x: Inputs, jit: bool = False) -> Callable:
  """`operation(x)` as a `tf.function` without arguments (x's tensors are captured)."""
  return tf.function(lambda: operation(x), jit_compile=jit)


def measure_shape(shape: Shape, names: Sequence[str], operations: Sequence[str], args) -> list[dict]:
  """Records of every implementation and operation at one shape. The checked implementations' results are
  compared with ours (`check_agreement`) before anything is timed, and their inputs after (`check_unchanged`)."""
  inputs = make_inputs(shape)
  registry = implementations()
  chosen = {name: registry[name] for name in names if name in registry}
  prepared = {name: implementation.prepare(inputs) for name, implementation in chosen.items()}
  calls = {(name, operation): compiled(implementation.operations[operation], prepared[name], args.jit)
           for name, implementation in chosen.items() for operation in operations
           if implementation.runs(operation, shape)}
  checked = {name: numpy_copy(prepared[name]) for name, implementation in chosen.items() if implementation.checked}
  for name, operation in (key for key in calls if key[0] in checked):
    reference = calls.get(("tfggm", operation)) or compiled(registry["tfggm"].operations[operation], inputs)
    check_agreement(name, operation, shape, chosen[name], reference(), calls[name, operation]())
  records = [record for (name, operation), call in calls.items()
             if (record := _timed(name, operation, shape, call, args))]
  for name, before in checked.items():
    check_unchanged(name, shape, before, prepared[name])
  return records


def _timed(name: str, operation: str, shape: Shape, call: Callable, args) -> dict | None:
  """The record of one call (`measure.measured`), or None, with a note, where it runs out of memory."""
  try:
    seconds, peak = measure.measured(call, args.repeats, args.min_seconds)
  except (tf.errors.ResourceExhaustedError, tf.errors.InvalidArgumentError, MemoryError) as error:
    print(f"  {name} {operation} at {shape}: failed ({type(error).__name__})", flush=True)
    return None
  print(f"  {name:16s} {operation:24s} {1e3 * seconds:10.3f} ms  {peak / 1e6:8.1f} MB", flush=True)
  return dict(implementation=name, operation=operation, **shape._asdict(), seconds=seconds, peak_bytes=peak)


def measure_section(partial: pathlib.Path, shapes: Sequence[Shape], names: Sequence[str],
                    operations: Sequence[str], args, started: dict) -> dict:
  """`started` (records and fields) and the records of every shape not yet in it; after each shape the section
  so far goes to `partial`, from which a rerun resumes."""
  section = json.loads(partial.read_text()) if partial.exists() else started
  done = {shape_of(r) for r in section["records"] if r["operation"] in operations}
  print(f"{len(done)} shapes already measured in {partial}", flush=True)
  for shape in (shape for shape in shapes if shape not in done):
    section["records"] += measure_shape(shape, names, operations, args)
    if "bandwidth" in section:
      section["records"] += [dict(implementation="memory_bound", operation=operation, **shape._asdict(),
                                  seconds=memory_bound_seconds(operation, shape, section["bandwidth"]),
                                  peak_bytes=None) for operation in operations]
    print(f"{shape} done", flush=True)
    files.write_text(partial, json.dumps(section))
  return section


def meta(args) -> dict:
  versions = {name: importlib.metadata.version(name) for name in ("tensorflow", "numpy", "banded-matrices")
              if _installed(name)}
  return dict(command="python scripts/benchmark.py " + " ".join(sys.argv[1:]), cores=os.cpu_count(),
              date=time.strftime("%Y-%m-%d"), **versions)


def _installed(distribution: str) -> bool:
  try:
    importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return False
  return True


def kernels(args) -> None:
  """Every implementation at the kernel shapes; with --remeasure, only --operations again."""
  stored = load(args.out).get("kernels", {})
  if args.remeasure and not stored.get("records"):
    raise SystemExit(f"--remeasure keeps the other operations of a finished kernels section, and "
                     f"{args.out.with_suffix('.json')} has none: run `kernels` without it first.")
  started = dict(meta=meta(args), bandwidth=stored.get("bandwidth") or copy_bandwidth(), records=[])
  if args.remeasure:  # keep the other operations' records of the finished run
    started["records"] = [r for r in stored["records"] if r["operation"] not in args.operations]
    started["meta"].update(command=stored["meta"]["command"] + " ; then " + started["meta"]["command"],
                           remeasured=dict(stored["meta"].get("remeasured", {}),
                                           **dict.fromkeys(args.operations, started["meta"]["date"])))
  _note_missing_peer(args.implementations or NAMES)
  partial = args.out.with_suffix(".kernels.partial.json")
  section = measure_section(partial, kernel_shapes(args.quick, args.sizes), args.implementations or NAMES,
                            args.operations, args, started)
  store(args.out, "kernels", section)
  partial.unlink()


def peer(args) -> None:
  """banded-matrices and ours at the peer shapes, each result checked against ours first."""
  if not _note_missing_peer(["banded_matrices"]):
    return
  partial = args.out.with_suffix(".peer.partial.json")
  section = measure_section(partial, peer_shapes(args.quick), ["tfggm", "banded_matrices"], args.operations, args,
                            dict(meta=meta(args), records=[]))
  store(args.out, "peer", section)
  partial.unlink()


def _note_missing_peer(names: Sequence[str]) -> bool:
  """False, with a note, where banded_matrices is asked for but not installed."""
  if "banded_matrices" in names and not _installed("banded-matrices"):
    print("banded-matrices is not installed: its column is skipped. It pins numpy < 2, so install it in a "
          "separate virtualenv (Python 3.11 or 3.12): pip install -e '.[bench]'", flush=True)
    return False
  return True


# --- the memory target, in a fresh process ------------------------------------------------------------------

def first_call_peak(n: int, b: int, batch: int) -> dict:
  """Peak memory of our sample + log_prob + gradient in this (fresh) process, above the RSS with the inputs built:
  the first call (tracing, XLA compilation and the run) and a second call (a run on the memory the first kept)."""
  inputs = make_inputs(Shape(n, b, batch))
  call = compiled(implementations()["tfggm"].operations["sample_log_prob_grad"], inputs)
  start = time.perf_counter()
  first_peak = measure.peak_bytes_of(call)
  first_seconds = time.perf_counter() - start
  start = time.perf_counter()
  measure.materialize(call())
  return dict(n=n, b=b, batch=batch, first_call_peak_bytes=first_peak, first_call_seconds=first_seconds,
              process_peak_bytes=measure.peak_rss_bytes(), second_call_seconds=time.perf_counter() - start)


def memory_target(args) -> None:
  """`first_call_peak` of MEMORY_TARGET_SHAPE in a fresh Python process (nothing else allocated before it)."""
  command = [sys.executable, __file__, "first-call-peak", *map(str, MEMORY_TARGET_SHAPE)]
  output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  store(args.out, "memory_target", json.loads(output.strip().splitlines()[-1]))


# --- one VAE training step ----------------------------------------------------------------------------------

VAE_ROWS = {  # name -> (posterior, likelihood); ratios are taken to the first row of each group
    "posterior": [("diagonal", "bernoulli"), ("chain", "bernoulli"), ("extended_grid", "bernoulli"),
                  ("gershgorin_grid", "bernoulli"), ("band4", "bernoulli"), ("full", "bernoulli")],
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


def vae_step_records(jit: bool, repeats: int, batch: int = 32, steps: int = 100) -> list[dict]:
  """Seconds per `model.fit` step over `repeats` epochs of `steps`, the rows of a group interleaved
  (one epoch of each row per round), so that a drift of the machine's speed hits every row alike.

  Each row reports every epoch, their median and the fastest: on this 2-vCPU virtual machine whole epochs run
  at either of two speeds, about 2x apart, for any row (a thread descheduled for the epoch), so the report
  compares rows by the median over rounds of the ratio of epochs of the same round (`vae_ratios`).
  """
  records = []
  for group, rows in VAE_ROWS.items():
    warm = [_warm_vae(posterior, likelihood, jit, batch, steps) for posterior, likelihood in rows]
    seconds = [[] for _ in rows]
    for _ in range(repeats):
      for (model, dataset), times in zip(warm, seconds):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        times.append((time.perf_counter() - start) / steps)
    for (posterior, likelihood), times in zip(rows, seconds):
      records.append(dict(group=group, posterior=posterior, likelihood=likelihood, jit=jit, batch=batch,
                          steps=steps, seconds=float(np.median(times)), fastest_seconds=min(times),
                          epoch_seconds=times))
      print(f"  VAE step {posterior:14s} {likelihood:28s} jit={int(jit)} median {1e3 * records[-1]['seconds']:8.2f} "
            f"ms, fastest {1e3 * records[-1]['fastest_seconds']:8.2f} ms", flush=True)
  return records


def vae_steps(args) -> None:
  records = vae_step_records(False, args.repeats) + vae_step_records(True, args.repeats)
  store(args.out, "vae_steps", dict(meta=meta(args), records=records))


def tables(args) -> None:
  write_report(args.out, load(args.out))


# --- the command line ---------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  common.add_argument("--out", type=pathlib.Path, default=None,
                      help=f"output stem (default {DEFAULT_OUT.relative_to(ROOT)}; with --quick, "
                           f"{QUICK_OUT.relative_to(ROOT)})")
  common.add_argument("--repeats", type=int, default=7, help="timed calls at least (VAE steps: epochs per row)")
  common.add_argument("--min-seconds", type=float, default=measure.MIN_TIMED_SECONDS,
                      help="and more calls until they add up to this")
  top = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  commands = top.add_subparsers(dest="command", required=True,
                                metavar="{kernels,peer,vae-steps,memory-target,tables}")

  def add(name: str, function: Callable, text: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, parents=[common], help=text, description=text,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    command.set_defaults(run=function)
    return command

  sections = []
  for name, function, operations, text in (
      ("kernels", kernels, KERNEL_OPERATIONS, "every implementation at the kernel shapes (float32)"),
      ("peer", peer, PEER_OPERATIONS, "banded-matrices against ours, each result checked first")):
    command = add(name, function, text)
    command.add_argument("--quick", action="store_true", help="a few small shapes only")
    command.add_argument("--operations", nargs="+", default=list(operations),
                         choices=sorted(set(KERNEL_OPERATIONS + PEER_OPERATIONS)))
    command.add_argument("--jit", action="store_true", help="compile every call with XLA")
    sections.append(command)
  sections[0].add_argument("--implementations", nargs="+", default=None, choices=NAMES[:-1],
                           help="only these (default: every one installed)")
  sections[0].add_argument("--sizes", type=int, nargs="+", metavar="N", default=None,
                           help="only the shapes with these n (e.g. after a change to the small-n kernels)")
  sections[0].add_argument("--remeasure", action="store_true",
                           help="start from OUT.json's kernels and measure only --operations again")
  add("vae-steps", vae_steps, "one VAE training step per posterior and likelihood, XLA and not")
  add("memory-target", memory_target, "the peak memory of MEMORY_TARGET_SHAPE's first call, in a fresh process")
  add("tables", tables, "measure nothing: rebuild OUT.md, OUT.png and the summary from OUT.json")
  first = commands.add_parser("first-call-peak")  # internal: the fresh process of `memory-target`
  first.add_argument("shape", type=int, nargs=3)
  return top


def main(argv: Sequence[str] | None = None) -> None:
  args = parser().parse_args(argv)
  if args.command == "first-call-peak":
    print(json.dumps(first_call_peak(*args.shape)))
    return
  args.out = args.out or (QUICK_OUT if getattr(args, "quick", False) else DEFAULT_OUT)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.run(args)


if __name__ == "__main__":
  main()
