"""Backfills survive faults of the stores they read and write (issue 15 §2), injected by a TCP
proxy the test controls (never by stopping the machine's shared services) or by killing the run:

- the lake on a local S3-compatible server (moto's), the proxy in front of it down for 30 s in the
  middle of a backfill (every open connection reset, new ones refused);
- ``kill -9`` of ``dagster asset materialize`` in the middle of a backfill, then the same command
  again;
- the source tables on PostgreSQL, the proxy in front of it down for 30 s mid-backfill.

The steps retry (``assets.common.io_retries``: 5, 10, 20 s) and the run succeeds; the lake ends
exactly as an undisturbed run leaves it: the same files with the same bytes (no row lost, none
duplicated, no stray file)."""

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


class Outage(threading.Thread):
    """Beside the run (which stays in the main thread, as every other test's): once ``ready()``
    says the run is mid-way, the proxy is cut for ``seconds``, then restored."""

    def __init__(self, proxy: Proxy, ready, seconds: float = 30.0):
        super().__init__(daemon=True)
        self.proxy, self.ready, self.seconds = proxy, ready, seconds
        self.cut_at = self.restored_at = None

    def run(self):
        deadline = time.monotonic() + 300
        while not self.ready():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        self.proxy.cut()
        self.cut_at = time.monotonic()
        time.sleep(self.seconds)
        self.proxy.restore()
        self.restored_at = time.monotonic()


def count(store: dict, bucket: str, prefix: str) -> int:
    r = store["client"].list_objects_v2(Bucket=bucket, Prefix=prefix)
    return r.get("KeyCount", 0)


@pytest.fixture(scope="module")
def undisturbed(landing, object_store, tmp_path_factory):
    bucket = object_store["bucket"]()
    t0 = time.monotonic()
    r = run_in_process(home_env(tmp_path_factory.mktemp("calm"), landing, bucket, object_store["endpoint"]))
    assert r.success
    print(f"undisturbed {DAYS}-day backfill, lake on moto: {time.monotonic() - t0:.1f} s")
    state = lake_state(object_store, bucket)
    assert sum(k.startswith("lake/validated_transactions/") for k in state) == DAYS
    assert sum(k.startswith("lake/features/customer/") for k in state) == DAYS
    return state


def test_object_store_down_for_30s_mid_backfill(landing, object_store, undisturbed, tmp_path):
    import dagster as dg

    bucket = object_store["bucket"]()
    proxy = Proxy("127.0.0.1", int(object_store["endpoint"].rsplit(":", 1)[1]))
    env = home_env(tmp_path, landing, bucket, f"http://127.0.0.1:{proxy.port}")
    outage = Outage(proxy, lambda: count(object_store, bucket, "lake/validated_transactions/") >= 3)  # mid-validation
    try:
        t0 = time.monotonic()
        outage.start()
        r = run_in_process(env, dg.DagsterInstance.ephemeral())
        outage.join(timeout=60)
        assert outage.cut_at is not None and outage.restored_at is not None, "the run ended before the fault"
        assert r.success
        retries = [e for e in r.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retries, "the outage did not reach the run"
        print(f"object store down 30 s from {outage.cut_at - t0:.1f} s into the run; the run took "
              f"{time.monotonic() - t0:.1f} s with {len(retries)} step retries: "
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
    t0 = time.monotonic()
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
    killed_s, partial = time.monotonic() - t0, count(object_store, bucket, "lake/validated_transactions/")
    assert 5 <= partial < DAYS and count(object_store, bucket, "lake/features/") == 0  # killed mid-way
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"killed after {killed_s:.1f} s with {partial} of {DAYS} days validated; the re-run took {time.monotonic() - t0:.1f} s")
    assert lake_state(object_store, bucket) == undisturbed


def local_lake_state(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "lake").rglob("*")) if p.is_file()}


