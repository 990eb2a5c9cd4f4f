"""Nothing lost: run directories under kills at every boundary, a second process, a full disk, broken files."""

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tf_keras

from conftest import SMALL_NETWORK, FirstEpoch, PoisonWeights, tiny, tiny_flags
from tfggm.mnist import cli, files
from tfggm.mnist.config import VAEConfig
from tfggm.mnist.rundir import RunDirectory, RunDirectoryError, read_history
from tfggm.mnist.training import TrainingDiverged, train


def _train_cli(run, tiny_mnist, *extra) -> list[str]:
  return ["train", str(run), *tiny_flags(tiny_mnist), "--hidden-units", "16", "--batch-size", "50",
          "--warmup-epochs", "1", "--progress", "none", *map(str, extra)]


# --- one owner at a time ---------------------------------------------------------------------------------------

_HOLD = textwrap.dedent("""
    import sys, time
    from tfggm.mnist import files
    with files.owned_directory(sys.argv[1]):
      print("owned", flush=True)
      time.sleep(600)
""")


def test_a_second_process_is_refused_and_a_dead_owners_lock_is_taken_over(tiny_mnist, tmp_path, capsys):
  run = tmp_path / "run"
  owner = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
  try:
    assert owner.stdout.readline().strip() == "owned"
    assert cli.main(_train_cli(run, tiny_mnist, "--epochs", 1)) == 2
    err = capsys.readouterr().err
    assert f"in use by process {owner.pid} on host" in err and len(err.strip().splitlines()) == 1
    assert not (run / "config.json").exists()  # refused before anything was written
  finally:
    owner.send_signal(signal.SIGKILL)  # a kill leaves the lock file with the dead owner in it
    owner.wait()
  assert str(owner.pid) in (run / ".lock").read_text()
  assert cli.main(_train_cli(run, tiny_mnist, "--epochs", 1)) == 0
  err = capsys.readouterr().err
  assert f"left locked by process {owner.pid}" in err and "taking it over" in err
  assert (run / ".lock").read_text() == ""  # released on exit


def test_the_owner_is_refused_a_second_time_in_the_same_process_and_temporaries_are_cleaned(tmp_path):
  (tmp_path / ".tmp-99999-history.csv").write_text("half a fi")
  (tmp_path / ".tmp-99999-1").mkdir()  # an interrupted export's folder
  with files.owned_directory(tmp_path):
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(files.DirectoryBusy, match=f"in use by process {os.getpid()}"):
      with files.owned_directory(tmp_path):
        pass


# --- a kill at every boundary -------------------------------------------------------------------------------------

# Trains 2 epochs in a fresh process and kills itself (SIGKILL: no cleanup runs) at one boundary.
_KILLED = textwrap.dedent("""
    import os, signal, sys
    import tf_keras
    from tfggm.mnist import files, training
    from tfggm.mnist.config import VAEConfig
    run_dir, data_dir, boundary = sys.argv[1:]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)

    class Kill(tf_keras.callbacks.Callback):  # runs after the history row, before the backup
      def on_train_batch_end(self, batch, logs=None):
        if boundary == "mid-epoch" and self.epoch == 1 and batch == 1:
          die()
      def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
      def on_epoch_end(self, epoch, logs=None):
        if boundary == "history-row-before-backup" and epoch == 1:
          die()

    if boundary == "after-fit":
      training.summarize_history = lambda history: die()
    write_text = files.write_text
    def write_text_or_die(path, text):
      if path.name == "summary.json" and boundary == "writing-summary":
        with files.replacing(path) as temporary:
          temporary.write_text(text[: len(text) // 2])
          die()
      write_text(path, text)
    files.write_text = write_text_or_die
    config = VAEConfig(posterior="chain", epochs=2, hidden_units=(16,), batch_size=50, warmup_epochs=1)
    training.train(config, run_dir, data_dir=data_dir, allow_nonstandard_counts=True, verbose=0, callbacks=(Kill(),))
""")

# boundary -> the epoch a resumed run starts at (None: no epoch left, only the end of training to write)
BOUNDARIES = {"mid-epoch": 1, "history-row-before-backup": 1, "after-fit": None, "writing-summary": None}


