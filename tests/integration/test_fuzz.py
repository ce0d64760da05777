"""Schemathesis against the OpenAPI document as the real server serves it, unpatched: bounded for
CI (the benchmark-sized run is ``benchmarks/fuzz.sh``)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY

pytestmark = pytest.mark.integration

# Not checked: "schema-valid request rejected" (positive_data_acceptance). tx_datetime must lie
# between VIGIL_SERVING_OLDEST and now + VIGIL_SERVING_MAX_FUTURE_SECONDS; OpenAPI 3.0 cannot
# state a bound relative to now on a string, so generated dates after now are refused by design.
EXCLUDED = "positive_data_acceptance"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    st = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run([str(st), "run", f"{server}/docs.json", "-H", f"Authorization: Bearer {TEST_KEY}",
                          "--max-examples", "140", "--seed", "7", "--exclude-checks", EXCLUDED,
                          "--phases", "coverage,fuzzing,stateful", "--no-color"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    tail = out.stdout[-4000:]
    assert out.returncode == 0, tail
    generated = int(re.search(r"(\d+) generated", out.stdout).group(1))
    assert generated >= 2000, tail
    assert re.search(r"Tested: ([0-9]+)", out.stdout).group(1) == re.search(r"Selected: ([0-9]+)/", out.stdout).group(1), tail
