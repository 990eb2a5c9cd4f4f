"""tf.distribute: strategy errors, two mirrored CPUs against one device, a two-worker cluster killed and resumed.

TensorFlow fixes its devices and collectives when it first runs, and this
process already ran it, so the mirrored comparison and the workers run in
fresh processes.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from tfggm.mnist import cli, distribute
from tfggm.mnist.config import ConfigError
from tfggm.mnist.evaluate import load_run

TIMEOUT = 600  # seconds per subprocess: generous, the machine may be busy

_WORKERS = {"cluster": {"worker": ["localhost:2222", "localhost:2223"]}, "task": {"type": "worker", "index": 0}}
BAD_TF_CONFIGS = {
    "unset": (None, "TF_CONFIG.*not set"),
    "not_json": ("{cluster:", "not valid JSON"),
    "no_workers": (json.dumps({"cluster": {"ps": ["localhost:1"]}, "task": _WORKERS["task"]}), "no 'cluster'"),
    "bad_task_type": (json.dumps({**_WORKERS, "task": {"type": "ps", "index": 0}}), "needs 'task'"),
    "index_out_of_range": (json.dumps({**_WORKERS, "task": {"type": "worker", "index": 2}}), "task index 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_TF_CONFIGS))
def test_multi_worker_needs_a_valid_tf_config(case, monkeypatch):
  text, message = BAD_TF_CONFIGS[case]
  if text is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", text)
  with pytest.raises(ConfigError, match=message):
    distribute.make_strategy("multi-worker")


def test_unknown_strategy_is_a_config_error():
  with pytest.raises(ConfigError, match="unknown strategy 'tpu'.*default, mirrored, multi-worker"):
    distribute.make_strategy("tpu")


def test_cli_strategy_errors_exit_2(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert cli.main(["train", str(tmp_path / "run"), "--strategy", "multi-worker"]) == 2
  err = capsys.readouterr().err
  assert "TF_CONFIG" in err and "Traceback" not in err
  assert not (tmp_path / "run").exists()
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["train", str(tmp_path / "run"), "--strategy", "tpu"])
  assert exit_info.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err


def test_cli_hands_the_strategy_to_train(tmp_path, monkeypatch):
  seen = {}

  def fake_train(config, run_dir, data_dir=None, verbose=1, strategy=None, allow_nonstandard_counts=False):
    seen.update(strategy=strategy, batch_size=config.batch_size)
    return dict(best_val_elbo=0.0, best_epoch=1, epochs_run=1, median_epoch_seconds=0.0)

  monkeypatch.setattr("tfggm.mnist.training.train", fake_train)
  assert cli.main(["train", str(tmp_path), "--strategy", "mirrored", "--batch-size", "64"]) == 0
  assert isinstance(seen["strategy"], tf.distribute.MirroredStrategy) and seen["batch_size"] == 64
  assert distribute.is_chief(seen["strategy"])


# Runs in a fresh process: two logical CPUs, then each run once on one device and once mirrored on both.
# The posterior's noise eps is fixed to 0.5 (z = loc + L^{-T} eps stays a function of the weights):
# replicas draw their own noise, so real draws cannot match one device's and would hide the arithmetic
# under Monte Carlo noise. Everything else (data order, binarization, initial weights) is seeded.
_MIRRORED = textwrap.dedent("""
    import csv, dataclasses, json, pathlib, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tensorflow_probability.python.internal import samplers
    samplers.normal = lambda shape, mean=0.0, stddev=1.0, dtype=tf.float32, seed=None, name=None: (
        mean + stddev * tf.fill(shape, tf.constant(0.5, dtype)))
    import tf_keras
    from tfggm.mnist.config import VAEConfig
    from tfggm.mnist.distribute import make_strategy
    from tfggm.mnist.training import train
    from tfggm.mnist.data import IMAGE_SHAPE
    from tfggm.mnist.networks import build_vae

    data_dir, out = sys.argv[1], pathlib.Path(sys.argv[2])
    config = VAEConfig(posterior="chain", hidden_units=(16,), batch_size=50, warmup_epochs=1, epochs=2)

    class Weights(tf_keras.callbacks.Callback):
      def on_train_end(self, logs=None):
        self.values = [w.numpy().tolist() for w in self.model.trainable_weights]

    def run(name):
      strategy, weights = make_strategy(name), Weights()
      train(config, out / name, data_dir=data_dir, allow_nonstandard_counts=True, verbose=0, callbacks=(weights,),
            strategy=strategy)
      with (out / name / "history.csv").open() as f:
        rows = [[float(row[k]) for k in ("loss", "kl", "val_loss", "val_kl")] for row in csv.DictReader(f)]
      return dict(replicas=strategy.num_replicas_in_sync, history=rows, weights=weights.values,
                  files=sorted(path.name for path in (out / name).iterdir()))

    def sgd_steps(name, images):
      # Plain SGD: unlike Adam (and clipping), its step grows with the gradient's scale.
      strategy = make_strategy(name)
      with strategy.scope():
        model = build_vae(dataclasses.replace(config, warmup_epochs=0), IMAGE_SHAPE)
        model(tf.zeros([1, 784]))
        model.compile(optimizer=tf_keras.optimizers.SGD(1e-5))
      dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)
      local = [[int(tf.shape(t)[0]) for t in strategy.experimental_local_results(batch)]
               for batch in strategy.experimental_distribute_dataset(dataset)]
      history = model.fit(dataset, epochs=2, verbose=0).history
      seeds = strategy.experimental_local_results(strategy.run(model.posterior_noise_seed))
      return dict(local_batches=local, loss=history["loss"], seeds=[s.numpy().tolist() for s in seeds],
                  weights=[w.numpy().tolist() for w in model.trainable_weights])

    images = (np.random.default_rng(0).random((5, 784)) < 0.3).astype(np.float32)
    print(json.dumps(dict(fit={name: run(name) for name in ("default", "mirrored")},
                          sgd={name: sgd_steps(name, images) for name in ("default", "mirrored")})))
