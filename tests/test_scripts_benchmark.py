"""scripts/benchmark.py: banded-matrices' layout, the agreement checks, resuming, the ratios and a quick run."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the scripts import their shared modules as `measure`, `benchmark_registry`, ...

import benchmark  # noqa: E402
import benchmark_registry as registry  # noqa: E402
import benchmark_report as report  # noqa: E402
import measure  # noqa: E402
from benchmark_registry import Disagreement, Implementation, Shape  # noqa: E402

PEER_REASON = "banded-matrices (the bench extra) pins numpy < 2: it is installed in a virtualenv of its own"


def _dense(bands: np.ndarray) -> np.ndarray:
  """L from our bands, by the definition L[..., i, i - k] = bands[..., k, i]."""
  *batch, rows, n = bands.shape
  matrix = np.zeros((*batch, n, n))
  for k in range(min(rows, n)):
    for i in range(k, n):
      matrix[..., i, i - k] = bands[..., k, i]
  return matrix


@pytest.mark.parametrize("n, b, batch_shape", [(7, 2, ()), (6, 0, (3,)), (5, 4, (2,)), (3, 5, ())])
def test_their_layout_stores_columns_and_the_two_conversions_invert_each_other(n, b, batch_shape):
  bands = registry.inside_matrix(np.random.default_rng(0).normal(size=(*batch_shape, b + 1, n)))
  theirs = registry.theirs_from_ours(bands)
  dense = _dense(bands)
  for k in range(b + 1):
    for j in range(n):
      expected = dense[..., j + k, j] if j + k < n else 0.0
      np.testing.assert_array_equal(theirs[..., k, j], expected)
  np.testing.assert_array_equal(registry.ours_from_theirs(theirs), bands)
  np.testing.assert_array_equal(registry.theirs_from_ours(registry.ours_from_theirs(theirs)), theirs)


def test_agreement_passes_the_same_math_and_fails_a_wrong_layout_or_value():
  shape = Shape(9, 2, 1, "float64")
  x = registry.make_inputs(shape)
  column_layout = Implementation({}, bands_to_ours=registry.ours_from_theirs)
  value, gradient = (t.numpy() for t in registry.implementations()["tfggm"].operations["solve_grad"](x))
  theirs = (value, registry.theirs_from_ours(gradient))
  registry.check_agreement("peer", "solve_grad", shape, column_layout, (value, gradient), theirs)
  with pytest.raises(Disagreement, match="solve_grad"):  # our layout where theirs is expected
    registry.check_agreement("peer", "solve_grad", shape, column_layout, (value, gradient), (value, gradient))
  with pytest.raises(Disagreement, match="relative tolerance 1e-10"):
    registry.check_agreement("peer", "solve_grad", shape, column_layout, (value, gradient),
                             (value * (1 + 1e-8), theirs[1]))
  registry.check_agreement("peer", "solve_grad", shape._replace(dtype="float32"), column_layout, (value, gradient),
                           (value * (1 + 1e-5), theirs[1]))


def test_an_implementation_that_overwrites_its_inputs_is_caught():
  x = registry.make_inputs(Shape(6, 1, 1, "float64"))
  before = registry.numpy_copy(x)
  registry.check_unchanged("peer", Shape(6, 1, 1, "float64"), before, x)
  changed = dict(before, band_cotangent=before["band_cotangent"] + 1)
  with pytest.raises(Disagreement, match="band_cotangent"):
    registry.check_unchanged("peer", Shape(6, 1, 1, "float64"), changed, x)


def test_the_layout_is_the_one_banded_matrices_packs():
  banded = pytest.importorskip("banded_matrices.banded", reason=PEER_REASON)
  bands = registry.make_inputs(Shape(8, 3, 1, "float64")).factor.numpy()
  packed = banded.pack_dense_matrix_to_banded(_dense(bands), 3, 0).numpy()
  np.testing.assert_array_equal(packed, registry.theirs_from_ours(bands))


@pytest.mark.parametrize("shape", [Shape(9, 2, 1, "float64"), Shape(8, 1, 3, "float32")])
def test_banded_matrices_agrees_with_ours_on_every_operation_and_keeps_its_inputs(shape):
  pytest.importorskip("banded_matrices.banded", reason=PEER_REASON)
  x = registry.make_inputs(shape)
  implementations = registry.implementations()
  peer = implementations["banded_matrices"]
  prepared = peer.prepare(x)
  before = registry.numpy_copy(prepared)
  for operation in registry.PEER_OPERATIONS:  # compiled: graph rewrites are where an input can be overwritten
    ours = benchmark.compiled(implementations["tfggm"].operations[operation], x)()
    registry.check_agreement("banded_matrices", operation, shape, peer, ours,
                             benchmark.compiled(peer.operations[operation], prepared)())
  registry.check_unchanged("banded_matrices", shape, before, prepared)


def test_median_seconds_makes_at_least_repeats_calls_and_more_until_min_seconds():
  calls = []
  call = lambda: calls.append(None) or tf.constant(0.0)
  measure.median_seconds(call, repeats=3, min_seconds=0.0)
  assert len(calls) == 3
  calls.clear()
  measure.median_seconds(call, repeats=1, min_seconds=0.05)
  assert len(calls) > 1


def test_a_rerun_measures_only_the_shapes_the_partial_file_lacks(monkeypatch, tmp_path):
  measured = []

  def fake_shape(shape, names, operations, args):
    measured.append(shape)
    return [dict(implementation="tfggm", operation="sample", **shape._asdict(), seconds=1.0, peak_bytes=0.0)]

  monkeypatch.setattr(benchmark, "measure_shape", fake_shape)
  first, second = Shape(16, 1, 1), Shape(16, 1, 128)
  partial = tmp_path / "out.kernels.partial.json"
  partial.write_text(json.dumps(dict(records=fake_shape(first, (), (), None), bandwidth=1e9)))
  measured.clear()
  section = benchmark.measure_section(partial, [first, second], ["tfggm"], ["sample"], None, dict(records=[]))
  assert measured == [second]
  assert [r["implementation"] for r in section["records"]] == ["tfggm", "tfggm", "memory_bound"]
  assert json.loads(partial.read_text()) == section


def _record(implementation, operation, n, b, batch, seconds, dtype="float32"):
  return dict(implementation=implementation, operation=operation, n=n, b=b, batch=batch, dtype=dtype,
              seconds=seconds, peak_bytes=0.0)


def test_the_summary_holds_the_ratios_of_the_issue_and_the_report_shows_them():
  peer = [_record("tfggm", "solve", 784, 4, 1, 1.0, "float64"), _record("banded_matrices", "solve", 784, 4, 1, 2.0,
                                                                        "float64"),
          _record("tfggm", "matvec", 784, 4, 1, 1.0, "float64"), _record("banded_matrices", "matvec", 784, 4, 1, 8.0,
                                                                         "float64")]
  kernels = [_record("tfggm", "sample_log_prob_grad", n, 28, 128, n / 784) for n in (784, 4096, 16384)]
  kernels.append(_record("tf_banded", "sample_log_prob_grad", 784, 28, 128, 7.5))
  rounds = {"diagonal": [0.010, 0.020, 0.010], "chain": [0.011, 0.024, 0.009]}  # paired: 1.1, 1.2, 0.9
  vae = [dict(group="posterior", posterior=posterior, likelihood="bernoulli", jit=False, batch=32, steps=100,
              seconds=float(np.median(times)), fastest_seconds=min(times), epoch_seconds=times)
         for posterior, times in rounds.items()]
  data = dict(peer=dict(records=peer), kernels=dict(records=kernels), vae_steps=dict(records=vae))
  data["summary"] = report.summary(data)

  assert data["summary"]["peer_geometric_mean"] == pytest.approx(dict(all=4.0, solve=2.0, matvec=8.0))
  assert data["summary"]["sample_log_prob_grad_784_28_128"] == pytest.approx(dict(tf_banded=7.5))
  [fit] = data["summary"]["slopes"]
  assert fit["slope"] == pytest.approx(1.0) and fit["n_range"] == [784, 16384]
  [vae_ratio] = data["summary"]["vae_ratios"]
  assert vae_ratio["posterior"] == "chain" and vae_ratio["paired_ratio"] == pytest.approx(1.1)
  assert vae_ratio["fastest_ratio"] == pytest.approx(0.9) and vae_ratio["median_ratio"] == pytest.approx(1.1)
  text = report.report(data)
  assert "| banded-matrices / ours, geometric mean of 2 rows | 4.00×" in text
  assert "| solve | float64 | 784 | 4 | 1 | 2e+03 ms | 1e+03 ms | 2.00× |" in text
  assert "tf_banded / ours | 7.50× |" in text
  assert "| VAE step, chain posterior, bernoulli / the group's diagonal row, XLA no | 1.10× paired median" in text
  assert "batch 32, `model.fit`, 3 rounds of one 100-step epoch per row" in text


def test_peer_without_banded_matrices_is_skipped_with_a_note(tmp_path, capsys):
  if registry.implementations().get("banded_matrices"):
    pytest.skip("banded-matrices is installed here")
  benchmark.main(["peer", "--out", str(tmp_path / "benchmark")])
  assert "banded-matrices is not installed" in capsys.readouterr().out
  assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_quick_kernel_run_writes_the_json_the_tables_and_the_plot(tmp_path):
  out = tmp_path / "benchmark"
  command = [sys.executable, str(SCRIPTS / "benchmark.py"), "kernels", "--quick", "--sizes", "16", "--implementations",
             "tfggm", "diagonal", "--operations", "sample", "sample_log_prob_grad", "--repeats", "1",
             "--min-seconds", "0", "--out", str(out)]
  subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
  data = json.loads(out.with_suffix(".json").read_text())
  assert {(r["implementation"], r["operation"], r["batch"]) for r in data["kernels"]["records"]} == {
      (name, operation, batch) for name in ("tfggm", "diagonal", "memory_bound")
      for operation in ("sample", "sample_log_prob_grad") for batch in (1, 128)}
  assert not out.with_suffix(".kernels.partial.json").exists() and out.with_suffix(".png").stat().st_size > 0
  out.with_suffix(".md").unlink()
  subprocess.run([sys.executable, str(SCRIPTS / "benchmark.py"), "tables", "--out", str(out)], check=True,
                 capture_output=True, timeout=600)
  assert "### sample_log_prob_grad" in out.with_suffix(".md").read_text()
