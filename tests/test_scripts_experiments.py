"""The resumable experiment driver end to end on tiny MNIST, and the rows of the two scripts that use it."""

import dataclasses
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the scripts import their shared driver as `experiments`

import experiments  # noqa: E402
from experiments import Experiment, Row  # noqa: E402

TINY = ("--hidden-units", "8", "--batch-size", "50", "--warmup-epochs", "1", "--max-examples", "120")


def _script(name: str):
  spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _table(results: dict) -> str:
  return experiments.markdown_table(
      ["row", "log p(x)", "Δ vs base"],
      [[name, experiments.estimate(values["evaluation"]["test_log_likelihood"]),
        experiments.estimate(values["paired_vs_base"]["log_likelihood"], signed=True)
        if "paired_vs_base" in values else "—"] for name, values in results.items()])


def _run_files(run_dir: pathlib.Path) -> dict:
  names = ("history.csv", "best.weights.h5", "final.weights.h5", "summary.json", "evaluation.json",
           "evaluation_per_example.npz")
  return {name: (run_dir / name).stat().st_mtime_ns for name in names}


@pytest.mark.slow
def test_rows_are_trained_evaluated_compared_pairwise_and_not_retrained(tiny_mnist, tmp_path):
  rows = [Row("base", ("--activation", "elu")), Row("other", ("--activation", "relu"), baseline="base")]
  experiment = Experiment(runs=tmp_path / "runs", epochs=1, num_samples=4, data_dir=str(tiny_mnist),
                          allow_nonstandard_counts=True,
                          extra_train_args=TINY)
  assert experiments.run_rows(experiment, rows, jobs=2) == []
  archive = tmp_path / "results" / "tiny"
  experiments.archive_rows(experiment, rows, archive)
  results = experiments.collect_results(archive, rows)
  experiments.write_results(experiment, results, _table(results), tmp_path / "results", "tiny")

  report = json.loads((tmp_path / "results" / "tiny.json").read_text())
  assert list(report["rows"]) == ["base", "other"]
  assert report["protocol"]["epochs"] == 1 and report["protocol"]["num_importance_samples"] == 4
  assert "paired_vs_base" not in report["rows"]["base"]
  per_example = {row.name: np.load(experiment.run_dir(row).per_example) for row in rows}
  for key in experiments.PAIRED_KEYS:
    difference = per_example["other"][key] - per_example["base"][key]
    assert len(difference) == 40  # the whole tiny test split
    paired = report["rows"]["other"]["paired_vs_base"][key]
    np.testing.assert_allclose(paired["mean"], difference.mean(), rtol=1e-12)
    np.testing.assert_allclose(paired["stderr"], difference.std(ddof=1) / np.sqrt(40), rtol=1e-12)
  markdown = (tmp_path / "results" / "tiny.md").read_text().splitlines()
  assert len(markdown) == 4 and markdown[2].startswith("| base |") and markdown[3].startswith("| other |")

  before = {row.name: _run_files(experiment.run_dir(row).path) for row in rows}
  assert experiments.run_rows(experiment, rows, jobs=2) == []
  assert {row.name: _run_files(experiment.run_dir(row).path) for row in rows} == before
  for row in rows:
    assert json.loads(experiment.run_dir(row).summary.read_text())["epochs_run"] == 1

  shutil.rmtree(experiment.runs)  # the machine is gone; the archive is not
  experiments.archive_rows(experiment, rows, archive)
  assert experiments.collect_results(archive, rows) == results


def _archive_row(archive: pathlib.Path, name: str, log_likelihood: float, **recorded) -> None:
  (archive / name).mkdir(parents=True, exist_ok=True)
  evaluation = dict(test_log_likelihood=dict(mean=log_likelihood, stderr=1.0))
  (archive / name / experiments.RESULT).write_text(json.dumps(dict(evaluation=evaluation, training={}, **recorded)))


