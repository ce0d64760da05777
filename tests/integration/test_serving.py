"""The real BentoML server over loopback HTTP, and the same service in process through to_asgi()."""

import time

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import replay_bodies
from vigil import prediction_log, registry
from vigil.features import CUSTOMER_FEATURES

pytestmark = pytest.mark.integration


def test_score_one_transaction(server, pipeline_home):
    body = replay_bodies(pipeline_home, 1)[0]
    r = httpx.post(f"{server}/score", json=body)
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
    r = httpx.post(f"{server}/score", json=body)
    assert r.status_code == 400
    assert field in r.text


def test_missing_field_and_bad_json(server, pipeline_home):
    body = replay_bodies(pipeline_home, 1)[0]
    body.pop("customer_id")
    r = httpx.post(f"{server}/score", json=body)
    assert r.status_code == 400 and "customer_id" in r.text
    r = httpx.post(f"{server}/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_batch_equals_single_and_everything_is_logged(server, pipeline_home):
    bodies = replay_bodies(pipeline_home, 30)
    with httpx.Client(base_url=server) as c:
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
    with httpx.Client(base_url=server) as c:
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
    m = httpx.get(f"{server}/metrics").text
    assert "vigil_decisions" in m and "bentoml_service_request_duration_seconds" in m


def test_new_promotion_is_picked_up_without_restart(server, pipeline_home):
    paths = pipeline_home["paths"]
    current = registry.current(paths)
    model, policy, info = registry.load(paths, current["tag"])
    new_tag = registry.register(paths, model, policy, {**info["metadata"], "note": "hot-swap test"})
    body = replay_bodies(pipeline_home, 1)[0]
    codes = []
    with httpx.Client(base_url=server) as c:
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

    from serving.service import FraudScorer

    body = replay_bodies(pipeline_home, 1)[0]
    with TestClient(FraudScorer.to_asgi()) as c:
        ok = c.post("/score", json=body)
        bad = c.post("/score", json={**body, "tx_amount": 0})
    assert ok.status_code == 200 and ok.json()["transaction_id"] == body["transaction_id"]
    assert bad.status_code == 400 and "tx_amount" in bad.text
