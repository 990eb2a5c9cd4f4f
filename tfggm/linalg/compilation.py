"""Kernels compiled with XLA by default, and a switch that traces them as plain TensorFlow graphs."""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from typing import Callable, Iterator

import tensorflow as tf

__all__ = ["xla_kernel", "plain_graph_kernels"]

_STATE = threading.local()


def xla_kernel(function: Callable | None = None, *, plain_below: int = 0) -> Callable:
  """Wraps a kernel so that it runs XLA-compiled, unless traced inside `plain_graph_kernels()`.

  Loops of many tiny steps (one row of a substitution per step) cost a few
  microseconds per step under XLA and tens of microseconds as TensorFlow graph
  ops, so the kernels compile themselves even when the caller does not. Inside
  an outer `jit_compile=True` function the inner one is simply inlined.

  `plain_below`: a loop-free kernel whose tensor arguments have static shapes
  and fewer than this many elements in all runs as plain ops: launching a
  compiled cluster costs ~0.1-0.2 ms, more than a few fused elementwise ops on
  so little data (`scripts/benchmark.py`, log_prob at n = 784, b = 28, batch 1).

  A wrapped kernel is not differentiated through (its inputs pass
  `tf.stop_gradient`; an XLA loop cannot hand its state to autodiff): the
  caller defines the gradient, as `solve` does with a banded custom gradient.
  Such a gradient is itself built from wrapped kernels, so second derivatives
  through them are zero.
  """
  if function is None:
    return functools.partial(xla_kernel, plain_below=plain_below)
  compiled = tf.function(function, jit_compile=True, autograph=False)

  def call(*args, **kwargs):
    args, kwargs = tf.nest.map_structure(
        lambda t: tf.stop_gradient(t) if isinstance(t, tf.Tensor) else t, (args, kwargs))
    if getattr(_STATE, "plain", False) or _static_size((args, kwargs)) < plain_below:
      return function(*args, **kwargs)
    return compiled(*args, **kwargs)

  call.__doc__, call.__name__ = function.__doc__, function.__name__
  return call


def _static_size(structure) -> float:
  """The number of elements of the tensors in `structure`; inf if a shape is not static."""
  sizes = [t.shape.num_elements() for t in tf.nest.flatten(structure) if isinstance(t, tf.Tensor)]
  return math.inf if None in sizes else sum(sizes)


@contextlib.contextmanager
def plain_graph_kernels() -> Iterator[None]:
  """Kernels traced inside this block are plain TensorFlow ops (no XLA cluster).

  For SavedModels served where XLA is not enabled (TF Serving compiles
  `jit_compile` functions on CPU only with `--xla_cpu_compilation_enabled`).
  """
  previous = getattr(_STATE, "plain", False)
  _STATE.plain = True
  try:
    yield
  finally:
    _STATE.plain = previous
