"""Feedback that matures: live figures carry their label maturity; closed days are re-run once."""

import json
from datetime import date, timedelta

import pandas as pd

from vigil import config, lake
from vigil.monitoring import label_maturity, live_performance


def test_label_maturity_is_the_share_of_the_window_passed():
    d = date(2025, 6, 1)
    assert label_maturity(d, None, 7) == 0.0
    assert label_maturity(d, d, 7) == 0.0
    assert label_maturity(d, d + timedelta(days=3), 7) == 3 / 7
    assert label_maturity(d, d + timedelta(days=30), 7) == 1.0


def test_live_performance_reports_precision_and_fraud_amounts_caught_and_missed():
    served = pd.DataFrame({"transaction_id": [1, 2, 3, 4], "fraud_score": [0.9, 0.2, 0.8, 0.1],
                           "decision": ["decline", "approve", "review", "approve"],
                           "tx_datetime": ["2025-06-01T10:00:00"] * 4, "customer_id": [1, 2, 3, 4],
                           "tx_amount": [100.0, 50.0, 10.0, 5.0]})
    labels = pd.DataFrame({"transaction_id": [1, 2], "tx_fraud": [1, 1]})
    out = live_performance(served, labels, 0.5)
    assert out["live_precision_flagged"] == 0.5 and out["live_recall_flagged"] == 0.5
    assert out["fraud_amount_caught"] == 100.0 and out["fraud_amount_missed"] == 50.0
    assert out["label_maturity"] == 0.5 and out["reported_frauds"] == 2
    bands = {c["cohort"]: c for c in out["cohorts"]}
    assert bands["amount >= 100"]["rows"] == 1 and bands["amount 20-100"]["reported_frauds"] == 1
    assert "night" not in bands  # no is_night column in this log: that cohort is left out, not guessed


def test_the_maturity_sensor_requests_each_closed_day_once(tmp_path):
    from pipelines.sensors import maturity_requests

    paths = config.paths(tmp_path)
    day = pd.DataFrame({"x": [1]})
    for d in (date(2025, 6, 1), date(2025, 6, 5)):
        lake.write_day(paths.lake / "predictions", d, day)
    lake.write_day(paths.labels, date(2025, 6, 9), pd.DataFrame({"transaction_id": [1], "tx_fraud": [1]}))
    assert [r.partition_key for r in maturity_requests(paths)] == ["2025-06-01"]  # 6-05's window is open
    assert maturity_requests(paths)[0].run_key == "labels-mature-2025-06-01"
    history = paths.monitoring / "live"
    history.mkdir(parents=True)
    (history / "2025-06-01.json").write_text(json.dumps({"label_maturity": 1.0}))
    assert maturity_requests(paths) == []  # its final figures are in
    (history / "2025-06-01.json").write_text(json.dumps({"label_maturity": 0.43}))
    assert len(maturity_requests(paths)) == 1  # computed before its labels were complete: again
    lake.write_day(paths.lake / "predictions", date(2025, 5, 20), day.iloc[0:0])
    assert [r.partition_key for r in maturity_requests(paths)] == ["2025-06-01"]  # nobody served on 05-20
