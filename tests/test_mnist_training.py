"""Runs end to end on tiny synthetic MNIST: resume after a kill, the CLI, export and serving in a fresh process."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import tf_keras

from conftest import SMALL_NETWORK, FirstEpoch, PoisonWeights, tiny, tiny_flags
from tfggm.mnist import cli
from tfggm.mnist.config import ConfigError, VAEConfig, learning_rate_at
from tfggm.mnist.data import IMAGE_SHAPE
from tfggm.mnist.networks import LIKELIHOOD_PARAMS, build_vae, set_output_bias_from_data
from tfggm.mnist.rundir import read_history
from tfggm.mnist.training import train


class _KillAt(tf_keras.callbacks.Callback):
  """Simulates a kill at the start of an epoch, after the previous epoch was backed up."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.epoch:
      self.weights = [w.copy() for w in self.model.get_weights()]
      raise RuntimeError("simulated kill")


def test_a_killed_run_resumes_at_the_next_epoch_with_the_same_weights(tiny_mnist, tmp_path):
  config = VAEConfig(posterior="chain", epochs=3, **SMALL_NETWORK)
  kill = _KillAt(1)
  with pytest.raises(RuntimeError, match="simulated kill"):
    train(config, tmp_path, **tiny(tiny_mnist), verbose=0, callbacks=(kill,))
  first = FirstEpoch()
  summary = train(config, tmp_path, **tiny(tiny_mnist), verbose=0, callbacks=(first,))
  assert first.epoch == 1
  for restored, saved in zip(first.weights, kill.weights):
    np.testing.assert_array_equal(restored, saved)
  assert summary["epochs_run"] == 3
  tracked = json.loads((tmp_path / "tracked_posterior.json").read_text())
  assert sorted(tracked) == ["0", "1", "2"] and len(tracked["2"]["loc"]) == 16
  assert not (tmp_path / "backup").exists()  # the backup is removed once training completed
  assert any((tmp_path / "logs" / "extras").iterdir())


def _datasets(group) -> list[str]:
  """The paths of every dataset in an HDF5 group."""
  names = []
  group.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
  return names


