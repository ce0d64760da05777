"""The real BentoML server over loopback HTTP, and the same service in process through to_asgi()."""

import json
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import AUTH, allow_test_key, replay_bodies
from vigil import alerts, prediction_log, registry
from vigil.features import CUSTOMER_FEATURES

pytestmark = pytest.mark.integration


def test_score_one_transaction(server, pipeline_home):
    body = replay_bodies(pipeline_home, 1)[0]
    r = httpx.post(f"{server}/score", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["transaction_id"] == body["transaction_id"]
    assert 0.0 <= out["fraud_score"] <= 1.0
    assert out["decision"] in {"approve", "review", "decline"}
    assert out["model_version"] == registry.current(pipeline_home["paths"])["tag"]
    assert out["stale_features"] == []  # features of the previous midnight are fresh


@pytest.mark.parametrize("change,field", [
    ({"tx_amount": -3}, "tx_amount"),
    ({"tx_amount": "lots"}, "tx_amount"),
    ({"customer_id": "abc"}, "customer_id"),
    ({"tx_datetime": "yesterday"}, "tx_datetime"),
    ({"terminal_id": None}, "terminal_id"),
])
def test_bad_requests_get_a_400_naming_the_field(server, pipeline_home, change, field):
    body = {**replay_bodies(pipeline_home, 1)[0], **change}
    r = httpx.post(f"{server}/score", json=body, headers=AUTH)
    assert r.status_code == 400
    assert field in r.text


def test_missing_field_and_bad_json(server, pipeline_home):
    body = replay_bodies(pipeline_home, 1)[0]
    body.pop("customer_id")
    r = httpx.post(f"{server}/score", json=body, headers=AUTH)
    assert r.status_code == 400 and "customer_id" in r.text
    r = httpx.post(f"{server}/score", content=b"{not json", headers={"content-type": "application/json", **AUTH})
    assert r.status_code == 400


def test_batch_equals_single_and_everything_is_logged(server, pipeline_home):
    bodies = replay_bodies(pipeline_home, 30)
    with httpx.Client(base_url=server, headers=AUTH) as c:
        single = [c.post("/score", json=b).json() for b in bodies]
        batch = c.post("/score_batch", json={"transactions": bodies})
    assert batch.status_code == 200
    np.testing.assert_allclose([s["fraud_score"] for s in single], [b["fraud_score"] for b in batch.json()])
    logged = prediction_log.read_day(pipeline_home["paths"].predictions, pipeline_home["replay_day"])
    ids = set(logged["transaction_id"])
    assert {b["transaction_id"] for b in bodies} <= ids


def test_served_features_equal_point_in_time_training_features(server, pipeline_home):
    """Training/serving parity: the features logged at serving time are the ones Feast's
    point-in-time retrieval gives the training path for the same transactions."""
    from vigil.feature_repo import open_store
    from vigil.features import MODEL_FEATURES
    from vigil.training import model_features

    bodies = replay_bodies(pipeline_home, 200)
    with httpx.Client(base_url=server, headers=AUTH) as c:
        for b in bodies:
            assert c.post("/score", json=b).status_code == 200
    logged = prediction_log.read_day(pipeline_home["paths"].predictions, pipeline_home["replay_day"])
    logged = logged.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
    ent = pd.DataFrame(bodies)
    ent["tx_datetime"] = pd.to_datetime(ent["tx_datetime"])
    offline = model_features(open_store(pipeline_home["paths"]), ent).set_index("transaction_id")
    served = logged.loc[offline.index, MODEL_FEATURES].astype(float)
    trained = offline[MODEL_FEATURES].astype(float)
    assert trained[CUSTOMER_FEATURES].notna().all(axis=1).mean() > 0.9
    assert (trained["customer_nb_tx_today"] > 0).sum() >= 3  # the intraday lists are compared, not only zeros
    pd.testing.assert_frame_equal(served.isna(), trained.isna())  # missing on one side = missing on the other
    np.testing.assert_allclose(served.fillna(0).to_numpy(), trained.fillna(0).to_numpy(), rtol=1e-9, atol=1e-9)


def test_readiness_and_metrics(server):
    assert httpx.get(f"{server}/readyz").status_code == 200
    for i in range(20):  # unknown paths: 404, and no label of their own in /metrics
        assert httpx.get(f"{server}/probe-{i}", headers=AUTH).status_code == 404
    m = httpx.get(f"{server}/metrics", headers=AUTH).text
    assert "vigil_decisions" in m and 'vigil_http_request_seconds_bucket{le="0.005",route="/score"}' in m
    assert "probe-" not in m and 'route="other"' in m


@pytest.mark.parametrize("path,method", [("/score", "post"), ("/score_batch", "post"), ("/model_info", "post"),
                                         ("/metrics", "get"), ("/docs.json", "get"), ("/", "get")])
def test_nothing_but_probes_answers_without_a_key(server, path, method):
    r = getattr(httpx, method)(f"{server}{path}", **({"json": {}} if method == "post" else {}))
    assert r.status_code == 401 and r.json()["error"] == "missing or unknown API key"
    r = getattr(httpx, method)(f"{server}{path}", headers={"authorization": "Bearer vgl_wrong"},
                               **({"json": {}} if method == "post" else {}))
    assert r.status_code == 401
    assert httpx.get(f"{server}/livez").status_code == 200 and httpx.get(f"{server}/readyz").status_code == 200


def test_hostile_requests_get_specific_4xx_and_break_nothing(server, pipeline_home):
    """Regressions of what a hostile client found (issue 14): each gets a specific 4xx, nothing is
    logged for it, no traceback reaches the server log, and the endpoint keeps serving."""
    paths = pipeline_home["paths"]
    body = replay_bodies(pipeline_home, 1)[0]
    log_file = paths.root / "serving-test.log"
    time.sleep(1.1)  # a fresh second of the client-error log budget (20 lines a second); earlier tests used theirs
    log_before = log_file.read_text()
    predictions_before = sorted(p.name for p in paths.predictions.iterdir())
    cases = [
        ({**body, "customer_id": 2**63}, 400, "customer_id"),  # was a 500 in the Feast int64 key
        ({**body, "transaction_id": 2**64}, 400, "transaction_id"),  # was logged, then broke the daily run
        ({**body, "transaction_id": "17"}, 400, "transaction_id"),
        ({**body, "terminal_id": True}, 400, "terminal_id"),
        ({**body, "customer_id": 17.0}, 400, "customer_id"),
        ({**body, "tx_datetime": "0001-01-01T00:00:00+14:00"}, 400, "tx_datetime"),  # was an OverflowError 500
        ({**body, "tx_datetime": "1970-01-01T00:00:00"}, 400, "tx_datetime"),
        ({**body, "tx_datetime": "2999-01-01T00:00:00"}, 400, "tx_datetime"),
        ({**body, "tx_datetime": 1_700_000_000}, 400, "tx_datetime"),
    ]
    with httpx.Client(base_url=server, headers=AUTH, timeout=30) as c:
        for sent, status, field in cases:
            r = c.post("/score", json=sent)
            assert r.status_code == status and r.json()["detail"].startswith(field), (sent, r.text)
        r = c.post("/score", content=b"--x\r\n", headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 415  # was a 500
        r = c.post("/score", content=json.dumps(body), headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = c.post("/score", content=b"[" + b"1," * (3 * 1024 * 1024) + b"1]", headers={"content-type": "application/json"})
        assert r.status_code == 413 and "VIGIL_SERVING_MAX_BODY_BYTES" in r.json()["detail"]
        r = c.post("/score_batch", json={"transactions": [body] * 10_001})
        assert r.status_code == 413 and "VIGIL_SERVING_MAX_BATCH" in r.json()["detail"]
        r = c.post("/score_batch", json={"transactions": [{**body, "customer_id": "x"}] * 5_000})
        assert r.status_code == 400 and len(r.content) < 1_000 and "4995 more" in r.text  # was a 1.6 MB body
        assert c.post("/score", json=body).status_code == 200
    assert sorted(p.name for p in paths.predictions.iterdir()) == predictions_before  # no folder for year 1 or 2999
    new_log = log_file.read_text()[len(log_before):]
    assert "Traceback" not in new_log and "ERROR" not in new_log
    assert new_log.count("400 POST /score:") == len(cases)


def test_the_served_openapi_validates_and_describes_the_guard(server):
    from openapi_spec_validator import validate

    doc = httpx.get(f"{server}/docs.json", headers=AUTH).json()
    validate(doc)
    score = doc["paths"]["/score"]["post"]
    assert {"200", "400", "401", "413", "415", "429"} <= set(score["responses"])
    ids = doc["components"]["schemas"]
    assert json.dumps(doc).count('"maximum": 9223372036854775807') >= 3 and "ClientError" in ids


def test_new_promotion_is_picked_up_without_restart(server, pipeline_home):
    paths = pipeline_home["paths"]
    current = registry.current(paths)
    model, policy, info = registry.load(paths, current["tag"])
    new_tag = registry.register(paths, model, policy, {**info["metadata"], "note": "hot-swap test"})
    body = replay_bodies(pipeline_home, 1)[0]
    codes = []
    with httpx.Client(base_url=server, headers=AUTH) as c:
        registry.promote(paths, new_tag, reason="hot-swap test")
        deadline = time.time() + 20
        seen = None
        while time.time() < deadline:
            r = c.post("/score", json=body)
            codes.append(r.status_code)
            seen = r.json()["model_version"]
            if seen == new_tag:
                break
            time.sleep(0.1)
    assert seen == new_tag and set(codes) == {200}
    registry.promote(paths, current["tag"], reason="restore after hot-swap test")


def test_in_process_through_to_asgi(pipeline_home):
    from starlette.testclient import TestClient

    from serving.guard import DIRECT
    from serving.service import FraudScorer, ServiceUnavailable

    allow_test_key(pipeline_home["paths"].root)
    body = replay_bodies(pipeline_home, 1)[0]
    with TestClient(FraudScorer.to_asgi(), headers=AUTH) as c:
        ok = c.post("/score", json=body)
        bad = c.post("/score", json={**body, "tx_amount": 0})
        direct = DIRECT.pop("/score")  # the guard answers /score itself; without it, BentoML's path
        try:
            through_bentoml = c.post("/score", json={**body, "transaction_id": body["transaction_id"] + 1})
            bad_bentoml = c.post("/score", json={**body, "tx_amount": 0})
        finally:
            DIRECT["/score"] = direct

        async def broken(tx):
            raise RuntimeError("a bug")

        async def unavailable(tx):
            raise ServiceUnavailable("no model promoted to production yet")

        answers = []
        for fn in (broken, unavailable):
            DIRECT["/score"] = fn
            try:
                answers.append(c.post("/score", json=body))
            finally:
                DIRECT["/score"] = direct
        scorer = direct.__self__.scorer  # the service instance behind the registered coroutine
        deployed, scorer.deployed = scorer.deployed, None  # no model: both routes say so the same way
        try:
            no_model = [c.post("/score", json=body), c.post("/score_batch", json={"transactions": [body]})]
        finally:
            scorer.deployed = deployed
    assert ok.status_code == 200 and ok.json()["transaction_id"] == body["transaction_id"]
    assert bad.status_code == 400 and "tx_amount" in bad.text
    assert through_bentoml.status_code == 200 and set(through_bentoml.json()) == set(ok.json())
    assert through_bentoml.json()["transaction_id"] == body["transaction_id"] + 1
    assert bad_bentoml.status_code == 400 and bad_bentoml.json() == bad.json()  # the guard refuses before either path
    assert [a.status_code for a in answers] == [500, 503]
    assert answers[0].json() == {"error": "internal server error", "detail": ""}
    assert answers[1].json() == {"error": "service unavailable", "detail": "no model promoted to production yet"}
    assert [r.status_code for r in no_model] == [503, 503], [r.text for r in no_model]
    # JSON both (a bare 503 error_code once made BentoML's answer a 500 with a traceback); BentoML
    # keeps a 5xx's message to the server log, the guard's direct /score names it
    assert "no model promoted" in no_model[0].json()["detail"] and "error" in no_model[1].json()


def test_rate_limit_per_key_in_process(pipeline_home, monkeypatch):
    from starlette.testclient import TestClient

    from serving.service import FraudScorer

    monkeypatch.setenv("VIGIL_SERVING_RATE_LIMIT", "5")
    allow_test_key(pipeline_home["paths"].root)
    body = replay_bodies(pipeline_home, 1)[0]
    with TestClient(FraudScorer.to_asgi(), headers=AUTH) as c:
        codes = [c.post("/score", json=body).status_code for _ in range(12)]
        r = c.post("/score", json=body)
    assert codes.count(200) >= 5 and 429 in codes
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def _served_tag(server) -> str:
    return httpx.post(f"{server}/model_info", json={}, headers=AUTH, timeout=5).json()["model_version"]


@pytest.mark.parametrize("damage", ["corrupt_file", "other_features"])
def test_a_damaged_model_is_refused_and_the_current_one_keeps_serving(server, pipeline_home, damage):
    from vigil.model import FraudModel

    paths = pipeline_home["paths"]
    current = registry.current(paths)
    deadline = time.time() + 20  # an earlier test's restore may still be on its way (the pointer is polled every 2 s)
    while _served_tag(server) != current["tag"] and time.time() < deadline:
        time.sleep(0.2)
    model, policy, info = registry.load(paths, current["tag"])
    if damage == "other_features":  # trained on another feature list (here: another order)
        model = FraudModel(list(reversed(model.features)), model.fill_values[::-1], model.booster)
    bad = registry.register(paths, model, policy, {**info["metadata"], "note": f"damaged: {damage}"})
    folder = Path(registry.model_info(paths, bad)["path"])
    if damage == "corrupt_file":
        victim = max((f for f in folder.iterdir() if f.name != registry.MANIFEST and f.suffix != ".yaml"),
                     key=lambda f: f.stat().st_size)
        victim.write_bytes(victim.read_bytes()[:-64] + b"\0" * 64)
    with pytest.raises(registry.CorruptModel):
        registry.load(paths, bad)
    log_file = paths.root / "serving-test.log"
    before = len(log_file.read_text())
    try:
        with httpx.Client(base_url=server, headers=AUTH) as c:
            registry.promote(paths, bad, reason=f"test: {damage}")
            deadline, codes = time.time() + 6, []
            while time.time() < deadline:  # past two polls of the pointer
                r = c.post("/score", json=replay_bodies(pipeline_home, 1)[0])
                codes.append(r.status_code)
                assert r.json()["model_version"] == current["tag"]
                time.sleep(0.2)
        assert set(codes) == {200}
        assert ("does not match its registered SHA-256" if damage == "corrupt_file" else "other features") \
            in log_file.read_text()[before:]
        refused = [a for a in alerts.alerter_for(paths.root).recent(100) if a["name"] == "model_refused"]
        assert [a["episode"] for a in refused].count(bad) == 1
    finally:
        registry.promote(paths, current["tag"], reason="restore after damaged-model test")


def test_stale_and_unknown_entities_are_flagged_with_a_reason_and_counted(server, pipeline_home):
    body = replay_bodies(pipeline_home, 1)[0]
    ts = pd.Timestamp(body["tx_datetime"])
    with httpx.Client(base_url=server, headers=AUTH) as c:
        unknown = c.post("/score", json={**body, "customer_id": 9_000_000_000, "terminal_id": 9_000_000_001}).json()
        stale = c.post("/score", json={**body, "tx_datetime": (ts + pd.Timedelta(days=3)).isoformat()}).json()
        early = c.post("/score", json={**body, "tx_datetime": (ts - pd.Timedelta(days=5)).isoformat()}).json()
        metrics = c.get("/metrics").text
    views = ["customer_spending", "terminal_risk"]
    for answer in (unknown, stale, early):  # no snapshot / one older than the TTL / one from its future
        assert answer["stale_features"] == views and not answer["degraded"]
        assert {f"STALE_FEATURES:{v}" for v in views} <= set(answer["reasons"])
    assert 'vigil_stale_features_total{view="terminal_risk"}' in metrics


def test_an_unreachable_online_store_gives_a_degraded_answer_not_an_error(pipeline_home):
    """In process (the real Scorer, its store's reads failing): every request is answered from the
    request-time features, flagged degraded and counted; the production profile's version cuts
    Redis through a TCP proxy (tests/integration/test_feature_parity.py)."""
    from vigil.scoring import Scorer

    scorer = Scorer(pipeline_home["paths"], log_predictions=False)

    def down(*a, **k):
        raise ConnectionError("online store unreachable (test)")

    scorer.reader.read = scorer.reader.read_matrix = down
    scorer.intraday.read = down
    body = replay_bodies(pipeline_home, 3)
    for b in body:
        b["tx_datetime"] = pd.Timestamp(b["tx_datetime"]).to_pydatetime()
    out = scorer.score(body)
    assert [o["degraded"] for o in out] == [True] * 3 and all(0 <= o["fraud_score"] <= 1 for o in out)
    assert all("ONLINE_STORE_UNAVAILABLE" in o["reasons"] for o in out)
    assert scorer.counters["degraded"] == 3
    deadline = time.time() + 10
    while time.time() < deadline and not any(a["name"] == "serving_degraded" for a in alerts.alerter_for(pipeline_home["paths"].root).recent(100)):
        time.sleep(0.2)
    raised = [a for a in alerts.alerter_for(pipeline_home["paths"].root).recent(100) if a["name"] == "serving_degraded"]
    assert len(raised) == 1 and raised[0]["runbook"].endswith("serving_degraded.md")
    scorer.score(body)  # the same episode: not raised again
    time.sleep(1)
    assert len([a for a in alerts.alerter_for(pipeline_home["paths"].root).recent(100) if a["name"] == "serving_degraded"]) == 1
    scorer.close()


def test_the_scorer_checkpoints_the_local_store_off_the_request_path(pipeline_home):
    """The scorer's own SQLite connections never checkpoint the WAL in a commit (a request's);
    its Checkpointer thread does, and stops with it."""
    from vigil.scoring import Scorer

    scorer = Scorer(pipeline_home["paths"], log_predictions=False)
    try:
        body = replay_bodies(pipeline_home, 2)
        for b in body:
            b["tx_datetime"] = pd.Timestamp(b["tx_datetime"]).to_pydatetime()
        scorer.score(body)  # the intraday write: this thread's connection
        assert scorer.reader.sqlite_conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        ck = scorer.checkpointer
        assert ck is not None and ck._thread.is_alive()
        conn = __import__("sqlite3").connect(scorer.reader.online_store._get_db_path(scorer.store.config))
        assert ck.once(conn)[0] == 0 and ck.failed == ""
        conn.close()
    finally:
        scorer.close()
    assert not ck._thread.is_alive()


def test_kill_9_of_the_worker_under_load_loses_no_answered_prediction(pipeline_home):
    """Requests run from 4 threads while the serving worker gets SIGKILL; every transaction that
    got a 200 is in the log. BentoML's arbiter starts a new worker; the client resends everything
    (its retries), and the daily read keeps each transaction once."""
    import signal
    import threading

    import psutil

    from tests.conftest import allow_test_key
    from vigil.processes import endpoint_env, serve_endpoint

    paths = pipeline_home["paths"]
    day = pipeline_home["replay_day"] + timedelta(days=1)  # a day of its own: other tests' logs and intraday lists untouched
    bodies = [{**b, "transaction_id": 10**12 + i,
               "tx_datetime": (pd.Timestamp(b["tx_datetime"]) + pd.Timedelta(days=1)).isoformat()}
              for i, b in enumerate(replay_bodies(pipeline_home))]
    allow_test_key(paths.root)
    acked, stop = [], threading.Event()

    def load(k):
        with httpx.Client(base_url=url, headers=AUTH, timeout=5) as c:
            for b in bodies[k::4]:
                if stop.is_set():
                    return
                try:
                    if c.post("/score", json=b).status_code == 200:
                        acked.append(b["transaction_id"])
                except httpx.HTTPError:
                    pass

    with serve_endpoint(paths.root, paths.root / "serving-kill.log", env=endpoint_env(paths.root)) as (url, proc):
        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 300:
            time.sleep(0.05)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "_bentoml_impl.worker" in " ".join(p.cmdline())]
        assert workers
        for w in workers:
            w.send_signal(signal.SIGKILL)
        killed_at = len(acked)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        logged = prediction_log.read_day(paths.predictions, day)
        assert killed_at >= 300 and set(acked) <= set(logged["transaction_id"])  # nothing answered is lost
        deadline = time.time() + 90  # the arbiter starts a new worker
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:  # the client retries everything
            for i in range(0, len(bodies), 2000):
                assert c.post("/score_batch", json={"transactions": bodies[i:i + 2000]}).status_code == 200
    frame, bad, repeated = prediction_log.read_day_checked(paths.predictions, day)
    assert sorted(frame["transaction_id"]) == sorted(b["transaction_id"] for b in bodies)
    assert repeated >= len(set(acked)) and bad == []


def test_requests_on_thousands_of_days_keep_few_files_open_and_logs_private(server, pipeline_home):
    """The finding: one open file per distinct day for the life of the process (EMFILE after
    ~18,000 days, then a 500 for every new day). Now: at most 8 open log files, files 0600."""
    import stat

    import psutil

    paths = pipeline_home["paths"]
    body = replay_bodies(pipeline_home, 1)[0]
    start = pd.Timestamp("2001-01-01T12:00:00")
    batch = [{**body, "transaction_id": 3 * 10**12 + i, "tx_datetime": (start + pd.Timedelta(days=i)).isoformat()}
             for i in range(2_000)]
    worker = psutil.Process(httpx.post(f"{server}/model_info", json={}, headers=AUTH).json()["pid"])
    before = worker.num_fds()
    r = httpx.post(f"{server}/score_batch", json={"transactions": batch}, headers=AUTH, timeout=60)
    assert r.status_code == 200 and len(r.json()) == 2_000
    deadline = time.time() + 240  # the batch may start the compiled booster's build (pipes to its process, a lock file)
    with httpx.Client(base_url=server, headers=AUTH) as c:  # one connection, closed before the count
        while c.post("/model_info", json={}).json()["batch_engine"] == "compiling" and time.time() < deadline:
            time.sleep(0.5)
    time.sleep(0.3)
    open_logs = [f.path for f in worker.open_files() if f.path.startswith(str(paths.predictions))]
    # at most 8 log files; besides, a handler thread's first call opens its own SQLite connection (the file and its WAL)
    assert len(open_logs) <= 8 and worker.num_fds() - before <= 8 + 2 * 4, (open_logs, worker.num_fds() - before)
    assert httpx.post(f"{server}/score", json=body, headers=AUTH).status_code == 200
    logs = list(paths.predictions.glob("*/*.jsonl"))
    assert len(logs) >= 2_000 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in logs)
    for i in range(2_000):  # out of the way of the daily tests
        for f in (paths.predictions / (start + pd.Timedelta(days=i)).date().isoformat()).glob("*"):
            f.unlink()


def test_a_batch_whose_client_disconnects_is_abandoned_not_logged(server, pipeline_home):
    """A client sends the largest batch and hangs up 0.03 s after sending it (a 10,000-row batch takes 0.2 s): the scorer gives the work up
    (counted as abandoned), and none of its transactions reach the prediction log. The same batch
    sent again by a patient client is scored and logged once."""
    paths = pipeline_home["paths"]
    day = pipeline_home["replay_day"] + timedelta(days=2)  # a day of its own
    src = replay_bodies(pipeline_home)
    bodies = [{**src[i % len(src)], "transaction_id": 2 * 10**12 + i,
               "tx_datetime": (pd.Timestamp(src[i % len(src)]["tx_datetime"]) + pd.Timedelta(days=2)).isoformat()}
              for i in range(10_000)]

    def abandoned() -> int:
        return httpx.post(f"{server}/model_info", headers=AUTH, json={}).json()["abandoned"]

    before = abandoned()
    with httpx.Client(base_url=server, headers=AUTH, timeout=httpx.Timeout(10, read=0.03)) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/score_batch", json={"transactions": bodies})
    deadline = time.time() + 30
    while time.time() < deadline and abandoned() < before + len(bodies):
        time.sleep(0.2)
    assert abandoned() == before + len(bodies)
    time.sleep(0.5)  # past the log's next fsync round
    logged = prediction_log.read_day(paths.predictions, day)
    assert logged.empty, f"{len(logged)} abandoned predictions were logged"
    with httpx.Client(base_url=server, headers=AUTH, timeout=60) as c:
        assert c.post("/score_batch", json={"transactions": bodies}).status_code == 200
    frame, bad, repeated = prediction_log.read_day_checked(paths.predictions, day)
    assert sorted(frame["transaction_id"]) == [b["transaction_id"] for b in bodies] and repeated == 0


def test_slow_headers_are_cut_off_and_keep_alive_still_works(pipeline_home):
    """Slowloris: a client that sends its headers a byte every 0.4 s is disconnected once
    VIGIL_SERVING_HEADER_TIMEOUT (here 2 s) has passed; one that sends its headers and then a
    part of its body gets a 408 once VIGIL_SERVING_BODY_TIMEOUT (here 1 s) has passed; a normal
    client keeps its connection across requests, and the server answers the next client at once."""
    import socket

    from tests.conftest import serve

    body = replay_bodies(pipeline_home, 1)[0]
    with serve(pipeline_home["paths"].root, {"VIGIL_SERVING_HEADER_TIMEOUT": "2", "VIGIL_SERVING_BODY_TIMEOUT": "1"}) as url:
        host, port = url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)))
        stalled.settimeout(5)
        start = time.time()
        stalled.sendall(f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['authorization']}\r\n"
                        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"transaction_id\": ".encode())
        answer = stalled.recv(4096)
        waited = time.time() - start
        while b"request body timeout" not in answer:  # the head and the body may come in two reads
            more = stalled.recv(4096)
            if not more:
                break
            answer += more
        stalled.close()
        assert answer.startswith(b"HTTP/1.1 408") and b"request body timeout" in answer, answer[:200]
        assert 0.9 <= waited <= 3.0, waited
        slow = socket.create_connection((host, int(port)))
        slow.settimeout(0.05)
        start, closed_after = time.time(), None
        for ch in b"POST /score HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40:
            try:
                slow.send(bytes([ch]))
                if slow.recv(1) == b"":
                    closed_after = time.time() - start
                    break
            except socket.timeout:
                pass
            except OSError:
                closed_after = time.time() - start
                break
            time.sleep(0.4)
        slow.close()
        assert closed_after is not None and 1.5 <= closed_after <= 4.0, closed_after
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as c:
            first = c.post("/score", json=body)
            time.sleep(1)  # idle on the kept-alive connection, inside the keep-alive and header windows
            second = c.post("/score", json={**body, "transaction_id": body["transaction_id"] + 7 * 10**12})
            assert first.status_code == second.status_code == 200