def test_source_database_down_for_30s_mid_backfill(production_services, tmp_path):
    """The transactions and reports come from PostgreSQL tables (``VIGIL_SOURCE=postgres``) through
    the proxy; the undisturbed run goes through the same proxy (the source's address is recorded
    with each row), the disturbed one meets it down for 30 s."""
    import dagster as dg
    import psycopg

    from tests.conftest import PG_ADMIN_DSN
    from vigil.simulator import TX_COLUMNS, simulate

    sim = simulate(n_days=DAYS, n_customers=150, n_terminals=300, start_date=START, seed=5)
    schema = f"vigil_faults_{os.getpid()}_{int(time.time())}"
    admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    proxy = Proxy(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))
    try:
        admin.execute(f"CREATE TABLE {schema}.tx (transaction_id bigint, tx_datetime timestamptz, customer_id bigint, "
                      "terminal_id bigint, tx_amount numeric(12, 2))")
        admin.execute(f"CREATE TABLE {schema}.reports (transaction_id bigint, tx_fraud int, reported_at timestamptz)")
        with admin.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.tx VALUES (%s, %s, %s, %s, %s)",
                            [(int(a), b.tz_localize("UTC").to_pydatetime(), int(c), int(d), float(e))
                             for a, b, c, d, e in sim.transactions[TX_COLUMNS].itertuples(index=False)])
            cur.executemany(f"INSERT INTO {schema}.reports VALUES (%s, %s, %s)",
                            [(int(a), int(b), c.tz_localize("UTC").to_pydatetime())
                             for a, b, c in sim.labels[["transaction_id", "tx_fraud", "reported_at"]].itertuples(index=False)])
        dsn = psycopg.conninfo.make_conninfo(PG_ADMIN_DSN, host="127.0.0.1", port=proxy.port, connect_timeout=3)
        assets = ["raw_transactions", "label_feed", "validated_transactions", "validated_labels"]

        def run(home: Path):
            env = {"VIGIL_HOME": str(home), "VIGIL_START_DATE": START.isoformat(), "VIGIL_END_DATE": LAST.isoformat(),
                   "VIGIL_SOURCE": "postgres", "VIGIL_SOURCE_DSN": dsn, "VIGIL_SOURCE_TX_TABLE": f"{schema}.tx",
                   "VIGIL_SOURCE_LABELS_TABLE": f"{schema}.reports"}
            from pipelines.definitions import ALL_ASSETS
            from resources import resources_for_profile

            with env_set(env):
                resources = resources_for_profile("local")
                defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
                return dg.materialize([defs.get_assets_def(a) for a in assets], resources=resources, raise_on_error=False,
                                      instance=dg.DagsterInstance.ephemeral(),
                                      tags={"dagster/asset_partition_range_start": START.isoformat(),
                                            "dagster/asset_partition_range_end": LAST.isoformat()})

        calm, disturbed = tmp_path / "calm", tmp_path / "disturbed"
        t0 = time.monotonic()
        assert run(calm).success
        calm_s, t0 = time.monotonic() - t0, time.monotonic()
        # mid-way through the days
        outage = Outage(proxy, lambda: len(list((disturbed / "lake" / "raw_transactions").glob("*.parquet"))) >= 3)
        outage.start()
        r = run(disturbed)
        outage.join(timeout=60)
        assert outage.cut_at is not None and outage.restored_at is not None, "the run ended before the fault"
        assert r.success
        retries = [e for e in r.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retries, "the outage did not reach the run"
        print(f"source database down 30 s: the run took {time.monotonic() - t0:.1f} s (undisturbed {calm_s:.1f} s) "
              f"with {len(retries)} step retries: " + ", ".join(sorted({e.step_key for e in retries})))
        calm_state = local_lake_state(calm)
        assert sum(k.startswith("lake/validated_transactions/") for k in calm_state) == DAYS
        assert local_lake_state(disturbed) == calm_state
    finally:
        proxy.close()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