def test_archived_rows_pair_on_per_image_values_else_keep_only_differences_against_the_archived_baseline(tmp_path):
  rows = [Row("base", ()), Row("other", (), baseline="base")]
  recorded = dict(log_likelihood=dict(mean=1.0, stderr=0.1), elbo=dict(mean=2.0, stderr=0.2),
                  baseline_log_likelihood=-90.0)
  _archive_row(tmp_path, "base", -90.0)
  _archive_row(tmp_path, "other", -89.0, paired_vs_base=recorded)
  assert experiments.collect_results(tmp_path, rows)["other"]["paired_vs_base"] == recorded

  _archive_row(tmp_path, "base", -90.5)  # the baseline was retrained: the recorded differences are stale
  assert "paired_vs_base" not in experiments.collect_results(tmp_path, rows)["other"]
  rng = np.random.default_rng(0)
  values = {name: dict(log_likelihood=rng.normal(size=50), elbo=rng.normal(size=50)) for name in ("base", "other")}
  np.savez(tmp_path / "other" / experiments.PER_EXAMPLE, **values["other"])
  assert "paired_vs_base" not in experiments.collect_results(tmp_path, rows)["other"]  # the base has no values

  np.savez(tmp_path / "base" / experiments.PER_EXAMPLE, **values["base"])
  paired = experiments.collect_results(tmp_path, rows)["other"]["paired_vs_base"]
  assert paired["baseline_log_likelihood"] == -90.5
  for key in experiments.PAIRED_KEYS:
    difference = values["other"][key] - values["base"][key]
    np.testing.assert_allclose(paired[key]["mean"], difference.mean(), rtol=1e-12)
    np.testing.assert_allclose(paired[key]["stderr"], difference.std(ddof=1) / np.sqrt(50), rtol=1e-12)
  assert list(experiments.collect_results(tmp_path, rows[::-1])) == ["other", "base"]
  assert experiments.collect_results(tmp_path / "none", rows) == {}


def test_only_rows_finished_under_the_protocol_are_archived(tmp_path):
  experiment = Experiment(runs=tmp_path / "runs", epochs=3, num_samples=4)
  runs = {"done": (4, 3), "other_k": (8, 3), "fewer_epochs": (4, 2)}
  for name, (num_samples, epochs_run) in runs.items():
    run_dir = experiment.runs / name
    run_dir.mkdir(parents=True)
    (run_dir / "evaluation.json").write_text(json.dumps(dict(num_importance_samples=num_samples)))
    (run_dir / "summary.json").write_text(json.dumps(dict(epochs_run=epochs_run)))
    np.savez(run_dir / experiments.PER_EXAMPLE, log_likelihood=np.zeros(3), elbo=np.zeros(3))
  (experiment.runs / "unfinished").mkdir()
  rows = [Row(name, ()) for name in (*runs, "unfinished")]
  experiments.archive_rows(experiment, rows, tmp_path / "archive")
  assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == ["done"]
  assert sorted(p.name for p in (tmp_path / "archive" / "done").iterdir()) == [experiments.PER_EXAMPLE,
                                                                               experiments.RESULT]
  assert experiments.collect_results(tmp_path / "archive", rows) == {
      "done": dict(evaluation=dict(num_importance_samples=4), training=dict(epochs_run=3))}


def test_a_failing_row_is_reported_and_the_others_are_evaluated_once(monkeypatch, tmp_path):
  calls = []

  def tfggm(experiment, row, command, *arguments):
    if row.name == "diverges":
      raise subprocess.CalledProcessError(1, command)
    calls.append((row.name, command))
    if command == "evaluate":
      experiment.run_dir(row).path.mkdir(parents=True, exist_ok=True)
      experiment.run_dir(row).evaluation.write_text(json.dumps(dict(num_importance_samples=4)))

  monkeypatch.setattr(Experiment, "tfggm", tfggm)
  rows = [Row("diverges", ()), Row("fine", ())]
  experiment = Experiment(runs=tmp_path, epochs=1, num_samples=4)
  assert experiments.run_rows(experiment, rows, jobs=2) == ["diverges"]
  assert experiments.run_rows(experiment, rows, jobs=2) == ["diverges"]
  assert calls == [("fine", "train"), ("fine", "evaluate"), ("fine", "train")]
  assert not experiment.is_finished(rows[0]) and experiment.is_finished(rows[1])
  assert not dataclasses.replace(experiment, num_samples=8).is_evaluated(rows[1])