@pytest.mark.slow
def test_a_kill_at_any_boundary_loses_at_most_the_epoch_in_progress(tiny_mnist, tmp_path):
  killed = {boundary: subprocess.Popen([sys.executable, "-c", _KILLED, str(tmp_path / boundary), str(tiny_mnist),
                                        boundary], stderr=subprocess.PIPE, text=True)
            for boundary in BOUNDARIES}
  for boundary, process in killed.items():
    assert process.wait() == -signal.SIGKILL, (boundary, process.stderr.read())
  for boundary, resumed_at in BOUNDARIES.items():
    run = RunDirectory(tmp_path / boundary)
    assert not run.is_completed() and run.backup.exists(), boundary
    first = FirstEpoch()
    summary = train(VAEConfig(posterior="chain", epochs=2, **SMALL_NETWORK), run.path, **tiny(tiny_mnist), verbose=0,
                    callbacks=(first,))
    assert getattr(first, "epoch", None) == resumed_at, boundary
    assert run.is_completed() and run.final_weights.exists() and not list(run.path.glob(".tmp-*")), boundary
    assert [line.split(",")[0] for line in run.history.read_text().splitlines()] == ["epoch", "0", "1"], boundary
    assert summary["epochs_run"] == 2 and json.loads(run.summary.read_text()) == summary, boundary


def test_a_history_broken_by_two_appending_processes_is_read_and_rewritten_whole(tmp_path):
  history = tmp_path / "history.csv"
  history.write_text("epoch,elbo,loss\n0,-120,120\nepoch,elbo,loss\n0,-119,119\n1,-110,110\n")
  assert [row["elbo"] for row in read_history(history)] == ["-119", "-110"]
  history.write_text("epoch,elbo,loss\n0,-120,120\n1,-11")  # a row cut short
  with pytest.raises(RunDirectoryError, match="line 3, is not a row"):
    read_history(history)


# --- the end of a run ---------------------------------------------------------------------------------------------

def test_a_run_diverged_in_its_first_epoch_says_no_weights_were_kept_and_says_it_again(tiny_mnist, tmp_path):
  config = VAEConfig(posterior="diagonal", epochs=2, **SMALL_NETWORK)
  with pytest.raises(TrainingDiverged, match="NaN in epoch 1.*no epoch had a finite validation ELBO"):
    train(config, tmp_path, **tiny(tiny_mnist), verbose=0, callbacks=(PoisonWeights(0),))
  assert not (tmp_path / "best.weights.h5").exists() and not (tmp_path / "final.weights.h5").exists()
  first = FirstEpoch()
  with pytest.raises(TrainingDiverged, match="NaN in epoch 1"):
    train(config, tmp_path, **tiny(tiny_mnist), verbose=0, callbacks=(first,))
  assert not hasattr(first, "epoch")  # recorded as the end of the run: not trained again


# --- a full disk, permissions -------------------------------------------------------------------------------------

@contextlib.contextmanager
def _full_disk(monkeypatch, after: int = 0):
  """The disk is full after `after` more whole files: then each write fails (ENOSPC) once its temporary is written."""
  written = []

  def fsync(fd):
    if len(written) >= after:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    written.append(fd)

  with monkeypatch.context() as patch:
    patch.setattr(files.os, "fsync", fsync)
    yield


@pytest.fixture(scope="module")
def trained_run(tiny_mnist, tmp_path_factory):
  run = tmp_path_factory.mktemp("trained") / "run"
  train(VAEConfig(posterior="chain", epochs=1, **SMALL_NETWORK), run, **tiny(tiny_mnist), verbose=0)
  return RunDirectory(run)


def _evaluate_cli(run, tiny_mnist):
  return ["evaluate", str(run), *tiny_flags(tiny_mnist), "--num-samples", "3", "--max-test", "10"]


def test_a_full_disk_during_evaluate_is_one_line_and_keeps_the_previous_results(trained_run, tiny_mnist, monkeypatch,
                                                                                capsys):
  assert cli.main(_evaluate_cli(trained_run.path, tiny_mnist)) == 0
  before = trained_run.evaluation_results()
  with _full_disk(monkeypatch):
    assert cli.main(_evaluate_cli(trained_run.path, tiny_mnist)[:-2] + ["--max-test", "20"]) == 2
  err = capsys.readouterr().err
  assert "No space left on device" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
  after = trained_run.evaluation_results()
  assert after[0] == before[0] and len(after[1]["elbo"]) == 10  # the earlier pair, whole and consistent
  assert not list(trained_run.path.glob(".tmp-*"))


