"""Training/serving parity and no leakage, in both profiles.

- local: SQLite online store, file registry (the session's trained pipeline home);
- production: Redis online store and Feast's SQL registry on PostgreSQL (a copy of that home, its
  own database and Feast project, i.e. its own Redis keys), applied and materialized by the
  Dagster assets, served by a real ``bentoml serve`` started with ``VIGIL_PROFILE=production``.
"""

from datetime import timedelta

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import AUTH, copy_home, env_set, profile_env, replay_bodies
from vigil import config, lake, prediction_log
from vigil.features import CUSTOMER_FEATURES, MODEL_FEATURES, TERMINAL_FEATURES, build_snapshots

pytestmark = pytest.mark.integration


def test_production_profile_parity_through_the_real_endpoint(production_server, production_home):
    """Features logged by the production endpoint (Redis) = Feast point-in-time retrieval of the
    training path (SQL registry on PostgreSQL) for the same transactions, to float tolerance."""
    from vigil.feature_repo import open_store
    from vigil.training import model_features

    home = production_home
    bodies = replay_bodies(home, 200)
    with httpx.Client(base_url=production_server, headers=AUTH) as c:
        for b in bodies:
            r = c.post("/score", json=b)
            assert r.status_code == 200, r.text
    logged = prediction_log.read_day(home["paths"].predictions, home["replay_day"])
    logged = logged.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
    ent = pd.DataFrame(bodies)
    ent["tx_datetime"] = pd.to_datetime(ent["tx_datetime"])
    with env_set(home["env"]):
        store = open_store(home["paths"], "production")
        assert store.config.online_store.type == "redis" and store.config.registry.registry_type == "sql"
        offline = model_features(store, ent).set_index("transaction_id")
    served = logged.loc[offline.index, MODEL_FEATURES].astype(float)
    trained = offline[MODEL_FEATURES].astype(float)
    assert trained[CUSTOMER_FEATURES].notna().all(axis=1).mean() > 0.9
    assert (trained["customer_nb_tx_today"] > 0).sum() >= 3  # the intraday lists are compared, not only zeros
    pd.testing.assert_frame_equal(served.isna(), trained.isna())
    np.testing.assert_allclose(served.fillna(0).to_numpy(), trained.fillna(0).to_numpy(), rtol=1e-9, atol=1e-9)


@pytest.fixture(params=["local", "production"])
def profile_copy(request, pipeline_home, tmp_path):
    """A private copy of the trained home with Feast applied in ``profile`` (the test may change
    its data)."""
    from vigil.feature_repo import apply, open_store

    services = request.getfixturevalue("production_services") if request.param == "production" else None
    root = copy_home(pipeline_home["paths"].root, tmp_path / "vigil")
    env = profile_env(request.param, services, root)
    with env_set(env):
        paths = config.paths(root)
        store = open_store(paths, request.param)
        apply(store, paths)
        yield {"paths": paths, "store": store, "profile": request.param, "sim": pipeline_home["sim"],
               "last_day": pipeline_home["last_day"]}