def test_several_steps_per_execution_give_the_same_training_as_one(tiny_mnist, tmp_path):
  """Only how often Python sees a batch changes: the loss trajectory and the weights are those of one step per call."""
  histories, weights = [], []
  for steps in (1, 3):
    run = tmp_path / f"steps{steps}"
    train(VAEConfig(posterior="band4", epochs=2, steps_per_execution=steps, **SMALL_NETWORK), run, **tiny(tiny_mnist),
          verbose=0)
    histories.append(np.genfromtxt(run / "history.csv", delimiter=",", names=True))
    with h5py.File(run / "final.weights.h5") as file:
      weights.append({name: np.array(file[name]) for name in _datasets(file)})
  for key in ("loss", "elbo", "val_elbo", "kl"):
    np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-5)
  assert weights[0].keys() == weights[1].keys() and len(weights[0]) >= 12
  for name, value in weights[0].items():
    np.testing.assert_allclose(weights[1][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
  assert not np.allclose(histories[0]["elbo"][0], histories[0]["elbo"][1])  # the epochs differ: a real trajectory
  model = build_vae(VAEConfig(steps_per_execution=3, **SMALL_NETWORK), IMAGE_SHAPE)
  assert int(model._steps_per_execution) == 3  # the flag is used


def test_a_run_directory_with_another_configuration_is_refused(tiny_mnist, tmp_path):
  train(VAEConfig(posterior="diagonal", epochs=1, **SMALL_NETWORK), tmp_path, **tiny(tiny_mnist), verbose=0)
  with pytest.raises(ConfigError, match="different configuration.*posterior"):
    train(VAEConfig(posterior="chain", epochs=1, **SMALL_NETWORK), tmp_path, **tiny(tiny_mnist), verbose=0)


def test_a_killed_run_resumes_with_another_steps_per_execution_but_not_another_model(tiny_mnist, tmp_path):
  config = VAEConfig(posterior="chain", epochs=3, **SMALL_NETWORK)
  kill = _KillAt(1)
  with pytest.raises(RuntimeError, match="simulated kill"):
    train(config, tmp_path, **tiny(tiny_mnist), verbose=0, callbacks=(kill,))
  with pytest.raises(ConfigError, match="different configuration.*seed"):
    train(dataclasses.replace(config, seed=1), tmp_path, **tiny(tiny_mnist), verbose=0)
  faster = dataclasses.replace(config, steps_per_execution=4)
  first = FirstEpoch()
  assert train(faster, tmp_path, **tiny(tiny_mnist), verbose=0, callbacks=(first,))["epochs_run"] == 3
  assert first.epoch == 1  # resumed, not restarted
  for restored, saved in zip(first.weights, kill.weights):
    np.testing.assert_array_equal(restored, saved)
  assert VAEConfig.load(tmp_path / "config.json") == faster  # the record follows the resumed run
  assert train(config, tmp_path, **tiny(tiny_mnist), verbose=0)["epochs_run"] == 3  # completed: not trained
  assert VAEConfig.load(tmp_path / "config.json") == faster  # ... so its record stays how it ran


def _tfggm(*args):
  return cli.main([str(a) for a in args])


@pytest.mark.slow
def test_cli_train_evaluate_export_sample(tiny_mnist, tmp_path, capsys):
  run = tmp_path / "run"
  small = ["--hidden-units", "16", "--batch-size", "50", "--warmup-epochs", "1"]
  assert _tfggm("train", run, *tiny_flags(tiny_mnist), "--posterior", "extended_grid", "--epochs", 2,
                "--progress", "none", *small) == 0
  out = capsys.readouterr().out
  assert "TensorBoard logs" in out and "best validation ELBO" in out
  assert _tfggm("evaluate", run, *tiny_flags(tiny_mnist), "--num-samples", 20, "--chunk-size", 7) == 0
  report = json.loads((run / "evaluation.json").read_text())
  assert report["test_log_likelihood"]["num_examples"] == 40
  assert report["test_log_likelihood"]["mean"] >= report["test_elbo"]["mean"] - 3 * report["test_elbo"]["stderr"]
  assert _tfggm("sample", run, "--num", 6) == 0 and (run / "samples.png").stat().st_size > 0
  assert _tfggm("sample", run, "--num", 6, "--draw", "sample", "--out", tmp_path / "draws.png") == 0
  assert (tmp_path / "draws.png").stat().st_size > 0
  for version in (1, 2):
    assert _tfggm("export", run, "--to", tmp_path / "models" / "mnist") == 0
    assert (tmp_path / "models" / "mnist" / str(version) / "saved_model.pb").exists()
  capsys.readouterr()
  _serve_in_fresh_process(tmp_path / "models" / "mnist" / "1", bandwidth=5)
  listing = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all",
                            "--dir", str(tmp_path / "models" / "mnist" / "1")],
                           capture_output=True, text=True, timeout=300, check=True).stdout
  for signature in ("serving_default", "decode", "sample"):
    assert f"signature_def['{signature}']" in listing
  saved = (tmp_path / "models" / "mnist" / "1" / "saved_model.pb").read_bytes()
  assert b"_XlaMustCompile" not in saved  # a plain graph: TF Serving needs no XLA flag