def test_table1_rows_keep_their_train_and_evaluate_commands(tmp_path):
  """A Table 1 run resumes only if every row's `tfggm train` command is unchanged."""
  table1 = _script("reproduce_table1")
  runs = tmp_path / "runs" / "table1"
  args = table1.build_parser().parse_args(["--runs", str(runs), "--jobs", "2", "--threads", "1"])
  experiment = experiments.experiment_from(args)
  for row in table1.ROWS:
    run_dir = str(runs / row.name)
    assert experiments.tfggm_command(*experiment.train_arguments(row)) == [
        sys.executable, "-m", "tfggm", "train", run_dir, "--posterior", row.name, "--steps-per-execution", "64",
        "--epochs", "500", "--seed", "0", "--progress", "line"]
    assert experiments.tfggm_command(*experiment.evaluate_arguments(row)) == [
        sys.executable, "-m", "tfggm", "evaluate", run_dir, "--num-samples", "5000"]
  assert [row.name for row in table1.ROWS] == ["diagonal", "chain", "extended_grid", "gershgorin_grid", "band4"]
  assert {row.baseline for row in table1.ROWS} == {None, "diagonal"}


def test_logitnormal_rows_cross_likelihoods_with_posteriors_against_the_diagonal_likelihood():
  logitnormal = _script("logitnormal_experiment")
  rows = {row.name: row for row in logitnormal.ROWS}
  assert len(rows) == 6
  for row in rows.values():
    assert row.train_args[4:] == ("--jit-compile", "--steps-per-execution", "64")
    flags = dict(zip(row.train_args[:4:2], row.train_args[1:4:2]))
    assert flags["--likelihood"].startswith("logit_normal_")
    if flags["--likelihood"] == "logit_normal_diagonal":
      assert row.baseline is None
    else:
      baseline = dict(zip(rows[row.baseline].train_args[:4:2], rows[row.baseline].train_args[1:4:2]))
      assert baseline == {"--likelihood": "logit_normal_diagonal", "--posterior": flags["--posterior"]}
  args = logitnormal.build_parser().parse_args([])
  assert (args.epochs, args.num_samples, args.runs.name) == (100, 1000, "logitnormal")


def test_logitnormal_table_reports_bits_per_dim_and_paired_differences():
  logitnormal = _script("logitnormal_experiment")
  base, grid = logitnormal.ROWS[0], logitnormal.ROWS[1]
  scale = 784 * np.log(2.0)

  def values(log_px):
    return dict(evaluation=dict(test_elbo=dict(mean=log_px - 10, stderr=2.0),
                                test_log_likelihood=dict(mean=log_px, stderr=2.0)),
                training=dict(median_epoch_seconds=12.5, epochs_run=3, best_epoch=2))

  results = {base.name: values(-scale), grid.name: values(-0.5 * scale)}
  results[grid.name][f"paired_vs_{base.name}"] = dict(log_likelihood=dict(mean=0.5 * scale, stderr=scale / 100))
  lines = logitnormal.table(results, num_samples=10).splitlines()
  assert len(lines) == 4
  assert lines[2].startswith("| diagonal | diagonal | ") and "| 9.0000 ± " in lines[2]  # -log2 p / D + 8
  assert lines[3].startswith("| grid | diagonal | 8.") and "| -0.5000 ± 0.0100 |" in lines[3]


def test_estimates_and_markdown_tables():
  assert experiments.estimate(dict(mean=-89.204, stderr=0.1234)) == "-89.20 ± 0.12"
  assert experiments.estimate(dict(mean=0.5, stderr=0.26), digits=1, signed=True) == "+0.5 ± 0.3"
  assert experiments.markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n| --- | --- |\n| 1 | 2 |"


@pytest.mark.parametrize("train_args, expected", [
    ("", ()),
    ("--max-examples 200 --hidden-units 8 8", ("--max-examples", "200", "--hidden-units", "8", "8")),
])
def test_extra_train_args_go_after_the_protocol(train_args, expected, tmp_path):
  parser = _script("logitnormal_experiment").build_parser()
  args = parser.parse_args(["--runs", str(tmp_path), "--train-args", train_args])
  experiment = experiments.experiment_from(args)
  arguments = experiment.train_arguments(Row("r", ("--posterior", "chain")))
  assert tuple(arguments[len(arguments) - len(expected):]) == expected
  assert arguments[:4] == ["train", str(tmp_path / "r"), "--posterior", "chain"]


