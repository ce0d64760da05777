"""``vigil score``: past days scored through the training path equal what the training job saw."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from vigil import lake, registry
from vigil.cli import main
from vigil.features import MODEL_FEATURES

pytestmark = pytest.mark.integration


def test_score_past_days_equals_the_training_jobs_test_frame(pipeline_home, tmp_path, capsys):
    paths = pipeline_home["paths"]
    prod = registry.current(paths)
    info = registry.model_info(paths, prod["tag"])
    first, last = (date.fromisoformat(d) for d in info["metadata"]["lineage"]["test_days"])
    out = tmp_path / "scores.parquet"
    main(["score", "--from", str(first), "--to", str(last), "--out", str(out), "--home", str(paths.root)])
    assert "scored by " + prod["tag"] in capsys.readouterr().out
    scored = pd.read_parquet(out)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    validated = lake.read_days(paths.validated, days)
    assert len(scored) == len(validated) and set(scored["transaction_id"]) == set(validated["transaction_id"])
    assert set(scored["decision"]) <= {"approve", "review", "decline"} and (scored["model_version"] == prod["tag"]).all()
    # the retraining job's own held-out frame (features from Feast at training time), scored by the same model
    model, policy, _ = registry.load(paths, prod["tag"])
    training_sets = sorted((paths.models / "training_sets").iterdir(), key=lambda p: p.stat().st_mtime)
    test = pd.read_parquet(training_sets[0] / "test.parquet")
    expected = pd.Series(model.predict(test[MODEL_FEATURES].to_numpy()), index=test["transaction_id"])
    got = scored.set_index("transaction_id")["fraud_score"].reindex(expected.index)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    assert (scored["decision"] == policy.decide_many(scored["fraud_score"].to_numpy())).all()


@pytest.mark.parametrize("args,message", [
    (["--from", "2030-01-01", "--to", "2030-01-02"], "validated partitions missing for 2 day"),
    (["--from", "2025-04-10", "--to", "2025-04-01"], "is before --from"),
    (["--from", "2025-04-10", "--to", "2025-04-11", "--model", "vigil-fraud:nope"], "model 'vigil-fraud:nope' is not in"),
    (["--from", "yesterday", "--to", "2025-04-11"], "must be dates"),
])
def test_score_refuses_bad_requests_by_name(pipeline_home, tmp_path, args, message):
    with pytest.raises(SystemExit, match=message):
        main(["score", *args, "--out", str(tmp_path / "x.parquet"), "--home", str(pipeline_home["paths"].root)])
    with pytest.raises(SystemExit, match=r"name it \*.parquet"):
        main(["score", "--from", "2025-05-01", "--to", "2025-05-01", "--out", str(tmp_path / "x.csv"),
              "--home", str(pipeline_home["paths"].root)])


@pytest.mark.skipif(not __import__("vigil.compiled", fromlist=["available"]).available(), reason="lleaves not installed")
def test_compiled_engine_gives_the_same_scores(pipeline_home, tmp_path, capsys):
    paths = pipeline_home["paths"]
    day = str(pipeline_home["last_day"])
    outs = {}
    for engine in ("lightgbm", "compiled"):
        outs[engine] = tmp_path / f"{engine}.parquet"
        main(["score", "--from", day, "--to", day, "--out", str(outs[engine]), "--engine", engine, "--home", str(paths.root)])
        assert f"({engine}" in capsys.readouterr().out
    a, b = (pd.read_parquet(outs[e]).set_index("transaction_id") for e in ("lightgbm", "compiled"))
    np.testing.assert_allclose(b.loc[a.index, "fraud_score"], a["fraud_score"], rtol=0, atol=1e-9)
    assert (b.loc[a.index, "decision"] == a["decision"]).all()
