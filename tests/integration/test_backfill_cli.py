"""The README's backfill command, run exactly as a user types it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vigil import lake
from vigil.simulator import simulate, write_landing

ROOT = Path(__file__).resolve().parents[2]
DAILY = ("raw_transactions,label_feed,validated_transactions,validated_labels,feature_snapshots,"
         "online_features,prediction_log_daily,drift_report,live_performance_daily")

pytestmark = pytest.mark.integration


def test_dagster_cli_backfills_a_date_range_as_one_run(tmp_path):
    home = tmp_path / "vigil"
    sim = simulate(n_customers=150, n_terminals=300, n_days=4, start_date="2025-04-01", seed=3)
    write_landing(sim, home / "landing")
    env = dict(os.environ, VIGIL_HOME=str(home), DAGSTER_HOME=str(tmp_path / "dagster"), PYTHONPATH=str(ROOT))
    (tmp_path / "dagster").mkdir()
    dagster = [sys.executable, "-m", "dagster"]
    # README, "Backfill a date range":
    subprocess.run([*dagster, "asset", "materialize", "-m", "pipelines.definitions", "--select", "feast_registry"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    r = subprocess.run([*dagster, "asset", "materialize", "-m", "pipelines.definitions", "--select", DAILY,
                        "--partition-range", "2025-04-01...2025-04-04"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("RUN_SUCCESS") + r.stderr.count("RUN_SUCCESS") == 1  # one run for the whole range
    days = lake.available_days(home / "lake" / "validated_transactions")
    assert [d.isoformat() for d in days] == ["2025-04-01", "2025-04-02", "2025-04-03", "2025-04-04"]
    assert len(lake.read_days(home / "lake" / "validated_transactions", days)) == len(sim.transactions)
    assert (home / "feast" / "online_store.db").exists()