""")


@pytest.mark.slow
def test_two_mirrored_cpus_follow_the_one_device_trajectory(tiny_mnist, tmp_path):
  result = subprocess.run([sys.executable, "-c", _MIRRORED, str(tiny_mnist), str(tmp_path)],
                          capture_output=True, text=True, timeout=TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  one, two = report["fit"]["default"], report["fit"]["mirrored"]
  assert (one["replicas"], two["replicas"]) == (1, 2)
  assert two["files"] == one["files"] and {"best.weights.h5", "final.weights.h5", "summary.json"} <= set(one["files"])
  assert len(two["history"]) == 2  # epochs of loss, kl, val_loss, val_kl: global means, not per replica
  np.testing.assert_allclose(two["history"], one["history"], rtol=1e-5)
  for mirrored, single in zip(two["weights"], one["weights"]):
    np.testing.assert_allclose(mirrored, single, rtol=1e-4, atol=1e-5)
  # Global batches of 4 and 1 images: replicas hold 2 + 2, then 1 + 0 (an empty replica batch).
  one, two = report["sgd"]["default"], report["sgd"]["mirrored"]
  assert two["local_batches"] == [[2, 2], [1, 0]] and one["local_batches"] == [[4], [1]]
  assert np.all(np.isfinite(two["loss"]))
  assert len(two["seeds"]) == 2 and two["seeds"][0] != two["seeds"][1]  # each replica its own noise
  np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
  for mirrored, single in zip(two["weights"], one["weights"]):
    np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)


# One worker of a two-worker cluster: builds the strategy first (as `tfggm train --strategy multi-worker`
# does), records the epochs it starts, SIGKILLs itself at the start of epoch `kill_epoch` (after the
# previous epoch was backed up) and saves its trainable weights when training ends.
# The heartbeat timeout of TensorFlow's coordination service goes from 10 s to 60 s, through the internal
# API that MultiWorkerMirroredStrategy itself calls: on a 2-core machine shared with other jobs, a worker's
# own heartbeats were seen to miss 10 s in the first epoch and abort a healthy cluster.
_WORKER = textwrap.dedent("""
    import json, os, pathlib, signal, sys
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context
    context.context().configure_coordination_service(
        service_type="standalone", service_leader="/job:worker/replica:0/task:0", heartbeat_timeout_in_ms=60_000,
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=2)])
    from tfggm.mnist.distribute import make_strategy
    strategy = make_strategy("multi-worker")
    import numpy as np
    import tf_keras
    from tfggm.mnist.config import VAEConfig
    from tfggm.mnist.training import train

    run_dir, data_dir, out, kill_epoch = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]

    class Record(tf_keras.callbacks.Callback):
      def on_epoch_begin(self, epoch, logs=None):
        if epoch == kill_epoch:
          os.kill(os.getpid(), signal.SIGKILL)
        with (out / f"epochs{task}.txt").open("a") as f:
          f.write(f"{epoch}\\n")

      def on_train_end(self, logs=None):
        np.savez(out / f"weights{task}.npz", *[w.numpy() for w in self.model.trainable_weights])
        seeds = strategy.experimental_local_results(strategy.run(self.model.posterior_noise_seed))
        (out / f"seeds{task}.json").write_text(json.dumps([s.numpy().tolist() for s in seeds]))

    config = VAEConfig(posterior="diagonal", hidden_units=(16,), batch_size=50, warmup_epochs=1, epochs=2)
    train(config, run_dir, data_dir=data_dir, allow_nonstandard_counts=True, verbose=0, callbacks=(Record(),),
          strategy=strategy)
