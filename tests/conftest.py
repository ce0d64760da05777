"""Shared fixtures: tiny simulated worlds, built with the simulator (no downloads)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START = date(2025, 4, 1)
HISTORY = 80  # days: 37 warm-up + 2 weeks train + gap + test + maturity
SMALL = dict(n_customers=400, n_terminals=800, start_date=START, seed=7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """An empty VIGIL_HOME for one test."""
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "vigil"))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "vigil" / "bentoml"))
    from vigil import config

    return config.paths(tmp_path / "vigil")


@pytest.fixture(scope="session")
def pipeline_home(tmp_path_factory):
    """A VIGIL_HOME where the daily pipeline ran over 40 days and a model was trained and promoted,
    all through real Dagster runs (in process) against real Feast, LightGBM and BentoML's store."""
    import dagster as dg

    from vigil import config
    from vigil.simulator import simulate, write_landing

    root = tmp_path_factory.mktemp("pipeline") / "vigil"
    env = {"VIGIL_HOME": str(root), "BENTOML_HOME": str(root / "bentoml"), "VIGIL_START_DATE": START.isoformat()}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    paths = config.paths(root)
    sim = simulate(n_days=HISTORY + 1, **SMALL)
    write_landing(sim, paths.landing)

    from pipelines.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=defs.resources)
    last = START + timedelta(days=HISTORY - 1)
    result = defs.resolve_job_def("daily_pipeline").execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": START.isoformat(), "dagster/asset_partition_range_end": last.isoformat()},
    )
    assert result.success
    retrain = defs.resolve_job_def("retraining").execute_in_process(instance=instance)
    assert retrain.success
    yield {"paths": paths, "sim": sim, "instance": instance, "defs": defs, "last_day": last, "replay_day": START + timedelta(days=HISTORY)}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


TEST_KEY = "vgl_tests-only-this-key-is-public-in-the-repository"
AUTH = {"authorization": f"Bearer {TEST_KEY}"}


def allow_test_key(root: Path) -> None:
    """The endpoint of the home ``root`` accepts ``TEST_KEY`` (its hash in the home's key file)."""
    from vigil import api_keys

    path = Path(root) / "serving" / "api_keys.json"
    keys = [k for k in api_keys.read(path) if k["name"] != "tests"]
    api_keys._write(path, keys + [{"name": "tests", "sha256": api_keys.digest(TEST_KEY)}])


@contextlib.contextmanager
def serve(root: Path, extra_env: dict | None = None):
    """The real BentoML server (``bentoml serve``) over loopback, on the home ``root``; send
    ``headers=AUTH``."""
    from vigil.processes import endpoint_env, serve_endpoint

    allow_test_key(root)
    with serve_endpoint(root, root / "serving-test.log", env=endpoint_env(root, extra=extra_env)) as (url, _):
        yield url


@pytest.fixture(scope="session")
def server(pipeline_home):
    # one worker: tests read per-process counters from /model_info (pid, abandoned); no rate limit in
    # reach: the rollout test's four closed-loop threads crossed the default 2,000/s on a fast machine
    # (429s); the limit has its own test (test_serving.py)
    with serve(pipeline_home["paths"].root, {"VIGIL_SERVING_WORKERS": "1", "VIGIL_SERVING_RATE_LIMIT": "1000000"}) as url:
        yield url


def replay_bodies(home: dict, n: int | None = None) -> list[dict]:
    """Request bodies for the replayed day of a pipeline home (its landing file, as read)."""
    from vigil.replay import to_requests
    from vigil.sources import FileSource

    frame = FileSource(home["paths"].landing / "transactions").read(home["replay_day"])
    return to_requests(frame.head(n) if n else frame)