def test_changing_data_after_a_cutoff_changes_no_training_feature_before_it(profile_copy):
    """Amounts after the cut-off ×3 and fraud reports made after it for earlier transactions:
    the training features of transactions before the cut-off, through Feast, do not move."""
    from vigil.training import model_features

    paths, store = profile_copy["paths"], profile_copy["store"]
    cut = profile_copy["last_day"] - timedelta(days=20)
    before_days = [cut - timedelta(days=i) for i in range(10, 0, -1)]
    after_days = [cut + timedelta(days=i) for i in range(0, 12)]
    sample = lake.read_days(paths.validated, before_days).sample(2000, random_state=0)
    later = lake.read_days(paths.validated, after_days[3:]).sample(2000, random_state=0)
    base, base_later = model_features(store, sample), model_features(store, later)

    cut_ts = pd.Timestamp(cut)
    for d in after_days:
        v = lake.read_day(paths.validated, d)
        lake.write_day(paths.validated, d, v.assign(tx_amount=v["tx_amount"] * 3))
        reports = pd.DataFrame({"transaction_id": sample["transaction_id"].to_numpy()[:300], "tx_fraud": 1,
                                "reported_at": cut_ts + pd.Timedelta(hours=1) + pd.Timedelta(days=(d - cut).days)})
        labels = lake.read_day(paths.labels, d)
        lake.write_day(paths.labels, d, pd.concat([labels, reports.astype(labels.dtypes.to_dict())], ignore_index=True))
    for d in after_days:
        build_snapshots(paths, d)

    again, again_later = model_features(store, sample), model_features(store, later)
    cols = MODEL_FEATURES
    pd.testing.assert_frame_equal(base[cols], again[cols])
    # the perturbation is real: features after the cut-off did change
    assert not np.allclose(base_later[CUSTOMER_FEATURES].fillna(0), again_later[CUSTOMER_FEATURES].fillna(0))
    assert not np.allclose(base_later[TERMINAL_FEATURES].fillna(0), again_later[TERMINAL_FEATURES].fillna(0))


def test_labels_not_reported_at_training_time_never_reach_the_training_set(profile_copy):
    from vigil.training import build_dataset

    paths, store, sim = profile_copy["paths"], profile_copy["store"], profile_copy["sim"]
    days = [pd.Timestamp("2025-05-20").date() + timedelta(days=i) for i in range(7)]
    as_of = pd.Timestamp("2025-05-29")
    frame, _ = build_dataset(store, paths, days, as_of)
    reports = sim.labels.set_index("transaction_id")["reported_at"]
    positives = frame.loc[frame["label"] == 1, "transaction_id"]
    assert len(positives) and (reports.loc[positives] < as_of).all()
    truth = sim.transactions.set_index("transaction_id")["tx_fraud"]
    in_days = sim.transactions["tx_datetime"].dt.date.isin(days)
    late = [t for t in sim.transactions.loc[in_days, "transaction_id"] if truth[t] == 1 and reports[t] >= as_of]
    assert late and not frame.loc[frame["transaction_id"].isin(late), "label"].any()
    # and the terminal risk features only count reports made before each snapshot: none after as_of
    assert frame["terminal_risk_30d"].notna().mean() > 0.9


def test_online_store_rerun_rules(profile_copy, pipeline_home):
    """Through the ``online_features`` asset, in each profile: per entity the newest snapshot wins
    (re-running an older day does not regress the online store) and re-running a day replaces it
    (Redis by itself would ignore a write with the same timestamp)."""
    import dagster as dg

    from resources import resources_for_profile
    from vigil.feature_repo import CUSTOMER_VIEW, OnlineReader

    paths, store = profile_copy["paths"], profile_copy["store"]
    last = profile_copy["last_day"]
    asset = pipeline_home["defs"].get_assets_def("online_features")
    resources = resources_for_profile(profile_copy["profile"])

    def run(day):
        res = dg.materialize([asset], partition_key=day.isoformat(), resources=resources)
        assert res.success
        return {k: v.value for k, v in res.asset_materializations_for_node("online_features")[0].metadata.items()}

    def online(ids):
        rows = OnlineReader(store).read(CUSTOMER_VIEW, ids)
        return pd.DataFrame([{"customer_id": i, **(r or {})} for i, r in zip(ids, rows)]).set_index("customer_id")

    snap = lake.read_day(paths.features / "customer", last).set_index("customer_id")
    ids = snap.index[:300].tolist()
    run(last - timedelta(days=1))
    run(last)
    assert (online(ids)["customer_avg_amount_30d"] == snap.loc[ids, "customer_avg_amount_30d"]).all()
    # the scorer's bulk read: the same values in both stores, repeated and unknown ids included,
    # on the one-request path (few values) and the batch path (bulk decode)
    names = ("customer_avg_amount_30d", "customer_nb_tx_7d", "customer_as_of")
    for asked in (ids[:2] + [ids[0], 10**15], ids + ids[:50] + [10**15]):
        got = OnlineReader(store).read_matrix(CUSTOMER_VIEW, asked, names)
        known = [i for i in asked if i != 10**15]
        np.testing.assert_array_equal(got[:-1, :2], snap.loc[known, list(names[:2])].to_numpy())
        assert np.isnan(got[-1]).all() and (got[:-1, 2] > 1e9).all()

    meta = run(last - timedelta(days=1))  # an older day re-run: skipped where a newer snapshot is online
    assert meta["skipped_older"] > 0 and meta["online_store"] == ("redis" if profile_copy["profile"] == "production" else "sqlite")
    assert (online(ids)["customer_avg_amount_30d"] == snap.loc[ids, "customer_avg_amount_30d"]).all()

    v = lake.read_day(paths.validated, last)  # the day is corrected upstream and re-run
    lake.write_day(paths.validated, last, v.assign(tx_amount=v["tx_amount"] * 2))
    build_snapshots(paths, last)
    fixed = lake.read_day(paths.features / "customer", last).set_index("customer_id")
    assert not np.allclose(fixed.loc[ids, "customer_avg_amount_30d"], snap.loc[ids, "customer_avg_amount_30d"])
    run(last)
    np.testing.assert_allclose(online(ids)["customer_avg_amount_30d"], fixed.loc[ids, "customer_avg_amount_30d"])


