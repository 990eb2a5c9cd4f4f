"""tf.distribute strategies by name: one device, all local devices, or a TF_CONFIG cluster of workers."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfggm.mnist.config import ConfigError

__all__ = ["STRATEGIES", "is_chief", "make_strategy", "task_of"]

STRATEGIES = ("default", "mirrored", "multi-worker")
_WORKER_TYPES = ("chief", "worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The strategy called `name`: "default", "mirrored" or "multi-worker".

  default       no distribution: TensorFlow's default strategy (one device).
  mirrored      `MirroredStrategy` over this machine's GPUs, or over its logical
                CPUs when it has no GPU (one CPU unless split with
                `tf.config.set_logical_device_configuration`).
  multi-worker  `MultiWorkerMirroredStrategy` over the cluster in $TF_CONFIG: each
                worker mirrors the model on its own devices, gradients are summed
                across all of them by collective all-reduce.

  Create a multi-worker strategy at program start, before any other
  TensorFlow operation runs: it configures the collective ops of the process.

  Raises:
    ConfigError: an unknown name, or "multi-worker" without a usable $TF_CONFIG.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])
  if name == "multi-worker":
    _check_tf_config(os.environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


def _check_tf_config(text: str | None) -> None:
  """Fails with what to fix unless `text` names a cluster of workers and this process's task in it."""
  example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
             '"task": {"type": "worker", "index": 0}}\'')
  if not text:
    raise ConfigError(f"--strategy multi-worker needs the cluster in $TF_CONFIG, which is not set; {example}.")
  try:
    tf_config = json.loads(text)
  except json.JSONDecodeError as error:
    raise ConfigError(f"$TF_CONFIG is not valid JSON ({error}); {example}.") from error
  cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
  task = tf_config.get("task") if isinstance(tf_config, dict) else None
  if not isinstance(cluster, dict) or not any(cluster.get(kind) for kind in _WORKER_TYPES):
    raise ConfigError(f"$TF_CONFIG has no 'cluster' with 'worker' (or 'chief') addresses; {example}.")
  if not isinstance(task, dict) or task.get("type") not in _WORKER_TYPES:
    raise ConfigError(f"$TF_CONFIG needs 'task': {{'type': 'worker' or 'chief', 'index': i}}; got {task!r}.")
  addresses = cluster.get(task["type"]) or []
  index = task.get("index")
  if not isinstance(index, int) or not 0 <= index < len(addresses):
    raise ConfigError(f"$TF_CONFIG task index {index!r} is not one of the {len(addresses)} "
                      f"'{task['type']}' addresses {addresses}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's files: always, except on the non-chief workers of a cluster."""
  return strategy.extended.should_checkpoint


def task_of(strategy: tf.distribute.Strategy) -> str:
  """This process's task in its cluster, e.g. "worker 1"; "local" without a cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "local"
  return f"{resolver.task_type} {resolver.task_id}"
