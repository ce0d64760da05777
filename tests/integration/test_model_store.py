"""Two hosts sharing one model store on an S3-compatible server (moto): what host A registers and
promotes, host B's endpoint follows and serves, fetched and hash-checked; a corrupt object is
refused and B keeps serving what it had."""

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_home, replay_bodies
from vigil import registry
from vigil.config import Paths
from vigil.feature_repo import open_store

pytestmark = pytest.mark.integration


def host(root: Path, uri: str, endpoint: str) -> Paths:
    return Paths(root.resolve(), model_store_uri=uri, s3_endpoint=endpoint)


def test_a_promotion_on_one_host_is_served_by_another(pipeline_home, object_store, tmp_path):
    from vigil.scoring import Scorer

    uri = f"s3://{object_store['bucket']()}/models"
    a = host(copy_home(pipeline_home["paths"].root, tmp_path / "a"), uri, object_store["endpoint"])
    b = host(tmp_path / "b", uri, object_store["endpoint"])  # nothing local: no model store, no records
    model, policy, info = registry.load(pipeline_home["paths"], registry.current(pipeline_home["paths"])["tag"])
    meta = {k: v for k, v in info["metadata"].items() if k not in ("policy", "features")}

    first = registry.register(a, model, policy, meta, reason="test: host A")
    registry.promote(a, first, "test: first")
    assert registry.current(b)["tag"] == first  # the pointer is in the shared store
    assert not (b.bentoml_home / "models" / "vigil-fraud").exists()

    scorer = Scorer(b, store=open_store(pipeline_home["paths"]), log_predictions=False, poll_seconds=3600)
    try:
        assert scorer.deployed.tag == first  # fetched from the object store, checked, loaded
        bodies = [{**b, "tx_datetime": datetime.fromisoformat(b["tx_datetime"])} for b in replay_bodies(pipeline_home, 20)]
        served = [r["fraud_score"] for r in scorer.score(bodies)]
        x = np.random.default_rng(0).random((50, len(model.features)))
        np.testing.assert_array_equal(scorer.deployed.model.predict(x), model.predict(x))

        # a second version whose booster object is damaged in the store after publication
        second = registry.register(a, model, policy, meta, reason="test: host A, second")
        name, version = second.split(":")
        client, bucket = object_store["client"], uri[5:].split("/")[0]
        key = f"models/{name}/{version}/booster.txt"
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        client.put_object(Bucket=bucket, Key=key, Body=body.replace(b"tree", b"tref", 1))
        registry.promote(a, second, "test: second")
        with pytest.raises(registry.CorruptModel, match="booster.txt does not match"):
            scorer.reload()
        assert scorer.deployed.tag == first  # still serving, and nothing of the bad copy kept
        assert [r["fraud_score"] for r in scorer.score(bodies)] == served
        assert not (b.bentoml_home / "models" / name / version).exists()
        assert not [p for p in (b.bentoml_home / "models" / name).iterdir() if p.name.startswith(".")]

        client.put_object(Bucket=bucket, Key=key, Body=body)  # the object repaired: the next poll serves it
        assert scorer.reload() and scorer.deployed.tag == second
    finally:
        scorer.close()


def test_an_unknown_version_is_a_clear_error(object_store, tmp_path):
    b = host(tmp_path / "b", f"s3://{object_store['bucket']()}/models", object_store["endpoint"])
    with pytest.raises(registry.ModelNotFound, match="nor in s3://"):
        registry.model_info(b, "vigil-fraud:doesnotexist")
    with pytest.raises(registry.ModelNotFound, match="not a model tag"):
        registry.model_info(b, "vigil-fraud:../../etc")