def test_a_new_report_beside_old_values_is_refused(trained_run, tiny_mnist):
  assert cli.main(_evaluate_cli(trained_run.path, tiny_mnist)) == 0
  report, values = trained_run.evaluation_results()
  np.savez(trained_run.per_example, elbo=values["elbo"][:5], log_likelihood=values["log_likelihood"][:5])
  with pytest.raises(RunDirectoryError, match="not the one .* was computed with"):
    trained_run.evaluation_results()
  assert cli.main(_evaluate_cli(trained_run.path, tiny_mnist)) == 0  # mended by evaluating again
  assert trained_run.evaluation_results()[0] == report


def test_a_full_disk_during_training_stops_with_one_line_and_the_run_resumes(tiny_mnist, tmp_path, monkeypatch,
                                                                             capsys):
  run = RunDirectory(tmp_path / "run")
  with _full_disk(monkeypatch, after=4):  # config.json, then the best weights, posterior and history of epoch 1
    assert cli.main(_train_cli(run.path, tiny_mnist, "--epochs", 2)) == 2
  err = capsys.readouterr().err
  assert "No space left on device" in err and "Traceback" not in err
  assert not list(run.path.glob(".tmp-*")) and len(read_history(run.history)) == 1
  first = FirstEpoch()
  train(VAEConfig.load(run.config), run.path, **tiny(tiny_mnist), verbose=0, callbacks=(first,))
  assert first.epoch == 1 and run.is_completed()


@pytest.fixture
def tiny_filesystem(tmp_path):
  """A 16 MiB tmpfs of its own, where the machine lets the tests mount one (root on Linux)."""
  mount_point = tmp_path / "tiny_fs"
  mount_point.mkdir()
  try:
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
                             capture_output=True, check=False).returncode == 0
  except OSError:  # no mount command
    mounted = False
  if not mounted:
    pytest.skip("cannot mount a tmpfs here (needs root); the simulated full-disk tests cover the same code")
  try:
    yield mount_point
  finally:
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


class _FillDisk(tf_keras.callbacks.Callback):
  """Fills the file system with a ballast file when epoch `epoch` begins (after the backup of the one before)."""

  def __init__(self, ballast, epoch):
    super().__init__()
    self.ballast, self.epoch = ballast, epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.epoch:
      with contextlib.suppress(OSError), self.ballast.open("wb") as f:
        while True:
          f.write(bytes(1 << 20))
          f.flush()


def test_a_really_full_disk_keeps_every_earlier_file_and_the_run_resumes(tiny_mnist, tiny_filesystem):
  import tensorflow as tf
  run, ballast = RunDirectory(tiny_filesystem / "run"), tiny_filesystem / "ballast"
  config = VAEConfig(posterior="chain", epochs=3, **SMALL_NETWORK)
  with pytest.raises((OSError, tf.errors.ResourceExhaustedError)) as error:
    train(config, run.path, **tiny(tiny_mnist), verbose=0, callbacks=(_FillDisk(ballast, 1),))
  assert cli._one_line(error.value).startswith("No space left on device: ")
  assert len(read_history(run.history)) == 1 and VAEConfig.load(run.config) == config
  ballast.unlink()
  first = FirstEpoch()
  assert train(config, run.path, **tiny(tiny_mnist), verbose=0, callbacks=(first,))["epochs_run"] == 3
  assert first.epoch == 1 and run.is_completed() and not list(run.path.glob(".tmp-*"))


def test_a_full_disk_while_backing_up_is_one_line(tiny_mnist, tmp_path, monkeypatch, capsys):
  import tensorflow as tf
  from tf_keras.src.distribute import worker_training_state

  def no_space(self, epoch, batch=0):
    raise tf.errors.ResourceExhaustedError(None, None, "backup/ckpt-1.data: No space left on device\nmore")

  monkeypatch.setattr(worker_training_state.WorkerTrainingState, "back_up", no_space)
  assert cli.main(_train_cli(tmp_path / "run", tiny_mnist, "--epochs", 1)) == 2
  err = capsys.readouterr().err
  assert err.strip() == "tfggm train: error: backup/ckpt-1.data: No space left on device"


