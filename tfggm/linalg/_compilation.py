"""Kernels compiled with XLA by default, the gradients around them, and a switch to plain TensorFlow graphs."""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence

import tensorflow as tf

_STATE = threading.local()


def xla_kernel(function: Callable | None = None, *, plain_below: int = 0, differentiable: bool = False) -> Callable:
  """Wraps a kernel so that it runs XLA-compiled, unless traced inside `plain_graph_kernels()`.

  Loops of many tiny steps (one row of a substitution per step) cost a few
  microseconds per step under XLA and tens of microseconds as TensorFlow graph
  ops, so the kernels compile themselves even when the caller does not. Inside
  an outer `jit_compile=True` function the inner one is simply inlined.

  `plain_below`: a loop-free kernel whose tensor arguments have static shapes
  and fewer than this many elements in all runs as plain ops: launching a
  compiled cluster costs ~0.05-0.1 ms, more than a few elementwise ops on so
  little data (a VAE's latents; `scripts/benchmark.py`, vae-steps).

  Gradients. `tf.Variable` arguments are read into tensors first, to be
  treated as tensors are (a variable handed straight to a compiled loop made
  TensorFlow try to differentiate the loop: "TensorList crossing the XLA/TF
  boundary").

  - `differentiable=True`, for loop-free kernels (the matvecs, the band of an
    outer product): TensorFlow differentiates the compiled function like any
    other op, to every order.
  - Otherwise the kernel holds an XLA loop, which TensorFlow cannot
    differentiate (the loop's state would have to leave the compiled cluster as
    a TensorList). Its inputs pass `tf.stop_gradient`, so a tape never asks for
    that, and its result passes an identity whose gradient raises
    `NotImplementedError` naming the kernel: differentiating it directly fails
    at once instead of giving None. The public functions that call such a
    kernel define the gradient themselves (`with_gradient`).
  """
  if function is None:
    return functools.partial(xla_kernel, plain_below=plain_below, differentiable=differentiable)
  compiled = tf.function(function, jit_compile=True, autograph=False)

  def call(*args, **kwargs):
    args, kwargs = tf.nest.map_structure(
        lambda t: tf.convert_to_tensor(t) if isinstance(t, (tf.Tensor, tf.Variable)) else t, (args, kwargs))
    inputs = [t for t in tf.nest.flatten((args, kwargs)) if isinstance(t, tf.Tensor)]
    if not differentiable:
      args, kwargs = tf.nest.map_structure(
          lambda t: tf.stop_gradient(t) if isinstance(t, tf.Tensor) else t, (args, kwargs))
    if getattr(_STATE, "plain", False) or _static_size((args, kwargs)) < plain_below:
      result = function(*args, **kwargs)
    else:
      result = compiled(*args, **kwargs)
    return result if differentiable or not inputs else _gradient_raises(result, inputs, function)

  call.__doc__, call.__name__ = function.__doc__, function.__name__
  return call


def _gradient_raises(result, inputs: Sequence[tf.Tensor], function: Callable):
  """`result`, as a function of `inputs` whose gradient raises NotImplementedError (a compiled loop's).

  The error is raised when the gradient is built: eagerly, or when a `tf.function` (XLA-compiled or not) traces
  its backward pass. Not while `tf.saved_model.save` traces every custom gradient of a model to store it: there
  the gradient is None, as for any op without one (the public kernels never differentiate this identity).
  """

  @tf.custom_gradient
  def no_gradient(*unused_inputs):
    def gradient(*unused_gradients):
      if _in_save_context():
        return [None] * len(inputs)
      raise NotImplementedError(
          f"{function.__module__}.{function.__name__} is an XLA-compiled loop and TensorFlow cannot differentiate "
          "it; differentiate the public tfggm.linalg function that calls it, whose custom gradient is banded and "
          "differentiable again.")
    return tf.nest.map_structure(tf.identity, result), gradient

  return no_gradient(*inputs)


def _in_save_context() -> bool:
  """Whether `tf.saved_model.save` is running (TensorFlow has no public switch for this)."""
  try:
    from tensorflow.python.saved_model import save_context  # pylint: disable=g-direct-tensorflow-import
  except ImportError:  # another layout: assume saving, so that a SavedModel never fails for this
    return True
  return save_context.in_save_context()


def with_gradient(output: tf.Tensor, inputs: Sequence[tf.Tensor], vjp: Callable) -> tf.Tensor:
  """`output`, already computed from `inputs` without a gradient, as a function of `inputs` with gradient `vjp`.

  ```none
  vjp(inputs, output, d_output) -> (d_input for each input)       d_input = (d output / d input)^T d_output
  ```

  The forward pass costs one identity. In the backward pass `vjp` receives
  `output` attached again by this function, so when `vjp` is built from
  differentiable ops and functions of this kind (a solve's gradient is a solve
  and a band of outer products), a tape recording the backward pass
  differentiates it too: second and higher derivatives, each order one more
  backward pass of the same cost. (A gradient that closed over the bare
  `output` would see it as a constant and silently drop terms.)
  """

  @tf.custom_gradient
  def attached(*inputs):
    def gradient(d_output):
      return tuple(vjp(inputs, with_gradient(output, inputs, vjp), d_output))
    return tf.identity(output), gradient

  return attached(*inputs)


def gradient_differentiated_by(function: Callable[[tf.Tensor], tf.Tensor]) -> Callable:
  """A `with_gradient` vjp for a compiled first derivative g(x, dy) = (d function / dx)^T dy of x.

  The compiled loops' gradients (the column Cholesky's, the row selected inversion's) are loops too, which
  TensorFlow cannot differentiate. Their value equals the gradient of `function`, the same map computed by
  differentiable ops (the block forms), so their own vjp is that of `function`'s gradient:

  ```none
  (x, dy) -> (d/dx, d/d dy) of <(d function / dx)^T dy, dd>
  ```

  A second derivative (a Hessian-vector product) runs the block form's forward pass, its gradient and the gradient
  of that; first derivatives never touch it.
  """

  def vjp(inputs, unused_gradient, d_gradient):
    x, dy = inputs
    with tf.GradientTape() as outer:
      outer.watch([x, dy])
      with tf.GradientTape() as inner:
        inner.watch(x)
        y = function(x)
      gradient = inner.gradient(y, x, output_gradients=dy)
    return outer.gradient(gradient, [x, dy], output_gradients=d_gradient)

  return vjp


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