def test_a_worker_keeps_snapshot_rows_until_a_write_replaces_the_marker(server, pipeline_home):
    """The endpoint's snapshot cache (vigil.feature_repo.SnapshotCache), through the real server:
    a row changed in the online store behind Vigil's back is not seen (the worker serves the row
    it holds), and once the writer replaces the marker, as write_online and materialize do after
    they commit, the next request sees the new value."""
    from vigil.feature_repo import OnlineReader, open_store, snapshots_changed
    from vigil.features import FEATURE_VIEWS

    paths = pipeline_home["paths"]
    view = FEATURE_VIEWS[0]
    body = replay_bodies(pipeline_home, 1)[0]
    day = pd.Timestamp(body["tx_datetime"]).date()
    store = open_store(paths)
    original = OnlineReader(store).read(view.name, [body["customer_id"]])[0]
    feature = "customer_avg_amount_30d"

    def served(tx_id: int) -> float:
        r = httpx.post(f"{server}/score", json={**body, "transaction_id": tx_id}, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        logged = prediction_log.read_day(paths.predictions, day).set_index("transaction_id")
        return float(logged.loc[tx_id, feature])

    def write(values: dict) -> None:
        row = pd.DataFrame([{view.key: body["customer_id"], **values}])
        row["event_timestamp"] = pd.Timestamp(values[view.asof], unit="s", tz="UTC")
        store.write_to_online_store(view.name, row, allow_registry_cache=True)

    base = 8_100_000_000
    first = served(base + 1)
    assert first == pytest.approx(original[feature])
    hits = httpx.post(f"{server}/model_info", json={}, headers=AUTH).json()["feature_cache"]["hits"]
    try:
        write({**original, feature: 4321.5})
        assert served(base + 2) == pytest.approx(first)  # the worker's copy: no marker change yet
        assert httpx.post(f"{server}/model_info", json={}, headers=AUTH).json()["feature_cache"]["hits"] > hits
        snapshots_changed(store)
        assert served(base + 3) == 4321.5
    finally:
        write(original)
        snapshots_changed(store)
    assert served(base + 4) == pytest.approx(original[feature])


def test_batches_are_scored_by_the_compiled_booster_once_built_with_lightgbms_scores(server, pipeline_home):
    """VIGIL_SERVING_COMPILED=auto (the default): the first batch of 256+ rows starts the build
    (LightGBM answers meanwhile); once /model_info says so, batches are scored by the compiled
    booster, and each score equals LightGBM's on the features the log says were served."""
    from vigil import compiled
    from vigil.features import MODEL_FEATURES

    if not compiled.available():
        pytest.skip("lleaves not installed (the 'batch' extra)")
    paths = pipeline_home["paths"]
    # a day of its own (the cards' intraday lists move to it): last in this file, after the tests of the replayed day
    day = pipeline_home["replay_day"] + timedelta(days=4)
    src = [{**b, "tx_datetime": (pd.Timestamp(b["tx_datetime"]) + pd.Timedelta(days=4)).isoformat()}
           for b in replay_bodies(pipeline_home, 300)]

    def batch(base: int) -> list[dict]:
        return [{**b, "transaction_id": base + i} for i, b in enumerate(src)]

    with httpx.Client(base_url=server, headers=AUTH, timeout=60) as c:
        assert c.post("/score_batch", json={"transactions": batch(4 * 10**12)}).status_code == 200
        deadline = time.time() + 240
        while (state := c.post("/model_info", json={}).json()["batch_engine"]) == "compiling" and time.time() < deadline:
            time.sleep(0.5)
        assert state == "compiled", state
        sent = batch(4 * 10**12 + 10_000)
        r = c.post("/score_batch", json={"transactions": sent})
        assert c.post("/model_info", json={}).json()["batch_engine"] == "compiled"  # its spot check agreed
    assert r.status_code == 200
    served = {a["transaction_id"]: a["fraud_score"] for a in r.json()}
    logged = prediction_log.read_day(paths.predictions, day).set_index("transaction_id")
    mine = logged.loc[[b["transaction_id"] for b in sent]]
    model, _, _ = registry.load(paths, registry.current(paths)["tag"])
    lightgbm = model.predict(mine[MODEL_FEATURES].astype(float).to_numpy())
    np.testing.assert_allclose([served[t] for t in mine.index], lightgbm, rtol=0, atol=1e-12)