def test_figures_draw_the_chosen_rows_from_their_tracked_posteriors(tmp_path):
  figures = _script("figures")
  rng = np.random.default_rng(0)
  for row, width in (("diagonal", 1), ("chain", 2), ("extended_grid", 4)):
    (tmp_path / row).mkdir()
    record = {str(epoch): dict(loc=rng.normal(size=16).tolist(), bands=rng.uniform(size=(width, 16)).tolist())
              for epoch in (2, 0, 1)}  # epochs out of order, as JSON keys may come
    (tmp_path / row / "tracked_posterior.json").write_text(json.dumps(record))
  epochs, means, diagonals = figures.load_tracked(tmp_path / "chain")
  record = json.loads((tmp_path / "chain" / "tracked_posterior.json").read_text())
  np.testing.assert_array_equal(epochs, [1, 2, 3])
  np.testing.assert_allclose(means[2], record["2"]["loc"])
  np.testing.assert_allclose(diagonals[0], record["0"]["bands"][0])
  out = tmp_path / "figures"
  subprocess.run([sys.executable, str(SCRIPTS / "figures.py"), "--runs", str(tmp_path), "--out", str(out),
                  "--rows", "diagonal", "chain"], check=True, capture_output=True)
  assert sorted(p.name for p in out.iterdir()) == ["figure4_cholesky_diagonal.png", "figure5_posterior_means.png"]
  only_diagonal = tmp_path / "only_diagonal"
  subprocess.run([sys.executable, str(SCRIPTS / "figures.py"), "--runs", str(tmp_path), "--out", str(only_diagonal),
                  "--rows", "diagonal"], check=True, capture_output=True)
  assert [p.name for p in only_diagonal.iterdir()] == ["figure5_posterior_means.png"]
  missing = subprocess.run([sys.executable, str(SCRIPTS / "figures.py"), "--runs", str(tmp_path / "none"),
                            "--out", str(out)],
                           capture_output=True, text=True)
  assert missing.returncode != 0 and "no tracked posteriors" in missing.stderr


@pytest.mark.parametrize("train_args", ["", "--max-examples 200"])
def test_main_writes_the_committed_tables_and_archive_unless_a_trial_adds_train_args(train_args, tmp_path):
  """Rows archived by hand stand for rows finished earlier: `--tables-only` builds the table from them."""
  rows = [Row("base", ()), Row("other", (), baseline="base")]
  committed = tmp_path / "results"
  _archive_row(committed / "tiny", "base", -90.0)
  args = _script("logitnormal_experiment").build_parser().parse_args(
      ["--runs", str(tmp_path / "runs"), "--tables-only", "--train-args", train_args])
  experiments.main(args, rows, lambda results, num_samples: _table(results), committed, "tiny")
  written = tmp_path / "runs" / "results" if train_args else committed
  assert list(json.loads((written / "tiny.json").read_text())["rows"]) == ([] if train_args else ["base"])
  expected_lines = [] if train_args else ["| base | -90.00 ± 1.00 | — |"]
  assert (written / "tiny.md").read_text().splitlines()[2:] == expected_lines
  assert (committed / "tiny.json").exists() != bool(train_args)


def test_main_archives_each_row_and_rewrites_the_tables_as_soon_as_it_is_evaluated(monkeypatch, tmp_path):
  """A machine lost while a later row trains keeps the rows finished before it (archive and tables)."""
  seen_when_training = {}
  committed = tmp_path / "results"

  def tfggm(experiment, row, command, *arguments):
    run_dir = experiment.run_dir(row).path
    if command == "train":
      seen_when_training[row.name] = sorted(p.name for p in (committed / "tiny").glob("*"))
      run_dir.mkdir(parents=True, exist_ok=True)
      (run_dir / "summary.json").write_text(json.dumps(dict(epochs_run=experiment.epochs)))
    elif command == "evaluate":
      np.savez(run_dir / experiments.PER_EXAMPLE, log_likelihood=np.zeros(3), elbo=np.zeros(3))
      evaluation = dict(num_importance_samples=experiment.num_samples,
                        test_log_likelihood=dict(mean=-90.0, stderr=1.0))
      (run_dir / "evaluation.json").write_text(json.dumps(evaluation))

  monkeypatch.setattr(Experiment, "tfggm", tfggm)
  exported = []
  rows = [Row("first", ()), Row("second", (), baseline="first")]
  parser = experiments.argument_parser("tiny", rows, runs=tmp_path / "runs", epochs=3, num_samples=4)
  experiments.main(parser.parse_args(["--jobs", "1"]), rows, lambda results, num_samples: _table(results),
                   committed, "tiny", after_training=lambda experiment: exported.append(
                       [row.name for row in rows if experiment.is_finished(row)]))
  assert seen_when_training == {"first": [], "second": ["first"]}
  assert exported == [["first"], ["first", "second"], ["first", "second"]]
  assert list(json.loads((committed / "tiny.json").read_text())["rows"]) == ["first", "second"]


