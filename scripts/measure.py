"""Time and peak memory of compiled calls: the measurement shared by scripts/benchmark.py and scripts/scale.py.

Time is the median of timed calls (each one's results copied to NumPy, so that the work is done). Memory is
the process's peak resident set (Linux VmHWM) during a call, above its resident set just before the call: the
peak is reset first (`/proc/self/clear_refs`), so an earlier, larger call does not hide this one.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import tensorflow as tf

__all__ = ["current_rss_bytes", "materialize", "measured", "median_seconds", "peak_bytes_of", "peak_rss_bytes",
           "reset_peak_rss"]

MIN_TIMED_SECONDS, MAX_CALLS = 0.3, 500  # sub-millisecond calls: the median of hundreds, not of a handful


def materialize(result) -> None:
  """Copies every tensor of `result` (any nest) to NumPy: the call's work is finished when this returns."""
  tf.nest.map_structure(lambda t: t.numpy(), result)


def current_rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
  """VmHWM: the peak resident set since the start of the process or the last `reset_peak_rss`."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def reset_peak_rss() -> None:
  """Sets VmHWM to the current resident set."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def peak_bytes_of(call: Callable) -> float:
  """Peak resident bytes of one `call()` above the resident set before it."""
  reset_peak_rss()
  before = current_rss_bytes()
  materialize(call())
  return float(peak_rss_bytes() - before)


def median_seconds(call: Callable, repeats: int, min_seconds: float = MIN_TIMED_SECONDS) -> float:
  """Median seconds of at least `repeats` calls, and of more until they add up to `min_seconds` (at most
  MAX_CALLS): a sub-millisecond call is not swayed by the scheduler's handful of slow calls."""
  seconds = []
  while len(seconds) < repeats or (sum(seconds) < min_seconds and len(seconds) < MAX_CALLS):
    start = time.perf_counter()
    materialize(call())
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def measured(call: Callable, repeats: int, min_seconds: float = MIN_TIMED_SECONDS) -> tuple[float, float]:
  """(median seconds, peak bytes) of a compiled call after two warm-up calls (tracing, compilation)."""
  materialize(call())
  materialize(call())
  return median_seconds(call, repeats, min_seconds), peak_bytes_of(call)