def _serve_in_fresh_process(path, bandwidth, suffix=""):
  """Loads the SavedModel with plain TensorFlow in a process that never imports tfggm or TFP; the posterior's
  keys end in `suffix` (`_z1` for the first of several stochastic layers)."""
  script = textwrap.dedent(f"""
      import json, sys
      import numpy as np
      import tensorflow as tf
      model = tf.saved_model.load({str(path)!r})
      serve = model.signatures["serving_default"]
      out = serve(images=tf.constant(np.full((3, 784), 0.5, np.float32)))
      decoded = model.signatures["decode"](z=out["loc{suffix}"])
      sampled = model.signatures["sample"](num_images=tf.constant(4))
      try:
        serve(images=tf.constant(np.full((1, 784), np.nan, np.float32)))
        nan_error = None
      except tf.errors.InvalidArgumentError as error:
        nan_error = error.message
      try:
        model.signatures["decode"](z=tf.fill([1, 16], np.nan))
        nan_z_error = None
      except tf.errors.InvalidArgumentError as error:
        nan_z_error = error.message
      print(json.dumps(dict(
          signatures=sorted(model.signatures),
          shapes={{k: v.shape.as_list() for k, v in {{**out, **decoded, **sampled}}.items()}},
          finite=bool(all(np.all(np.isfinite(v)) for v in out.values())),
          nan_error=nan_error, nan_z_error=nan_z_error,
          imported=sorted(m for m in sys.modules if m.startswith(("tfggm", "tensorflow_probability"))))))
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["imported"] == []
  assert report["signatures"] == ["decode", "sample", "serving_default"]
  assert report["shapes"][f"loc{suffix}"] == [3, 16] and report["shapes"][f"bands{suffix}"] == [3, bandwidth + 1, 16]
  assert report["shapes"][f"sample{suffix}"] == [3, 16] and report["shapes"][f"log_prob{suffix}"] == [3]
  assert report["shapes"]["logits"] == [3, 784] and report["shapes"]["images"] == [4, 784]
  assert report["finite"] and "images contains NaN or Inf" in report["nan_error"]
  assert "decode: z contains NaN or Inf" in report["nan_z_error"]


@pytest.mark.parametrize("args,message", [
    (["train", "{run}", "--posterior", "hexagon"], "unknown posterior"),
    (["train", "{run}", "--data-dir", "{missing}"], "is not a directory"),
    (["evaluate", "{missing}"], "not a run directory"),
    (["export", "{missing}", "--to", "{run}"], "not a run directory"),
])
def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path, capsys, args, message):
  filled = [a.format(run=tmp_path / "run", missing=tmp_path / "nowhere") for a in args]
  assert cli.main(filled) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


def test_corrupt_data_file_is_a_user_error(tiny_mnist, tmp_path, capsys):
  corrupt = tmp_path / "corrupt"
  corrupt.mkdir()
  for f in tiny_mnist.iterdir():
    (corrupt / f.name).write_bytes(f.read_bytes()[: 40] if "train-images" in f.name else f.read_bytes())
  assert cli.main(["train", str(tmp_path / "run"), "--data-dir", str(corrupt), "--epochs", "1"]) == 2
  assert "train-images" in capsys.readouterr().err


def test_a_completed_run_is_not_trained_again(tiny_mnist, tmp_path):
  config = VAEConfig(posterior="chain", epochs=2, **SMALL_NETWORK)
  summary = train(config, tmp_path, **tiny(tiny_mnist), verbose=0)
  history = (tmp_path / "history.csv").read_text()
  first = FirstEpoch()
  assert train(config, tmp_path, **tiny(tiny_mnist), verbose=0, callbacks=(first,)) == summary
  assert not hasattr(first, "epoch") and (tmp_path / "history.csv").read_text() == history


def test_a_diverging_run_stops_with_an_error_and_keeps_its_best_checkpoint(tiny_mnist, tmp_path):
  from tfggm.mnist.training import TrainingDiverged
  with pytest.raises(TrainingDiverged, match="NaN in epoch 2"):
    train(VAEConfig(posterior="diagonal", epochs=3, **SMALL_NETWORK), tmp_path, **tiny(tiny_mnist), verbose=0,
          callbacks=(PoisonWeights(1),))
  assert (tmp_path / "best.weights.h5").exists() and not (tmp_path / "final.weights.h5").exists()


def test_bad_data_leaves_the_run_directory_unclaimed(tmp_path):
  with pytest.raises(Exception, match="is not a directory"):
    train(VAEConfig(epochs=1, **SMALL_NETWORK), tmp_path / "run", data_dir=tmp_path / "nowhere", verbose=0)
  assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("args", [["sample", "run", "--num", "0"], ["evaluate", "run", "--num-samples", "0"],
                                  ["train", "run", "--latent-dim", "-1"], ["evaluate", "run", "--max-test", "-5"]])
def test_non_positive_counts_are_usage_errors(args, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(args)
  assert exit_info.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


def test_export_to_a_file_is_a_user_error(tiny_mnist, tmp_path, capsys):
  run = tmp_path / "run"
  train(VAEConfig(posterior="diagonal", epochs=1, **SMALL_NETWORK), run, **tiny(tiny_mnist), verbose=0)
  (tmp_path / "a_file").write_text("x")
  assert cli.main(["export", str(run), "--to", str(tmp_path / "a_file")]) == 2
  assert "Traceback" not in capsys.readouterr().err


def test_history_summary_keeps_the_last_record_of_a_resumed_epoch_and_a_robust_epoch_time(tmp_path):
  from tfggm.mnist.rundir import summarize_history
  history = tmp_path / "history.csv"
  history.write_text("epoch,elbo,val_elbo,epoch_seconds\n"
                     "0,-120,-119,10\n"
                     "1,-110,-109,3600\n"  # an epoch stretched by a suspended process
                     "1,-111,-108,11\n"    # the same epoch, run again after a resume
                     "2,-105,nan,12\n"
                     "3,-104,-107,900\n")  # stretched and kept
  summary = summarize_history(history)
  assert (summary["epochs_run"], summary["best_epoch"], summary["best_val_elbo"]) == (4, 4, -107.0)
  assert summary["median_epoch_seconds"] == 11.5 and summary["total_epoch_seconds"] == 933.0
  assert summary["final_train_elbo"] == -104.0


@pytest.mark.slow
def test_a_cli_run_trained_under_xla_stores_the_flag_and_evaluates_and_exports(tiny_mnist, tmp_path):
  run = tmp_path / "run"
  small = ["--hidden-units", "16", "--batch-size", "50", "--warmup-epochs", "1", "--epochs", 1, "--progress", "none"]
  assert _tfggm("train", run, *tiny_flags(tiny_mnist), "--posterior", "chain", "--jit-compile", *small) == 0
  assert json.loads((run / "config.json").read_text())["jit_compile"] is True
  assert _tfggm("evaluate", run, *tiny_flags(tiny_mnist), "--num-samples", 4, "--max-test", 20) == 0
  assert np.isfinite(json.loads((run / "evaluation.json").read_text())["test_log_likelihood"]["mean"])
  assert _tfggm("export", run, "--to", tmp_path / "export") == 0
  assert (tmp_path / "export" / "1" / "saved_model.pb").exists()


@pytest.mark.slow
def test_a_two_layer_cli_run_trains_evaluates_samples_and_exports_every_layer(tiny_mnist, tmp_path):
  """The IWAE paper's options on a tiny hierarchy: band-4 q and p(z1|z2), the learning-rate decay, the data's bias."""
  run = tmp_path / "run"
  assert _tfggm("train", run, *tiny_flags(tiny_mnist), "--hidden-units", "16", "--latent-dim", 16, "--posterior",
                "band4", "--prior", "band4", "--upper-layer", "8:12:band2", "--learning-rate-schedule", "iwae",
                "--output-bias-from-data", "--zero-init-gaussians", "--warmup-epochs", 0, "--epochs", 3,
                "--batch-size", 50, "--progress", "none") == 0
  config = VAEConfig.load(run / "config.json")
  history = read_history(run / "history.csv")
  assert [float(row["lr"]) for row in history] == pytest.approx([learning_rate_at(config, e) for e in range(3)])
  assert {"kl_z1", "kl_z2", "val_kl_z1", "val_kl_z2"} <= set(history[0])
  assert _tfggm("evaluate", run, *tiny_flags(tiny_mnist), "--num-samples", 6, "--max-test", 20) == 0
  report = json.loads((run / "evaluation.json").read_text())
  assert report["latent_dims"] == [16, 8] and len(report["active_units_per_layer"]) == 2
  assert np.isfinite(report["test_log_likelihood"]["mean"])
  assert _tfggm("sample", run, "--num", 4) == 0 and (run / "samples.png").stat().st_size > 0
  assert _tfggm("export", run, "--to", tmp_path / "export") == 0
  _serve_in_fresh_process(tmp_path / "export" / "1", bandwidth=4, suffix="_z1")


def test_the_output_bias_starts_at_the_logit_of_the_pixel_means():
  config = VAEConfig(**SMALL_NETWORK, output_bias_from_data=True)
  model = build_vae(config, IMAGE_SHAPE)
  images = np.random.default_rng(0).integers(0, 256, size=(50, 784), dtype=np.uint8)
  images[:, 0], images[:, 1] = 0, 255
  set_output_bias_from_data(model, images)
  bias = model.decoder.get_layer(LIKELIHOOD_PARAMS).bias.numpy()
  means = np.clip(images.mean(axis=0) / 255.0, 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(bias, np.log(means / (1 - means)), rtol=1e-5)
