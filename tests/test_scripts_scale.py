"""n = 200,000: sample, log_prob, variance and KL without anything dense (a dense Sigma is 160 GB)."""

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
SCRIPT = SCRIPTS / "scale.py"
sys.path.insert(0, str(SCRIPTS))  # the script imports its shared `measure` module

import scale  # noqa: E402


def test_a_small_scale_check_times_every_operation_and_measures_its_memory():
  report = scale.scale_check(1000, "band8", batch=2, repeats=1)
  assert set(report["seconds"]) == {"sample", "log_prob", "variance", "kl"}
  assert all(seconds > 0 for seconds in report["seconds"].values())
  assert report["sample_log_prob_kl_seconds"] == pytest.approx(
      sum(report["seconds"][name] for name in ("sample", "log_prob", "kl")))
  assert 0 <= report["peak_bytes_above_baseline"] <= report["peak_process_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("stencil", ["chain", "band8"])
def test_two_hundred_thousand_dimensions_fit_in_well_under_a_gigabyte(stencil):
  result = subprocess.run([sys.executable, str(SCRIPT), "--n", "200000", "--stencil", stencil],
                          capture_output=True, text=True, timeout=600, check=True)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["n"] == 200000
  assert report["peak_bytes_above_baseline"] < 1e9, report
