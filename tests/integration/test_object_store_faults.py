"""Runs survive object-store faults (issue 15 §2). The lake is on a local S3-compatible server
(moto's); faults are injected by a TCP proxy the test controls, or by killing the run's process:

- the proxy down for 30 s in the middle of a backfill (every open connection reset, new ones
  refused): the steps retry (``assets.common.io_retries``) and the run succeeds;
- ``kill -9`` of ``dagster asset materialize`` in the middle of a backfill, then the same command
  again.

Either way the lake ends exactly as an undisturbed run leaves it: the same objects with the same
bytes (no row lost, none duplicated, no stray object)."""

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import START, env_set
from tests.proxy import Proxy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAYS = 12
LAST = START + timedelta(days=DAYS - 1)
ASSETS = ["raw_transactions", "label_feed", "validated_transactions", "validated_labels", "feature_snapshots"]


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    from vigil.simulator import simulate, write_landing

    folder = tmp_path_factory.mktemp("osfaults") / "landing"
    write_landing(simulate(n_days=DAYS, n_customers=150, n_terminals=300, start_date=START, seed=5), folder)
    return folder


def home_env(tmp: Path, landing: Path, bucket: str, endpoint: str) -> dict:
    home = tmp / bucket  # the landing folder is shared: the raw lake records each row's file
    return {"VIGIL_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "VIGIL_SOURCE_FOLDER": str(landing),
            "VIGIL_START_DATE": START.isoformat(),
            "VIGIL_END_DATE": LAST.isoformat(), "VIGIL_LAKE_URI": f"s3://{bucket}/lake", "VIGIL_S3_ENDPOINT_URL": endpoint}


def run_in_process(env: dict, instance=None):
    import dagster as dg

    from pipelines.definitions import ALL_ASSETS
    from resources import resources_for_profile

    with env_set(env):
        resources = resources_for_profile("local")
        defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
        return dg.materialize([defs.get_assets_def(a) for a in ASSETS], instance=instance or dg.DagsterInstance.ephemeral(),
                              resources=resources, raise_on_error=False,
                              tags={"dagster/asset_partition_range_start": START.isoformat(),
                                    "dagster/asset_partition_range_end": LAST.isoformat()})


def lake_state(store: dict, bucket: str) -> dict:
    """Every object of the lake and the SHA-256 of its bytes (Parquet written from equal frames by
    the same pyarrow is byte-identical)."""
    client, out = store["client"], {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = hashlib.sha256(client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()).hexdigest()
    return out


def count(store: dict, bucket: str, prefix: str) -> int:
    r = store["client"].list_objects_v2(Bucket=bucket, Prefix=prefix)
    return r.get("KeyCount", 0)


@pytest.fixture(scope="module")
def undisturbed(landing, object_store, tmp_path_factory):
    bucket = object_store["bucket"]()
    r = run_in_process(home_env(tmp_path_factory.mktemp("calm"), landing, bucket, object_store["endpoint"]))
    assert r.success
    state = lake_state(object_store, bucket)
    assert sum(k.startswith("lake/validated_transactions/") for k in state) == DAYS
    assert sum(k.startswith("lake/features/customer/") for k in state) == DAYS
    return state


def test_object_store_down_for_30s_mid_backfill(landing, object_store, undisturbed, tmp_path):
    import dagster as dg

    bucket = object_store["bucket"]()
    proxy = Proxy("127.0.0.1", int(object_store["endpoint"].rsplit(":", 1)[1]))
    env = home_env(tmp_path, landing, bucket, f"http://127.0.0.1:{proxy.port}")
    instance = dg.DagsterInstance.ephemeral()
    out = {}
    worker = threading.Thread(target=lambda: out.update(r=run_in_process(env, instance)))
    try:
        worker.start()
        deadline = time.monotonic() + 300
        while count(object_store, bucket, "lake/validated_transactions/") < 3:  # mid-way through validation
            assert worker.is_alive() and time.monotonic() < deadline, "the run ended before the fault"
            time.sleep(0.05)
        proxy.cut()
        cut_at = time.monotonic()
        time.sleep(30)
        proxy.restore()
        worker.join(timeout=600)
        r = out["r"]
        assert r.success
        retries = [e for e in r.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retries, "the outage did not reach the run"
        print(f"outage 30 s from {cut_at:.0f}; {len(retries)} step retries: "
              + ", ".join(sorted({e.step_key for e in retries})))
    finally:
        proxy.close()
    assert lake_state(object_store, bucket) == undisturbed


def test_run_killed_mid_backfill_and_run_again(landing, object_store, undisturbed, tmp_path):
    bucket = object_store["bucket"]()
    env = {**os.environ, **home_env(tmp_path, landing, bucket, object_store["endpoint"]),
           "DAGSTER_HOME": str(tmp_path / "dagster"), "PYTHONPATH": str(ROOT)}
    (tmp_path / "dagster").mkdir()
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
           "--select", ",".join(ASSETS), "--partition-range", f"{START}...{LAST}"]
    log = open(tmp_path / "killed.log", "w")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while count(object_store, bucket, "lake/validated_transactions/") < 5:  # some partitions written
            assert p.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
            time.sleep(0.05)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    log.close()
    partial = count(object_store, bucket, "lake/validated_transactions/")
    assert 5 <= partial < DAYS and count(object_store, bucket, "lake/features/") == 0  # killed mid-way
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert lake_state(object_store, bucket) == undisturbed
