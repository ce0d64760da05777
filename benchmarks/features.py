"""Feature-store benchmark, all measured in one run on one world (default scale: 5,000 customers,
10,000 terminals, ~9,800 transactions a day):

1. materialization of one day into the online store: SQLite (local) vs Redis (production);
2. online retrieval for one transaction (its customer and terminal rows), p50/p99: SQLite vs
   Redis, through Vigil's reader (what the endpoint uses) and through Feast's SDK;
3. request-time features: Vigil's shared numpy function vs a Feast on-demand feature view
   computing the same thing (the ODFV's UDF calls the same function);
4. point-in-time retrieval of N entity rows: Feast's file (dask) offline store vs DuckDB.

    .venv/bin/python benchmarks/features.py [--days 110] [--pit-rows 1000000]

The production part needs PostgreSQL and Redis (``VIGIL_TEST_PG_DSN``, ``VIGIL_TEST_REDIS_URL``);
it uses its own database and Feast project and removes them afterwards.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
START = date(2025, 4, 1)
PG = os.environ.get("VIGIL_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3")
REDIS = os.environ.get("VIGIL_TEST_REDIS_URL", "127.0.0.1:6379")


def pct(a):
    a = np.asarray(a) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3), "n": len(a)}


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def build_world(home: Path, days: int, customers: int):
    from vigil import config, ingestion
    from vigil.features import build_snapshots
    from vigil.simulator import simulate, write_landing

    paths = config.paths(home)
    sim = simulate(customers, customers * 2, days, START, 42)
    write_landing(sim, paths.landing)
    for i in range(days):
        d = START + timedelta(days=i)
        ingestion.land_transactions(paths, d)
        ingestion.land_labels(paths, d)
        ingestion.validate_transactions_day(paths, d, now=datetime(2030, 1, 1))
        ingestion.validate_labels_day(paths, d)
        build_snapshots(paths, d)
        if i % 20 == 0:
            say(f"  world: day {i + 1}/{days}")
    return paths, sim


def online_bench(store, paths, sim, last: date, n: int) -> dict:
    from vigil.feature_repo import CUSTOMER_VIEW, FEATURE_SERVICE, TERMINAL_VIEW, OnlineReader

    reader = OnlineReader(store)
    tx = sim.transactions.sample(n, random_state=1)
    mine, sdk = [], []
    service = store.get_feature_service(FEATURE_SERVICE)
    for c, t in zip(tx["customer_id"].tolist(), tx["terminal_id"].tolist()):
        s = time.perf_counter()
        reader.read(CUSTOMER_VIEW, [c])
        reader.read(TERMINAL_VIEW, [t])
        mine.append(time.perf_counter() - s)
    for c, t in zip(tx["customer_id"].tolist()[: n // 4], tx["terminal_id"].tolist()[: n // 4]):
        s = time.perf_counter()
        store.get_online_features(features=service, entity_rows=[{"customer_id": c, "terminal_id": t}])
        sdk.append(time.perf_counter() - s)
    return {"vigil_reader": pct(mine), "feast_sdk_get_online_features": pct(sdk)}


def materialize_bench(store, paths, days: list[date]) -> dict:
    """Feast's ``materialize`` of one day (the offline store scans the snapshot folder) against
    Vigil's ``write_online`` of the day's partition (what the ``online_features`` asset does);
    the second pass rewrites the same days, the re-run case."""
    from vigil.feature_repo import OnlineReader, materialize, write_online
    from vigil.features import snapshot_as_of

    mat, write = [], []
    for d in days:
        start = snapshot_as_of(d).to_pydatetime()
        s = time.perf_counter()
        materialize(store, start, start + timedelta(seconds=1))
        mat.append(time.perf_counter() - s)
    reader = OnlineReader(store)
    for d in days:
        s = time.perf_counter()
        write_online(store, paths, d, reader)
        write.append(time.perf_counter() - s)
    stat = lambda v: {"mean_s_per_day": round(float(np.mean(v)), 3), "max_s": round(float(np.max(v)), 3)}  # noqa: E731
    return {"days": len(days), "feast_materialize": stat(mat), "vigil_write_online_rerun": stat(write)}


def odfv_bench(store, paths, sim, n: int) -> dict:
    """The same request-time features as a Feast on-demand feature view, against the shared function."""
    from feast import Field, RequestSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64

    from vigil.feature_repo import CUSTOMER_VIEW, OnlineReader
    from vigil.features import REQUEST_FEATURES, request_features

    customer_view = store.get_feature_view(CUSTOMER_VIEW)
    request = RequestSource(name="transaction_request", schema=[Field(name="tx_amount", dtype=Float64),
                                                                 Field(name="tx_epoch", dtype=Int64)])

    @on_demand_feature_view(sources=[customer_view, request], mode="python",
                            schema=[Field(name=f"odfv_{f}", dtype=Float64) for f in REQUEST_FEATURES])
    def request_time(inputs: dict) -> dict:
        import numpy as np  # Feast rebuilds the UDF from its source: imports go inside

        from vigil.features import REQUEST_FEATURES, request_features

        out = request_features(np.asarray(inputs["tx_epoch"]), np.asarray(inputs["tx_amount"]),
                               np.asarray([np.nan if v is None else v for v in inputs["customer_avg_amount_30d"]]))
        return {f"odfv_{f}": out[:, i].tolist() for i, f in enumerate(REQUEST_FEATURES)}

    store.apply([request, request_time])
    tx = sim.transactions.sample(n, random_state=2)
    reader = OnlineReader(store)
    epoch = (tx["tx_datetime"].astype("int64") // 10**9).tolist()
    shared, odfv, view_only, checked = [], [], [], 0
    for c, amount, e in zip(tx["customer_id"].tolist(), tx["tx_amount"].tolist(), epoch):
        s = time.perf_counter()
        row = reader.read(CUSTOMER_VIEW, [c])[0] or {}
        mid = time.perf_counter()
        mine = request_features(np.array([e]), np.array([amount]), np.array([row.get("customer_avg_amount_30d", np.nan)]))
        shared.append(time.perf_counter() - mid)
        view_only.append(mid - s)
    refs = [f"request_time:odfv_{f}" for f in REQUEST_FEATURES]
    for c, amount, e in list(zip(tx["customer_id"].tolist(), tx["tx_amount"].tolist(), epoch))[: n // 4]:
        s = time.perf_counter()
        got = store.get_online_features(features=refs, entity_rows=[{"customer_id": c, "tx_amount": amount, "tx_epoch": e}]).to_dict()
        odfv.append(time.perf_counter() - s)
        if checked < 50:  # same values both ways
            row = reader.read(CUSTOMER_VIEW, [c])[0] or {}
            mine = request_features(np.array([e]), np.array([amount]), np.array([row.get("customer_avg_amount_30d", np.nan)]))[0]
            theirs = np.array([got[f"odfv_{f}"][0] if got[f"odfv_{f}"][0] is not None else np.nan for f in REQUEST_FEATURES], dtype=float)
            assert np.allclose(mine, theirs, equal_nan=True), (mine, theirs)
            checked += 1
    return {"shared_function_only": pct(shared), "online_read_customer_view": pct(view_only),
            "feast_odfv_get_online_features": pct(odfv), "values_checked_equal": checked}


PIT_SCRIPT = r"""
import json, sys, time
import pandas as pd
sys.path.insert(0, sys.argv[4])
from vigil import config
from vigil.feature_repo import FEATURE_SERVICE, open_store
paths = config.paths(sys.argv[1])
import os
os.environ["VIGIL_FEAST_CONFIG"] = sys.argv[2]
store = open_store(paths, "local")
ent = pd.read_parquet(sys.argv[3])
t0 = time.perf_counter()
got = store.get_historical_features(entity_df=ent, features=store.get_feature_service(FEATURE_SERVICE)).to_df()
print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), "rows_in": len(ent), "rows_out": len(got),
                  "rows_with_customer_features": int(got["customer_nb_tx_1d"].notna().sum())}))