def copy_home(src: Path, dst: Path) -> Path:
    """A private copy of a trained home (lake, snapshots, models) without Feast's or Dagster's state,
    for tests that change data or apply Feast elsewhere."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("dagster", "feast", "predictions", "monitoring", "*.log"))
    return dst


PG_ADMIN_DSN = os.environ.get("VIGIL_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3")
REDIS_URL = os.environ.get("VIGIL_TEST_REDIS_URL", "127.0.0.1:6379")


@pytest.fixture(scope="session")
def production_services():
    """A fresh PostgreSQL database for this run's Feast registry and the Redis server, or a skip
    (a failure when ``VIGIL_REQUIRE_PRODUCTION_TESTS`` is set, as in CI)."""
    import psycopg
    import redis

    host, port = REDIS_URL.split(":")
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
        redis.Redis(host=host, port=int(port), socket_connect_timeout=3).ping()
    except Exception as exc:
        if os.environ.get("VIGIL_REQUIRE_PRODUCTION_TESTS"):
            raise
        pytest.skip(f"production profile needs PostgreSQL ({PG_ADMIN_DSN}) and Redis ({REDIS_URL}): {exc}")
    db = f"vigil_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {db}")
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    registry = f"postgresql+psycopg://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{db}"
    try:
        yield {"registry": registry, "redis": REDIS_URL, "db": db}
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


@contextlib.contextmanager
def env_set(env: dict):
    """``env`` in ``os.environ`` for the block only (Feast reads its YAML's variables from there)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def profile_env(profile: str, services: dict | None, root: Path) -> dict:
    """Environment for one profile on ``root``. Production gets its own Feast project: its own
    Redis keys and registry rows, so runs never see each other's data."""
    env = {"VIGIL_HOME": str(root), "BENTOML_HOME": str(root / "bentoml"), "VIGIL_PROFILE": profile}
    if profile == "production":
        env.update(VIGIL_FEAST_REGISTRY=services["registry"], VIGIL_REDIS_URL=services["redis"],
                   VIGIL_FEAST_PROJECT=f"vigil_{uuid.uuid4().hex[:10]}")
    return env


def drop_redis_project(services: dict, project: str) -> int:
    import redis

    host, port = services["redis"].split(":")
    r = redis.Redis(host=host, port=int(port))
    keys = list(r.scan_iter(match=f"*{project}*".encode(), count=10_000))
    for i in range(0, len(keys), 5000):
        r.delete(*keys[i:i + 5000])
    return len(keys)


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "vigil-test", "AWS_SECRET_ACCESS_KEY": "vigil-test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def object_store():
    """A local S3-compatible server (moto's server mode, from PyPI) on loopback, for this session;
    each test takes its own bucket from ``bucket()``. Its credentials are moto's dummies, set in
    ``os.environ`` for the session (botocore reads them from there, as it would on a real host)."""
    import subprocess
    import sys
    import time

    import boto3

    moto = Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        if os.environ.get("VIGIL_REQUIRE_PRODUCTION_TESTS"):
            raise RuntimeError(f"moto_server is not installed ({moto}): run `make .venv/.synced`")
        pytest.skip("moto_server (the dev dependency moto[server]) is not installed")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    old = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    client = boto3.client("s3", endpoint_url=endpoint)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}")
            time.sleep(0.2)

    def bucket() -> str:
        name = f"vigil-test-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=name)
        return name

    try:
        yield {"endpoint": endpoint, "bucket": bucket, "client": client, "env": dict(S3_CREDENTIALS)}
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def dagster_pg(production_services, tmp_path):
    """DAGSTER_HOME with the production instance config, on a fresh database."""
    import psycopg

    db = f"vigil_dagster_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    admin.execute(f"CREATE DATABASE {db}")
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(Path(__file__).resolve().parents[1] / "infra" / "dagster" / "dagster.yaml", home / "dagster.yaml")
    env = {"VIGIL_PG_HOST": str(info.get("host", "127.0.0.1")), "VIGIL_PG_PORT": str(info.get("port", 5432)),
           "VIGIL_PG_DB": db, "VIGIL_PG_USER": str(info.get("user", "postgres")),
           "VIGIL_PG_PASSWORD": str(info.get("password", "")), "DAGSTER_HOME": str(home)}
    try:
        yield {"home": home, "env": env, "dsn": psycopg.conninfo.make_conninfo(PG_ADMIN_DSN, dbname=db)}
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="session")
def production_home(pipeline_home, production_services, tmp_path_factory):
    """The trained pipeline home copied into the production profile: Feast applied to the SQL
    registry on PostgreSQL and the last days materialized into Redis, by the Dagster assets."""
    import dagster as dg

    from resources import resources_for_profile
    from vigil import config

    root = copy_home(pipeline_home["paths"].root, tmp_path_factory.mktemp("production") / "vigil")
    env = profile_env("production", production_services, root)
    with env_set(env):
        defs = pipeline_home["defs"]
        resources = resources_for_profile("production")
        instance = dg.DagsterInstance.ephemeral()
        assert dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=resources).success
        last = pipeline_home["last_day"]
        for day in (last - timedelta(days=1), last):
            assert dg.materialize([defs.get_assets_def("online_features")], partition_key=day.isoformat(),
                                  instance=instance, resources=resources).success
    try:
        yield {**pipeline_home, "paths": config.paths(root), "env": env}
    finally:
        drop_redis_project(production_services, env["VIGIL_FEAST_PROJECT"])


@pytest.fixture(scope="session")
def production_server(production_home):
    with serve(production_home["paths"].root, production_home["env"]) as url:
        yield url
