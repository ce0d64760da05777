"""The main job in the production profile (``VIGIL_PROFILE=production vigil demo --once --json``):
Dagster's runs, events and sensor ticks in PostgreSQL (``infra/dagster/dagster.yaml``), Feast's
registry in PostgreSQL and its online store in Redis, the lake on an S3-compatible object store
(moto's server), each in this run's own database, key prefix and bucket. The real daemon's landing sensor launches the replayed day's run against that storage.

It is the suite's test of Dagster's own storage on PostgreSQL (a materialization, sensor ticks, jobs),
with ``infra/dagster/dagster.yaml`` as shipped: without its ``scheme: postgresql+psycopg2`` the
first event fails (psycopg 3 and dagster-postgres' ``NOTIFY run_events, $1``: a SyntaxError)."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import drop_redis_project

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_main_job_in_the_production_profile(tmp_path, production_services, dagster_pg, object_store):
    import psycopg
    import redis

    home = tmp_path / "vigil"
    project = f"vigil_{uuid.uuid4().hex[:10]}"
    bucket = object_store["bucket"]()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # the demo keeps its instance under its home
    env.update({k: v for k, v in dagster_pg["env"].items() if k != "DAGSTER_HOME"})
    env.update(PYTHONPATH=str(ROOT), VIGIL_PROFILE="production", VIGIL_FEAST_PROJECT=project,
               VIGIL_FEAST_REGISTRY=production_services["registry"], VIGIL_REDIS_URL=production_services["redis"],
               VIGIL_LAKE_URI=f"s3://{bucket}/lake", VIGIL_MODEL_STORE_URI=f"s3://{bucket}/models",
               VIGIL_S3_ENDPOINT_URL=object_store["endpoint"], **object_store["env"])
    cmd = [sys.executable, "-m", "vigil.cli", "demo", "--once", "--json", "--days", "66", "--customers", "300",
           "--terminals", "600", "--seed", "11", "--home", str(home), "--dagster-port", "0", "--serving-port", "0",
           "--wait-retrain", "0"]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env)
        assert r.returncode == 0, r.stderr[-4000:]
        summary = json.loads(r.stdout)
        assert summary["served_requests"] > 100 and summary["failed_requests"] == 0
        # nothing fell back to the embedded SQLite storage, nor to a local lake
        assert not list((home / "dagster").rglob("*.db")), list((home / "dagster").rglob("*.db"))
        assert not (home / "lake").exists()
        keys = [o["Key"] for page in object_store["client"].get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])]
        tables = {k.split("/")[1] for k in keys}
        assert {"raw_transactions", "validated_transactions", "labels", "features", "predictions"} <= tables, tables
        # the registered versions (manifest last) and the pointer the endpoint followed are shared
        pointer = json.loads(object_store["client"].get_object(Bucket=bucket, Key="models/production.json")["Body"].read())
        assert f"models/{pointer['tag'].replace(':', '/')}/SHA256SUMS" in keys
        assert pointer["tag"] in (summary["model_version"], (summary.get("retraining") or {}).get("model_version"))
        # the 66 days of the backfill, then the replayed day the landing sensor ran
        assert sum(k.startswith("lake/validated_transactions/") and k.endswith(".parquet") for k in keys) == 67
        with psycopg.connect(dagster_pg["dsn"]) as conn:
            runs = conn.execute("SELECT pipeline_name, status FROM runs").fetchall()
            # the backfill, the retraining and the sensor's run succeeded (a run the daemon dequeues
            # while the demo stops it fails with SIGTERM: not asserted)
            assert {"daily_pipeline", "retraining"} <= {name for name, status in runs if status == "SUCCESS"}, runs
            landing = conn.execute("SELECT count(*) FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                                   "WHERE t.key = 'vigil/trigger' AND t.value = 'landing' AND r.status = 'SUCCESS'").fetchone()[0]
            assert landing == 1  # launched by the daemon's landing sensor for the replayed day
            ticks = dict(conn.execute("SELECT selector_id IS NOT NULL, count(*) FROM job_ticks GROUP BY 1").fetchall())
            assert sum(ticks.values()) > 0  # the daemon's sensor ticks are in PostgreSQL too
        host, port = production_services["redis"].split(":")
        assert next(redis.Redis(host=host, port=int(port)).scan_iter(match=f"*{project}*".encode(), count=10_000), None)
    finally:
        drop_redis_project(production_services, project)