def test_write_online_leaves_sqlite_s_write_lock_free_between_chunks(pipeline_home, tmp_path):
    """The endpoint needs SQLite's one write lock for every ``/score`` (its intraday step): a
    rewrite of the online store goes ONLINE_WRITE_CHUNK entities a call (one call for 4,000
    terminals held it ~0.25 s), and between two calls another connection takes the lock at once.
    Every value still lands."""
    import sqlite3

    from vigil import feature_repo
    from vigil.feature_repo import CUSTOMER_VIEW, ONLINE_WRITE_CHUNK, OnlineReader, apply, open_store

    root = copy_home(pipeline_home["paths"].root, tmp_path / "vigil")
    with env_set(profile_env("local", None, root)):
        paths = config.paths(root)
        store = open_store(paths, "local")
        apply(store, paths)
        day = pipeline_home["last_day"]
        db = OnlineReader(store).db_path()
        calls, free = [], []
        write = store.write_to_online_store

        def chunked(view, df, **kw):
            calls.append(len(df))
            other = sqlite3.connect(db, timeout=0)  # between two calls: no other transaction open
            try:
                other.execute("BEGIN IMMEDIATE")
                other.rollback()
                free.append(True)
            except sqlite3.OperationalError:
                free.append(False)
            finally:
                other.close()
            return write(view, df, **kw)

        store.write_to_online_store = chunked
        out = feature_repo.write_online(store, paths, day)
        snap = lake.read_day(paths.features / "customer", day).drop_duplicates("customer_id", keep="last").set_index("customer_id")
        assert len(snap) > ONLINE_WRITE_CHUNK and len(calls) > 2 and max(calls) <= ONLINE_WRITE_CHUNK and all(free), (calls, free)
        assert out["written"] >= len(snap)
        ids = snap.index.tolist()
        got = [r["customer_avg_amount_30d"] for r in OnlineReader(store).read(CUSTOMER_VIEW, ids)]
        np.testing.assert_array_equal(got, snap.loc[ids, "customer_avg_amount_30d"].to_numpy())