def test_an_unwritable_run_directory_is_one_line(tiny_mnist, tmp_path, monkeypatch, capsys):
  def refused(path, *args):  # what a directory of another user gives (simulated: these tests may run as root)
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

  monkeypatch.setattr(files.os, "open", refused)
  assert cli.main(_train_cli(tmp_path / "run", tiny_mnist, "--epochs", 1)) == 2
  assert capsys.readouterr().err.strip() == f"tfggm train: error: Permission denied: {tmp_path / 'run' / '.lock'}"


# --- files another run, or another version, left behind ----------------------------------------------------------

def test_weights_of_another_run_are_a_one_line_error(trained_run, tiny_mnist, tmp_path, capsys):
  other = tmp_path / "other"
  train(VAEConfig(posterior="band4", epochs=1, **SMALL_NETWORK), other, **tiny(tiny_mnist), verbose=0)
  (other / "best.weights.h5").write_bytes(trained_run.best_weights.read_bytes())
  assert cli.main(_evaluate_cli(other, tiny_mnist)) == 2
  err = capsys.readouterr().err
  assert "does not hold weights of the model" in err and len(err.strip().splitlines()) == 1
  (other / "best.weights.h5").write_bytes(b"not an HDF5 file")
  assert cli.main(["export", str(other), "--to", str(tmp_path / "export")]) == 2
  assert "does not hold weights of the model" in capsys.readouterr().err


def test_export_skips_a_stray_version_name_and_removes_interrupted_exports(trained_run, tmp_path, capsys):
  base = tmp_path / "saved"
  base.mkdir()
  (base / "3").write_text("a stray file")
  (base / ".tmp-99999-2").mkdir()
  assert cli.main(["export", str(trained_run.path), "--to", str(base)]) == 0
  assert (base / "4" / "saved_model.pb").exists() and not list(base.glob(".tmp-*"))
  with files.owned_directory(base):
    assert cli.main(["export", str(trained_run.path), "--to", str(base)]) == 2
  assert "in use by process" in capsys.readouterr().err and not (base / "5").exists()


# --- sample: bounded, and writes what it says ---------------------------------------------------------------------

def test_sample_is_bounded_checks_its_output_path_first_and_reports_the_file_it_wrote(trained_run, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["sample", str(trained_run.path), "--num", "200000"])
  assert exit_info.value.code == 2 and "at most 1024" in capsys.readouterr().err
  start = time.perf_counter()
  assert cli.main(["sample", str(trained_run.path), "--out", str(tmp_path / "x.xyz")]) == 2
  assert "cannot write a '.xyz' image" in capsys.readouterr().err
  assert time.perf_counter() - start < 1  # refused before the model is loaded
  assert cli.main(["sample", str(trained_run.path), "--num", "3", "--out", str(tmp_path / "grid")]) == 0
  assert f"to {tmp_path / 'grid.png'}" in capsys.readouterr().out
  assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
  assert cli.main(["sample", str(trained_run.path), "--num", "3", "--out", str(tmp_path / "grid.pdf")]) == 0
  assert (tmp_path / "grid.pdf").read_bytes()[:4] == b"%PDF"


# --- the configuration: checked before anything is written --------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--activation", "foo"), ("--seed", "-1"), ("--learning-rate", "inf")])
def test_a_bad_flag_is_one_line_naming_it_and_the_directory_stays_usable(tiny_mnist, tmp_path, capsys, flag, value):
  run, hook = tmp_path / "run", sys.unraisablehook
  assert cli.main(_train_cli(run, tiny_mnist, "--epochs", 1, flag, value)) == 2
  assert sys.unraisablehook is hook  # the quiet command's hook is its own, not its caller's
  err = capsys.readouterr().err
  assert f"argument {flag}" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
  assert not (run / "config.json").exists()


@pytest.mark.parametrize("content", [b"", b'{"posterior": "chain", "latent', b"\x89\xff\x00binary", b"[1, 2]",
                                     b'{"latent_dim": "16"}'])
def test_a_corrupt_config_json_is_one_line_exit_2(trained_run, tmp_path, capsys, content):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_bytes(content)
  (run / "best.weights.h5").write_bytes(trained_run.best_weights.read_bytes())
  for command in (["evaluate", str(run)], ["export", str(run), "--to", str(tmp_path / "e")], ["sample", str(run)]):
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, command