def test_rows_archived_under_the_protocol_are_not_rerun_on_a_new_machine_unless_named(monkeypatch, tmp_path):
  """The run directories are gone (a new machine): the committed archive decides what is left, unless --rows."""
  started = []
  monkeypatch.setattr(experiments, "run_rows",
                      lambda experiment, rows, jobs, **_: started.extend(row.name for row in rows) or [])
  rows = [Row("done", ()), Row("other_k", (), baseline="done"), Row("fewer_epochs", (), baseline="done"),
          Row("new", (), baseline="done")]
  committed = tmp_path / "results"
  for name, (num_samples, epochs_run) in {"done": (4, 3), "other_k": (8, 3), "fewer_epochs": (4, 2)}.items():
    (committed / "tiny" / name).mkdir(parents=True)
    evaluation = dict(num_importance_samples=num_samples, test_log_likelihood=dict(mean=-90.0, stderr=1.0))
    result = dict(evaluation=evaluation, training=dict(epochs_run=epochs_run))
    (committed / "tiny" / name / experiments.RESULT).write_text(json.dumps(result))
  parser = experiments.argument_parser("tiny", rows, runs=tmp_path / "runs", epochs=3, num_samples=4)
  for flags, expected in [([], ["other_k", "fewer_epochs", "new"]), (["--rows", "new", "done"], ["done", "new"])]:
    started.clear()
    experiments.main(parser.parse_args(flags), rows, lambda results, num_samples: _table(results), committed, "tiny")
    assert started == expected  # named rows run archived or not, in the experiment's order


def test_hierarchical_rows_are_valid_configurations_with_the_iwae_protocol():
  from tfggm.mnist import cli
  hierarchical = _script("hierarchical_experiment")
  configs = {}
  for row in hierarchical.ROWS:
    args = cli.build_parser().parse_args(["train", "run", *row.train_args])
    configs[row.name] = cli._config_from(args)
  assert all(c.activation == "tanh" and c.batch_size == 20 and c.learning_rate_schedule == "iwae"
             and c.output_bias_from_data and c.zero_init_gaussians and c.warmup_epochs == 0
             for c in configs.values())
  assert [layer.latent_dim for layer in configs["h1-full"].stochastic_layers] == [50]
  assert configs["h1-full"].posterior == "full"
  two = configs["h2-band4-prior"].stochastic_layers
  assert [(layer.latent_dim, layer.hidden_units, layer.posterior, layer.prior) for layer in two] == [
      (100, (200, 200), "band4", "band4"), (50, (100, 100), "band4", "standard")]
  assert configs["h2-band4"].prior == "diagonal" and configs["h2-iwae5-band4"].num_samples == 5
  assert hierarchical.paper_value("h2-iwae5-band4") == -83.89 and hierarchical.paper_value("h1-band4") == -86.76
  assert "iwae5" not in " ".join(hierarchical.DEFAULT_ROWS)


def test_hierarchical_table_shows_the_paper_paired_z_scores_and_units_per_layer():
  hierarchical = _script("hierarchical_experiment")
  training = dict(epochs_run=300, best_epoch=290, median_epoch_seconds=24.0)
  evaluation = dict(test_log_likelihood=dict(mean=-86.0, stderr=0.3), test_elbo=dict(mean=-90.0, stderr=0.3),
                    active_units=30, latent_dim=100, active_units_per_layer=[30, 9], latent_dims=[100, 50])
  results = {"h2-diagonal": dict(evaluation=evaluation, training=training),
             "h2-band4": dict(evaluation=evaluation, training=training,
                              **{"paired_vs_h2-diagonal": dict(log_likelihood=dict(mean=0.6, stderr=0.1))})}
  table = hierarchical.table(results, 5000)
  assert "| h2-band4 |" in table and "+0.60 ± 0.10 (z = 6.0)" in table and "30 / 100 + 9 / 50" in table
  assert "-85.33" in table and "| 2.0 |" in table  # 24 s x 300 epochs = 2.0 hours