def test_redis_slow_or_cut_mid_load_gives_degraded_answers_then_recovers(production_home):
    """The production endpoint reaches Redis through a TCP proxy the test controls. Under load
    from 4 threads the proxy first adds latency (5 ms each way: whole answers, slower, the store
    calls within the request's 250 ms budget; then 400 ms, past the endpoint's 250 ms store
    timeout: degraded answers, and once the breaker is open at once), then cuts every connection
    and refuses new ones for 3 s: every request still gets a 200, flagged degraded while Redis is
    too slow or unreachable, in bounded time; once the proxy is back to normal, answers are whole
    again within the breaker's 2 s cooldown, without a restart."""
    import threading
    import time

    from tests.conftest import serve
    from tests.proxy import Proxy

    home = production_home
    host, port = home["env"]["VIGIL_REDIS_URL"].split(":")
    proxy = Proxy(host, int(port))
    bodies = [{**b, "transaction_id": 2 * 10**12 + i,  # a day of its own: the parity test's lists untouched
               "tx_datetime": (pd.Timestamp(b["tx_datetime"]) + pd.Timedelta(days=1)).isoformat()}
              for i, b in enumerate(replay_bodies(home))]
    seen, phase, stop = [], ["before"], threading.Event()
    try:
        with serve(home["paths"].root, {**home["env"], "VIGIL_REDIS_URL": f"127.0.0.1:{proxy.port}",
                                        "VIGIL_SERVING_RATE_LIMIT": "1000000"}) as url:  # degraded answers are fast: no 429s
            def load(k):
                with httpx.Client(base_url=url, headers=AUTH, timeout=10) as c:
                    i = k
                    while not stop.is_set():  # the day's bodies again and again, each with an id of its own
                        b = {**bodies[i % len(bodies)], "transaction_id": 2 * 10**12 + i}
                        i += 4
                        t0 = time.perf_counter()
                        r = c.post("/score", json=b)
                        seen.append((phase[0], r.status_code, r.json().get("degraded") if r.status_code == 200 else None,
                                     time.perf_counter() - t0))

            threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            time.sleep(2)
            phase[0] = "slow"
            proxy.delay_s = 0.005
            time.sleep(3)
            phase[0] = "too_slow"
            proxy.delay_s = 0.4
            time.sleep(4)
            proxy.delay_s = 0.0
            phase[0] = "cut"
            proxy.cut()
            time.sleep(3)
            phase[0] = "restored"
            proxy.restore()
            time.sleep(3)
            phase[0] = "after"
            time.sleep(2)
            stop.set()
            for t in threads:
                t.join()
            metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
    finally:
        proxy.close()
    by = {p: [s for s in seen if s[0] == p] for p in ("before", "slow", "too_slow", "cut", "after")}
    print({p: {"requests": len(v), "degraded": sum(bool(d) for _, _, d, _ in v),
               "p50_ms": round(1000 * float(np.median([s for *_, s in v])), 1) if v else None,
               "max_ms": round(1000 * max((s for *_, s in v), default=0), 1)} for p, v in by.items()})
    assert all(len(v) >= 5 for v in by.values()), {p: len(v) for p, v in by.items()}
    assert {code for _, code, _, _ in seen} == {200}  # no request failed, whatever Redis did
    assert not any(d for _, _, d, _ in by["before"]) and not any(d for _, _, d, _ in by["after"])
    # 5 ms each way: under the store timeout and budget, whole answers (the first few may meet the next phase)
    assert sum(not d for _, _, d, _ in by["slow"]) >= 0.8 * len(by["slow"])
    assert np.median([s for *_, s in by["slow"]]) > np.median([s for *_, s in by["before"]])
    for p in ("too_slow", "cut"):
        assert sum(bool(d) for _, _, d, _ in by[p]) >= 0.8 * len(by[p]), p
        # bounded: a request that meets the store costs one call's timeout and its retry (2 x 250 ms),
        # plus at most the wait behind one request of the phase before (the slow phase's longest),
        # never the store's pace; while the breaker is open, requests skip the store: most at once
        slowest_before = max(s for *_, s in by["slow" if p == "too_slow" else "too_slow"])
        assert np.median([s for *_, s in by[p]]) < 0.2, p
        assert max(s for _, _, _, s in by[p]) < slowest_before + 1.0, p
    assert "vigil_degraded_total" in metrics
