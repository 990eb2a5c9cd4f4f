"""n = 200,000: sample, log_prob, variance and KL without anything dense (a dense Sigma is 160 GB)."""

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "scale.py"


@pytest.mark.slow
@pytest.mark.parametrize("stencil", ["chain", "band8"])
def test_two_hundred_thousand_dimensions_fit_in_well_under_a_gigabyte(stencil):
  result = subprocess.run([sys.executable, str(SCRIPT), "--n", "200000", "--stencil", stencil],
                          capture_output=True, text=True, timeout=600, check=True)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["n"] == 200000
  assert report["peak_bytes_above_baseline"] < 1e9, report