""")


def _free_ports(count: int) -> list[int]:
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _launch_cluster(run_dir, data_dir, out, kill_epochs) -> list[subprocess.Popen]:
  """Starts one worker process per entry of `kill_epochs` on fresh loopback ports (worker 0 is the chief)."""
  (out / "tmp").mkdir(parents=True)
  addresses = [f"localhost:{port}" for port in _free_ports(len(kill_epochs))]
  workers = []
  for index, kill_epoch in enumerate(kill_epochs):
    tf_config = dict(cluster=dict(worker=addresses), task=dict(type="worker", index=index))
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TMPDIR=str(out / "tmp"))
    with (out / f"log{index}.txt").open("w") as log:
      workers.append(subprocess.Popen(
          [sys.executable, "-c", _WORKER, str(run_dir), str(data_dir), str(out), str(kill_epoch)],
          env=env, stdout=log, stderr=subprocess.STDOUT))
  return workers


def _stop(workers) -> None:
  for worker in workers:
    worker.kill()
    worker.wait()


def _epochs_started(out, index) -> list[int]:
  path = out / f"epochs{index}.txt"
  return [int(line) for line in path.read_text().split()] if path.exists() else []


def _wait_until(condition, timeout: float) -> bool:
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      return False
    time.sleep(0.2)
  return True


@pytest.mark.slow
def test_two_workers_agree_and_resume_after_a_worker_is_killed(tiny_mnist, tmp_path):
  run, first, second = tmp_path / "run", tmp_path / "first", tmp_path / "second"
  workers = _launch_cluster(run, tiny_mnist, first, kill_epochs=[-1, 1])
  try:
    assert workers[1].wait(TIMEOUT) == -signal.SIGKILL, (first / "log1.txt").read_text()[-3000:]
    # The chief has started epoch 1, so its backup of epoch 0 is complete; it now waits for its dead
    # peer. As after any worker failure, the whole cluster is stopped and relaunched.
    assert _wait_until(lambda: 1 in _epochs_started(first, 0) or workers[0].poll() is not None, TIMEOUT)
    assert _epochs_started(first, 0) == [0, 1] and _epochs_started(first, 1) == [0]
  finally:
    _stop(workers)

  workers = _launch_cluster(run, tiny_mnist, second, kill_epochs=[-1, -1])
  try:
    for index, worker in enumerate(workers):
      assert worker.wait(TIMEOUT) == 0, (second / f"log{index}.txt").read_text()[-3000:]
  finally:
    _stop(workers)
  # Both resumed at epoch 1 from the chief's backup of epoch 0, and finished with the same weights.
  assert _epochs_started(second, 0) == [1] and _epochs_started(second, 1) == [1]
  chief, other = np.load(second / "weights0.npz"), np.load(second / "weights1.npz")
  _, saved = load_run(run, weights="final.weights.h5")  # the chief's file, loaded without a strategy
  assert len(chief.files) == len(saved.trainable_weights)
  for key, weight in zip(chief.files, saved.trainable_weights):
    np.testing.assert_array_equal(chief[key], other[key])
    np.testing.assert_array_equal(chief[key], weight.numpy())
  # Same step, different workers: different posterior noise.
  seeds = [json.loads((second / f"seeds{index}.json").read_text()) for index in (0, 1)]
  assert len(seeds[0]) == len(seeds[1]) == 1 and seeds[0] != seeds[1]
  # Only the chief wrote the run directory: one history row per epoch, no worker copies left anywhere.
  assert [line.split(",")[0] for line in (run / "history.csv").read_text().split()[1:]] == ["0", "1"]
  assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2
  assert not any("workertemp" in path.name for path in run.rglob("*"))
  assert not (run / "backup").exists()  # removed once the summary was written
  assert not any(path.name.startswith("tfggm-") for path in (second / "tmp").iterdir())  # worker 1's copies