"""


def pit_bench(paths, sim, rows: int, timeout: float) -> dict:
    """Both offline stores on the same entity frame, each in a fresh process (same registry file)."""
    from vigil.feature_repo import INFRA

    tx = sim.transactions
    tx = tx[tx["tx_datetime"] >= pd.Timestamp(START) + pd.Timedelta(days=37)]
    ent = tx.head(rows)[["customer_id", "terminal_id", "tx_datetime"]].copy()
    ent["event_timestamp"] = ent["tx_datetime"].dt.tz_localize("UTC")
    ent = ent.drop(columns="tx_datetime")
    out = {"entity_rows": len(ent)}
    folder = Path(tempfile.mkdtemp(prefix="vigil-pit-"))
    ent.to_parquet(folder / "entities.parquet", index=False)
    file_yaml = folder / "file_store.yaml"
    file_yaml.write_text((INFRA / "local" / "feature_store.yaml").read_text().replace("type: duckdb", "type: file"))
    for name, yaml in (("duckdb", INFRA / "local" / "feature_store.yaml"), ("file (dask)", file_yaml)):
        say(f"  point-in-time, {name}, {len(ent):,} rows")
        try:
            r = subprocess.run([sys.executable, "-c", PIT_SCRIPT, str(paths.root), str(yaml), str(folder / "entities.parquet"), str(ROOT)],
                               capture_output=True, text=True, timeout=timeout, env=dict(os.environ, VIGIL_HOME=str(paths.root)))
            out[name] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-500:]}
        except subprocess.TimeoutExpired:
            out[name] = {"error": f"not finished after {timeout:.0f} s"}
    return out


def production_store(paths):
    """A Feast store in the production profile on its own database and project, or None."""
    try:
        import psycopg
        import redis

        admin = psycopg.connect(PG, autocommit=True)
        host, port = REDIS.split(":")
        redis.Redis(host=host, port=int(port), socket_connect_timeout=3).ping()
    except Exception as exc:
        say(f"  production part skipped: {exc}")
        return None, None
    db, project = f"vigil_bench_{uuid.uuid4().hex[:8]}", f"vigil_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {db}")
    info = psycopg.conninfo.conninfo_to_dict(PG)
    os.environ.update(VIGIL_FEAST_REGISTRY=f"postgresql+psycopg://{info.get('user', 'postgres')}@{info.get('host')}:{info.get('port', 5432)}/{db}",
                      VIGIL_REDIS_URL=REDIS, VIGIL_FEAST_PROJECT=project)
    from vigil.feature_repo import apply, open_store

    store = open_store(paths, "production")
    apply(store, paths)

    def cleanup():
        try:
            store.teardown()
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            os.environ.pop("VIGIL_FEAST_PROJECT", None)

    return store, cleanup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=110)
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--pit-rows", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--pit-timeout", type=float, default=900)
    ap.add_argument("--only-pit", action="store_true", help="skip parts 1-3 (e.g. to reach 1 M rows with --days 145)")
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="vigil-bench-features-")) / "vigil"
    os.environ["VIGIL_HOME"] = str(home)
    t0 = time.perf_counter()
    paths, sim = build_world(home, a.days, a.customers)
    say(f"world ready in {time.perf_counter() - t0:.0f} s: {len(sim.transactions):,} transactions")
    from vigil.feature_repo import apply, open_store

    last = START + timedelta(days=a.days - 1)
    mat_days = [last - timedelta(days=i) for i in range(9, -1, -1)]
    result = {"machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
              "command": "python benchmarks/features.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "transactions": len(sim.transactions)}

    local = open_store(paths, "local")
    apply(local, paths)
    if not a.only_pit:
        online_parts(a, paths, sim, local, mat_days, last, result)
    result["point_in_time"] = pit_bench(paths, sim, a.pit_rows, a.pit_timeout)
    from _world import write_result

    write_result("features_pit" if a.only_pit else "features", result)


def online_parts(a, paths, sim, local, mat_days, last, result):
    say("materialize: SQLite")
    result["materialize_sqlite"] = materialize_bench(local, paths, mat_days)
    say("online reads: SQLite")
    result["online_sqlite"] = online_bench(local, paths, sim, last, a.lookups)
    prod, cleanup = production_store(paths)
    if prod is not None:
        try:
            say("materialize: Redis")
            result["materialize_redis"] = materialize_bench(prod, paths, mat_days)
            say("online reads: Redis")
            result["online_redis"] = online_bench(prod, paths, sim, last, a.lookups)
        finally:
            cleanup()
    say("request-time features: shared function vs ODFV")
    result["request_time_features"] = odfv_bench(local, paths, sim, a.lookups)


if __name__ == "__main__":
    main()
